"""The alert evaluator on a real PostgreSQL database and the in-process bus.

What a user notices: an alert fires once when the price gets there (a one-shot one never
again, also after a change of leader; a repeating one again only after the price crossed
back), the notification says what happened and reaches the user's channel once, a webhook
delivery is queued for a user with a webhook, an alert changed or disabled meanwhile is
respected, and a notification a bus outage held back goes out when the bus returns. The
engine's own rules are tests/unit/test_alert_engine.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from coinlink import channels
from coinlink.alerts import evaluator as evaluator_module
from coinlink.alerts import notifications
from coinlink.alerts.engine import Firing
from coinlink.alerts.evaluator import Evaluator
from coinlink.alerts.service import AlertService
from coinlink.bus import Subscription
from coinlink.market.types import Tick
from coinlink.wire import now_ms
from models.accounts import User
from models.alerts import Alert, Notification, OutboxItem
from tests.support.alert_rows import new_user, owed
from tests.support.buses import FaultyBus
from tests.support.logs import logged_by
from tests.support.metrics import sample
from tests.support.services import until

SYMBOLS = ["BTC-USD", "ETH-USD"]
_clock = itertools.count(now_ms(), 1000)  # market time: one tick a second, never back


def tick(price: str, symbol: str = "BTC-USD") -> Tick:
    return Tick(symbol, Decimal(price), Decimal(1), next(_clock))


@pytest.fixture
def bus(db: None) -> FaultyBus:
    return FaultyBus()


async def nothing_owed(user: User | None = None) -> bool:
    """No socket push is outstanding (to ``user``, or to anyone)."""
    owed = OutboxItem.filter(kind="publish", done_at__isnull=True)
    return not await (owed if user is None else owed.filter(user_id=user.id)).exists()


@contextlib.asynccontextmanager
async def reign(bus: FaultyBus) -> AsyncIterator[Evaluator]:
    """An ingest leader's evaluator, its active alerts loaded."""
    evaluator = Evaluator(bus)
    evaluator.start()
    try:
        await until(lambda: evaluator.engine is not None, what="the active alerts loaded")
        yield evaluator
        # Stepping down in the middle of a push leaves it to the next leader to push again
        # (at least once): a test that counts pushes lets them finish.
        await until(nothing_owed, what="every push marked done")
    finally:
        await evaluator.stop()


async def new_alert(bus: FaultyBus, user: User, threshold: str, **values: Any) -> Alert:
    """Through the service, as the API creates one."""
    values = {"symbol": "BTC-USD", "condition": "above", "threshold": Decimal(threshold), **values}
    return await AlertService(bus, SYMBOLS, 100).create(str(user.id), values)


async def inbox(bus: FaultyBus, user: User) -> Subscription:
    """The user's notifications channel, as every hub follows it."""
    subscription = bus.subscription()
    await subscription.subscribe(channels.notifications(str(user.id)))
    return subscription


async def delivered(subscription: Subscription) -> dict[str, Any]:
    async with asyncio.timeout(5):
        async for message in subscription:
            return dict(orjson.loads(message.data))
    raise AssertionError("the subscription ended")


def alert_id(notification: dict[str, Any]) -> str:
    return str(notification["data"]["alert_id"])


# -- firing ----------------------------------------------------------------------------------


