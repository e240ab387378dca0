"""Points transfers between members and manual adjustments with a second person's approval, through the
HTTP API: exact lots and entries, limits, refusals that change nothing, and exact audit rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.events.models import Event
from onemember.members import service as members
from onemember.org import service as org_service
from onemember.points import admin_api, transfers
from onemember.points import service as points
from onemember.points.models import (
    PointAccount,
    PointAdjustment,
    PointEntry,
    PointLot,
    PointLotMovement,
    PointTransfer,
)
from onemember.points.verify import verify
from onemember.settings import get_settings
from tests.factories import PASSWORD, Chain
from tests.helpers import login, register

SOON = datetime(2031, 3, 31, 16, 0, tzinfo=UTC)
LATER = datetime(2032, 3, 31, 16, 0, tzinfo=UTC)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The app with the points admin router (added here until app.py registers it)."""
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/api/v1/adjustments" for r in app.routes):
        app.include_router(admin_api.router)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def hq2(factory: sessionmaker[Session], chain: Chain) -> str:
    """A second HQ admin, to approve what the first one asks for."""
    with factory() as s:
        org_service.add_staff(s, chain.org_id, "hq2", PASSWORD, Role.HQ_ADMIN)
        s.commit()
    return "hq2"


def give(
    factory: sessionmaker[Session],
    chain: Chain,
    member_no: str,
    amount: int,
    *,
    expires_at: datetime | None = None,
    store: str = "A",
) -> None:
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        program = points.default_program(s, chain.org_id)
        account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
        points.earn(
            s, account, amount, points.EntryContext(store_id=chain.stores[store]), expires_at=expires_at
        )
        s.commit()


def owe(factory: sessionmaker[Session], chain: Chain, member_no: str, amount: int) -> None:
    """Give a member a debt: a return took back points they had already spent."""
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        program = points.default_program(s, chain.org_id)
        account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
        _, shortfall = points.reverse_earn(s, account, amount, None, points.EntryContext())
        assert shortfall == amount
        s.commit()


def set_program(factory: sessionmaker[Session], chain: Chain, **values: int) -> None:
    with factory() as s:
        program = points.default_program(s, chain.org_id)
        for name, value in values.items():
            setattr(program, name, value)
        s.commit()


def lots_of(factory: sessionmaker[Session], chain: Chain, member_no: str) -> list[tuple[Any, ...]]:
    """(amount, remaining, expires_at, issuing store code, entry kind) of a member's lots in id order."""
    codes = {v: k for k, v in chain.stores.items()}
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        rows = s.execute(
            select(
                PointLot.amount, PointLot.remaining, PointLot.expires_at, PointLot.store_id, PointEntry.kind
            )
            .join(PointEntry, PointEntry.id == PointLot.entry_id)
            .where(PointLot.member_id == member.id)
            .order_by(PointLot.id)
        ).all()
        return [(a, r, e, codes.get(st) if st else None, k) for a, r, e, st, k in rows]


def balance(factory: sessionmaker[Session], chain: Chain, member_no: str) -> tuple[int, int]:
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member.id)).one()
        return account.balance, account.debt


def _count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


