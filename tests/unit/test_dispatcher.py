"""The webhook dispatcher on a real PostgreSQL database, the in-process bus and a real HTTP
receiver on 127.0.0.1 (tests/support/webhook_receiver.py).

What a user's receiver sees: each due delivery POSTed once, signed with the user's secret,
with the same delivery id on every attempt; a receiver that fails gets the delivery again
later, with growing pauses, until it succeeds or the dispatcher gives up; the user's
delivery log records every attempt. Only the holder of the ``webhooks`` lease delivers.
What one POST's answer means is tests/unit/test_webhooks.py's and
tests/integration/test_webhook_delivery.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from tortoise.expressions import Q

from coinlink.alerts import webhooks
from coinlink.alerts.dispatcher import LEASE, Dispatcher
from coinlink.bus import MemoryBus
from models.accounts import User
from models.alerts import OutboxItem, WebhookAttempt
from tests.support.alert_rows import new_user, owed
from tests.support.metrics import sample
from tests.support.services import until
from tests.support.webhook_receiver import Received, Receiver, answer, receiver

SECRET = "whsec_dispatcher_test"


@pytest.fixture
def bus(db: None) -> MemoryBus:
    return MemoryBus()


def dispatcher(bus: MemoryBus, **options: Any) -> Dispatcher:
    return Dispatcher(bus, **{"allow_private": True, "timeout_s": 2.0, **options})


async def drained(dispatcher: Dispatcher) -> int:
    async with webhooks.new_client() as client:
        return await dispatcher.drain(client)


async def hooked_user(rcv: Receiver, secret: str | None = SECRET) -> User:
    return await new_user(f"http://127.0.0.1:{rcv.port}/hook?u=1", secret)


async def attempts_of(item: OutboxItem) -> list[tuple[int, int | None, bool, str]]:
    rows = await WebhookAttempt.filter(delivery_id=item.id).order_by("attempt")
    return [(row.attempt, row.status_code, row.ok, row.error) for row in rows]


def answering(*statuses: int) -> Any:
    """A receiver's answers in turn (the last one repeated)."""
    queue = list(statuses)

    async def respond(received: Received, writer: asyncio.StreamWriter) -> None:
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        await answer(status, b"busy" if status >= 500 else b"")(received, writer)

    return respond


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until_done(item: OutboxItem) -> OutboxItem:
    """The row once delivered or given up."""

    async def finished() -> bool:
        ended = Q(done_at__isnull=False) | Q(failed_at__isnull=False)
        return await OutboxItem.exists(ended, id=item.id)

    await until(finished, what=f"delivery {item.id} finished")
    return await OutboxItem.get(id=item.id)


# -- one drain ---------------------------------------------------------------------------------


async def test_a_due_delivery_is_posted_signed_and_logged(bus: MemoryBus) -> None:
    delivered_before = sample("webhook_attempts_total", outcome="delivered")
    async with receiver(answer(204)) as rcv:
        user = await hooked_user(rcv)
        item = await owed(user, "webhook")
        assert await drained(dispatcher(bus)) == 1
    (request,) = rcv.requests
    assert (request.method, request.target) == ("POST", "/hook?u=1")
    body = orjson.loads(request.body)
    assert body["id"] == str(item.notification_id)  # type: ignore[attr-defined]
    assert (body["kind"], body["title"], body["data"]) == (
        "price_alert",
        "BTC-USD above 100",
        {"symbol": "BTC-USD", "price": "100"},
    )
    assert request.headers["x-coinlink-delivery"] == str(item.id)
    stamp = request.headers["x-coinlink-timestamp"]
    assert abs(int(stamp) - time.time()) < 60
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["x-coinlink-signature"] == "sha256=" + mac.hexdigest()

    row = await OutboxItem.get(id=item.id)
    assert row.done_at is not None and row.failed_at is None
    assert (row.attempts, row.last_error) == (1, "")
    assert await attempts_of(item) == [(1, 204, True, "")]
    logged = await WebhookAttempt.get(delivery_id=item.id)
    assert logged.url == user.webhook_url and logged.user_id == user.id  # type: ignore[attr-defined]
    assert sample("webhook_attempts_total", outcome="delivered") == delivered_before + 1


async def every_kind_of_row(user: User) -> OutboxItem:
    """One outbox row of each kind for ``user``: a webhook due now (returned), one waiting
    for its retry, a socket push, a delivered webhook and an abandoned one."""
    due = await owed(user, "webhook", due_in=timedelta(seconds=-1))
    await owed(user, "webhook", due_in=timedelta(minutes=1))  # a retry not yet due
    await owed(user, "publish")  # the sockets' push, not the dispatcher's
    finished = await owed(user, "webhook")
    await OutboxItem.filter(id=finished.id).update(done_at=datetime.now(UTC))
    abandoned = await owed(user, "webhook")
    await OutboxItem.filter(id=abandoned.id).update(failed_at=datetime.now(UTC))
    return due


