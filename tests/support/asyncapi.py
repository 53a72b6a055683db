"""The served AsyncAPI document as a check on what the server really sends: the test clients
(:mod:`tests.support.ws`) hold every frame they receive to the document's server messages,
and every close to its list of closes, so the whole WebSocket suite enforces the document."""

from __future__ import annotations

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


@cache
def _validators() -> dict[str, tuple[str, Draft7Validator]]:
    """Each server message: (the ``type`` its frames have, the validator of its payload)."""
    doc = served_document()
    registry: Registry[Any] = Registry().with_resource(_BASE, DRAFT7.create_resource(doc))
    validators = {}
    for name in server_messages(doc):
        ref = doc["components"]["messages"][name]["payload"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        validator = Draft7Validator(
            {"$ref": _BASE + ref},
            registry=registry,
            format_checker=Draft7Validator.FORMAT_CHECKER,
        )
        validators[name] = (schema["properties"]["type"]["const"], validator)
    return validators


def check_frame(frame: Any) -> None:
    """AssertionError unless ``frame`` is one of the server messages the document lists."""
    validators = _validators()
    if any(validator.is_valid(frame) for _, validator in validators.values()):
        return
    kind = frame.get("type") if isinstance(frame, dict) else None
    reasons = [
        f"{name}: {error.message} at {list(error.absolute_path)}"
        for name, (type_, validator) in validators.items()
        if type_ == kind and (error := best_match(validator.iter_errors(frame))) is not None
    ]
    raise AssertionError(
        f"not a frame of the AsyncAPI document: {frame!r}\n"
        + ("\n".join(reasons) or f"no message has type {kind!r}")
    )


def check_close(code: int, reason: str) -> None:
    """AssertionError unless the document lists this close (a library's close: any reason)."""
    closes = served_document()["channels"]["socket"]["x-close-codes"]
    if not any(c["code"] == code and c["reason"] in (None, reason) for c in closes):
        raise AssertionError(f"close {code} {reason!r} is not in the AsyncAPI document")
