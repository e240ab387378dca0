"""Idempotency-Key retries and offline batches apply exactly once."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.orders.models import Order
from onemember.points.models import PointEntry
from tests.factories import Chain
from tests.helpers import balance, checkout, line, login, register


def _orders(factory: sessionmaker[Session], org_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Order).where(Order.org_id == org_id)) or 0)


def _body(member_no: str, redeem: int = 0, price: int = 2500) -> dict[str, Any]:
    return {
        "member": {"member_no": member_no},
        "lines": [line("K", 1, price)],
        "redeem_points": redeem,
        "payments": [{"method": "cash", "amount_fen": price - redeem}] if price - redeem else [],
    }


def test_retry_with_same_key_returns_first_answer(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000001")
    headers = {**chain.key("A"), "Idempotency-Key": "till-7-0001"}
    first = app_client.post("/api/v1/orders", json=_body(m["member_no"]), headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = app_client.post("/api/v1/orders", json=_body(m["member_no"]), headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _orders(factory, chain.org_id) == 1
    assert balance(app_client, chain, m["member_no"]) == (25, 0)


def test_same_key_different_body_is_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000002")
    headers = {**chain.key("A"), "Idempotency-Key": "till-7-0002"}
    assert app_client.post("/api/v1/orders", json=_body(m["member_no"]), headers=headers).status_code == 201
    r = app_client.post("/api/v1/orders", json=_body(m["member_no"], price=2600), headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency.key_reused"
    assert r.json()["message_en"] == "This Idempotency-Key was used with a different request"
    assert _orders(factory, chain.org_id) == 1
    assert balance(app_client, chain, m["member_no"]) == (25, 0)


def test_business_error_is_replayed_too(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000003")
    headers = {**chain.key("B"), "Idempotency-Key": "till-9-0001"}
    first = app_client.post("/api/v1/orders", json=_body(m["member_no"], redeem=100), headers=headers)
    assert first.status_code == 409
    assert first.json()["code"] == "points.insufficient_balance"
    # The member earns enough meanwhile; the retry still answers what the first call answered.
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("BIG", 1, 50000)])
    again = app_client.post("/api/v1/orders", json=_body(m["member_no"], redeem=100), headers=headers)
    assert again.status_code == 409
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _orders(factory, chain.org_id) == 1
    # A new key is a new attempt.
    fresh = app_client.post(
        "/api/v1/orders",
        json=_body(m["member_no"], redeem=100),
        headers={**chain.key("B"), "Idempotency-Key": "till-9-0002"},
    )
    assert fresh.status_code == 201


def test_keys_are_per_caller(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    m = register(app_client, chain, "A", "13700000004")
    for store in ("A", "B"):
        r = app_client.post(
            "/api/v1/orders",
            json=_body(m["member_no"]),
            headers={**chain.key(store), "Idempotency-Key": "shared-key"},
        )
        assert r.status_code == 201
        assert "Idempotent-Replayed" not in r.headers
    assert _orders(factory, chain.org_id) == 2


def test_return_retry_does_not_return_twice(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13700000005")
    order = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("P", 2, 1000)])
    headers = {**chain.key("B"), "Idempotency-Key": "ret-1"}
    body = {"lines": [{"line_no": 1, "quantity": 1}]}
    r1 = app_client.post(f"/api/v1/orders/{order['order_no']}/returns", json=body, headers=headers)
    r2 = app_client.post(f"/api/v1/orders/{order['order_no']}/returns", json=body, headers=headers)
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    view = app_client.get(f"/api/v1/orders/{order['order_no']}", headers=chain.key("A")).json()
    assert view["lines"][0]["returned_quantity"] == 1
    assert balance(app_client, chain, m["member_no"]) == (10, 0)


def test_offline_batch_applies_once_in_order(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000006")
    orders = [
        {
            **_body(m["member_no"], price=10000),
            "client_order_id": "A-OFF-1",
            "occurred_at": "2026-11-20T09:00:00+08:00",
        },
        # Spends points the first offline order earned: only works if applied in order.
        {
            **_body(m["member_no"], redeem=100, price=100),
            "client_order_id": "A-OFF-2",
            "occurred_at": "2026-11-20T10:00:00+08:00",
        },
        {
            **_body(m["member_no"], redeem=5000, price=5000),
            "client_order_id": "A-OFF-3",
            "occurred_at": "2026-11-20T11:00:00+08:00",
        },
        {
            **_body(m["member_no"], price=300),
            "client_order_id": "A-OFF-4",
            "occurred_at": "2026-11-20T12:00:00+08:00",
        },
    ]
    r = app_client.post("/api/v1/orders/offline-batch", json={"orders": orders}, headers=chain.key("A"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["applied"], out["replayed"], out["failed"]) == (3, 0, 1)
    assert [(x["client_order_id"], x["status"]) for x in out["results"]] == [
        ("A-OFF-1", 201),
        ("A-OFF-2", 201),
        ("A-OFF-3", 409),
        ("A-OFF-4", 201),
    ]
    assert out["results"][2]["result"]["code"] == "points.insufficient_balance"
    assert balance(app_client, chain, m["member_no"]) == (100 - 100 + 3, 0)
    again = app_client.post(
        "/api/v1/orders/offline-batch", json={"orders": orders}, headers=chain.key("A")
    ).json()
    assert (again["applied"], again["replayed"], again["failed"]) == (0, 4, 1)
    assert [x["result"] for x in again["results"]] == [x["result"] for x in out["results"]]
    assert _orders(factory, chain.org_id) == 3
    with factory() as s:
        occurred = list(
            s.scalars(select(Order.occurred_at).where(Order.org_id == chain.org_id).order_by(Order.id))
        )
        assert [o.isoformat() for o in occurred] == [
            "2026-11-20T01:00:00+00:00",
            "2026-11-20T02:00:00+00:00",
            "2026-11-20T04:00:00+00:00",
        ]
        assert (
            s.scalar(select(func.count()).select_from(PointEntry).where(PointEntry.org_id == chain.org_id))
            == 3
        )


def test_duplicate_client_order_id_without_key_is_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000007")
    body = {**_body(m["member_no"]), "client_order_id": "POS1-0009"}
    first = app_client.post("/api/v1/orders", json=body, headers=chain.key("A"))
    assert first.status_code == 201
    r = app_client.post("/api/v1/orders", json=body, headers=chain.key("A"))
    assert r.status_code == 409
    assert r.json()["code"] == "orders.duplicate_client_order_id"
    assert r.json()["order_no"] == first.json()["order_no"]
    assert _orders(factory, chain.org_id) == 1


def test_batch_item_with_reused_client_id_fails_alone(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000008")
    first = {**_body(m["member_no"], price=1000), "client_order_id": "A-OFF-9"}
    r = app_client.post("/api/v1/orders/offline-batch", json={"orders": [first]}, headers=chain.key("A"))
    assert r.json()["applied"] == 1
    changed = {**first, "lines": [line("K", 2, 1000)], "payments": [{"method": "cash", "amount_fen": 2000}]}
    new = {**_body(m["member_no"], price=500), "client_order_id": "A-OFF-10"}
    out = app_client.post(
        "/api/v1/orders/offline-batch", json={"orders": [new, changed]}, headers=chain.key("A")
    )
    assert out.status_code == 200
    body = out.json()
    assert [(x["client_order_id"], x["status"]) for x in body["results"]] == [
        ("A-OFF-10", 201),
        ("A-OFF-9", 422),
    ]
    assert body["results"][1]["result"]["code"] == "idempotency.key_reused"
    assert (body["applied"], body["replayed"], body["failed"]) == (1, 0, 1)
    assert _orders(factory, chain.org_id) == 2


def test_batch_replays_after_the_tills_key_is_rotated(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13700000009")
    batch = {"orders": [{**_body(m["member_no"], price=1000), "client_order_id": "A-OFF-11"}]}
    first = app_client.post("/api/v1/orders/offline-batch", json=batch, headers=chain.key("A")).json()
    mgr = login(app_client, chain, "a_mgr")
    new_key = app_client.post("/api/v1/stores/A/api-keys", json={"name": "new till"}, headers=mgr).json()[
        "secret"
    ]
    again = app_client.post(
        "/api/v1/orders/offline-batch", json=batch, headers={"Authorization": f"Bearer {new_key}"}
    ).json()
    assert (again["applied"], again["replayed"]) == (0, 1)
    assert again["results"][0]["result"] == first["results"][0]["result"]
    assert _orders(factory, chain.org_id) == 1