async def test_a_one_shot_alert_fires_once_and_never_again_after_a_take_over(
    bus: FaultyBus,
) -> None:
    user = await new_user()
    alert = await new_alert(bus, user, "100")
    later = await new_alert(bus, user, "200")  # fires after: nothing came in between
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        evaluator.on_tick(tick("99.99"))
        fired = tick("100")
        evaluator.on_tick(fired)
        evaluator.on_tick(tick("150"))
        evaluator.on_tick(tick("99"))
        evaluator.on_tick(tick("150"))
        evaluator.on_tick(tick("200"))
        notification = await delivered(received)
        assert alert_id(notification) == str(alert.id)
        assert notification["data"]["ts"] == fired.ts
        assert alert_id(await delivered(received)) == str(later.id)

    stored = await Alert.get(id=alert.id)
    assert (stored.status, stored.trigger_count, stored.last_fired_ts) == ("triggered", 1, fired.ts)
    assert stored.last_triggered_at is not None
    # What the socket got is what the REST API lists, and its push is marked done.
    row = await Notification.get(id=notification["id"])
    assert (row.title, row.data) == (notification["title"], notification["data"])
    push = await OutboxItem.get(notification_id=notification["id"])
    assert (push.kind, push.done_at is not None) == ("publish", True)

    sentinel = await new_alert(bus, user, "300")
    async with reign(bus) as evaluator:  # the next leader: a triggered alert is not loaded
        evaluator.on_tick(tick("300"))
        assert alert_id(await delivered(received)) == str(sentinel.id)
    assert await Notification.filter(user_id=user.id).count() == 3


async def test_a_graceful_hand_over_finishes_the_firings_under_way_once(bus: FaultyBus) -> None:
    """A leader that stops (a deploy) first pushes what has fired, mid-push or still
    queued: the successor has nothing left to push, and pushes nothing twice."""
    user = await new_user()
    first = await new_alert(bus, user, "100")
    second = await new_alert(bus, user, "105")
    received = await inbox(bus, user)
    channel = channels.notifications(str(user.id))
    evaluator = Evaluator(bus)
    evaluator.start()
    await until(lambda: evaluator.engine is not None, what="the active alerts loaded")
    bus.hold(channel)
    evaluator.on_tick(tick("100"))
    await until(lambda: bus.waiting[channel] == 1, what="the first push under way")
    evaluator.on_tick(tick("105"))  # queued behind it
    finishing = asyncio.create_task(evaluator.finish())
    bus.release(channel)
    await asyncio.wait_for(finishing, timeout=10)
    assert [alert_id(await delivered(received)) for _ in range(2)] == [
        str(first.id),
        str(second.id),
    ]
    assert await nothing_owed(user)
    async with reign(bus) as successor:  # nothing left to fire, nothing to push again
        assert successor.engine is not None and len(successor.engine) == 0
    assert await Notification.filter(user_id=user.id).count() == 2
    assert len(await bus.history(channel) or []) == 2


async def test_a_repeating_alert_fires_again_only_after_crossing_back_across_leaders(
    bus: FaultyBus,
) -> None:
    user = await new_user()
    alert = await new_alert(bus, user, "100", repeat=True, cooldown_s=0)
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        evaluator.on_tick(tick("101"))
        assert (await delivered(received))["data"]["price"] == "101"
    async with reign(bus) as evaluator:
        # The new leader knows it fired: no firing until the price has gone back under.
        evaluator.on_tick(tick("102"))
        evaluator.on_tick(tick("98"))
        evaluator.on_tick(tick("103"))
        assert (await delivered(received))["data"]["price"] == "103"
    stored = await Alert.get(id=alert.id)
    assert (stored.status, stored.trigger_count) == ("active", 2)


@pytest.mark.parametrize(
    ("values", "prices", "title", "body"),
    [
        (
            {"condition": "above", "threshold": "64000.50", "shown": "64000.5"},
            ["64000.5"],
            "BTC-USD above 64000.5",
            "BTC-USD traded at 64000.5, above your alert at 64000.5.",
        ),
        (
            {"condition": "below", "threshold": "30000", "shown": "30000"},
            ["29999.99"],
            "BTC-USD below 30000",
            "BTC-USD traded at 29999.99, below your alert at 30000.",
        ),
        (
            {"condition": "pct_change", "threshold": "2.50", "window_s": 60, "shown": "2.5"},
            ["40000", "41234.5678"],
            "BTC-USD moved 3.09 %",
            "BTC-USD moved 3.09 % (your alert: 2.5 %); it is at 41234.5678.",
        ),
    ],
    ids=["above", "below", "pct_change"],
)
async def test_the_notification_says_what_happened(
    bus: FaultyBus, values: dict[str, Any], prices: list[str], title: str, body: str
) -> None:
    user = await new_user()
    shown = values.pop("shown")
    alert = await new_alert(bus, user, **values)
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        for price in prices:
            evaluator.on_tick(tick(price))
        notification = await delivered(received)
    assert notification["kind"] == "price_alert"
    assert (notification["title"], notification["body"]) == (title, body)
    assert {k: v for k, v in notification["data"].items() if k != "ts"} == {
        "alert_id": str(alert.id),
        "symbol": "BTC-USD",
        "condition": values["condition"],
        "threshold": shown,
        "price": prices[-1],
    }
    assert notification["read_at"] is None and notification["created_at"].endswith("Z")


