"""The API reference page, rendered on the server from the documents: no script, no CDN.

One page lists each OpenAPI operation (parameters, body, responses) and each schema, then
the WebSocket API from its AsyncAPI document: the socket's channels and closes, each
operation and each message with its fields and an example.
"""

from __future__ import annotations

from html import escape
from typing import Any

import orjson

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}
pre{padding:.5rem;overflow-x:auto}
.op{border-top:1px solid #ddd;padding:.5rem 0}
.method{font-weight:bold;text-transform:uppercase;display:inline-block;min-width:4rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
"""


def render(openapi: dict[str, Any], asyncapi: dict[str, Any]) -> str:
    """The whole page: the REST reference, then the WebSocket one."""
    info = openapi["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info['title'])} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info['title'])} API {escape(info['version'])}</h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        '<p>Machine-readable: <a href="/docs/openapi.json">OpenAPI 3.1 (JSON)</a>, '
        '<a href="/docs/asyncapi.json">AsyncAPI 3.0 (JSON)</a> for the WebSocket</p>',
        openapi_section(openapi),
        asyncapi_section(asyncapi),
        "</body></html>",
    ]
    return "".join(parts)


def openapi_section(openapi: dict[str, Any]) -> str:
    parts = ["<h2>REST operations</h2>"]
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            parts.append(_operation(path, method, op))
    parts.append("<h2>Schemas</h2>")
    for name, schema in openapi["components"]["schemas"].items():
        parts.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_schema(schema)}')
    return "".join(parts)


def asyncapi_section(asyncapi: dict[str, Any]) -> str:
    """The WebSocket API; its schemas are anchored apart (``ws-``): names such as
    ``Ticker`` exist in both documents."""
    parts = ["<h2>WebSocket</h2>"]
    for channel in asyncapi["channels"].values():
        parts.append(
            f"<h3><code>{escape(channel['address'])}</code></h3>"
            f"<pre>{escape(channel.get('description', ''))}</pre>"
        )
    parts.append(
        "<h3>Operations</h3><table><tr><th>operation</th><th>who sends</th>"
        "<th>messages</th><th>answered with</th></tr>"
    )
    for name, op in asyncapi["operations"].items():
        sender = "client" if op["action"] == "receive" else "server"
        reply = op.get("reply", {}).get("messages", [])
        parts.append(
            f"<tr><td><code>{escape(name)}</code><br>{escape(op.get('summary', ''))}</td>"
            f"<td>{sender}</td><td>{_message_links(op['messages'])}</td>"
            f"<td>{_message_links(reply)}</td></tr>"
        )
    parts.append("</table><h3>Messages</h3>")
    schemas = asyncapi["components"]["schemas"]
    for name, message in asyncapi["components"]["messages"].items():
        payload = message["payload"]
        schema = schemas[payload["$ref"].rsplit("/", 1)[-1]] if "$ref" in payload else payload
        examples = "".join(
            f"<pre>{escape(orjson.dumps(example['payload']).decode())}</pre>"
            for example in message.get("examples", [])
        )
        parts.append(
            f'<h4 id="message-{escape(name)}">{escape(name)}</h4>'
            f"{_schema(schema, 'ws-schema')}{examples}"
        )
    parts.append("<h3>Message fields</h3>")
    for name, schema in schemas.items():
        if name not in asyncapi["components"]["messages"]:
            parts.append(
                f'<h4 id="ws-schema-{escape(name)}">{escape(name)}</h4>'
                f"{_schema(schema, 'ws-schema')}"
            )
    return "".join(parts)


def _message_links(refs: list[dict[str, str]]) -> str:
    names = (ref["$ref"].rsplit("/", 1)[-1] for ref in refs)
    return ", ".join(f'<a href="#message-{escape(name)}">{escape(name)}</a>' for name in names)


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    auth = " &middot; bearer token" if op.get("security") else ""
    parts = [
        f'<div class=op id="{escape(op["operationId"])}">',
        f"<h3><span class=method>{escape(method)}</span> <code>{escape(path)}</code></h3>",
        f"<p>{escape(op['summary'])}{auth}</p>",
    ]
    parameters = op.get("parameters", [])
    if parameters:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{'yes' if p.get('required') else ''}</td><td>{_type(p['schema'])}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th>"
            f"<th></th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        parts.append(f"<p>Body: {_content(body['content'])}</p>")
    rows = "".join(
        f"<tr><td>{escape(status)}</td><td>{escape(reply['description'])}</td>"
        f"<td>{_content(reply.get('content', {}))}</td></tr>"
        for status, reply in op["responses"].items()
    )
    parts.append(f"<table><tr><th>status</th><th>meaning</th><th>body</th></tr>{rows}</table>")
    parts.append("</div>")
    return "".join(parts)


def _content(content: dict[str, Any]) -> str:
    return ", ".join(
        f"{_type(media['schema'])} <small>({escape(media_type)})</small>"
        for media_type, media in content.items()
    )


def _type(schema: dict[str, Any], anchor: str = "schema") -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#{anchor}-{escape(name)}">{escape(name)}</a>'
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return " | ".join(_type(option, anchor) for option in schema[union])
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}), anchor)}"
    detail = schema.get("format") or schema.get("pattern")
    return escape(f"{kind} ({detail})" if detail else str(kind))


def _schema(schema: dict[str, Any], anchor: str = "schema") -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p>{_type(schema, anchor)}</p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td>{_type(prop, anchor)}</td>"
        f"<td>{'yes' if name in required else ''}</td>"
        f"<td>{escape(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items()
    )
    intro = f"<p>{escape(schema['description'])}</p>" if schema.get("description") else ""
    return (
        f"{intro}<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>"
        f"{rows}</table>"
    )
