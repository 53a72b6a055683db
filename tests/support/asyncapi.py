"""The served AsyncAPI document as a check on what the server really sends: the test clients
(:mod:`tests.support.ws`) hold every frame they receive to the document's server messages,
and every close to its list of closes, so the whole WebSocket suite enforces the document."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT7

from coinlink.realtime.asyncapi import document
from config import Settings

# A base URI for the document's own "#/components/..." references.
_BASE = "https://coinlink.invalid/asyncapi.json"


@cache
def served_document() -> dict[str, Any]:
    # The schemas and closes do not depend on settings (only the descriptions' limits do).
    return document(Settings())


def message_name(ref: dict[str, str]) -> str:
    """``{"$ref": "#/channels/socket/messages/Pong"}`` -> ``Pong``."""
    return ref["$ref"].rsplit("/", 1)[1]


def server_messages(doc: dict[str, Any]) -> list[str]:
    """What the server sends: the messages of ``send`` operations and every reply."""
    names: list[str] = []
    for operation in doc["operations"].values():
        refs = operation["messages"] if operation["action"] == "send" else []
        refs = refs + operation.get("reply", {}).get("messages", [])
        names += [message_name(ref) for ref in refs if message_name(ref) not in names]
    return names


class _Message:
    """One server message: what tells its frames apart (``type``, and ``op`` or ``channel``
    where the schema fixes them), and the validator of its payload."""

    def __init__(self, schema: dict[str, Any], validator: Draft7Validator) -> None:
        fields = schema["properties"]
        self.type = fields["type"]["const"]
        self.op = fields.get("op", {}).get("const")
        channel = fields.get("channel", {})
        self.channel = channel.get("const")
        self.channel_pattern = re.compile(channel["pattern"]) if "pattern" in channel else None
        self.validator = validator

    def claims(self, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` is meant to be this message (valid or not)."""
        channel = frame.get("channel")
        return (
            frame.get("type") == self.type
            and (self.op is None or frame.get("op") == self.op)
            and (self.channel is None or channel == self.channel)
            and (
                self.channel_pattern is None
                or (isinstance(channel, str) and self.channel_pattern.match(channel) is not None)
            )
        )


@cache
def _messages() -> dict[str, _Message]:
    doc = served_document()
    registry: Registry[Any] = Registry().with_resource(_BASE, DRAFT7.create_resource(doc))
    messages = {}
    for name in server_messages(doc):
        ref = doc["components"]["messages"][name]["payload"]["$ref"]
        validator = Draft7Validator(
            {"$ref": _BASE + ref},
            registry=registry,
            format_checker=Draft7Validator.FORMAT_CHECKER,
        )
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        messages[name] = _Message(schema, validator)
    return messages


def check_frame(frame: Any) -> None:
    """AssertionError unless ``frame`` is one of the server messages the document lists."""
    claimed = {}
    if isinstance(frame, dict):
        claimed = {name: m for name, m in _messages().items() if m.claims(frame)}
    if any(message.validator.is_valid(frame) for message in claimed.values()):
        return
    reasons = [
        f"{name}: {error.message} at {list(error.absolute_path)}"
        for name, message in claimed.items()
        if (error := best_match(message.validator.iter_errors(frame))) is not None
    ]
    raise AssertionError(
        f"not a frame of the AsyncAPI document: {frame!r}\n"
        + ("\n".join(reasons) or "no message of the document has this type, op or channel")
    )


def check_close(code: int, reason: str) -> None:
    """AssertionError unless the document lists this close (a library's close: any reason)."""
    closes = served_document()["channels"]["socket"]["x-close-codes"]
    if not any(c["code"] == code and c["reason"] in (None, reason) for c in closes):
        raise AssertionError(f"close {code} {reason!r} is not in the AsyncAPI document")
