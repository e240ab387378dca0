"""The points mall through the HTTP API: rewards of each kind, central and per-store stock, limits,
points + cash, fulfilment and cancellation, and a real stock race on parallel connections."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal, system_principal
from onemember.auth.service import authenticate
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.db import make_engine, make_sessionmaker
from onemember.errors import DomainError
from onemember.events.models import Event
from onemember.members import service as members
from onemember.org import service as org_service
from onemember.points import admin_api, mall
from onemember.points import service as points
from onemember.points.models import (
    PointAccount,
    PointEntry,
    PointLot,
    PointLotMovement,
    Reward,
    RewardRedemption,
    RewardStock,
)
from onemember.points.verify import verify
from onemember.settings import get_settings
from tests.factories import Chain, make_chain
from tests.helpers import login, register

SOON = datetime(2031, 3, 31, 16, 0, tzinfo=UTC)
LATER = datetime(2032, 3, 31, 16, 0, tzinfo=UTC)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The app with the mall router (added here until app.py registers it)."""
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/api/v1/rewards" for r in app.routes):
        app.include_router(admin_api.router)
    with TestClient(app) as c:
        yield c


def give(
    factory: sessionmaker[Session],
    chain: Chain,
    member_no: str,
    amount: int,
    *,
    expires_at: datetime | None = None,
    store: str = "A",
) -> None:
    """Credit a lot directly (a test shortcut for earlier purchases)."""
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        program = points.default_program(s, chain.org_id)
        account = points.ensure_account(s, chain.org_id, member.id, program.id)
        account = points.lock_account(s, account.id)
        ctx = points.EntryContext(store_id=chain.stores[store], reason="test")
        points.earn(s, account, amount, ctx, expires_at=expires_at)
        s.commit()


def lots_of(factory: sessionmaker[Session], member_no: str, org_id: int) -> list[tuple[int, int, Any]]:
    """(amount, remaining, expires_at) of a member's lots, oldest first."""
    with factory() as s:
        member = members.by_member_no(s, org_id, member_no)
        rows = s.execute(
            select(PointLot.amount, PointLot.remaining, PointLot.expires_at)
            .where(PointLot.member_id == member.id)
            .order_by(PointLot.id)
        ).all()
        return [(a, r, e) for a, r, e in rows]


def account_of(factory: sessionmaker[Session], org_id: int, member_no: str) -> tuple[int, int]:
    with factory() as s:
        member = members.by_member_no(s, org_id, member_no)
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member.id)).one()
        return account.balance, account.debt


def _count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