def snapshot(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    with factory() as s:
        return {
            **{
                name: _count(s, model, org_id)
                for name, model in (
                    ("entries", PointEntry),
                    ("lots", PointLot),
                    ("movements", PointLotMovement),
                    ("transfers", PointTransfer),
                    ("adjustments", PointAdjustment),
                    ("events", Event),
                    ("audit", AuditLog),
                )
            },
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
            "adjustment_states": sorted(
                s.execute(
                    select(PointAdjustment.id, PointAdjustment.status).where(PointAdjustment.org_id == org_id)
                ).all()
            ),
        }


def audit_rows(factory: sessionmaker[Session], org_id: int, target_type: str) -> list[tuple[Any, ...]]:
    with factory() as s:
        return [
            tuple(r)
            for r in s.execute(
                select(
                    AuditLog.action,
                    AuditLog.actor,
                    AuditLog.actor_role,
                    AuditLog.target_id,
                    AuditLog.member_id,
                    AuditLog.store_id,
                    AuditLog.reason,
                    AuditLog.details,
                )
                .where(AuditLog.org_id == org_id, AuditLog.target_type == target_type)
                .order_by(AuditLog.id)
            ).all()
        ]


def member_id(factory: sessionmaker[Session], chain: Chain, member_no: str) -> int:
    with factory() as s:
        return members.by_member_no(s, chain.org_id, member_no).id


def post(
    client: TestClient, url: str, body: dict[str, Any] | None, headers: dict[str, str], expect: int
) -> dict[str, Any]:
    r = client.post(url, json=body, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"] == "application/problem+json"
    return dict(r.json())


# --- transfers ---------------------------------------------------------------------------------------


def test_transferred_points_keep_their_expiry_and_issuing_store(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(client, chain, "A", "18900000201")["member_no"]
    b = register(client, chain, "B", "18900000202")["member_no"]
    give(factory, chain, a, 200, expires_at=LATER, store="B")
    give(factory, chain, a, 100, expires_at=SOON, store="A")
    give(factory, chain, a, 50, store="C")
    out = post(
        client,
        f"/api/v1/members/{a}/transfers",
        {"to_member_no": b, "points": 250, "reason": "给女儿"},
        chain.key("A"),
        201,
    )
    assert {k: v for k, v in out.items() if k not in ("id", "created_at")} == {
        "from_member_no": a,
        "to_member_no": b,
        "points": 250,
        "reason": "给女儿",
        "from_balance": 100,
        "to_balance": 250,
        "to_debt": 0,
    }
    assert lots_of(factory, chain, a) == [
        (200, 50, LATER, "B", "earn"),
        (100, 0, SOON, "A", "earn"),
        (50, 50, None, "C", "earn"),
    ]
    assert lots_of(factory, chain, b) == [
        (100, 100, SOON, "A", "transfer_in"),
        (150, 150, LATER, "B", "transfer_in"),
    ]
    with factory() as s:
        entries = s.execute(
            select(
                PointEntry.kind, PointEntry.amount, PointEntry.debt_change, PointEntry.ref, PointEntry.reason
            )
            .where(PointEntry.org_id == chain.org_id, PointEntry.kind.like("transfer%"))
            .order_by(PointEntry.id)
        ).all()
        assert entries == [
            ("transfer_out", -250, 0, f"transfer:{out['id']}", f"转赠给会员 {b}：给女儿"),
            ("transfer_in", 250, 0, f"transfer:{out['id']}", f"会员 {a} 转赠：给女儿"),
        ]
        moved = s.execute(
            select(PointLot.amount, PointLotMovement.amount)
            .join(PointLot, PointLot.id == PointLotMovement.lot_id)
            .join(PointEntry, PointEntry.id == PointLotMovement.entry_id)
            .where(PointEntry.org_id == chain.org_id, PointEntry.kind == "transfer_out")
            .order_by(PointLotMovement.id)
        ).all()
        assert moved == [(100, -100), (200, -150)]
        changed = [
            e.payload
            for e in s.scalars(
                select(Event)
                .where(Event.org_id == chain.org_id, Event.type == "points.changed")
                .order_by(Event.id)
            )
        ]
        assert changed[-2:] == [
            {"member_no": a, "earned": 0, "redeemed": 250, "balance": 100, "debt": 0, "reason": "transfer"},
            {"member_no": b, "earned": 250, "redeemed": 0, "balance": 250, "debt": 0, "reason": "transfer"},
        ]
        assert verify(s, chain.org_id).ok
    till = f"api_key:{chain.keys['A'][4:12]}"
    assert audit_rows(factory, chain.org_id, "point_transfer") == [
        (
            "points.transferred",
            till,
            "clerk",
            str(out["id"]),
            member_id(factory, chain, a),
            chain.stores["A"],
            "给女儿",
            {"from_member_no": a, "to_member_no": b, "points": 250, "debt_repaid": 0},
        )
    ]
    # The receiver spends the received points like any others: soonest-expiring first.
    client.post(
        "/api/v1/orders",
        headers=chain.key("B"),
        json={
            "member": {"member_no": b},
            "lines": [{"sku": "X", "name": "X", "quantity": 1, "unit_price_fen": 120}],
            "redeem_points": 120,
            "payments": [],
        },
    ).raise_for_status()
    assert [(amount, left) for amount, left, *_ in lots_of(factory, chain, b)][:2] == [(100, 0), (150, 130)]


def test_received_points_repay_a_debt_first(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(client, chain, "A", "18900000203")["member_no"]
    b = register(client, chain, "A", "18900000204")["member_no"]
    give(factory, chain, a, 100, expires_at=SOON)
    give(factory, chain, a, 200, expires_at=LATER, store="B")
    owe(factory, chain, b, 80)
    assert balance(factory, chain, b) == (0, 80)
    out = post(
        client,
        f"/api/v1/members/{a}/transfers",
        {"to_member_no": b, "points": 250},
        login(client, chain, "cs"),
        201,
    )
    assert (out["to_balance"], out["to_debt"], out["from_balance"]) == (170, 0, 50)
    # The soonest-expiring points paid the debt; the rest arrived with their own expiry.
    assert lots_of(factory, chain, b) == [
        (20, 20, SOON, "A", "transfer_in"),
        (150, 150, LATER, "B", "transfer_in"),
    ]
    with factory() as s:
        received = s.execute(
            select(
                PointEntry.amount, PointEntry.debt_change, PointEntry.balance_after, PointEntry.debt_after
            ).where(PointEntry.org_id == chain.org_id, PointEntry.kind == "transfer_in")
        ).one()
        assert tuple(received) == (250, -80, 170, 0)
        assert verify(s, chain.org_id).ok
    assert audit_rows(factory, chain.org_id, "point_transfer")[0][7] == {
        "from_member_no": a,
        "to_member_no": b,
        "points": 250,
        "debt_repaid": 80,
    }


def test_monthly_transfer_limit_counts_the_local_calendar_month(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    set_program(factory, chain, transfer_max_per_month=500)
    a = register(client, chain, "A", "18900000205")["member_no"]
    b = register(client, chain, "A", "18900000206")["member_no"]
    c = register(client, chain, "A", "18900000207")["member_no"]
    give(factory, chain, a, 2000)
    start, _ = transfers.month_bounds(utcnow(), "Asia/Shanghai")
    with factory() as s:
        ids = {n: members.by_member_no(s, chain.org_id, n).id for n in (a, b)}
        # Sent last month (one second before this local month began): does not count.
        s.add(
            PointTransfer(
                org_id=chain.org_id,
                from_member_id=ids[a],
                to_member_id=ids[b],
                points=400,
                created_at=start - timedelta(seconds=1),
            )
        )
        s.commit()
    post(client, f"/api/v1/members/{a}/transfers", {"to_member_no": b, "points": 300}, chain.key("A"), 201)
    before = snapshot(factory, chain.org_id)
    body = post(
        client, f"/api/v1/members/{a}/transfers", {"to_member_no": c, "points": 201}, chain.key("A"), 409
    )
    assert (body["code"], body["limit"], body["sent"], body["remaining"]) == (
        "points.transfer_limit_reached",
        500,
        300,
        200,
    )
    assert body["message_zh"] == "每月最多转出 500 积分，本月已转出 300"
    assert snapshot(factory, chain.org_id) == before
    post(client, f"/api/v1/members/{a}/transfers", {"to_member_no": c, "points": 200}, chain.key("A"), 201)
    # Receiving does not use up the receiver's own allowance.
    post(client, f"/api/v1/members/{b}/transfers", {"to_member_no": a, "points": 300}, chain.key("A"), 201)
    assert balance(factory, chain, a) == (2000 - 500 + 300, 0)


def test_month_bounds_follow_the_org_time_zone() -> None:
    # 00:30 on 1 November in Shanghai is still October in UTC.
    at = datetime(2026, 10, 31, 16, 30, tzinfo=UTC)
    assert transfers.month_bounds(at, "Asia/Shanghai") == (
        datetime(2026, 10, 31, 16, 0, tzinfo=UTC),
        datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
    )
    assert transfers.month_bounds(datetime(2026, 12, 15, tzinfo=UTC), "Asia/Shanghai") == (
        datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 16, 0, tzinfo=UTC),
    )
    assert transfers.after_debt([100, 200, 50], 130) == [0, 170, 50]
    assert transfers.after_debt([100, 200], 0) == [100, 200]


def test_bad_transfers_change_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(client, chain, "A", "18900000208")["member_no"]
    b = register(client, chain, "A", "18900000209")["member_no"]
    give(factory, chain, a, 300)
    before = snapshot(factory, chain.org_id)
    url = f"/api/v1/members/{a}/transfers"
    cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
        ({"to_member_no": a, "points": 10}, chain.key("A"), 422, "points.transfer_to_self"),
        ({"to_member_no": b, "points": 0}, chain.key("A"), 422, "points.invalid_transfer"),
        ({"to_member_no": b, "points": -5}, chain.key("A"), 422, "points.invalid_transfer"),
        ({"to_member_no": b, "points": 301}, chain.key("A"), 409, "points.insufficient_balance"),
        ({"to_member_no": "000000000", "points": 10}, chain.key("A"), 404, "members.not_found"),
        ({"to_member_no": b, "points": 10}, login(client, chain, "auditor"), 403, "auth.role"),
        ({"to_member_no": b, "points": 10, "store_code": "B"}, chain.key("A"), 403, "auth.store_scope"),
    ]
    for body, headers, status, code in cases:
        assert post(client, url, body, headers, status)["code"] == code, body
    en = client.post(
        url, json={"to_member_no": a, "points": 10}, headers={**chain.key("A"), "Accept-Language": "en"}
    )
    assert en.json()["detail"] == "A member cannot transfer points to themselves"
    assert snapshot(factory, chain.org_id) == before


# --- adjustments -------------------------------------------------------------------------------------


def test_small_adjustments_apply_at_once(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(client, chain, "A", "18900000301")["member_no"]
    give(factory, chain, m, 100, expires_at=LATER)
    give(factory, chain, m, 100, expires_at=SOON)
    cs = login(client, chain, "cs")
    plus = post(client, f"/api/v1/members/{m}/adjustments", {"points": 1000, "reason": "客诉补偿"}, cs, 201)
    assert {k: v for k, v in plus.items() if k not in ("id", "created_at", "decided_at")} == {
        "member_no": m,
        "points": 1000,
        "reason": "客诉补偿",
        "status": "applied",
        "requested_by": "staff:cs",
        "decided_by": "",
        "store_code": None,
        "points_balance": 1200,
    }
    a_mgr = login(client, chain, "a_mgr")
    minus = post(
        client, f"/api/v1/members/{m}/adjustments", {"points": -150, "reason": "重复发放"}, a_mgr, 201
    )
    assert (minus["status"], minus["store_code"], minus["points_balance"]) == ("applied", "A", 1050)
    # The debit took the soonest-expiring points first.
    assert lots_of(factory, chain, m) == [
        (100, 50, LATER, "A", "earn"),
        (100, 0, SOON, "A", "earn"),
        (1000, 1000, None, None, "adjust"),
    ]
    with factory() as s:
        entries = s.execute(
            select(PointEntry.kind, PointEntry.amount, PointEntry.ref, PointEntry.actor, PointEntry.store_id)
            .where(PointEntry.org_id == chain.org_id, PointEntry.kind == "adjust")
            .order_by(PointEntry.id)
        ).all()
        assert entries == [
            ("adjust", 1000, f"adjust:{plus['id']}", "staff:cs", None),
            ("adjust", -150, f"adjust:{minus['id']}", "staff:a_mgr", chain.stores["A"]),
        ]
        assert verify(s, chain.org_id).ok
    mid = member_id(factory, chain, m)
    assert audit_rows(factory, chain.org_id, "point_adjustment") == [
        (
            "points.adjustment_applied",
            "staff:cs",
            "cs_agent",
            str(plus["id"]),
            mid,
            None,
            "客诉补偿",
            {"points": 1000, "threshold": 1000},
        ),
        (
            "points.adjustment_applied",
            "staff:a_mgr",
            "store_manager",
            str(minus["id"]),
            mid,
            chain.stores["A"],
            "重复发放",
            {"points": -150, "threshold": 1000},
        ),
    ]


def test_a_positive_adjustment_repays_debt_first(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(client, chain, "A", "18900000302")["member_no"]
    owe(factory, chain, m, 30)
    post(
        client,
        f"/api/v1/members/{m}/adjustments",
        {"points": 100, "reason": "活动补发"},
        login(client, chain, "hq"),
        201,
    )
    assert balance(factory, chain, m) == (70, 0)
    assert lots_of(factory, chain, m) == [(70, 70, None, None, "adjust")]


def test_large_adjustment_waits_for_a_different_hq_admin(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], hq2: str
) -> None:
    m = register(client, chain, "A", "18900000303")["member_no"]
    hq = login(client, chain, "hq")
    asked = post(
        client,
        f"/api/v1/members/{m}/adjustments",
        {"points": 1500, "reason": "大额补偿"},
        login(client, chain, "a_mgr"),
        201,
    )
    assert (asked["status"], asked["store_code"], asked["points_balance"]) == ("pending", "A", 0)
    own = post(client, f"/api/v1/members/{m}/adjustments", {"points": -1001, "reason": "误发"}, hq, 409)
    assert own["code"] == "points.insufficient_balance"  # a debit is checked when asked as well
    hq_asked = post(
        client, f"/api/v1/members/{m}/adjustments", {"points": 2000, "reason": "年度补偿"}, hq, 201
    )
    assert hq_asked["status"] == "pending"
    queue = client.get("/api/v1/adjustments", params={"status": "pending"}, headers=hq).json()
    assert [(x["id"], x["points"]) for x in queue["adjustments"]] == [
        (hq_asked["id"], 2000),
        (asked["id"], 1500),
    ]
    mine = client.get(
        "/api/v1/adjustments", params={"status": "pending"}, headers=login(client, chain, "a_mgr")
    ).json()
    assert [x["id"] for x in mine["adjustments"]] == [asked["id"]]
    before = snapshot(factory, chain.org_id)
    refusals = [
        (f"/api/v1/adjustments/{hq_asked['id']}/approve", hq, 403, "points.adjustment_self_approval"),
        (f"/api/v1/adjustments/{hq_asked['id']}/reject", hq, 403, "points.adjustment_self_approval"),
        (f"/api/v1/adjustments/{asked['id']}/approve", login(client, chain, "a_mgr"), 403, "auth.role"),
        (f"/api/v1/adjustments/{asked['id']}/approve", login(client, chain, "cs"), 403, "auth.role"),
        ("/api/v1/adjustments/999999999/approve", hq, 404, "points.adjustment_not_found"),
    ]
    for url, headers, status, code in refusals:
        assert post(client, url, None, headers, status)["code"] == code, url
    assert snapshot(factory, chain.org_id) == before
    approved = post(client, f"/api/v1/adjustments/{asked['id']}/approve", {"reason": "已核实"}, hq, 200)
    assert (approved["status"], approved["decided_by"], approved["points_balance"]) == (
        "applied",
        "staff:hq",
        1500,
    )
    second = post(
        client, f"/api/v1/adjustments/{hq_asked['id']}/approve", None, login(client, chain, hq2), 200
    )
    assert (second["status"], second["decided_by"], second["points_balance"]) == (
        "applied",
        "staff:hq2",
        3500,
    )
    again = post(client, f"/api/v1/adjustments/{asked['id']}/approve", None, login(client, chain, hq2), 409)
    assert (again["code"], again["current_status"]) == ("points.adjustment_not_pending", "applied")
    with factory() as s:
        entries = s.execute(
            select(PointEntry.amount, PointEntry.store_id, PointEntry.actor, PointEntry.reason)
            .where(PointEntry.org_id == chain.org_id, PointEntry.kind == "adjust")
            .order_by(PointEntry.id)
        ).all()
        assert entries == [
            (1500, chain.stores["A"], "staff:a_mgr", f"人工调整 #{asked['id']}：大额补偿"),
            (2000, None, "staff:hq", f"人工调整 #{hq_asked['id']}：年度补偿"),
        ]
        assert verify(s, chain.org_id).ok
    mid = member_id(factory, chain, m)
    assert audit_rows(factory, chain.org_id, "point_adjustment") == [
        (
            "points.adjustment_requested",
            "staff:a_mgr",
            "store_manager",
            str(asked["id"]),
            mid,
            chain.stores["A"],
            "大额补偿",
            {"points": 1500, "threshold": 1000},
        ),
        (
            "points.adjustment_requested",
            "staff:hq",
            "hq_admin",
            str(hq_asked["id"]),
            mid,
            None,
            "年度补偿",
            {"points": 2000, "threshold": 1000},
        ),
        (
            "points.adjustment_approved",
            "staff:hq",
            "hq_admin",
            str(asked["id"]),
            mid,
            chain.stores["A"],
            "已核实",
            {"points": 1500, "requested_by": "staff:a_mgr"},
        ),
        (
            "points.adjustment_approved",
            "staff:hq2",
            "hq_admin",
            str(hq_asked["id"]),
            mid,
            None,
            "",
            {"points": 2000, "requested_by": "staff:hq"},
        ),
    ]


def test_rejection_changes_no_points(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], hq2: str
) -> None:
    m = register(client, chain, "A", "18900000304")["member_no"]
    give(factory, chain, m, 3000)
    asked = post(
        client,
        f"/api/v1/members/{m}/adjustments",
        {"points": -1500, "reason": "撤销错误积分"},
        login(client, chain, "cs"),
        201,
    )
    assert asked["status"] == "pending"
    before = snapshot(factory, chain.org_id)
    rejected = post(
        client,
        f"/api/v1/adjustments/{asked['id']}/reject",
        {"reason": "证据不足"},
        login(client, chain, hq2),
        200,
    )
    assert (rejected["status"], rejected["decided_by"], rejected["points_balance"]) == (
        "rejected",
        "staff:hq2",
        3000,
    )
    after = snapshot(factory, chain.org_id)
    assert {k: v for k, v in after.items() if k not in ("audit", "adjustment_states")} == {
        k: v for k, v in before.items() if k not in ("audit", "adjustment_states")
    }
    assert after["audit"] == before["audit"] + 1
    assert after["adjustment_states"] == [(asked["id"], "rejected")]
    assert audit_rows(factory, chain.org_id, "point_adjustment")[-1] == (
        "points.adjustment_rejected",
        "staff:hq2",
        "hq_admin",
        str(asked["id"]),
        member_id(factory, chain, m),
        None,
        "证据不足",
        {"points": -1500, "requested_by": "staff:cs"},
    )
    body = post(client, f"/api/v1/adjustments/{asked['id']}/approve", None, login(client, chain, "hq"), 409)
    assert body["code"] == "points.adjustment_not_pending"


def test_a_debit_beyond_the_balance_is_refused(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], hq2: str
) -> None:
    m = register(client, chain, "A", "18900000305")["member_no"]
    give(factory, chain, m, 1500)
    hq = login(client, chain, "hq")
    before = snapshot(factory, chain.org_id)
    body = post(client, f"/api/v1/members/{m}/adjustments", {"points": -1501, "reason": "扣回"}, hq, 409)
    assert (body["code"], body["available"], body["requested"]) == ("points.insufficient_balance", 1500, 1501)
    assert body["message_zh"] == "积分余额不足：可用 1500，需要扣减 1501"
    assert snapshot(factory, chain.org_id) == before
    # Approved later, after the member spent some: the debit is checked again and refused.
    asked = post(client, f"/api/v1/members/{m}/adjustments", {"points": -1400, "reason": "扣回"}, hq, 201)
    post(client, f"/api/v1/members/{m}/adjustments", {"points": -500, "reason": "兑换扣减"}, hq, 201)
    before = snapshot(factory, chain.org_id)
    late = post(client, f"/api/v1/adjustments/{asked['id']}/approve", None, login(client, chain, hq2), 409)
    assert (late["code"], late["available"], late["requested"]) == ("points.insufficient_balance", 1000, 1400)
    assert snapshot(factory, chain.org_id) == before


def test_bad_adjustment_requests_change_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(client, chain, "A", "18900000306")["member_no"]
    give(factory, chain, m, 100)
    url = f"/api/v1/members/{m}/adjustments"
    hq = login(client, chain, "hq")
    before = snapshot(factory, chain.org_id)
    cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
        ({"points": 10, "reason": "  "}, hq, 422, "points.reason_required"),
        ({"points": 0, "reason": "无"}, hq, 422, "points.invalid_adjustment"),
        ({"points": 10, "reason": "x" * 201}, hq, 422, "points.invalid_adjustment"),
        ({"points": 10, "reason": "店员"}, login(client, chain, "a_clerk"), 403, "auth.role"),
        ({"points": 10, "reason": "终端"}, chain.key("A"), 403, "auth.role"),
        ({"points": 10, "reason": "外店"}, login(client, chain, "b_mgr"), 403, "auth.member_scope"),
        (
            {"points": 10, "reason": "外店", "store_code": "B"},
            login(client, chain, "a_mgr"),
            403,
            "auth.store_scope",
        ),
    ]
    for body, headers, status, code in cases:
        assert post(client, url, body, headers, status)["code"] == code, body
    assert snapshot(factory, chain.org_id) == before


def test_hq_sees_the_biggest_adjustments_by_store(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], hq2: str
) -> None:
    m = register(client, chain, "A", "18900000307")["member_no"]
    n = register(client, chain, "B", "18900000308")["member_no"]
    give(factory, chain, m, 5000)
    hq = login(client, chain, "hq")
    small = post(
        client,
        f"/api/v1/members/{m}/adjustments",
        {"points": -900, "reason": "A 店扣回"},
        login(client, chain, "a_mgr"),
        201,
    )
    big = post(
        client,
        f"/api/v1/members/{n}/adjustments",
        {"points": 1200, "reason": "B 店补偿"},
        login(client, chain, "b_mgr"),
        201,
    )
    post(client, f"/api/v1/adjustments/{big['id']}/approve", None, hq, 200)
    hq_made = post(client, f"/api/v1/members/{m}/adjustments", {"points": 300, "reason": "总部"}, hq, 201)
    post(
        client, f"/api/v1/members/{m}/adjustments", {"points": 5000, "reason": "待审"}, hq, 201
    )  # pending: not listed
    today = utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date()
    span = {"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=1))}

    def largest(headers: dict[str, str], **params: str) -> list[tuple[int, int, str | None]]:
        r = client.get("/api/v1/adjustments/largest", params={**span, **params}, headers=headers)
        assert r.status_code == 200, r.text
        return [(x["id"], x["points"], x["store_code"]) for x in r.json()["adjustments"]]

    assert largest(hq) == [(big["id"], 1200, "B"), (small["id"], -900, "A"), (hq_made["id"], 300, None)]
    assert largest(login(client, chain, "auditor"), store_code="A") == [(small["id"], -900, "A")]
    assert largest(hq, start=str(date(2020, 1, 1)), end=str(date(2020, 1, 31))) == []
    r = client.get("/api/v1/adjustments/largest", params=span, headers=login(client, chain, "a_mgr"))
    assert (r.status_code, r.json()["code"]) == (403, "auth.role")
