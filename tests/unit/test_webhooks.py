"""Webhook building blocks: URL rules (SSRF), signing, the give-up rule, and deliver's decisions.

Delivery against a real receiver is in tests/integration/test_webhook_delivery.py; here
deliver runs on httpx.MockTransport to see exactly which request it builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinlink import backoff
from coinlink.alerts import webhooks
from coinlink.alerts.webhooks import (
    BASE_DELAY_S,
    MAX_AGE_S,
    MAX_ATTEMPTS,
    MAX_DELAY_S,
    DeliveryResult,
    UnresolvableUrl,
    UnsafeUrl,
    check_url,
    deliver,
    gives_up,
    sign,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"


def fake_dns(answers: dict[str, Sequence[str]]) -> webhooks.Resolver:
    """A resolver answering from a table (no network), failing like getaddrinfo otherwise."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return answers[host]

    return resolve


PUBLIC_DNS = fake_dns({"hooks.example.com": [PUBLIC_V4, PUBLIC_V6]})


async def refused(url: str, resolve: webhooks.Resolver = PUBLIC_DNS) -> str:
    with pytest.raises(UnsafeUrl) as info:
        await check_url(url, allow_private=False, resolve=resolve)
    return info.value.message


# --- URL rules ---------------------------------------------------------------------------