def snapshot(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    with factory() as s:
        return {
            "entries": _count(s, PointEntry, org_id),
            "lots": _count(s, PointLot, org_id),
            "movements": _count(s, PointLotMovement, org_id),
            "redemptions": _count(s, RewardRedemption, org_id),
            "events": _count(s, Event, org_id),
            "audit": _count(s, AuditLog, org_id),
            "balances": sorted(
                s.execute(
                    select(PointAccount.id, PointAccount.balance, PointAccount.debt).where(
                        PointAccount.org_id == org_id
                    )
                ).all()
            ),
            "remaining": sorted(
                s.execute(select(PointLot.id, PointLot.remaining).where(PointLot.org_id == org_id)).all()
            ),
            "stock": sorted(
                s.execute(
                    select(RewardStock.reward_id, RewardStock.store_key, RewardStock.quantity).where(
                        RewardStock.org_id == org_id
                    )
                ).all()
            ),
        }


def create_reward(client: TestClient, hq: dict[str, str], **fields: Any) -> dict[str, Any]:
    r = client.post("/api/v1/rewards", json=fields, headers=hq)
    assert r.status_code == 201, r.text
    return dict(r.json())


def set_stock(
    client: TestClient, hq: dict[str, str], code: str, quantity: int, store_code: str | None = None
) -> None:
    r = client.post(
        f"/api/v1/rewards/{code}/stock", json={"store_code": store_code, "quantity": quantity}, headers=hq
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"reward_code": code, "store_code": store_code, "quantity": quantity}


def redeem(
    client: TestClient,
    headers: dict[str, str],
    member_no: str,
    reward_code: str,
    *,
    expect: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/members/{member_no}/reward-redemptions",
        json={"reward_code": reward_code, **extra},
        headers=headers,
    )
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"] == "application/problem+json"
    return dict(r.json())


def stock(factory: sessionmaker[Session], org_id: int, code: str, key: int = 0) -> int | None:
    with factory() as s:
        reward = mall.reward_by_code(s, org_id, code)
        return mall.stock_quantity(s, reward.id, key)


GIFT = {"code": "MUG", "name": "保温杯", "kind": "gift", "points_cost": 300, "stock_mode": "central"}


def test_rewards_of_each_kind_are_offered_where_they_are_in_stock(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    assert create_reward(client, hq, **GIFT) == {
        "code": "MUG",
        "name": "保温杯",
        "kind": "gift",
        "points_cost": 300,
        "cash_fen": 0,
        "per_member_limit": None,
        "stock_mode": "central",
        "active": True,
        "quantity": None,
        "coupon_template_code": None,
    }
    create_reward(
        client, hq, code="CPN", name="满100减10券", kind="coupon", points_cost=500, stock_mode="none"
    )
    create_reward(
        client, hq, code="WASH", name="洗车一次", kind="service", points_cost=800, stock_mode="store"
    )
    create_reward(
        client,
        hq,
        code="BAG",
        name="购物袋",
        kind="points_cash",
        points_cost=100,
        cash_fen=990,
        per_member_limit=1,
    )
    set_stock(client, hq, "MUG", 3)
    set_stock(client, hq, "WASH", 2, "A")
    set_stock(client, hq, "BAG", 0)
    set_stock(client, hq, "MUG", 3)  # a recount that finds the same number is still recorded
    with factory() as s:
        audit = s.execute(
            select(AuditLog.target_id, AuditLog.store_id, AuditLog.details)
            .where(AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_stock_set")
            .order_by(AuditLog.id)
        ).all()
    assert audit == [
        ("MUG", None, {"store_key": 0, "before": None, "after": 3}),
        ("WASH", chain.stores["A"], {"store_key": chain.stores["A"], "before": None, "after": 2}),
        ("BAG", None, {"store_key": 0, "before": None, "after": 0}),
        ("MUG", None, {"store_key": 0, "before": 3, "after": 3}),
    ]

    def offered(store: str) -> list[tuple[str, int | None]]:
        r = client.get("/api/v1/rewards", params={"store_code": store}, headers=hq)
        assert r.status_code == 200, r.text
        assert r.json()["store_code"] == store
        return [(x["code"], x["quantity"]) for x in r.json()["rewards"]]

    assert offered("A") == [("MUG", 3), ("CPN", None), ("WASH", 2)]
    assert offered("B") == [("MUG", 3), ("CPN", None)]
    # A till lists its own store without naming it, and cannot look at another store's shelf.
    own = client.get("/api/v1/rewards", headers=chain.key("A")).json()
    assert [x["code"] for x in own["rewards"]] == ["MUG", "CPN", "WASH"]
    other = client.get("/api/v1/rewards", params={"store_code": "B"}, headers=chain.key("A"))
    assert (other.status_code, other.json()["code"]) == (403, "auth.store_scope")
    nowhere = client.get("/api/v1/rewards", headers=hq)
    assert (nowhere.status_code, nowhere.json()["code"]) == (422, "points.store_required")


def test_bad_rewards_and_stock_are_refused(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    create_reward(client, hq, code="CPN", name="券", kind="coupon", points_cost=500, stock_mode="none")
    before = snapshot(factory, chain.org_id)
    rewards_before = _rewards(factory, chain.org_id)
    cases: list[tuple[str, dict[str, Any], dict[str, str], int, str]] = [
        ("/api/v1/rewards", {**GIFT, "code": "X1", "kind": "points_cash"}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", {**GIFT, "code": "X2", "cash_fen": 100}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", {**GIFT, "code": "X3", "kind": "voucher"}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", {**GIFT, "code": "X4", "points_cost": 0}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", {**GIFT, "code": "X5", "per_member_limit": 0}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", {**GIFT, "code": "X6", "stock_mode": "shelf"}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards", GIFT, hq, 409, "points.reward_code_taken"),
        ("/api/v1/rewards", {**GIFT, "code": "X7"}, login(client, chain, "a_mgr"), 403, "auth.role"),
        ("/api/v1/rewards/MUG/stock", {"quantity": -1}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards/MUG/stock", {"quantity": 5, "store_code": "A"}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards/CPN/stock", {"quantity": 5}, hq, 422, "points.invalid_reward"),
        ("/api/v1/rewards/NOPE/stock", {"quantity": 5}, hq, 404, "points.reward_not_found"),
        ("/api/v1/rewards/MUG/stock", {"quantity": 5}, chain.key("A"), 403, "auth.role"),
    ]
    for url, body, headers, status, code in cases:
        r = client.post(url, json=body, headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
    assert snapshot(factory, chain.org_id) == before
    assert _rewards(factory, chain.org_id) == rewards_before


def _rewards(factory: sessionmaker[Session], org_id: int) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(Reward.code).where(Reward.org_id == org_id).order_by(Reward.code)))


def test_gift_redemption_spends_soonest_expiring_points_and_waits_for_pickup(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    set_stock(client, hq, "MUG", 3)
    m = register(client, chain, "A", "18900000101")
    give(factory, chain, m["member_no"], 200, expires_at=LATER)
    give(factory, chain, m["member_no"], 150, expires_at=SOON)
    give(factory, chain, m["member_no"], 100)
    out = redeem(client, chain.key("B"), m["member_no"], "MUG")
    assert {k: v for k, v in out.items() if k not in ("id", "created_at", "actor")} == {
        "reward_code": "MUG",
        "reward_name": "保温杯",
        "reward_kind": "gift",
        "member_no": m["member_no"],
        "store_code": "B",
        "points": 300,
        "cash_fen": 0,
        "status": "pending",
        "fulfilled_at": None,
        "fulfilled_by": "",
        "points_balance": 150,
        "coupon_code": None,
    }
    assert lots_of(factory, m["member_no"], chain.org_id) == [
        (200, 50, LATER),
        (150, 0, SOON),
        (100, 100, None),
    ]
    assert stock(factory, chain.org_id, "MUG") == 2
    with factory() as s:
        entry = s.scalars(
            select(PointEntry).where(PointEntry.org_id == chain.org_id, PointEntry.kind == "redeem")
        ).one()
        assert (entry.amount, entry.store_id, entry.ref, entry.reason) == (
            -300,
            chain.stores["B"],
            f"reward:{out['id']}",
            "积分商城兑换 保温杯（MUG）",
        )
        events = [
            (e.type, e.payload)
            for e in s.scalars(select(Event).where(Event.org_id == chain.org_id).order_by(Event.id))
            if e.type in ("reward.redeemed", "points.changed")
        ]
        assert events == [
            (
                "reward.redeemed",
                {
                    "redemption_id": out["id"],
                    "reward_code": "MUG",
                    "reward_kind": "gift",
                    "member_no": m["member_no"],
                    "store_code": "B",
                    "points": 300,
                    "cash_fen": 0,
                },
            ),
            (
                "points.changed",
                {
                    "member_no": m["member_no"],
                    "earned": 0,
                    "redeemed": 300,
                    "balance": 150,
                    "debt": 0,
                    "reason": "reward",
                },
            ),
        ]
        assert verify(s, chain.org_id).ok
    listed = client.get(f"/api/v1/members/{m['member_no']}/reward-redemptions", headers=chain.key("C")).json()
    assert [(x["id"], x["status"]) for x in listed["redemptions"]] == [(out["id"], "pending")]


def test_store_stock_is_kept_per_store(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(
        client, hq, code="WASH", name="洗车一次", kind="service", points_cost=100, stock_mode="store"
    )
    set_stock(client, hq, "WASH", 1, "A")
    m = register(client, chain, "A", "18900000102")
    give(factory, chain, m["member_no"], 500)
    before = snapshot(factory, chain.org_id)
    # Not stocked at store B, and HQ redeeming without naming a store has no shelf to take from.
    for headers in (chain.key("B"), hq):
        body = redeem(client, headers, m["member_no"], "WASH", expect=409)
        assert body["code"] == "points.reward_not_available_here"
    assert snapshot(factory, chain.org_id) == before
    # HQ may redeem on a member's behalf at a named store.
    out = redeem(client, hq, m["member_no"], "WASH", store_code="A")
    assert (out["store_code"], out["points_balance"]) == ("A", 400)
    reward_id = _reward_id(factory, chain.org_id, "WASH")
    assert stock(factory, chain.org_id, "WASH", chain.stores["A"]) == 0
    again = redeem(client, chain.key("A"), m["member_no"], "WASH", expect=409)
    assert again["code"] == "points.reward_out_of_stock"
    with factory() as s:
        assert s.execute(
            select(RewardStock.store_key, RewardStock.quantity).where(RewardStock.reward_id == reward_id)
        ).all() == [(chain.stores["A"], 0)]


def _reward_id(factory: sessionmaker[Session], org_id: int, code: str) -> int:
    with factory() as s:
        return mall.reward_by_code(s, org_id, code).id


def test_out_of_stock_and_short_of_points_change_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    create_reward(client, hq, code="TEA", name="茶叶", kind="gift", points_cost=100)  # never stocked
    set_stock(client, hq, "MUG", 1)
    rich = register(client, chain, "A", "18900000103")
    poor = register(client, chain, "A", "18900000104")
    give(factory, chain, rich["member_no"], 1000)
    give(factory, chain, poor["member_no"], 299)
    short = redeem(client, chain.key("A"), poor["member_no"], "MUG", expect=409)
    assert (short["code"], short["available"], short["requested"]) == (
        "points.insufficient_balance",
        299,
        300,
    )
    assert stock(factory, chain.org_id, "MUG") == 1
    redeem(client, chain.key("A"), rich["member_no"], "MUG")
    before = snapshot(factory, chain.org_id)
    for code in ("MUG", "TEA"):
        body = redeem(client, chain.key("A"), rich["member_no"], code, expect=409)
        assert body["code"] == "points.reward_out_of_stock"
        assert body["message_en"] == "The reward is out of stock"
        assert body["message_zh"] == "礼品库存不足"
    missing = redeem(client, chain.key("A"), rich["member_no"], "NOPE", expect=404)
    assert missing["code"] == "points.reward_not_found"
    assert snapshot(factory, chain.org_id) == before
    assert account_of(factory, chain.org_id, rich["member_no"]) == (700, 0)


def test_per_member_limit_counts_redemptions_that_were_not_cancelled(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(
        client,
        hq,
        code="CPN",
        name="券",
        kind="coupon",
        points_cost=100,
        per_member_limit=2,
        stock_mode="none",
    )
    m = register(client, chain, "A", "18900000105")
    other = register(client, chain, "A", "18900000106")
    give(factory, chain, m["member_no"], 1000)
    give(factory, chain, other["member_no"], 1000)
    first = redeem(client, chain.key("A"), m["member_no"], "CPN")
    redeem(client, chain.key("B"), m["member_no"], "CPN")
    before = snapshot(factory, chain.org_id)
    body = redeem(client, chain.key("C"), m["member_no"], "CPN", expect=409)
    assert (body["code"], body["limit"], body["used"]) == ("points.reward_limit_reached", 2, 2)
    assert body["message_zh"] == "该礼品每人限兑 2 次，已兑 2 次"
    assert snapshot(factory, chain.org_id) == before
    redeem(client, chain.key("A"), other["member_no"], "CPN")  # the limit is per member
    r = client.post(
        f"/api/v1/reward-redemptions/{first['id']}/cancel",
        json={"reason": "顾客改主意"},
        headers=chain.key("A"),
    )
    assert r.status_code == 200, r.text
    assert redeem(client, chain.key("C"), m["member_no"], "CPN")["points_balance"] == 800


def test_points_plus_cash_needs_the_cash_part(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, code="BAG", name="购物袋", kind="points_cash", points_cost=100, cash_fen=990)
    set_stock(client, hq, "BAG", 10)
    m = register(client, chain, "A", "18900000107")
    give(factory, chain, m["member_no"], 150)
    before = snapshot(factory, chain.org_id)
    for cash in (0, 900):
        body = redeem(client, chain.key("A"), m["member_no"], "BAG", expect=422, cash_fen=cash)
        assert (body["code"], body["cash_fen"]) == ("points.reward_cash_mismatch", 990)
    assert snapshot(factory, chain.org_id) == before
    out = redeem(client, chain.key("A"), m["member_no"], "BAG", cash_fen=990)
    assert (out["reward_kind"], out["points"], out["cash_fen"], out["points_balance"]) == (
        "points_cash",
        100,
        990,
        50,
    )
    assert stock(factory, chain.org_id, "BAG") == 9


def test_coupon_and_service_stay_pending_until_fulfilled(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, code="CPN", name="券", kind="coupon", points_cost=100, stock_mode="none")
    create_reward(client, hq, code="WASH", name="洗车", kind="service", points_cost=200, stock_mode="store")
    set_stock(client, hq, "WASH", 5, "A")
    m = register(client, chain, "A", "18900000108")
    give(factory, chain, m["member_no"], 1000)
    coupon = redeem(client, hq, m["member_no"], "CPN")
    service = redeem(client, chain.key("A"), m["member_no"], "WASH")
    assert (coupon["status"], coupon["store_code"], service["status"]) == ("pending", None, "pending")
    # Store B's clerk cannot close store A's redemption, nor a store clerk HQ's.
    for rid, headers in ((service["id"], chain.key("B")), (coupon["id"], chain.key("A"))):
        r = client.post(f"/api/v1/reward-redemptions/{rid}/fulfil", headers=headers)
        assert (r.status_code, r.json()["code"]) == (403, "auth.store_scope")
    r = client.post(
        f"/api/v1/reward-redemptions/{service['id']}/fulfil", headers=login(client, chain, "a_clerk")
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["status"], done["fulfilled_by"]) == ("fulfilled", "staff:a_clerk")
    assert done["fulfilled_at"] is not None
    r = client.post(f"/api/v1/reward-redemptions/{coupon['id']}/fulfil", headers=login(client, chain, "cs"))
    assert (r.json()["status"], r.json()["fulfilled_by"]) == ("fulfilled", "staff:cs")
    before = snapshot(factory, chain.org_id)
    for action in ("fulfil", "cancel"):
        r = client.post(f"/api/v1/reward-redemptions/{service['id']}/{action}", headers=chain.key("A"))
        assert (r.status_code, r.json()["code"], r.json()["current_status"]) == (
            409,
            "points.redemption_not_pending",
            "fulfilled",
        )
    r = client.post("/api/v1/reward-redemptions/999999999/fulfil", headers=hq)
    assert (r.status_code, r.json()["code"]) == (404, "points.redemption_not_found")
    assert snapshot(factory, chain.org_id) == before
    with factory() as s:
        audit = s.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.target_id, AuditLog.store_id)
            .where(AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_fulfilled")
            .order_by(AuditLog.id)
        ).all()
    assert audit == [
        ("points.reward_fulfilled", "staff:a_clerk", str(service["id"]), chain.stores["A"]),
        ("points.reward_fulfilled", "staff:cs", str(coupon["id"]), None),
    ]


def test_cancel_gives_points_back_to_their_lots_and_the_unit_back_to_stock(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    set_stock(client, hq, "MUG", 1)
    m = register(client, chain, "A", "18900000109")
    give(factory, chain, m["member_no"], 200, expires_at=LATER)
    give(factory, chain, m["member_no"], 150, expires_at=SOON)
    lots_before = lots_of(factory, m["member_no"], chain.org_id)
    out = redeem(client, chain.key("A"), m["member_no"], "MUG")
    assert lots_of(factory, m["member_no"], chain.org_id) == [(200, 50, LATER), (150, 0, SOON)]
    r = client.post(
        f"/api/v1/reward-redemptions/{out['id']}/cancel",
        json={"reason": "礼品破损"},
        headers={**chain.key("A"), "Idempotency-Key": "cancel-1"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["points_balance"]) == ("cancelled", 350)
    assert lots_of(factory, m["member_no"], chain.org_id) == lots_before
    assert stock(factory, chain.org_id, "MUG") == 1
    replay = client.post(
        f"/api/v1/reward-redemptions/{out['id']}/cancel",
        json={"reason": "礼品破损"},
        headers={**chain.key("A"), "Idempotency-Key": "cancel-1"},
    )
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (200, "true")
    with factory() as s:
        entries = s.execute(
            select(
                PointEntry.kind,
                PointEntry.amount,
                PointEntry.reverses_entry_id,
                PointEntry.ref,
                PointEntry.reason,
            )
            .where(PointEntry.org_id == chain.org_id, PointEntry.kind.in_(["redeem", "redeem_refund"]))
            .order_by(PointEntry.id)
        ).all()
        redeem_id = s.scalar(select(RewardRedemption.entry_id).where(RewardRedemption.id == out["id"]))
        assert entries == [
            ("redeem", -300, None, f"reward:{out['id']}", "积分商城兑换 保温杯（MUG）"),
            (
                "redeem_refund",
                300,
                redeem_id,
                f"reward-cancel:{out['id']}",
                "取消积分商城兑换 保温杯（MUG）：礼品破损",
            ),
        ]
        audit = s.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.reason, AuditLog.details)
            .where(AuditLog.org_id == chain.org_id, AuditLog.target_type == "reward_redemption")
            .order_by(AuditLog.id)
        ).all()
        till = f"api_key:{chain.keys['A'][4:12]}"
        assert audit == [
            ("points.reward_redeemed", till, "", {"reward_code": "MUG", "points": 300, "cash_fen": 0}),
            ("points.reward_cancelled", till, "礼品破损", {"reward_code": "MUG", "points_refunded": 300}),
        ]
        assert verify(s, chain.org_id).ok
    before = snapshot(factory, chain.org_id)
    again = client.post(f"/api/v1/reward-redemptions/{out['id']}/cancel", headers=hq)
    assert (again.status_code, again.json()["code"], again.json()["current_status"]) == (
        409,
        "points.redemption_not_pending",
        "cancelled",
    )
    assert snapshot(factory, chain.org_id) == before


def test_a_retried_redemption_applies_once(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    set_stock(client, hq, "MUG", 5)
    m = register(client, chain, "A", "18900000110")
    give(factory, chain, m["member_no"], 1000)
    headers = {**chain.key("A"), "Idempotency-Key": "mall-1"}
    first = redeem(client, headers, m["member_no"], "MUG")
    r = client.post(
        f"/api/v1/members/{m['member_no']}/reward-redemptions", json={"reward_code": "MUG"}, headers=headers
    )
    assert (r.status_code, r.json()["id"], r.headers["Idempotent-Replayed"]) == (201, first["id"], "true")
    assert stock(factory, chain.org_id, "MUG") == 4
    assert account_of(factory, chain.org_id, m["member_no"]) == (700, 0)
    clash = client.post(
        f"/api/v1/members/{m['member_no']}/reward-redemptions", json={"reward_code": "CPN"}, headers=headers
    )
    assert (clash.status_code, clash.json()["code"]) == (422, "idempotency.key_reused")


def test_roles_and_scope_for_redemptions(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    set_stock(client, hq, "MUG", 5)
    m = register(client, chain, "A", "18900000111")
    give(factory, chain, m["member_no"], 1000)
    before = snapshot(factory, chain.org_id)
    auditor = redeem(client, login(client, chain, "auditor"), m["member_no"], "MUG", expect=403)
    assert auditor["code"] == "auth.role"
    elsewhere = redeem(client, chain.key("A"), m["member_no"], "MUG", expect=403, store_code="B")
    assert elsewhere["code"] == "auth.store_scope"
    regional = login(client, chain, "east_mgr")
    storeless = redeem(client, regional, m["member_no"], "MUG", expect=422)
    assert storeless["code"] == "points.store_required"
    assert snapshot(factory, chain.org_id) == before
    assert redeem(client, regional, m["member_no"], "MUG", store_code="B")["store_code"] == "B"
    # A withdrawn reward leaves the shelf and cannot be redeemed; offering it again brings it back.
    r = client.post("/api/v1/rewards/MUG/active", json={"active": False}, headers=hq)
    assert (r.status_code, r.json()["active"]) == (200, False)
    assert client.get("/api/v1/rewards", headers=chain.key("A")).json()["rewards"] == []
    before = snapshot(factory, chain.org_id)
    assert (
        redeem(client, chain.key("A"), m["member_no"], "MUG", expect=409)["code"] == "points.reward_inactive"
    )
    assert snapshot(factory, chain.org_id) == before
    r = client.post("/api/v1/rewards/MUG/active", json={"active": True}, headers=hq)
    assert [x["code"] for x in client.get("/api/v1/rewards", headers=chain.key("A")).json()["rewards"]] == [
        "MUG"
    ]
    with factory() as s:
        actions = s.scalars(
            select(AuditLog.action)
            .where(AuditLog.org_id == chain.org_id, AuditLog.target_type == "reward")
            .order_by(AuditLog.id)
        ).all()
    assert actions == [
        "points.reward_created",
        "points.reward_stock_set",
        "points.reward_withdrawn",
        "points.reward_listed",
    ]


# --- a real race for the last units ------------------------------------------------------------------

THREADS = 20
UNITS = 5
ROUNDS = 3


def test_twenty_tills_race_for_the_last_five_units(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    race_engine = (
        make_engine(url, pool_size=THREADS + 5, max_overflow=0)
        if engine.dialect.name != "sqlite"
        else make_engine(url)
    )
    factory = make_sessionmaker(race_engine)
    with factory() as s:
        chain = make_chain(s)
        till = authenticate(s, chain.keys["A"])
        program = points.default_program(s, chain.org_id)
        numbers = []
        for i in range(THREADS):
            member = members.register(
                s, till, chain.stores["A"], members.Registration(phone=f"189000002{i:02d}", name="抢兑")
            )
            account = points.ensure_account(s, chain.org_id, member.id, program.id)
            points.earn(s, account, 1000, points.EntryContext(store_id=chain.stores["A"]))
            numbers.append(member.member_no)
        hq = system_principal(chain.org_id)
        reward = mall.create_reward(
            s, hq, mall.RewardSpec(code="LAST", name="限量礼品", kind="gift", points_cost=100)
        )
        reward_id = reward.id
        s.commit()
    tills = {code: _principal(factory, secret) for code, secret in chain.keys.items()}
    for round_no in range(1, ROUNDS + 1):
        with factory() as s:
            mall.set_stock(s, hq, mall.reward_by_code(s, chain.org_id, "LAST"), None, UNITS)
            s.commit()
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS)
        threads = [
            threading.Thread(
                target=_race, args=(factory, tills["ABC"[i % 3]], numbers[i], barrier, outcomes, lock)
            )
            for i in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes == Counter({"ok": UNITS, "points.reward_out_of_stock": THREADS - UNITS}), round_no
        with factory() as s:
            assert mall.stock_quantity(s, reward_id, 0) == 0
            assert (
                s.scalar(select(func.count()).where(RewardRedemption.reward_id == reward_id))
                == UNITS * round_no
            )
            spent = s.scalar(
                select(func.sum(PointAccount.lifetime_redeemed)).where(PointAccount.org_id == chain.org_id)
            )
            assert spent == 100 * UNITS * round_no
            report = verify(s, chain.org_id)
            assert report.ok, report.problems
    race_engine.dispose()


def _principal(factory: sessionmaker[Session], secret: str) -> Principal:
    with factory() as s:
        return authenticate(s, secret)


def _race(
    factory: sessionmaker[Session],
    till: Principal,
    member_no: str,
    barrier: threading.Barrier,
    outcomes: Counter[str],
    lock: threading.Lock,
) -> None:
    barrier.wait()
    with factory() as s:
        try:
            member = members.by_member_no(s, till.org_id, member_no)
            reward = mall.reward_by_code(s, till.org_id, "LAST")
            store = org_service.acting_store(s, till, None)
            mall.redeem_reward(s, till, member, reward, store)
            s.commit()
            result = "ok"
        except DomainError as err:
            s.rollback()
            result = err.code
    with lock:
        outcomes[result] += 1


def _settlement(factory: sessionmaker[Session], chain: Chain) -> list[tuple[str, str, str, int, bool]]:
    """(kind, debtor, creditor, fen, is_reversal) of the org's settlement entries, in order."""
    from onemember.settlement.models import SettlementEntry

    names = {v: k for k, v in chain.stores.items()}
    with factory() as s:
        rows = s.scalars(
            select(SettlementEntry).where(SettlementEntry.org_id == chain.org_id).order_by(SettlementEntry.id)
        ).all()
        return [
            (
                e.kind,
                names.get(e.debtor_key, "HQ"),
                names.get(e.creditor_key, "HQ"),
                e.amount_fen,
                e.reverses_id is not None,
            )
            for e in rows
        ]


def test_a_coupon_reward_issues_its_coupon_at_once_and_settles_when_used(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    """A coupon reward names its template: redeeming it issues an HQ coupon to the member and the
    redemption is fulfilled at once. The coupon's discount is settled by the template's bearer when it
    is used; a gift handed over at B for points earned at A settles the points (A repays B)."""
    from onemember.coupons.verify import verify_coupons
    from onemember.settlement.verify import verify_settlement

    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "MALL20",
            "name": "满100减20",
            "kind": "amount_off",
            "threshold_fen": 10000,
            "amount_fen": 2000,
            "valid_days": 30,
            "total_quantity": 1,
            "bearer": "hq",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "AONLY",
            "name": "A 店券",
            "kind": "amount_off",
            "amount_fen": 500,
            "valid_days": 30,
            "accept_scope": "issuing_store",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    out = create_reward(
        client,
        hq,
        code="CPN20",
        name="20 元券",
        kind="coupon",
        points_cost=400,
        stock_mode="none",
        coupon_template_code="MALL20",
    )
    assert out["coupon_template_code"] == "MALL20"
    # Templates the mall cannot issue are refused and nothing is written.
    before = snapshot(factory, chain.org_id)
    rewards_before = _rewards(factory, chain.org_id)
    for fields, msg in (
        ({"coupon_template_code": "NOPE"}, "Coupon template NOPE does not exist"),
        (
            {"coupon_template_code": "AONLY"},
            "Mall coupons are issued by HQ, so the template cannot be for the issuing store only",
        ),
        ({"kind": "gift", "coupon_template_code": "MALL20"}, "Only a coupon reward names a coupon template"),
    ):
        body = {
            "code": "X",
            "name": "券",
            "kind": "coupon",
            "points_cost": 100,
            "stock_mode": "none",
            **fields,
        }
        r = client.post("/api/v1/rewards", json=body, headers={**hq, "Accept-Language": "en"})
        assert (r.status_code, r.json()["code"], r.json()["field"], r.json()["detail"]) == (
            422,
            "points.invalid_reward",
            "coupon_template_code",
            msg,
        )
    assert snapshot(factory, chain.org_id) == before
    assert _rewards(factory, chain.org_id) == rewards_before == ["CPN20"]

    m = register(client, chain, "A", "18900000120")
    other = register(client, chain, "A", "18900000121")
    give(factory, chain, m["member_no"], 1000, store="A")
    give(factory, chain, other["member_no"], 1000, store="A")
    got = redeem(client, login(client, chain, "c_clerk"), m["member_no"], "CPN20", store_code="C")
    assert (got["status"], got["fulfilled_by"], got["points_balance"]) == ("fulfilled", "staff:c_clerk", 600)
    code = got["coupon_code"]
    listed = client.get(f"/api/v1/members/{m['member_no']}/reward-redemptions", headers=chain.key("A")).json()
    assert [(x["id"], x["coupon_code"]) for x in listed["redemptions"]] == [(got["id"], code)]
    r = client.get(f"/api/v1/members/{m['member_no']}/coupons", headers=chain.key("A"))
    [coupon] = r.json()["coupons"]
    assert (coupon["code"], coupon["template_code"], coupon["source"], coupon["issuing_store_code"]) == (
        code,
        "MALL20",
        "mall",
        None,
    )
    # The template had one coupon: the next redemption is refused and spends no points.
    before = snapshot(factory, chain.org_id)
    body = redeem(client, chain.key("C"), other["member_no"], "CPN20", expect=409, store_code="C")
    assert body["code"] == "coupons.sold_out"
    assert snapshot(factory, chain.org_id) == before
    with factory() as s:
        coupons = s.scalars(select(Coupon.code).where(Coupon.org_id == chain.org_id)).all()
        issued = s.scalar(
            select(CouponTemplate.issued_count).where(
                CouponTemplate.org_id == chain.org_id, CouponTemplate.code == "MALL20"
            )
        )
    assert (list(coupons), issued) == ([code], 1)
    assert _settlement(factory, chain) == []  # the mall coupon's points settle nothing

    # Used at B on a 120.00 basket: HQ repays B the 20.00.
    r = client.post(
        "/api/v1/orders",
        json={
            "member": {"member_no": m["member_no"]},
            "lines": [
                {"sku": "TEA", "name": "TEA", "category": "食品", "quantity": 1, "unit_price_fen": 12000}
            ],
            "coupon_codes": [code],
            "payments": [{"method": "cash", "amount_fen": 10000}],
        },
        headers=chain.key("B"),
    )
    assert r.status_code == 201, r.text
    assert _settlement(factory, chain) == [("coupon_redeemed", "HQ", "B", 2000, False)]

    # A gift handed over at B for points A issued: A repays B their value (1 fen a point); a cancelled
    # redemption reverses it.
    create_reward(client, hq, **GIFT)
    set_stock(client, hq, "MUG", 5)
    mug = redeem(client, chain.key("B"), other["member_no"], "MUG", store_code="B")
    assert mug["status"] == "pending"
    r = client.post(
        f"/api/v1/reward-redemptions/{mug['id']}/cancel", json={"reason": "缺货"}, headers=chain.key("B")
    )
    assert r.status_code == 200, r.text
    assert _settlement(factory, chain)[1:] == [
        ("points_redeemed", "A", "B", 300, False),
        ("points_redeemed", "B", "A", 300, True),
    ]
    with factory() as s:
        assert verify_settlement(s, chain.org_id).problems == []
        assert verify_coupons(s, chain.org_id) == []