async def test_only_due_outstanding_webhook_rows_are_attempted(bus: MemoryBus) -> None:
    async with receiver(answer(200)) as rcv:
        user = await hooked_user(rcv)
        due = await every_kind_of_row(user)
        assert await drained(dispatcher(bus)) == 1
    assert [r.headers["x-coinlink-delivery"] for r in rcv.requests] == [str(due.id)]


async def test_a_failing_receiver_gets_the_delivery_again_after_growing_pauses(
    bus: MemoryBus,
) -> None:
    retried_before = sample("webhook_attempts_total", outcome="retry")
    worker = dispatcher(bus, retry_base_s=10.0)
    async with receiver(answer(503, b"busy")) as rcv:
        item = await owed(await hooked_user(rcv), "webhook")
        for attempt, (shortest, longest) in enumerate([(5, 10), (10, 20)], start=1):
            started = datetime.now(UTC)
            assert await drained(worker) == 1
            row = await OutboxItem.get(id=item.id)
            assert (row.attempts, row.last_error) == (attempt, "HTTP 503: busy")
            assert row.done_at is None and row.failed_at is None
            pause = (row.due_at - started).total_seconds()
            assert shortest <= pause <= longest + 1
            assert await drained(worker) == 0  # not before it is due
            await OutboxItem.filter(id=item.id).update(due_at=started)  # time passes
    assert {r.headers["x-coinlink-delivery"] for r in rcv.requests} == {str(item.id)}
    assert await attempts_of(item) == [(n, 503, False, "HTTP 503: busy") for n in (1, 2)]
    assert sample("webhook_attempts_total", outcome="retry") == retried_before + 2


@pytest.mark.parametrize(
    ("status", "attempts", "age"),
    [
        (404, 0, timedelta(0)),  # the receiver says no: asking again changes nothing
        (503, webhooks.MAX_ATTEMPTS - 1, timedelta(0)),  # the last attempt failed too
        (503, 0, timedelta(seconds=webhooks.MAX_AGE_S)),  # too late to be worth it
    ],
    ids=["permanent", "attempts", "age"],
)
async def test_a_delivery_is_given_up(
    bus: MemoryBus, status: int, attempts: int, age: timedelta
) -> None:
    failed_before = sample("webhook_attempts_total", outcome="failed")
    async with receiver(answer(status)) as rcv:
        item = await owed(await hooked_user(rcv), "webhook", attempts=attempts, age=age)
        assert await drained(dispatcher(bus)) == 1
        assert await drained(dispatcher(bus)) == 0
    row = await OutboxItem.get(id=item.id)
    assert row.failed_at is not None and row.done_at is None
    assert row.attempts == attempts + 1 and len(rcv.requests) == 1
    assert sample("webhook_attempts_total", outcome="failed") == failed_before + 1


@pytest.mark.parametrize(
    ("url", "secret", "error"),
    [
        (None, SECRET, "no webhook URL"),
        ("receiver", None, "no webhook secret: create one first"),
        ("receiver", SECRET, "refused: *loopback*"),  # the default: public receivers only
    ],
    ids=["url-removed", "no-secret", "private-address"],
)
async def test_what_cannot_be_sent_safely_fails_without_a_connection(
    bus: MemoryBus, url: str | None, secret: str | None, error: str
) -> None:
    async with receiver(answer(200)) as rcv:
        address = f"http://127.0.0.1:{rcv.port}/hook" if url else None
        item = await owed(await new_user(address, secret), "webhook")
        assert await drained(dispatcher(bus, allow_private=error != "refused: *loopback*")) == 1
    assert rcv.connections == 0
    row = await OutboxItem.get(id=item.id)
    assert row.failed_at is not None
    ((attempt, status, ok, logged),) = await attempts_of(item)
    assert (attempt, status, ok) == (1, None, False)
    prefix, _, rest = error.partition("*")
    assert logged.startswith(prefix) and rest.rstrip("*") in logged


async def test_the_backlog_counts_webhook_deliveries_due_or_waiting_for_a_retry(
    bus: MemoryBus,
) -> None:
    assert await dispatcher(bus, poll_s=5.0).outstanding() == (0, 5.0)  # nothing: the poll
    user = await new_user("http://127.0.0.1:9/hook", SECRET)
    due = await every_kind_of_row(user)
    assert await dispatcher(bus, poll_s=5.0).outstanding() == (2, 0.0)  # one is due now
    await OutboxItem.filter(id=due.id).update(done_at=datetime.now(UTC))
    count, wait_s = await dispatcher(bus, poll_s=120.0).outstanding()
    assert count == 1 and 50 < wait_s <= 60  # the retry, a minute away
    assert (await dispatcher(bus, poll_s=5.0).outstanding())[1] == 5.0  # never past the poll