async def test_public_url_is_accepted_and_normalised() -> None:
    assert (
        await check_url("HTTPS://Hooks.Example.COM:443/in?x=1#frag", allow_private=False,
                        resolve=PUBLIC_DNS)
        == "https://hooks.example.com/in?x=1"
    )  # fmt: skip
    assert (
        await check_url("http://hooks.example.com:8080/", allow_private=False, resolve=PUBLIC_DNS)
        == "http://hooks.example.com:8080/"
    )
    assert await check_url(f"http://{PUBLIC_V4}/h", allow_private=False) == f"http://{PUBLIC_V4}/h"
    assert await check_url(f"https://[{PUBLIC_V6}]/", allow_private=False) == (
        f"https://[{PUBLIC_V6}]/"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.1/", "a private address"),
        ("http://172.16.5.4/", "a private address"),
        ("http://192.168.1.1/", "a private address"),
        ("http://[fc00::1]/", "a private address"),
        ("http://[fd12:3456::1]/", "a private address"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://224.0.1.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),  # broadcast
        ("http://192.0.2.10/", "special-purpose"),  # documentation
        ("http://198.51.100.10/", "special-purpose"),
        ("http://203.0.113.10/", "special-purpose"),
        ("http://198.18.0.1/", "special-purpose"),  # benchmarking
        ("http://[2001:db8::1]/", "special-purpose"),
        ("http://[3fff::1]/", "special-purpose"),  # documentation (RFC 9637)
        ("http://[fec0::1]/", "special-purpose"),  # deprecated site-local
        ("http://192.88.99.1/", "special-purpose"),  # 6to4 relay anycast
        # IPv6 forms that carry an IPv4 address are judged by it.
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1 embedded"),
        ("http://[::ffff:7f00:1]/", "127.0.0.1 embedded"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata address (169.254.169.254 embedded"),
        ("http://[::ffff:10.0.0.1]/", "10.0.0.1 embedded"),
        ("http://[::127.0.0.1]/", "127.0.0.1 embedded"),  # IPv4-compatible
        ("http://[64:ff9b::10.0.0.1]/", "10.0.0.1 embedded"),  # NAT64
        ("http://[2002:7f00:1::]/", "127.0.0.1 embedded"),  # 6to4
        ("http://[2002:a9fe:a9fe::]/", "169.254.169.254 embedded"),
    ],
)
async def test_literal_non_public_addresses_are_refused(url: str, why: str) -> None:
    message = await refused(url)
    assert why in message
    assert "publicly routable" in message


@pytest.mark.parametrize(
    "url",
    ["http://2130706433/", "http://0x7f.1/", "http://0x7f000001/", "http://0177.0.0.1/",
     "http://127.1/", "http://017700000001/"],
)  # fmt: skip
async def test_numeric_tricks_for_loopback_are_refused_with_real_resolution(url: str) -> None:
    # getaddrinfo turns these into the address they mean (httpx's parser refuses 0177.0.0.1
    # outright); were a platform's getaddrinfo to refuse them, they would still be refused.
    message = await refused(url, resolve=webhooks.resolve_host)
    assert any(why in message for why in ("127.0.0.1", "does not resolve", "Invalid IPv4"))


async def test_localhost_is_refused_with_real_resolution() -> None:
    message = await refused("http://localhost:8080/hook", resolve=webhooks.resolve_host)
    assert "localhost resolves to" in message
    assert "loopback" in message


async def test_name_resolving_to_loopback_is_refused() -> None:
    dns = fake_dns({"rebind.example.com": ["127.0.0.1"]})
    message = await refused("https://rebind.example.com/", resolve=dns)
    assert message.startswith("rebind.example.com resolves to 127.0.0.1, a loopback address")


async def test_one_non_public_answer_among_public_ones_is_enough_to_refuse() -> None:
    dns = fake_dns({"mixed.example.com": [PUBLIC_V4, "10.1.2.3", PUBLIC_V6]})
    assert "10.1.2.3" in await refused("http://mixed.example.com/", resolve=dns)
    dns6 = fake_dns({"mixed.example.com": [PUBLIC_V4, "::ffff:169.254.169.254"]})
    assert "cloud metadata" in await refused("http://mixed.example.com/", resolve=dns6)


async def test_unresolvable_and_slow_names_are_refused() -> None:
    with pytest.raises(UnresolvableUrl, match="does not resolve"):
        await check_url("http://nowhere.invalid/", allow_private=False, resolve=fake_dns({}))
    with pytest.raises(UnresolvableUrl, match="any address"):
        await check_url("http://empty.example/", allow_private=False,
                        resolve=fake_dns({"empty.example": []}))  # fmt: skip

    async def hangs(host: str, port: int) -> Sequence[str]:
        await asyncio.Event().wait()  # never answers
        return []

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UnresolvableUrl, match="did not resolve within 2 s"):
        await check_url("http://slow.example/", allow_private=False, resolve=hangs)
    assert loop.time() - started < webhooks.RESOLVE_TIMEOUT_S + 1


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/", "scheme must be http or https, not 'ftp'"),
        ("file:///etc/passwd", "not 'file'"),
        ("javascript:alert(1)", "not 'javascript'"),
        ("gopher://hooks.example.com:70/", "not 'gopher'"),
        ("hooks.example.com/in", "not none"),
        ("//hooks.example.com/in", "not none"),
        ("http:///in", "no host"),
        ("http://user:pass@hooks.example.com/", "user name or password"),
        ("http://user@hooks.example.com/", "user name or password"),
        ("http://hooks.example.com\\@127.0.0.1/", "user name or password"),
        ("http://hooks.example.com:0/", "between 1 and 65535, not 0"),
        ("http://hooks.example.com:65536/", "not 65536"),
        ("http://hooks.example.com:99999999/", "between 1 and 65535"),
        ("http://hooks.example.com:x/", "not a valid URL"),
        ("http://hooks example.com/", "spaces"),
        ("http://hooks.example.com/\r\nX-Injected: 1", "control characters"),
        ("http://hooks_.exa%mple.com/", "not a valid"),
        ("http://[fe80::1%25eth0]/", "zone identifier"),
        ("http://[zz::1]/", "not a valid URL"),
        ("https://" + "a" * 2040 + ".com/", "longer than 2048"),
    ],
)
async def test_syntactic_rules(url: str, why: str) -> None:
    assert why in await refused(url)


async def test_allow_private_skips_the_address_rules_only() -> None:
    for url in ("http://127.0.0.1:9000/", "http://10.0.0.1/", "http://[::1]/",
                "http://localhost/", "http://name.that.does.not.resolve.invalid/"):  # fmt: skip
        assert await check_url(url, allow_private=True) == url
    for url in ("ftp://127.0.0.1/", "http://u:p@127.0.0.1/", "http://127.0.0.1:0/"):
        with pytest.raises(UnsafeUrl):
            await check_url(url, allow_private=True)


