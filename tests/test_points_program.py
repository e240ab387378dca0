"""Points program features through the API: typed rules and their versions, simulation, store bonuses,
pending points, expiry and reminders, tiers (upgrade, benefits, keep-level, grace, manual floor)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.db import set_clock
from onemember.events.models import Event
from onemember.jobs.runner import run_daily
from onemember.points.models import PointEntry, PointLot
from onemember.points.verify import verify
from tests.factories import Chain
from tests.helpers import balance, checkout, line, login, register

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # Wednesday 11:00 in Shanghai


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    set_clock(c)
    yield c
    set_clock(None)


def _rule(client: TestClient, hq: dict[str, str], expect: int = 201, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/points/rules", json=body, headers=hq)
    assert r.status_code == expect, r.text
    return dict(r.json())


def _program(client: TestClient, hq: dict[str, str], **changes: Any) -> dict[str, Any]:
    current = client.get("/api/v1/points/program", headers=hq).json()
    body = {k: v for k, v in {**current, **changes}.items() if k not in ("code", "name", "scope")}
    r = client.put("/api/v1/points/program", json=body, headers=hq)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _events(factory: sessionmaker[Session], org_id: int, kind: str) -> list[dict[str, Any]]:
    with factory() as s:
        return [
            e.payload
            for e in s.scalars(
                select(Event).where(Event.org_id == org_id, Event.type == kind).order_by(Event.id)
            )
        ]


def test_rules_apply_at_checkout_with_explanation(app_client: TestClient, chain: Chain, clock: Clock) -> None:
    hq = login(app_client, chain, "hq")
    base = _rule(app_client, hq, kind="base_rate", name="基础", points_per_yuan=2)
    _rule(app_client, hq, kind="category_multiplier", multiplier_pct=200, category="母婴")
    _rule(app_client, hq, kind="exclude_sku", sku="TOBACCO")
    _rule(app_client, hq, kind="member_day_multiplier", multiplier_pct=150, weekday=3)
    _rule(app_client, hq, kind="first_purchase_bonus", bonus_points=50)
    m = register(app_client, chain, "A", "13800138001")
    body = {
        "member": {"member_no": m["member_no"]},
        "lines": [line("MILK", 1, 10000, "母婴"), line("TOBACCO", 1, 3000, "烟酒"), line("RICE", 1, 5000)],
    }
    sim = app_client.post("/api/v1/points/simulate", json=body, headers=chain.key("B")).json()
    order = checkout(app_client, chain, "B", body["member"], body["lines"])
    # base 2/yuan: 200, 0, 100; 母婴 2×: +200; member day 1.5×: +100 +50; first purchase 50 spread 33/17
    assert [x["points_earned"] for x in order["lines"]] == [200 + 200 + 100 + 33, 0, 100 + 50 + 17]
    assert order["points_earned"] == 700
    assert sim["points_earned"] == 700
    assert sim["explanation"] == order["explanation"]
    assert [(e["rule"], e["points"]) for e in order["explanation"]] == [
        ("base_rate", 300),
        ("exclude_sku", 0),
        ("category_multiplier", 200),
        ("member_day_multiplier", 150),
        ("first_purchase_bonus", 50),
    ]
    assert order["explanation"][0]["rule_id"] is not None
    assert order["explanation"][0]["version"] == 1
    # A revision tomorrow does not change how today's order is explained.
    clock.now = T0 + timedelta(days=1)
    hq = login(app_client, chain, "hq")  # staff sessions last 12 hours
    revised = app_client.post(
        f"/api/v1/points/rules/{base['rule_key']}/revise",
        json={"kind": "base_rate", "points_per_yuan": 3},
        headers=hq,
    )
    assert revised.status_code == 201, revised.text
    assert revised.json()["version"] == 2
    then = app_client.get("/api/v1/points/rules", params={"at": T0.isoformat()}, headers=hq).json()
    assert {r["kind"]: r["version"] for r in then}["base_rate"] == 1
    now_rules = app_client.get("/api/v1/points/rules", headers=hq).json()
    assert {r["kind"]: (r["version"], r["points_per_yuan"]) for r in now_rules}["base_rate"] == (2, 3)
    later = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("RICE", 1, 5000)])
    assert later["points_earned"] == 150  # Thursday, no bonuses, 3/yuan
    stored = app_client.get(f"/api/v1/orders/{order['order_no']}", headers=chain.key("A")).json()
    assert stored["explanation"][0]["version"] == 1


def test_invalid_rules_are_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    cases = [
        ({"kind": "base_rate"}, "points.invalid_rule"),
        ({"kind": "category_multiplier", "multiplier_pct": 200}, "points.invalid_rule"),
        ({"kind": "category_multiplier", "multiplier_pct": 50, "category": "x"}, "points.invalid_rule"),
        ({"kind": "member_day_multiplier", "multiplier_pct": 200}, "points.invalid_rule"),
        ({"kind": "order_cap", "cap_points": 10, "sku": "X"}, "points.invalid_rule"),
        ({"kind": "nonsense"}, "request.invalid"),
    ]
    for body, code in cases:
        r = app_client.post("/api/v1/points/rules", json=body, headers=hq)
        assert (r.status_code, r.json()["code"]) == (422, code), body
    clerk = login(app_client, chain, "a_clerk")
    r = app_client.post(
        "/api/v1/points/rules", json={"kind": "base_rate", "points_per_yuan": 5}, headers=clerk
    )
    assert (r.status_code, r.json()["code"]) == (403, "auth.role")
    assert app_client.get("/api/v1/points/rules", headers=hq).json() == []


def test_store_bonus_inside_hq_caps_stops_at_budget(
    app_client: TestClient, chain: Chain, clock: Clock
) -> None:
    hq = login(app_client, chain, "hq")
    _program(app_client, hq, store_bonus_max_multiplier_pct=300, store_bonus_max_budget=1000)
    mgr = login(app_client, chain, "a_mgr")
    until = (T0 + timedelta(days=7)).isoformat()
    over = _rule(
        app_client,
        mgr,
        422,
        kind="store_bonus_multiplier",
        multiplier_pct=400,
        store_code="A",
        budget_points=500,
        valid_to=until,
    )
    assert over["code"] == "points.store_bonus_over_cap"
    other = app_client.post(
        "/api/v1/points/rules",
        headers=mgr,
        json={
            "kind": "store_bonus_multiplier",
            "multiplier_pct": 200,
            "store_code": "B",
            "budget_points": 100,
            "valid_to": until,
        },
    )
    assert (other.status_code, other.json()["code"]) == (403, "auth.store_scope")
    bonus = _rule(
        app_client,
        mgr,
        kind="store_bonus_multiplier",
        name="店庆",
        multiplier_pct=300,
        store_code="A",
        budget_points=250,
        valid_to=until,
    )
    m = register(app_client, chain, "A", "13800138002")
    first = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert first["points_earned"] == 100 + 200
    second = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert second["points_earned"] == 100 + 50  # only 50 left in the budget
    third = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert third["points_earned"] == 100
    elsewhere = checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert elsewhere["points_earned"] == 100
    rules = app_client.get("/api/v1/points/rules", headers=hq).json()
    assert [(r["rule_key"], r["budget_used"]) for r in rules] == [(bonus["rule_key"], 250)]
    # Another store's manager may neither revise nor end this store's bonus.
    b_mgr = login(app_client, chain, "b_mgr")
    hijack = app_client.post(
        f"/api/v1/points/rules/{bonus['rule_key']}/revise",
        headers=b_mgr,
        json={
            "kind": "store_bonus_multiplier",
            "multiplier_pct": 200,
            "store_code": "B",
            "budget_points": 100,
            "valid_to": until,
        },
    )
    assert (hijack.status_code, hijack.json()["code"]) == (403, "auth.store_scope")
    ended = app_client.post(f"/api/v1/points/rules/{bonus['rule_key']}/end", headers=b_mgr)
    assert ended.status_code == 403
    after = app_client.get("/api/v1/points/rules", headers=hq).json()
    assert [(r["rule_key"], r["version"], r["valid_to"]) for r in after] == [
        (bonus["rule_key"], 1, bonus["valid_to"])
    ]


def test_caps_per_order_and_day(app_client: TestClient, chain: Chain, clock: Clock) -> None:
    hq = login(app_client, chain, "hq")
    _rule(app_client, hq, kind="order_cap", cap_points=300)
    _rule(app_client, hq, kind="daily_cap", cap_points=500)
    m = register(app_client, chain, "A", "13800138003")
    orders = [
        checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 40000)])
        for _ in range(3)
    ]
    assert [o["points_earned"] for o in orders] == [300, 200, 0]
    clock.now = T0 + timedelta(days=1)
    assert (
        checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 40000)])[
            "points_earned"
        ]
        == 300
    )


def test_pending_points_wait_and_returns_cancel_them(
    app_client: TestClient, chain: Chain, clock: Clock, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _program(app_client, hq, pending_days=7)
    m = register(app_client, chain, "A", "13800138004")
    order = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 2, 5000)])
    assert order["points_balance"] == 100
    spend = {
        "member": {"member_no": m["member_no"]},
        "lines": [line("Y", 1, 10)],
        "redeem_points": 10,
        "payments": [],
    }
    r = app_client.post("/api/v1/orders", json=spend, headers=chain.key("A"))
    assert (r.status_code, r.json()["available"]) == (409, 0)
    ledger = app_client.get(f"/api/v1/members/{m['member_no']}/points", headers=chain.key("A")).json()
    assert ledger["open_lots"][0]["available_at"] == (T0 + timedelta(days=7)).isoformat().replace(
        "+00:00", "Z"
    )
    ret = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("B"),
    ).json()
    assert (ret["points_reversed"], ret["points_shortfall"], ret["points_balance"]) == (50, 0, 50)
    clock.now = T0 + timedelta(days=7, seconds=1)
    ok = app_client.post("/api/v1/orders", json=spend, headers=chain.key("A"))
    assert ok.status_code == 201
    assert ok.json()["points_balance"] == 40
    with factory() as s:
        assert verify(s, chain.org_id).ok


def test_expiry_job_reminders_and_soonest_first(
    app_client: TestClient, chain: Chain, clock: Clock, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _program(app_client, hq, expiry_policy="rolling", expiry_months=12, reminder_days=30)
    m = register(app_client, chain, "A", "13800138005")
    checkout(
        app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)]
    )  # 100, expires 2027-11-25
    clock.now = T0 + timedelta(days=40)
    checkout(
        app_client, chain, "B", {"member_no": m["member_no"]}, [line("X", 1, 20000)]
    )  # 200, expires 2028-01-04
    clock.now = datetime(2027, 10, 26, 3, 0, tzinfo=UTC)  # 30 days before the first lot's last day ends
    run_daily(factory, clock.now, only=("remind",), org_ids=[chain.org_id])
    assert _events(factory, chain.org_id, "points.expiring") == [
        {
            "member_no": m["member_no"],
            "points": 100,
            "expires_at": "2027-11-25T16:00:00+00:00",
            "days_ahead": 30,
        }
    ]
    again = run_daily(factory, clock.now, only=("remind",), org_ids=[chain.org_id])
    assert list(again.values()) == [{"skipped": "already ran today"}]
    spend = checkout(app_client, chain, "C", {"member_no": m["member_no"]}, [line("Y", 1, 50)], redeem=50)
    assert spend["points_balance"] == 250
    clock.now = datetime(2027, 11, 26, 3, 0, tzinfo=UTC)
    out = run_daily(factory, clock.now, only=("expire",), org_ids=[chain.org_id])
    assert list(out.values()) == [{"accounts": 1, "points": 50}]
    assert balance(app_client, chain, m["member_no"]) == (200, 0)
    with factory() as s:
        entry = s.scalars(
            select(PointEntry).where(PointEntry.org_id == chain.org_id, PointEntry.kind == "expire")
        ).one()
        assert (entry.amount, entry.balance_after) == (-50, 200)
        assert s.scalar(select(func.sum(PointLot.remaining)).where(PointLot.org_id == chain.org_id)) == 200
        assert verify(s, chain.org_id).ok
    hq = login(app_client, chain, "hq")
    overview = app_client.get("/api/v1/points/overview", headers=hq).json()
    assert (overview["outstanding_points"], overview["liability_fen"], overview["expired_12m"]) == (
        200,
        200,
        50,
    )
    assert overview["expiring_by_month"][1] == {"month": "2027-12", "points": 0}
    assert overview["expiring_by_month"][2] == {"month": "2028-01", "points": 200}


def _tiers(client: TestClient, hq: dict[str, str], basis: str = "growth", grace: int = 30) -> None:
    r = client.post(
        "/api/v1/tiers",
        headers=hq,
        json={
            "code": "main",
            "name": "会员等级",
            "basis": basis,
            "grace_days": grace,
            "levels": [
                {"code": "normal", "name": "普通会员", "threshold": 0, "keep_threshold": 0},
                {
                    "code": "silver",
                    "name": "银卡",
                    "threshold": 1000,
                    "keep_threshold": 800,
                    "points_multiplier_pct": 120,
                },
                {
                    "code": "gold",
                    "name": "金卡",
                    "threshold": 5000,
                    "keep_threshold": 4000,
                    "points_multiplier_pct": 150,
                    "discount_pct": 5,
                    "birthday_gift_points": 88,
                },
            ],
        },
    )
    assert r.status_code == 201, r.text


def test_tier_upgrade_at_once_and_benefits_everywhere(
    app_client: TestClient, chain: Chain, clock: Clock, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _tiers(app_client, hq)
    m = register(app_client, chain, "A", "13800138006", birthday="1991-11-03")
    tier = app_client.get(f"/api/v1/members/{m['member_no']}/tier", headers=chain.key("A")).json()
    assert (tier["level_code"], tier["next_level_code"], tier["missing"]) == ("normal", "silver", 1000)
    first = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 520000)])
    assert (first["growth_earned"], first["points_earned"]) == (5200, 5200)
    assert _events(factory, chain.org_id, "tier.changed") == [
        {"member_no": m["member_no"], "from": "normal", "to": "gold", "reason": "upgrade"}
    ]
    r = app_client.post(
        "/api/v1/orders",
        headers=chain.key("C"),
        json={
            "member": {"member_no": m["member_no"]},
            "lines": [line("Y", 2, 10000)],
            "payments": [{"method": "cash", "amount_fen": 19000}],
        },
    )
    assert r.status_code == 201, r.text
    second = r.json()
    # gold: 5% member price off 20000 → 19000 paid; 190 base + 50% tier bonus 95
    assert (second["tier_code"], second["discount_fen"], second["paid_fen"]) == ("gold", 1000, 19000)
    assert second["points_earned"] == 285
    assert [e["rule"] for e in second["explanation"]] == ["base_rate", "tier_multiplier"]
    run_daily(factory, clock.now, only=("birthday",), org_ids=[chain.org_id])
    run_daily(factory, clock.now, only=("birthday",), force=True, org_ids=[chain.org_id])
    assert balance(app_client, chain, m["member_no"]) == (5200 + 285 + 88, 0)
    with factory() as s:
        assert verify(s, chain.org_id).ok


def test_spend_tiers_keep_grace_downgrade_and_manual_floor(
    app_client: TestClient, chain: Chain, clock: Clock, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _tiers(app_client, hq, basis="spend_12m", grace=30)
    m = register(app_client, chain, "A", "13800138007")
    n = register(app_client, chain, "A", "13800138008")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 6000)])
    checkout(app_client, chain, "A", {"member_no": n["member_no"]}, [line("X", 1, 6000)])
    assert app_client.get(f"/api/v1/members/{m['member_no']}/tier", headers=hq).json()["level_code"] == "gold"
    cs = login(app_client, chain, "cs")
    floor = app_client.post(
        f"/api/v1/members/{n['member_no']}/tier",
        headers=cs,
        json={"level_code": "gold", "until": "2028-06-30T16:00:00+00:00", "reason": "VIP 客诉补偿"},
    )
    assert floor.status_code == 200, floor.text
    clock.now = T0 + timedelta(days=400)  # nothing bought for 13 months: basis 0
    hq = login(app_client, chain, "hq")
    counts = run_daily(factory, clock.now, only=("tiers",), org_ids=[chain.org_id])
    assert list(counts.values()) == [{"grace": 1, "floor": 1}]
    view = app_client.get(f"/api/v1/members/{m['member_no']}/tier", headers=hq).json()
    assert (view["level_code"], view["grace_until"]) == (
        "gold",
        (clock.now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
    )
    clock.now += timedelta(days=31)
    hq = login(app_client, chain, "hq")
    counts = run_daily(factory, clock.now, only=("tiers",), org_ids=[chain.org_id])
    assert list(counts.values()) == [{"downgrade": 1, "floor": 1}]
    assert (
        app_client.get(f"/api/v1/members/{m['member_no']}/tier", headers=hq).json()["level_code"] == "normal"
    )
    assert app_client.get(f"/api/v1/members/{n['member_no']}/tier", headers=hq).json()["level_code"] == "gold"
    assert [e["to"] for e in _events(factory, chain.org_id, "tier.changed")] == ["gold", "gold", "normal"]


def test_threshold_reminder(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    m = register(app_client, chain, "A", "13800138009")
    r = app_client.put(
        f"/api/v1/members/{m['member_no']}/points/reminder", json={"threshold": 150}, headers=chain.key("A")
    )
    assert r.json() == {"threshold": 150}
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert _events(factory, chain.org_id, "points.threshold_reached") == []
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 10000)])
    assert _events(factory, chain.org_id, "points.threshold_reached") == [
        {"member_no": m["member_no"], "threshold": 150, "balance": 200}
    ]