# -- the lease holder's loop --------------------------------------------------------------------


async def test_the_holder_delivers_when_woken_and_retries_when_due(bus: MemoryBus) -> None:
    worker = dispatcher(bus, retry_base_s=0.2, lease_ttl_s=1.0, poll_s=60)
    async with receiver(answering(200, 500, 200)) as rcv:
        user = await hooked_user(rcv)
        first = await owed(user, "webhook")
        async with running(worker):
            await until_done(first)  # the holder is now waiting: the next poll is 60 s away
            second = await owed(user, "webhook")
            worker.wake()  # what the hub does on webhooks:due
            row = await until_done(second)
    assert row.done_at is not None and row.attempts == 2  # a 500, then after ~0.1-0.2 s a 200
    assert [r.headers["x-coinlink-delivery"] for r in rcv.requests] == [
        str(first.id),
        str(second.id),
        str(second.id),
    ]
    # Stopping handed the lease over at once.
    assert (await bus.acquire_lease(LEASE, "the next instance", 1.0)).token is not None


class Unrecorded(Dispatcher):
    """Attempts that raise after the POST would have gone out (their outcome not recorded);
    with ``refuse_writes``, putting the row off fails too: a database refusing writes."""

    attempts: list[float]
    refuse_writes: bool

    async def attempt(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        self.attempts.append(time.monotonic())
        raise RuntimeError("the outcome could not be recorded")

    async def _defer(self, item: OutboxItem) -> None:
        if self.refuse_writes:
            raise RuntimeError("the database refuses writes")
        await super()._defer(item)


@pytest.mark.parametrize("refuse_writes", [False, True])
async def test_a_row_whose_attempt_could_not_be_recorded_waits_for_the_poll_not_a_hot_loop(
    bus: MemoryBus, refuse_writes: bool
) -> None:
    """Put off by a poll (not first in every batch), or, when even that fails, the loop
    pauses for the poll."""
    worker = Unrecorded(bus, allow_private=True, timeout_s=2.0, lease_ttl_s=1.0, poll_s=0.5)
    worker.attempts, worker.refuse_writes = [], refuse_writes
    user = await new_user("http://127.0.0.1:9/hook", SECRET)
    item = await owed(user, "webhook")
    async with running(worker):
        await until(lambda: len(worker.attempts) >= 2, 10, "the attempt after the pause")
    assert worker.attempts[1] - worker.attempts[0] >= 0.4  # the poll, not at once
    row = await OutboxItem.get(id=item.id)
    assert (row.due_at > item.due_at) is not refuse_writes


async def test_only_the_lease_holder_delivers_and_a_successor_takes_over(
    bus: MemoryBus,
) -> None:
    workers = [dispatcher(bus, lease_ttl_s=1.0, poll_s=0.2) for _ in range(2)]
    async with receiver(answer(200)) as rcv:
        user = await hooked_user(rcv)
        items = [await owed(user, "webhook") for _ in range(5)]
        async with running(workers[0]) as first, running(workers[1]) as second:
            for item in items:
                await until_done(item)
            # Re-acquiring the lease under a worker's name succeeds for its holder only.
            taken = await bus.acquire_lease(LEASE, workers[0].holder, 1.0)
            held_by_first = taken.token is not None
            (first if held_by_first else second).cancel()  # the holder's instance stops
            late = await owed(user, "webhook")
            await until_done(late)
    ids = [r.headers["x-coinlink-delivery"] for r in rcv.requests]
    assert sorted(ids) == sorted(str(item.id) for item in [*items, late])  # each once


async def test_the_holder_reports_the_backlog_and_zero_once_it_hands_over(bus: MemoryBus) -> None:
    worker = dispatcher(bus, retry_base_s=60.0, lease_ttl_s=1.0, poll_s=0.2)
    async with receiver(answer(503, b"busy")) as rcv:
        user = await hooked_user(rcv)
        failing = await owed(user, "webhook")
        await owed(user, "webhook", due_in=timedelta(minutes=5))
        async with running(worker):
            await until(lambda: len(rcv.requests) == 1, what="the first attempt")
            # Its outcome saved first: the save would write done_at back to None.
            await until(
                lambda: OutboxItem.exists(id=failing.id, attempts=1), what="the attempt saved"
            )
            # Both rows wait (one for its retry): counted after the drain.
            await until(lambda: sample("webhook_backlog") == 2, what="the backlog counted")
            await OutboxItem.filter(id=failing.id).update(done_at=datetime.now(UTC))
            await until(lambda: sample("webhook_backlog") == 1, what="the next poll's count")
            await worker.stop()
            assert sample("webhook_backlog") == 0  # no stale count once another leads