_LABELS = st.one_of(
    st.from_regex(r"[a-z0-9_-]{0,70}", fullmatch=True),
    st.from_regex(r"xn--[a-z0-9-]{0,12}", fullmatch=True),  # punycode, valid or not
    st.text(max_size=12),  # any script, mixed, full-width dots, emoji, joiners...
    st.sampled_from(["", "%2e", "%61", "127", "0x7f", "[::1]", "[v1.x]", "\u3002", "ß"]),
)
_HOSTS = st.lists(_LABELS, min_size=1, max_size=5).map(".".join) | st.builds(
    "{}.".format, st.lists(_LABELS, min_size=1, max_size=3).map(".".join)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=_HOSTS, allow_private=st.booleans())
async def test_any_host_name_is_accepted_or_refused_with_a_reason(
    host: str, allow_private: bool
) -> None:
    """Odd IDNA names (bad A-labels, overlong or empty labels, trailing dots, mixed scripts,
    IP literals, percent-encoding) gave a 500: each is now a URL or an :class:`UnsafeUrl`."""
    try:
        url = await check_url(
            f"https://{host}/hook", allow_private=allow_private, resolve=fake_dns({})
        )
    except UnsafeUrl as exc:
        assert exc.message
    else:
        assert url.startswith("https://")


def test_unsafe_reason_accepts_public_addresses() -> None:
    from ipaddress import ip_address

    for text in (PUBLIC_V4, "1.1.1.1", PUBLIC_V6, "64:ff9b::808:808", "::ffff:8.8.8.8",
                 "2002:808:808::"):  # fmt: skip
        assert webhooks.unsafe_reason(ip_address(text)) is None, text
    # The deprecated IPv4-compatible form is never a real destination.
    assert webhooks.unsafe_reason(ip_address("::8.8.8.8")) == "a reserved address"


# --- signing -----------------------------------------------------------------------------


def test_signature_known_answer() -> None:
    body = b'{"id":"n1","kind":"price_alert","data":{"price":"64000.5"}}'
    expected = hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_test", 1700000000, body) == "sha256=" + expected
    # A fixed vector, so a change of the construction cannot go unnoticed.
    assert sign("secret", 0, b"{}") == (
        "sha256=" + hmac.new(b"secret", b"0.{}", hashlib.sha256).hexdigest()
    )
    assert sign("secret", 1, b"{}") != sign("secret", 0, b"{}")
    assert sign("other", 0, b"{}") != sign("secret", 0, b"{}")


def test_headers() -> None:
    assert webhooks.headers("d-1", 1700000000, "sha256=ab") == {
        "X-CoinLink-Delivery": "d-1",
        "X-CoinLink-Timestamp": "1700000000",
        "X-CoinLink-Signature": "sha256=ab",
        "Content-Type": "application/json",
        "User-Agent": "CoinLink-Webhooks/1",
    }


# --- giving up (the waits themselves: tests/unit/test_backoff.py) -------------------------


def test_give_up_after_max_attempts_or_max_age() -> None:
    assert not gives_up(MAX_ATTEMPTS - 1, 60)
    assert gives_up(MAX_ATTEMPTS, 60)
    assert gives_up(1, MAX_AGE_S)
    # The whole schedule fits in the age limit: attempts, not age, normally end a delivery.
    worst = sum(
        backoff.delay(n, base_s=BASE_DELAY_S, cap_s=MAX_DELAY_S, rng=lambda: 1.0)
        for n in range(1, MAX_ATTEMPTS)
    )
    assert 2 * 3600 < worst < MAX_AGE_S


# --- deliver's decisions (mock transport) ------------------------------------------------


class Recorder:
    def __init__(self, status: int = 200, **response: object) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.response = response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, **self.response)  # type: ignore[arg-type]


async def mock_deliver(
    recorder: Recorder, url: str = "https://hooks.example.com:8443/in?x=1",
    resolve: webhooks.Resolver = PUBLIC_DNS, allow_private: bool = False,
) -> DeliveryResult:  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        return await deliver(client, url, b'{"a":1}', webhooks.headers("d", 1, "sha256=x"),
                             allow_private=allow_private, resolve=resolve)  # fmt: skip


