"""A refresh's kept answer opens only with the spent token it was sealed for."""

from __future__ import annotations

from coinlink.accounts.successors import seal, unseal


def test_only_the_spent_token_opens_the_answer() -> None:
    sealed = seal("spent-token", b'{"refresh_token": "next"}')
    assert b"next" not in sealed
    assert unseal("spent-token", sealed) == b'{"refresh_token": "next"}'
    assert unseal("another-token", sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert unseal("spent-token", tampered) is None
