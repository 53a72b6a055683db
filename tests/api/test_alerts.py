"""Alerts, notifications and the webhook secret through the REST API (real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from models.alerts import Notification
from tests.support.accounts import bearer, register
from tests.support.apps import build_app
from tests.support.services import free_port

CAP = 5


@pytest.fixture(scope="module")
def app(module_pg_url: str, redis_url: str) -> Sanic:
    return build_app(
        module_pg_url,
        redis_url,
        provider="none",
        symbols="BTC-USD,ETH-USD",
        alerts_max_per_user=CAP,
    )


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    with ReusableClient(app, port=free_port()) as client:
        yield client


@pytest.fixture
def alice(client: ReusableClient) -> dict[str, Any]:
    return register(client)


@pytest.fixture
def bob(client: ReusableClient) -> dict[str, Any]:
    return register(client)


def create(client: ReusableClient, who: dict[str, Any], **body: Any) -> Any:
    payload = {"symbol": "BTC-USD", "condition": "above", "threshold": "70000", **body}
    _, response = client.post("/api/v2/alerts", headers=bearer(who["tokens"]), json=payload)
    return response


def test_create_returns_the_alert_with_every_contract_field(
    client: ReusableClient, alice: dict[str, Any]
) -> None:
    response = create(client, alice, symbol="eth-usd", threshold="3500.50", note=" dip ")
    assert response.status == 201, response.text
    alert = response.json
    assert set(alert) == {
        "id", "symbol", "condition", "threshold", "window_s", "repeat", "cooldown_s", "note",
        "status", "trigger_count", "last_triggered_at", "created_at",
    }  # fmt: skip
    assert alert["symbol"] == "ETH-USD" and alert["threshold"] == "3500.5"
    assert alert["status"] == "active" and alert["repeat"] is False
    assert alert["cooldown_s"] == 300 and alert["window_s"] is None and alert["note"] == "dip"
    assert alert["trigger_count"] == 0 and alert["last_triggered_at"] is None
    assert alert["created_at"].endswith("Z")
    _, got = client.get(f"/api/v2/alerts/{alert['id']}", headers=bearer(alice["tokens"]))
    assert got.json == alert


def test_pct_change_needs_a_known_window(client: ReusableClient, alice: dict[str, Any]) -> None:
    ok = create(client, alice, condition="pct_change", threshold="2.5", window_s=3600)
    assert ok.status == 201 and ok.json["window_s"] == 3600
    for body in (
        {"condition": "pct_change", "threshold": "2.5"},
        {"condition": "pct_change", "threshold": "2.5", "window_s": 61},
        {"condition": "pct_change", "threshold": "5000", "window_s": 60},
        {"condition": "above", "window_s": 60},
    ):
        response = create(client, alice, **body)
        assert response.status == 422, body
        assert response.json["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"threshold": "0"}, "threshold"),
        ({"threshold": "-5"}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"threshold": "Infinity"}, "threshold"),
        ({"threshold": "1e400"}, "threshold"),
        ({"threshold": "1.0000000000001"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": "abc"}, "threshold"),
        ({"threshold": 70000}, "threshold"),  # decimal strings only: a float may be rounded
        ({"threshold": "070000"}, "threshold"),
        ({"threshold": "1e4"}, "threshold"),
        ({"condition": "sideways"}, "condition"),
        ({"condition": None}, "condition"),
        ({"cooldown_s": "600"}, "cooldown_s"),  # JSON types are strict
        ({"cooldown_s": 600.5}, "cooldown_s"),
        ({"repeat": 0}, "repeat"),
        ({"repeat": "yes"}, "repeat"),
        ({"window_s": 60}, "window_s"),
        ({"condition": "pct_change", "threshold": "1001", "window_s": 60}, "threshold"),
        ({"condition": "pct_change", "threshold": "5"}, "window_s"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"cooldown_s": 10**9}, "cooldown_s"),
        ({"note": "x" * 201}, "note"),
        ({"note": "a\x00b"}, "note"),
        ({"status": "triggered"}, "status"),
        ({"trigger_count": 9}, "trigger_count"),
    ],
)
def test_bad_alert_bodies_are_422_naming_the_field(
    client: ReusableClient, alice: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = create(client, alice, **body)
    assert response.status == 422, response.text
    assert field in response.json["error"]["details"]["fields"]


def test_an_unknown_symbol_is_404(client: ReusableClient, alice: dict[str, Any]) -> None:
    response = create(client, alice, symbol="DOGE-USD")
    assert response.status == 404 and response.json["error"]["code"] == "unknown_symbol"
    # Only ASCII is folded to upper case: a long s is no S, so this is not BTC-USD.
    response = create(client, alice, symbol="btc-u\u017fd")
    assert response.status == 404 and response.json["error"]["code"] == "unknown_symbol"


def test_the_cap_gives_409_and_deleting_makes_room(
    client: ReusableClient, alice: dict[str, Any]
) -> None:
    ids = [create(client, alice, threshold=str(70000 + i)).json["id"] for i in range(CAP)]
    refused = create(client, alice)
    assert refused.status == 409 and refused.json["error"]["code"] == "alert_limit_reached"
    assert "COINLINK_ALERTS_MAX_PER_USER" in refused.json["error"]["message"]
    _, gone = client.delete(f"/api/v2/alerts/{ids[0]}", headers=bearer(alice["tokens"]))
    assert gone.status == 204
    assert create(client, alice).status == 201


def test_list_is_newest_first_paginated_and_filtered(
    client: ReusableClient, alice: dict[str, Any]
) -> None:
    ids = [create(client, alice, threshold=str(60000 + i)).json["id"] for i in range(CAP)]
    headers = bearer(alice["tokens"])
    _, disabled = client.patch(
        f"/api/v2/alerts/{ids[1]}", headers=headers, json={"status": "disabled"}
    )
    assert disabled.json["status"] == "disabled"
    seen, cursor = [], None
    while True:
        _, response = client.get(
            "/api/v2/alerts",
            headers=headers,
            params={"limit": 2, **({"cursor": cursor} if cursor else {})},
        )
        assert response.status == 200 and len(response.json["items"]) <= 2
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    _, active = client.get("/api/v2/alerts", headers=headers, params={"status": "active"})
    assert [item["id"] for item in active.json["items"]] == [i for i in ids[::-1] if i != ids[1]]
    for params in ({"limit": 0}, {"limit": 201}, {"cursor": "nope"}, {"status": "gone"}):
        _, bad = client.get("/api/v2/alerts", headers=headers, params=params)
        assert bad.status == 422, params


def test_patch_changes_only_what_it_names(client: ReusableClient, alice: dict[str, Any]) -> None:
    alert = create(client, alice, repeat=True, cooldown_s=60).json
    headers = bearer(alice["tokens"])
    _, response = client.patch(
        f"/api/v2/alerts/{alert['id']}", headers=headers, json={"threshold": "71000.25"}
    )
    assert response.status == 200
    assert response.json == {**alert, "threshold": "71000.25"}
    for body, field in (
        ({"symbol": "ETH-USD"}, "symbol"),
        ({"condition": "below"}, "condition"),
        ({"threshold": None}, "threshold"),
        ({"status": "triggered"}, "status"),
        ({"repeat": "yes"}, "repeat"),
        ({"cooldown_s": None}, "cooldown_s"),
    ):
        _, bad = client.patch(f"/api/v2/alerts/{alert['id']}", headers=headers, json=body)
        assert bad.status == 422, body
        # One plain field name per mistake, as the client sent it.
        assert list(bad.json["error"]["details"]["fields"]) == [field], bad.json


def test_another_users_alert_is_404_for_every_verb(
    client: ReusableClient, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    alert = create(client, alice).json
    path = f"/api/v2/alerts/{alert['id']}"
    theirs = bearer(bob["tokens"])
    assert client.get(path, headers=theirs)[1].status == 404
    assert client.patch(path, headers=theirs, json={"note": "mine"})[1].status == 404
    assert client.delete(path, headers=theirs)[1].status == 404
    assert client.get(f"/api/v2/alerts/{uuid.uuid4()}", headers=theirs)[1].status == 404
    assert client.get("/api/v2/alerts/not-a-uuid", headers=theirs)[1].status == 404
    _, still = client.get(path, headers=bearer(alice["tokens"]))
    assert still.json == alert
    _, listed = client.get("/api/v2/alerts", headers=theirs)
    assert listed.json == {"items": [], "next_cursor": None}


def test_alerts_need_auth(client: ReusableClient) -> None:
    assert client.get("/api/v2/alerts")[1].status == 401
    assert client.post("/api/v2/alerts", json={})[1].status == 401


# -- notifications --------------------------------------------------------------------------


def notify(client: ReusableClient, who: dict[str, Any], count: int) -> list[str]:
    base = datetime.now(UTC)

    async def insert() -> list[str]:
        made = []
        for i in range(count):
            row = await Notification.create(
                id=uuid.uuid4(),
                user_id=who["user"]["id"],
                kind="price_alert",
                title=f"n{i}",
                body="BTC-USD crossed",
                data={"i": i},
                # Two share a timestamp: the cursor must still not skip or repeat one.
                created_at=base + timedelta(milliseconds=i // 2),
            )
            made.append(str(row.id))
        return made

    made: list[str] = client._run(insert())
    return made


def test_notifications_newest_first_unread_filter_and_read_state(
    client: ReusableClient, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    made = notify(client, alice, 7)
    notify(client, bob, 2)
    headers = bearer(alice["tokens"])
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        _, response = client.get("/api/v2/notifications", headers=headers, params=params)
        assert response.status == 200
        seen += response.json["items"]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert sorted(n["id"] for n in seen) == sorted(made) and len(seen) == 7
    keys = [(n["created_at"], n["id"]) for n in seen]
    assert keys == sorted(keys, reverse=True)
    assert set(seen[0]) == {"id", "kind", "title", "body", "data", "created_at", "read_at"}

    assert client.get("/api/v2/notifications/unread-count", headers=headers)[1].json == {"count": 7}
    _, read = client.post(f"/api/v2/notifications/{made[0]}/read", headers=headers)
    assert read.status == 200 and read.json["read_at"] is not None
    _, again = client.post(f"/api/v2/notifications/{made[0]}/read", headers=headers)
    assert again.json["read_at"] == read.json["read_at"]  # idempotent
    _, unread = client.get("/api/v2/notifications", headers=headers, params={"unread": "true"})
    assert made[0] not in [n["id"] for n in unread.json["items"]] and len(unread.json["items"]) == 6
    _, everything = client.post("/api/v2/notifications/read-all", headers=headers)
    assert everything.json == {"updated": 6}
    assert client.get("/api/v2/notifications/unread-count", headers=headers)[1].json == {"count": 0}
    # Bob's are untouched, and Alice cannot mark them.
    theirs = bearer(bob["tokens"])
    assert client.get("/api/v2/notifications/unread-count", headers=theirs)[1].json == {"count": 2}
    _, bobs = client.get("/api/v2/notifications", headers=theirs)
    bob_id = bobs.json["items"][0]["id"]
    assert client.post(f"/api/v2/notifications/{bob_id}/read", headers=headers)[1].status == 404
    assert client.post("/api/v2/notifications/zzz/read", headers=headers)[1].status == 404


def test_the_webhook_secret_is_shown_once_and_rotates(
    client: ReusableClient, alice: dict[str, Any]
) -> None:
    headers = bearer(alice["tokens"])
    _, first = client.post("/api/v2/users/me/webhook-secret", headers=headers)
    _, second = client.post("/api/v2/users/me/webhook-secret", headers=headers)
    assert first.status == second.status == 201
    assert len(first.json["secret"]) >= 32 and first.json["secret"] != second.json["secret"]
    _, me = client.get("/api/v2/users/me", headers=headers)
    _, prefs = client.get("/api/v2/users/me/preferences", headers=headers)
    assert first.json["secret"] not in me.text + prefs.text
    _, log = client.get("/api/v2/notifications/deliveries", headers=headers)
    assert log.json == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("value", ["yes", "off", "1", "0", "True", ""])
def test_query_booleans_are_true_or_false_only(
    client: ReusableClient, alice: dict[str, Any], value: str
) -> None:
    headers = bearer(alice["tokens"])
    _, response = client.get("/api/v2/notifications", headers=headers, params={"unread": value})
    assert response.status == 422, response.text
    assert response.json["error"]["details"]["fields"] == {"unread": "must be true or false"}
    for good in ("true", "false"):
        _, ok = client.get("/api/v2/notifications", headers=headers, params={"unread": good})
        assert ok.status == 200, ok.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://2130706433/hook",
    ],
)
def test_webhook_urls_into_private_networks_are_422(
    client: ReusableClient, alice: dict[str, Any], url: str
) -> None:
    _, response = client.put(
        "/api/v2/users/me/preferences", headers=bearer(alice["tokens"]), json={"webhook_url": url}
    )
    assert response.status == 422, response.text
    assert "webhook_url" in response.json["error"]["details"]["fields"]
    _, prefs = client.get("/api/v2/users/me/preferences", headers=bearer(alice["tokens"]))
    assert prefs.json["webhook_url"] is None


def test_a_leader_loads_exactly_the_active_alerts_page_by_page(
    client: ReusableClient, alice: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from decimal import Decimal

    from coinlink.alerts import evaluator
    from coinlink.alerts.engine import AlertEngine

    ids = [
        create(client, alice, threshold=f"{65000 + i}.5", repeat=True).json["id"] for i in range(4)
    ]
    headers = bearer(alice["tokens"])
    client.patch(f"/api/v2/alerts/{ids[0]}", headers=headers, json={"status": "disabled"})
    monkeypatch.setattr(evaluator, "LOAD_PAGE", 2)  # several pages from a few rows
    engine = AlertEngine()
    client._run(evaluator.load_active(engine))
    # Everyone's active alerts (other tests' too): Alice's three are among them, armed,
    # with exact thresholds; her disabled one is not.
    fired = engine.on_tick("BTC-USD", Decimal("65003.5"), 1_000)
    mine = [f for f in fired if f.alert_id in ids]
    assert [(f.alert_id, f.threshold) for f in mine] == [
        (ids[1], Decimal("65001.5")),
        (ids[2], Decimal("65002.5")),
        (ids[3], Decimal("65003.5")),
    ]


def test_making_a_fired_repeating_alert_one_shot_re_arms_it(
    client: ReusableClient, alice: dict[str, Any]
) -> None:
    from models.alerts import Alert

    alert = create(client, alice, repeat=True).json
    client._run(Alert.filter(id=alert["id"]).update(last_fired_ts=1_000, crossed_back=True))
    _, response = client.patch(
        f"/api/v2/alerts/{alert['id']}", headers=bearer(alice["tokens"]), json={"repeat": False}
    )
    assert response.status == 200 and response.json["repeat"] is False
    stored = client._run(Alert.get(id=alert["id"]))
    # A one-shot alert with a firing on record would never be loaded by a leader again.
    assert stored.last_fired_ts is None and stored.crossed_back is False
