"""Webhook delivery against a real HTTP/1.1 receiver on 127.0.0.1 (allow_private=True).

The receiver is a few lines of asyncio.start_server, so each test decides exactly how it
misbehaves (never answers, dribbles, floods, redirects) and counts every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import socket
import ssl
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coinlink.alerts import webhooks
from coinlink.alerts.webhooks import deliver, sign
from tests.support.webhook_receiver import Received, answer, receiver

SECRET = "whsec_integration"


async def post(
    url: str,
    body: bytes = b'{"kind":"price_alert"}',
    *,
    allow_private: bool = True,
    timeout_s: float = 2.0,
    client: httpx.AsyncClient | None = None,
    resolve: webhooks.Resolver = webhooks.resolve_host,
) -> webhooks.DeliveryResult:
    timestamp = int(time.time())
    hdrs = webhooks.headers("dlv-1", timestamp, sign(SECRET, timestamp, body))
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(webhooks.new_client())
        return await deliver(client, url, body, hdrs, allow_private=allow_private,
                             timeout_s=timeout_s, resolve=resolve)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_receiver_verifies_the_signature_over_the_exact_body() -> None:
    verdicts: list[bool] = []

    async def verifying(received: Received, writer: asyncio.StreamWriter) -> None:
        timestamp = received.headers["x-coinlink-timestamp"]
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256)
        expected = "sha256=" + mac.hexdigest()
        verdicts.append(hmac.compare_digest(expected, received.headers["x-coinlink-signature"]))
        await answer(204)(received, writer)

    body = '{"id":"n1","title":"BTC-USD above 64000","note":"café ✓"}'.encode()
    async with receiver(verifying) as rcv:
        result = await post(f"http://127.0.0.1:{rcv.port}/hook?src=coinlink", body)
    assert result.ok and result.status == 204 and not result.retryable and result.error is None
    assert verdicts == [True]
    (req,) = rcv.requests
    assert (req.method, req.target, req.body) == ("POST", "/hook?src=coinlink", body)
    assert req.headers["x-coinlink-delivery"] == "dlv-1"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == "CoinLink-Webhooks/1"
    assert abs(int(req.headers["x-coinlink-timestamp"]) - time.time()) < 5


async def test_500_is_retryable_with_the_answer_in_the_error() -> None:
    async with receiver(answer(500, b"database is down")) as rcv:
        result = await post(f"http://127.0.0.1:{rcv.port}/")
    assert (result.ok, result.status, result.retryable) == (False, 500, True)
    assert result.error == "HTTP 500: database is down"


async def test_404_is_permanent() -> None:
    async with receiver(answer(404)) as rcv:
        result = await post(f"http://127.0.0.1:{rcv.port}/")
    assert (result.ok, result.status, result.retryable, result.error) == (
        False, 404, False, "HTTP 404",
    )  # fmt: skip


async def test_302_is_not_followed() -> None:
    async with receiver(answer(302, extra="Location: /elsewhere\r\n")) as rcv:
        result = await post(f"http://127.0.0.1:{rcv.port}/hook")
    assert (result.ok, result.status, result.retryable) == (False, 302, False)
    assert result.error is not None and "'/elsewhere' not followed" in result.error
    assert [r.target for r in rcv.requests] == ["/hook"]


async def test_receiver_that_never_answers_times_out_as_retryable() -> None:
    async def silent(received: Received, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # never answers

    async with receiver(silent) as rcv:
        started = time.monotonic()
        result = await post(f"http://127.0.0.1:{rcv.port}/", timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert (result.ok, result.status, result.retryable) == (False, None, True)
    assert result.error == "timed out after 0.5 s"
    # Not before the deadline; after it, only a loaded machine's delay (never an answer).
    assert 0.45 <= elapsed < 3
    assert 450 <= result.duration_ms < 3000
    assert len(rcv.requests) == 1


async def test_dribbling_receiver_cannot_stretch_the_deadline() -> None:
    # A byte every 50 ms never trips a per-read timeout; the attempt's total deadline does.
    async def dribble(received: Received, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    async with receiver(dribble) as rcv:
        started = time.monotonic()
        result = await post(f"http://127.0.0.1:{rcv.port}/", timeout_s=0.5)
    assert time.monotonic() - started < 3  # the dribble would last 50 s
    assert result.retryable and result.error == "timed out after 0.5 s"


async def test_refused_connection_is_retryable() -> None:
    result = await post(f"http://127.0.0.1:{free_port()}/")
    assert (result.ok, result.status, result.retryable) == (False, None, True)
    assert result.error is not None and result.error.startswith("connection failed: ConnectError")


async def test_huge_response_body_is_not_buffered() -> None:
    chunk = b"x" * 65536
    sent = 0

    async def flood(received: Received, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 1073741824\r\n\r\n")  # 1 GiB
        while sent < 1 << 30:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    async with receiver(flood) as rcv, webhooks.new_client() as client:
        tracemalloc.start()  # after the client exists: its TLS context is not the point
        try:
            result = await post(f"http://127.0.0.1:{rcv.port}/", timeout_s=5, client=client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (result.status, result.retryable) == (500, True)
    assert result.error == "HTTP 500: " + "x" * 200
    assert result.duration_ms < 2000
    assert peak < 1 << 20, f"peak {peak} bytes while a 1 GiB body was offered"
    assert sent < 64 << 20  # the connection was dropped, not drained


async def test_private_address_is_refused_without_any_connection() -> None:
    async with receiver(answer(200)) as rcv:
        result = await post(f"http://127.0.0.1:{rcv.port}/", allow_private=False)
        named = await post(f"http://localhost:{rcv.port}/", allow_private=False)
    for refused in (result, named):
        assert (refused.ok, refused.status, refused.retryable) == (False, None, False)
        assert refused.error is not None and "loopback" in refused.error
    assert rcv.connections == 0


async def test_connection_goes_to_the_resolved_address_with_the_original_host() -> None:
    calls: list[str] = []

    async def dns(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"]

    async with receiver(answer(200)) as rcv:
        result = await post(f"http://receiver.test:{rcv.port}/in", resolve=dns)
    assert result.ok
    assert calls == ["receiver.test"]  # one resolution: httpx never resolved the name again
    assert rcv.requests[0].headers["host"] == f"receiver.test:{rcv.port}"


# --- https: SNI and certificate verification against the name, not the pinned address ----


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``name`` only, and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


@pytest.mark.parametrize("cert_name", ["receiver.test", "someone-else.test"])
async def test_https_pinned_connection_sends_sni_and_verifies_the_name(
    tmp_path: Path, cert_name: str
) -> None:
    server_ctx, client_ctx = self_signed(tmp_path, cert_name)
    sni: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        sni.append(name)

    server_ctx.sni_callback = record_sni

    async def dns(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    async with (
        receiver(answer(200), server_ctx) as rcv,
        httpx.AsyncClient(verify=client_ctx, trust_env=False) as client,
    ):
        result = await post(f"https://receiver.test:{rcv.port}/", client=client, resolve=dns)
    assert sni == ["receiver.test"]  # not 127.0.0.1
    if cert_name == "receiver.test":
        assert result.ok and result.status == 200
        assert rcv.requests[0].headers["host"] == f"receiver.test:{rcv.port}"
    else:  # the certificate was checked against the name we were asked to call
        assert not result.ok and result.retryable and rcv.requests == []
        assert result.error is not None and "certificate" in result.error.lower()
