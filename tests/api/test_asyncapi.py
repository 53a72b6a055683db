"""/docs/asyncapi.json: the AsyncAPI 3.0 document of /ws, as the official parser judges it,
and complete: every op the server parses, every frame and error code it sends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import get_args

import orjson
from sanic_testing.reusable import ReusableClient

from coinlink.realtime import frames, protocol
from tests.support.asyncapi import check_frame, message_name, server_messages

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "asyncapi"


def test_the_document_passes_the_official_asyncapi_parser(
    client: ReusableClient, tmp_path: Path
) -> None:
    _, response = client.get("/docs/asyncapi.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json["asyncapi"] == "3.0.0"
    served = tmp_path / "asyncapi.json"
    served.write_bytes(response.body)
    # Installs node and the locked parser when absent (quick when present).
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-node-tools.sh")], check=True)
    checked = subprocess.run(
        ["node", str(TOOL / "validate.mjs"), str(served)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    diagnostics = [json.loads(line) for line in checked.stdout.splitlines()]
    errors = [d for d in diagnostics if d["severity"] == 0]
    assert checked.returncode == 0 and not errors, (errors, checked.stderr)
    # The only other finding: AsyncAPI 3.1 exists (the issue asks for 3.0).
    assert {d["code"] for d in diagnostics} <= {"asyncapi-latest-version"}, diagnostics


def test_every_op_frame_and_error_code_is_in_the_document(client: ReusableClient) -> None:
    doc = client.get("/docs/asyncapi.json")[1].json
    received = [
        message_name(ref)
        for operation in doc["operations"].values()
        if operation["action"] == "receive"
        for ref in operation["messages"]
    ]
    assert received == [model.__name__ for model in get_args(protocol.ClientMessage)]
    assert sorted(server_messages(doc)) == sorted(m.__name__ for m in frames.SERVER_FRAMES)
    codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert codes == list(get_args(protocol.ErrorCode))
    for code in codes:
        assert f"`{code}`" in doc["components"]["messages"]["Error"]["description"]
    # This server's limits, not the defaults of another.
    assert "200 channels per socket" in doc["info"]["description"]


def test_every_example_is_a_message_the_server_accepts_or_sends(client: ReusableClient) -> None:
    doc = client.get("/docs/asyncapi.json")[1].json
    sent = set(server_messages(doc))
    for name, message in doc["components"]["messages"].items():
        [example] = message["examples"]
        if name in sent:
            check_frame(example["payload"])
        else:
            parsed = protocol.parse(orjson.dumps(example["payload"]).decode())
            assert type(parsed).__name__ == name