# -- changes and races -------------------------------------------------------------------------


async def test_alerts_changed_during_a_reign_are_re_read_from_the_database(
    bus: FaultyBus,
) -> None:
    user = await new_user()
    service = AlertService(bus, SYMBOLS, 100)
    disabled = await new_alert(bus, user, "100")
    moved = await new_alert(bus, user, "100")
    deleted = await new_alert(bus, user, "100")
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        added = await new_alert(bus, user, "100")
        await service.change(str(user.id), str(disabled.id), {"status": "disabled"})
        await service.change(str(user.id), str(moved.id), {"threshold": Decimal("500")})
        await service.delete(str(user.id), str(deleted.id))
        # What the hub hands the evaluator for each alerts:changes event, and one no API
        # would send.
        await evaluator.on_change(b"not json")
        for alert in (added, disabled, moved, deleted):
            await evaluator.on_change(orjson.dumps({"id": str(alert.id)}))
        assert sample("alerts_loaded") == 2  # what an operator sees: added and moved
        evaluator.on_tick(tick("100"))
        evaluator.on_tick(tick("500"))
        assert [alert_id(await delivered(received)) for _ in range(2)] == [
            str(added.id),
            str(moved.id),
        ]
    assert await Notification.filter(user_id=user.id).count() == 2


async def test_a_firing_for_an_alert_disabled_meanwhile_is_dropped(bus: FaultyBus) -> None:
    """The engine fired before the change event arrived; the database has the last word."""
    user = await new_user()
    stale = await new_alert(bus, user, "100", repeat=True, cooldown_s=0)
    later = await new_alert(bus, user, "200")
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        await Alert.filter(id=stale.id).update(status="disabled")
        evaluator.on_tick(tick("100"))
        evaluator.on_tick(tick("200"))
        assert alert_id(await delivered(received)) == str(later.id)
        assert sample("alerts_loaded") == 0  # the disabled one left the engine too
        # Enabled again: the engine had let it go, the change event arms it afresh.
        await Alert.filter(id=stale.id).update(status="active")
        await evaluator.on_change(orjson.dumps({"id": str(stale.id)}))
        evaluator.on_tick(tick("150"))
        assert alert_id(await delivered(received)) == str(stale.id)
    assert (await Alert.get(id=stale.id)).trigger_count == 1


async def test_a_firing_within_the_alerts_cooldown_is_not_committed_twice(
    bus: FaultyBus,
) -> None:
    """Two leaders for a moment, or a stale reload: the database refuses the second firing."""
    user = await new_user()
    alert = await new_alert(bus, user, "100", repeat=True, cooldown_s=60)
    evaluator = Evaluator(bus)
    at = now_ms()

    def firing(ts: int) -> Firing:
        price, threshold = Decimal(101), Decimal(100)
        return Firing(str(alert.id), alert.seq, "BTC-USD", "above", threshold, price, ts, None)

    assert await evaluator.commit(firing(at), uuid.uuid4()) is not None
    assert await evaluator.commit(firing(at + 59_999), uuid.uuid4()) is None
    assert await evaluator.commit(firing(at + 60_000), uuid.uuid4()) is not None
    assert (await Alert.get(id=alert.id)).trigger_count == 2
    assert await Notification.filter(user_id=user.id).count() == 2


