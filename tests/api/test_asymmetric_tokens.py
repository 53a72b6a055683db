"""Access tokens signed with EdDSA or RS256 key files instead of the HMAC secret."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sanic_testing.reusable import ReusableClient

from tests.support.accounts import forge, register
from tests.support.apps import TEST_SECRET, build_app
from tests.support.services import free_port


def write_keys(directory: Path, algorithm: str) -> tuple[Path, Path, object]:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "EdDSA"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    private, public = directory / "jwt.pem", directory / "jwt.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, key


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
def test_key_file_algorithms_sign_and_verify(
    algorithm: str, tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    private, public, key = write_keys(tmp_path, algorithm)
    app = build_app(
        pg_url,
        redis_url,
        jwt_algorithm=algorithm,
        jwt_secret=None,
        jwt_private_key_file=str(private),
        jwt_public_key_file=str(public),
    )
    with ReusableClient(app, port=free_port()) as client:
        tokens = register(client)["tokens"]
        assert jwt.get_unverified_header(tokens["access_token"])["alg"] == algorithm
        me = client.get(
            "/api/v2/users/me", headers={"authorization": f"Bearer {tokens['access_token']}"}
        )[1]
        assert me.status == 200
        claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
        # An HS256 token made with the public key as its secret (the classic confusion
        # attack), or with the test secret, is refused.
        for forged in (
            forge(claims, key=public.read_bytes().decode()[:64] * 2),
            forge(claims, key=TEST_SECRET),
        ):
            response = client.get(
                "/api/v2/users/me", headers={"authorization": f"Bearer {forged}"}
            )[1]
            assert response.status == 401
        resigned = jwt.encode(claims, key, algorithm=algorithm)  # the real key: accepted
        assert (
            client.get("/api/v2/users/me", headers={"authorization": f"Bearer {resigned}"})[
                1
            ].status
            == 200
        )
