"""What a refresh answered, kept for a moment for a second tab presenting the same token.

Two tabs of one browser often refresh with the same token at once: the loser would look
like a thief replaying a spent token, and reuse detection would revoke the session. So the
winner's answer (the new access and refresh tokens) is kept in the bus for
``COINLINK_REFRESH_REUSE_GRACE_S`` and given again to whoever presents the same spent token
within it.

The answer holds live credentials, so it is sealed (AES-GCM) under a key derived from the
spent token itself: only a holder of that token can open it, and the bus, its backups and
the database (which keeps only the token's SHA-256) reveal nothing.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_CONTEXT = b"coinlink refresh successor\x00"
_NONCE_BYTES = 12


def _cipher(spent_token: str) -> AESGCM:
    return AESGCM(hashlib.sha256(_KEY_CONTEXT + spent_token.encode()).digest())


def seal(spent_token: str, answer: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _cipher(spent_token).encrypt(nonce, answer, None)


def unseal(spent_token: str, sealed: bytes) -> bytes | None:
    """The answer sealed for ``spent_token``; None when it is not (tampered, or another's)."""
    try:
        return _cipher(spent_token).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
    except InvalidTag:
        return None