async def test_a_row_the_engine_cannot_evaluate_does_not_stop_the_others(
    bus: FaultyBus,
) -> None:
    user = await new_user()
    # Written behind the API's back: a pct_change alert needs a window.
    broken = await Alert.create(
        user=user, symbol="BTC-USD", condition="pct_change", threshold=Decimal(1)
    )
    fine = await new_alert(bus, user, "100")
    received = await inbox(bus, user)
    with logged_by(evaluator_module) as logs:
        async with reign(bus) as evaluator:
            evaluator.on_tick(tick("100"))
            assert alert_id(await delivered(received)) == str(fine.id)
    errors = [(e["event"], e["alert_id"]) for e in logs if e["log_level"] == "error"]
    assert errors == [("alert_not_evaluable", str(broken.id))]


# -- the outbox -------------------------------------------------------------------------------


async def test_a_user_with_a_webhook_gets_a_delivery_queued_and_the_dispatcher_woken(
    bus: FaultyBus,
) -> None:
    hooked = await new_user(webhook_url="https://hooks.example.com/coinlink")
    plain = await new_user()
    await new_alert(bus, hooked, "100")
    await new_alert(bus, plain, "100")
    wakes = bus.subscription()
    await wakes.subscribe(channels.WEBHOOKS_DUE)
    hooked_inbox, plain_inbox = await inbox(bus, hooked), await inbox(bus, plain)
    async with reign(bus) as evaluator:
        evaluator.on_tick(tick("100"))
        for_hooked = await delivered(hooked_inbox)
        for_plain = await delivered(plain_inbox)
        async with asyncio.timeout(5):
            assert (await wakes.__anext__()).channel == channels.WEBHOOKS_DUE
    owed = await OutboxItem.filter(notification_id=for_hooked["id"]).values_list("kind", flat=True)
    assert sorted(owed) == ["publish", "webhook"]
    assert await OutboxItem.filter(notification_id=for_plain["id"]).values_list(
        "kind", flat=True
    ) == ["publish"]


async def test_a_notification_held_back_by_a_bus_outage_goes_out_once_when_it_returns(
    bus: FaultyBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluator_module, "SWEEP_S", 0.1)
    user = await new_user()
    alert = await new_alert(bus, user, "100")
    later = await new_alert(bus, user, "200")
    received = await inbox(bus, user)
    async with reign(bus) as evaluator:
        with logged_by(evaluator_module) as logs:
            bus.down = True
            evaluator.on_tick(tick("100"))
            await until(
                lambda: "notification_not_published" in [e["event"] for e in logs],
                what="the push failing",
            )
        assert await Notification.filter(user_id=user.id).exists()  # committed all the same
        bus.down = False
        assert alert_id(await delivered(received)) == str(alert.id)  # by the sweep
        evaluator.on_tick(tick("200"))
        assert alert_id(await delivered(received)) == str(later.id)  # no second copy before


@pytest.mark.parametrize("writer_first", [True, False], ids=["writer-first", "sweep-first"])
async def test_a_push_the_writer_makes_while_a_sweep_runs_is_made_once(
    bus: FaultyBus, monkeypatch: pytest.MonkeyPatch, writer_first: bool
) -> None:
    """A sweep read the outbox while the writer was pushing a fresh firing; whichever of
    them gets to that row first, the firing is pushed once."""
    monkeypatch.setattr(evaluator_module, "SWEEP_S", 3600.0)  # only the sweeps made here
    other, user = await new_user(), await new_user()
    await owed(other, "publish", age=timedelta(minutes=1))
    alert = await new_alert(bus, user, "100")
    received = await inbox(bus, user)
    theirs, mine = channels.notifications(str(other.id)), channels.notifications(str(user.id))
    bus.hold(theirs)  # the leftover's push is slow: each sweep stops there for a while
    bus.hold(mine)
    async with reign(bus) as evaluator:
        await until(lambda: bus.waiting[theirs] == 1, what="the reign's first sweep")
        evaluator.on_tick(tick("100"))
        await until(lambda: bus.waiting[mine] == 1, what="the writer pushing")
        sweep = asyncio.create_task(evaluator.publish_pending())
        await until(lambda: bus.waiting[theirs] == 2, what="a sweep that read both rows")
        first, then = (mine, theirs) if writer_first else (theirs, mine)
        bus.release(first)
        if writer_first:
            assert alert_id(await delivered(received)) == str(alert.id)
            await until(lambda: nothing_owed(user), what="the writer's push marked done")
        else:
            assert await asyncio.wait_for(sweep, 5) == 1  # the leftover; the firing is in flight
        bus.release(then)
        assert await asyncio.wait_for(sweep, 5) == 1
        if not writer_first:
            assert alert_id(await delivered(received)) == str(alert.id)
        await bus.publish(mine, b'{"data": {"alert_id": "end"}}')
        assert alert_id(await delivered(received)) == "end"