async def test_https_request_is_pinned_to_the_checked_address() -> None:
    recorder = Recorder(204)
    result = await mock_deliver(recorder)
    assert result.ok and result.status == 204 and result.error is None
    (request,) = recorder.requests
    assert str(request.url) == f"https://{PUBLIC_V4}:8443/in?x=1"
    assert request.headers["Host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["X-CoinLink-Delivery"] == "d"
    assert request.content == b'{"a":1}'


async def test_http_request_is_pinned_and_ipv6_is_bracketed() -> None:
    recorder = Recorder()
    dns = fake_dns({"v6.example.com": [PUBLIC_V6]})
    assert (await mock_deliver(recorder, "http://v6.example.com/h", dns)).ok
    (request,) = recorder.requests
    assert str(request.url) == f"http://[{PUBLIC_V6}]/h"
    assert request.headers["Host"] == "v6.example.com"
    assert "sni_hostname" not in request.extensions


async def test_literal_address_is_sent_as_is() -> None:
    recorder = Recorder()
    assert (await mock_deliver(recorder, f"https://{PUBLIC_V4}/h")).ok
    assert recorder.requests[0].headers["Host"] == PUBLIC_V4
    assert "sni_hostname" not in recorder.requests[0].extensions


async def test_rebinding_after_the_check_cannot_move_the_connection() -> None:
    # The name answers a public address once, then loopback: the one resolution we do is
    # the one we connect to.
    answers = iter([[PUBLIC_V4], ["127.0.0.1"], ["127.0.0.1"]])
    calls = 0

    async def rebinding(host: str, port: int) -> Sequence[str]:
        nonlocal calls
        calls += 1
        return next(answers)

    recorder = Recorder()
    assert (await mock_deliver(recorder, "http://rebind.example.com/", rebinding)).ok
    assert calls == 1
    assert recorder.requests[0].url.host == PUBLIC_V4


async def test_delivery_recheck_refuses_a_name_that_now_resolves_to_loopback() -> None:
    recorder = Recorder()
    dns = fake_dns({"hooks.example.com": ["127.0.0.1"]})
    result = await mock_deliver(recorder, "http://hooks.example.com/", dns)
    assert result == DeliveryResult(False, None, result.error, result.duration_ms, False)
    assert result.error is not None and "loopback" in result.error
    assert recorder.requests == []


async def test_unresolvable_at_delivery_is_retryable() -> None:
    recorder = Recorder()
    result = await mock_deliver(recorder, "http://gone.example.com/", fake_dns({}))
    assert not result.ok and result.retryable and result.status is None
    assert result.error is not None and "does not resolve" in result.error
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False), (201, True, False), (204, True, False), (299, True, False),
        (301, False, False), (302, False, False), (307, False, False), (308, False, False),
        (400, False, False), (401, False, False), (404, False, False), (410, False, False),
        (408, False, True), (429, False, True),
        (500, False, True), (502, False, True), (503, False, True), (504, False, True),
    ],
)  # fmt: skip
async def test_status_classification(status: int, ok: bool, retryable: bool) -> None:
    result = await mock_deliver(Recorder(status, headers={"Location": "http://10.0.0.1/"}))
    assert (result.ok, result.status, result.retryable) == (ok, status, retryable)
    assert (result.error is None) == ok


async def test_error_text_is_short_and_printable() -> None:
    result = await mock_deliver(Recorder(503, content=b"down\r\n\x1b[31mfor\tmaint" + b"x" * 9000))
    assert result.error is not None
    assert result.error.startswith("HTTP 503: down [31mfor maint")
    assert len(result.error) <= 220 and result.error.isprintable()
    redirect = await mock_deliver(Recorder(302, headers={"Location": "http://10.0.0.1/x"}))
    assert redirect.error == "HTTP 302: redirect to 'http://10.0.0.1/x' not followed"


async def test_redirects_are_not_followed_even_by_a_following_client() -> None:
    recorder = Recorder(302, headers={"Location": "http://127.0.0.1/"})
    transport = httpx.MockTransport(recorder)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        result = await deliver(client, "http://hooks.example.com/", b"{}", {},
                               allow_private=False, resolve=PUBLIC_DNS)  # fmt: skip
    assert result.status == 302 and not result.retryable
    assert len(recorder.requests) == 1


def test_new_client_trusts_nothing_from_the_environment_and_keeps_no_cookies() -> None:
    client = webhooks.new_client()
    assert client.follow_redirects is False
    assert client.trust_env is False
    response = httpx.Response(
        200, headers={"Set-Cookie": "s=1; Path=/"}, request=httpx.Request("GET", "http://1.1.1.1/")
    )
    client.cookies.extract_cookies(response)
    assert len(client.cookies.jar) == 0
