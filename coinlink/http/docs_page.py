"""The API reference page, rendered on the server from the documents: no script, no CDN.

One page lists each OpenAPI operation (parameters, body, responses) and each schema. The
page is a list of sections: another document (the WebSocket API's) adds its own section
through :func:`render`'s ``extra_sections``.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}
pre{padding:.5rem;overflow-x:auto}
.op{border-top:1px solid #ddd;padding:.5rem 0}
.method{font-weight:bold;text-transform:uppercase;display:inline-block;min-width:4rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
"""


def render(openapi: dict[str, Any], extra_sections: Iterable[str] = ()) -> str:
    """The whole page: the OpenAPI reference, then ``extra_sections`` (HTML, already safe)."""
    info = openapi["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info['title'])} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info['title'])} API {escape(info['version'])}</h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        '<p>Machine-readable: <a href="/docs/openapi.json">OpenAPI 3.1 (JSON)</a></p>',
        openapi_section(openapi),
        *extra_sections,
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


def _type(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    detail = schema.get("format") or schema.get("pattern")
    return escape(f"{kind} ({detail})" if detail else str(kind))


def _schema(schema: dict[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p>{_type(schema)}</p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td>{_type(prop)}</td>"
        f"<td>{'yes' if name in required else ''}</td>"
        f"<td>{escape(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items()
    )
    intro = f"<p>{escape(schema['description'])}</p>" if schema.get("description") else ""
    return (
        f"{intro}<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>"
        f"{rows}</table>"
    )