async def test_a_sweep_between_a_firings_commit_and_its_push_leaves_the_push_to_the_writer(
    bus: FaultyBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer holds (a test hook) between its commit and its push; a sweep then reads
    the committed row as owed and must not push it too. Stepped down in that window, the
    leader leaves it to its successor's sweep: pushed once."""
    monkeypatch.setattr(evaluator_module, "SWEEP_S", 3600.0)  # only the sweeps made here
    user = await new_user()
    alert = await new_alert(bus, user, "100")
    received = await inbox(bus, user)
    evaluator = Evaluator(bus, pause_after_commit_s=3600.0)
    evaluator.start()
    try:
        await until(lambda: evaluator.engine is not None, what="the active alerts loaded")
        evaluator.on_tick(tick("100"))
        await until(Notification.filter(user_id=user.id).exists, what="the commit")
        assert await evaluator.publish_pending() == 0
    finally:
        await evaluator.stop()
    assert await Evaluator(bus).publish_pending() == 1  # the successor's sweep
    assert alert_id(await delivered(received)) == str(alert.id)
    await bus.publish(channels.notifications(str(user.id)), b'{"data": {"alert_id": "end"}}')
    assert alert_id(await delivered(received)) == "end"  # no second copy before it


async def test_pushes_older_than_a_day_are_not_sent_late(bus: FaultyBus) -> None:
    user = await new_user()
    received = await inbox(bus, user)
    evaluator = Evaluator(bus)
    for age in (timedelta(days=2), timedelta(minutes=5)):
        await owed(user, "publish", age=age, title=str(age))
    assert await evaluator.publish_pending() == 1
    assert (await delivered(received))["title"] == str(timedelta(minutes=5))
    assert await evaluator.publish_pending() == 0  # done: not again


async def test_every_change_to_the_users_lists_moves_their_version_in_the_bus(
    bus: FaultyBus,
) -> None:
    """Each worker serves the alert and notification lists from its cache while the user's
    version in the bus stands still (coinlink.accounts.user_views): every writer moves it."""
    user = await new_user()
    key = channels.user_version_key(str(user.id))

    async def version() -> int:
        value = await bus.get(key)
        return 0 if value is None else int(value)

    service = AlertService(bus, SYMBOLS, 100)
    alert = await new_alert(bus, user, "100", repeat=True, cooldown_s=0)
    assert await version() == 1
    await service.change(str(user.id), str(alert.id), {"note": "mine"})
    assert await version() == 2
    firing = Firing(
        str(alert.id), alert.seq, "BTC-USD", "above", Decimal(100), Decimal(101), now_ms(), None
    )
    evaluator = Evaluator(bus)
    # The leader's firing, then its push.
    notification = await evaluator.commit(firing, uuid.uuid4())
    assert notification is not None and await version() == 2
    assert await evaluator.publish(notification)
    assert await version() == 3
    await notifications.mark_read(bus, str(user.id), str(notification.id))
    assert await version() == 4
    await notifications.mark_read(bus, str(user.id), str(notification.id))  # read already
    assert await notifications.mark_all_read(bus, str(user.id)) == 0
    assert await version() == 4  # nothing changed: nothing to re-read
    await Notification.filter(id=notification.id).update(read_at=None)
    assert await notifications.mark_all_read(bus, str(user.id)) == 1
    assert await version() == 5
    await service.delete(str(user.id), str(alert.id))
    assert await version() == 6
