"""The baseline: a bare Sanic JSON hello world, with no middleware at all."""

from sanic import Request, Sanic, json
from sanic.response import HTTPResponse

app = Sanic("bare", configure_logging=False)
app.config.ACCESS_LOG = False


@app.get("/health")
async def health(request: Request) -> HTTPResponse:
    return json({"status": "ok", "version": "0", "uptime_s": 0})
