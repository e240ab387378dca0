"""Inter-store settlement: a scripted month of cross-store activity through the real services whose
statement is worked out by hand, period close with late corrections, and ``verify_settlement``."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal, system_principal
from onemember.common.types import Role
from onemember.db import make_engine, make_sessionmaker, set_clock
from onemember.errors import DomainError
from onemember.events.models import Event
from onemember.members import service as members
from onemember.orders.models import Order, OrderReturn
from onemember.points import service as points
from onemember.points.models import PointEntry
from onemember.settings import get_settings
from onemember.settlement import api as settlement_api
from onemember.settlement import service as settlement
from onemember.settlement.models import HQ, SettlementEntry, SettlementPeriod
from onemember.settlement.service import Bearer, PointsPolicy, Share
from onemember.settlement.verify import verify_settlement
from tests.factories import Chain, make_chain
from tests.helpers import checkout, line, login, register


def at(month: int, day: int, hour: int = 2) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    """A frozen clock the test moves by assigning ``clock[0]``."""
    now = [at(10, 1)]
    set_clock(lambda: now[0])
    yield now
    set_clock(None)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The app with the settlement router (added here until app.py registers it)."""
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/api/v1/settlement/statements" for r in app.routes):
        app.include_router(settlement_api.router)
    with TestClient(app) as c:
        yield c


def _order_id(s: Session, chain: Chain, order_no: str) -> int:
    return int(
        s.scalars(select(Order.id).where(Order.org_id == chain.org_id, Order.order_no == order_no)).one()
    )


def _return_id(s: Session, chain: Chain, return_no: str) -> int:
    return int(
        s.scalars(
            select(OrderReturn.id).where(
                OrderReturn.org_id == chain.org_id, OrderReturn.return_no == return_no
            )
        ).one()
    )


def settle_checkout(factory: sessionmaker[Session], chain: Chain, order: dict[str, Any], store: str) -> None:
    """What checkout will do once wired: settle the order's points redemption."""
    with factory() as s:
        order_id = _order_id(s, chain, order["order_no"])
        entry_id = s.scalars(
            select(PointEntry.id).where(PointEntry.order_id == order_id, PointEntry.kind == "redeem")
        ).one()
        settlement.record_points_redemption(s, chain.org_id, entry_id, chain.stores[store])
        s.commit()


def settle_return(factory: sessionmaker[Session], chain: Chain, ret: dict[str, Any]) -> None:
    """What returns will do once wired: reverse the points settlement, then settle the cash refund."""
    with factory() as s:
        return_id = _return_id(s, chain, ret["return_no"])
        for refund_id in s.scalars(
            select(PointEntry.id).where(PointEntry.return_id == return_id, PointEntry.kind == "redeem_refund")
        ):
            settlement.record_points_refund(s, chain.org_id, refund_id)
        settlement.record_cross_store_return(s, return_id)
        s.commit()


def return_lines(
    client: TestClient, chain: Chain, store: str, order_no: str, lines: list[tuple[int, int]]
) -> Any:
    r = client.post(
        f"/api/v1/orders/{order_no}/returns",
        json={"lines": [{"line_no": n, "quantity": q} for n, q in lines]},
        headers=chain.key(store),
    )
    assert r.status_code == 201, r.text
    return r.json()


def statement_summary(body: dict[str, Any]) -> dict[str, Any]:
    """{party: (receivable, payable, net, {counterparty: (receivable, payable, net)})}"""
    return {
        st["party"]["code"]: (
            st["receivable_fen"],
            st["payable_fen"],
            st["net_fen"],
            {
                c["counterparty"]["code"]: (c["receivable_fen"], c["payable_fen"], c["net_fen"])
                for c in st["counterparties"]
            },
        )
        for st in body["statements"]
    }


def count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


# --- the scripted month ------------------------------------------------------------------------------


def test_scripted_month_statement_matches_the_hand_worked_one(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    m1 = {"kind": "phone", "value": "18400000001"}
    m2 = {"kind": "phone", "value": "18400000002"}
    m1_no = register(client, chain, "A", "18400000001")["member_no"]
    register(client, chain, "C", "18400000002")

    # 3 Oct, A: M1 buys 2 x 250.00 and earns 500 points (a lot issued by A).
    clock[0] = at(10, 3)
    o1 = checkout(client, chain, "A", m1, [line("COAT", 2, 25000, "服装")])
    assert o1["points_earned"] == 500
    # 5 Oct, B: M1 buys 300.00 and earns 300 points (a lot issued by B).
    clock[0] = at(10, 5)
    assert checkout(client, chain, "B", m1, [line("BAG", 1, 30000, "箱包")])["points_earned"] == 300
    # 8 Oct, B: M1 pays 6.00 of a 200.00 order with 600 points: A's 500 (oldest) then B's 100.
    # Policy: the issuing store bears -> A owes B 500 fen; B's own 100 points settle nothing.
    clock[0] = at(10, 8)
    o3 = checkout(client, chain, "B", m1, [line("SHOE", 1, 20000, "鞋")], redeem=600)
    assert o3["paid_fen"] == 19400
    settle_checkout(factory, chain, o3, "B")
    # 10 Oct: HQ changes the policy: issuing store bears 60 %, the redeeming store the rest.
    clock[0] = at(10, 10)
    hq = login(client, chain, "hq")  # staff sessions expire; log in at each step of the month
    r = client.put("/api/v1/settlement/policy", json={"bearer": "split", "issuer_pct": 60}, headers=hq)
    assert r.status_code == 200, r.text
    assert r.json() == {"bearer": "split", "issuer_pct": 60, "value_fen": 100, "value_points": 100}
    # 12-13 Oct: M2 earns 100 points at C and spends them at A: C owes A 60 % of 100 fen = 60 fen.
    clock[0] = at(10, 12)
    assert checkout(client, chain, "C", m2, [line("TOY", 1, 10000, "玩具")])["points_earned"] == 100
    clock[0] = at(10, 13)
    o4 = checkout(client, chain, "A", m2, [line("CUP", 1, 5000, "家居")], redeem=100)
    settle_checkout(factory, chain, o4, "A")
    # 20 Oct, C: M1 returns one coat bought at A; C refunds 250.00 cash, so A owes C 25000 fen.
    clock[0] = at(10, 20)
    r5 = return_lines(client, chain, "C", o1["order_no"], [(1, 1)])
    assert r5["refund_fen"] == 25000
    settle_return(factory, chain, r5)
    # 25 Oct, A: M1 returns the shoes bought at B (the 600-point order). A refunds 194.00 cash for B
    # (B owes A 19400) and the 600 points go back to their lots: A's 500 reverse the 500 fen A paid B
    # (under the policy of 8 Oct, not today's split); B's own 100 settle nothing.
    clock[0] = at(10, 25)
    r6 = return_lines(client, chain, "A", o3["order_no"], [(1, 1)])
    assert (r6["refund_fen"], r6["points_refunded"]) == (19400, 600)
    settle_return(factory, chain, r6)
    # 27 Oct: HQ issues M1 an HQ-funded coupon worth 50.00 (issued by no store); M1 uses it at B on a
    # 100.00 order, so HQ owes B 5000. 28 Oct: M1 buys a 10-use manicure package at A for 300.00 (each
    # use worth 30.00; the selling store bears the cost) and has one manicure at C: A owes C 3000.
    clock[0] = at(10, 27)
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "HQ50",
            "name": "总部 50 元券",
            "kind": "amount_off",
            "threshold_fen": 0,
            "amount_fen": 5000,
            "valid_days": 30,
            "bearer": "hq",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/members/{m1_no}/coupons", json={"template_code": "HQ50"}, headers=hq)
    assert (r.status_code, r.json()["issuing_store_code"]) == (201, None), r.text
    o7 = checkout(
        client,
        chain,
        "B",
        m1,
        [line("HAT", 1, 10000, "服装")],
        coupon_codes=[r.json()["code"]],
        payments=[{"method": "cash", "amount_fen": 5000}],
    )
    assert (o7["coupon_discount_fen"], o7["paid_fen"]) == (5000, 5000)
    clock[0] = at(10, 28)
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/service-packages",
        json={
            "code": "NAIL10",
            "name": "美甲十次卡",
            "service_code": "manicure",
            "uses": 10,
            "price_fen": 30000,
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    assert (r.json()["bearer"], r.json()["per_use_fen"][0]) == ("issuing_store", 3000)
    r = client.post(
        f"/api/v1/members/{m1_no}/packages",
        json={"package_code": "NAIL10", "payment_method": "cash", "amount_fen": 30000},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/member-packages/{r.json()['id']}/uses", json={"uses": 1}, headers=chain.key("C")
    )
    assert (r.status_code, r.json()["value_fen"]) == (201, 3000), r.text
    # Recording a source again changes nothing.
    with factory() as s:
        [redemption_ref] = s.scalars(
            select(SettlementEntry.source_ref).where(
                SettlementEntry.org_id == chain.org_id, SettlementEntry.kind == "coupon_redeemed"
            )
        ).all()
        assert redemption_ref is not None
        again = settlement.record_benefit_use(
            s,
            chain.org_id,
            settlement.Kind.COUPON_REDEEMED,
            bearer="hq",
            issuer_store_id=None,
            redeeming_store_id=chain.stores["B"],
            value_fen=5000,
            source_ref=redemption_ref,
        )
        assert again is not None
        s.commit()
    settle_checkout(factory, chain, o3, "B")  # a retry of the checkout hook is a no-op too

    a, b, c = (chain.stores[k] for k in "ABC")
    with factory() as s:
        rows = s.execute(
            select(
                SettlementEntry.kind,
                SettlementEntry.debtor_key,
                SettlementEntry.creditor_key,
                SettlementEntry.amount_fen,
                SettlementEntry.points,
                SettlementEntry.period,
            )
            .where(SettlementEntry.org_id == chain.org_id)
            .order_by(SettlementEntry.id)
        ).all()
        assert [tuple(r) for r in rows] == [
            ("points_redeemed", a, b, 500, 500, "2026-10"),
            ("points_redeemed", c, a, 60, 100, "2026-10"),
            ("cross_store_return", a, c, 25000, None, "2026-10"),
            ("points_redeemed", b, a, 500, 500, "2026-10"),
            ("cross_store_return", b, a, 19400, None, "2026-10"),
            ("coupon_redeemed", HQ, b, 5000, None, "2026-10"),
            ("package_used", a, c, 3000, None, "2026-10"),
        ]
        report = verify_settlement(s, chain.org_id)
        assert report.problems == []
        assert (report.entries, report.sources) == (7, 5)

    # The statement, worked out by hand:
    #   A vs B: owed 500 (points reversal) + 19400 (return for B), owes 500 (points)  -> +19400
    #   A vs C: owed 60 (C's points, split), owes 25000 (return) + 3000 (package)    -> -27940
    #   B vs HQ: owed 5000 (coupon); B vs A: -19400                                    -> B -14400
    #   C: +27940; HQ: -5000.  Nets: -8540 - 14400 + 27940 - 5000 = 0.
    clock[0] = at(10, 31)
    hq = login(client, chain, "hq")
    r = client.get("/api/v1/settlement/statements", params={"period": "2026-10"}, headers=hq)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "open"
    assert statement_summary(r.json()) == {
        "HQ": (0, 5000, -5000, {"B": (0, 5000, -5000)}),
        "A": (19960, 28500, -8540, {"B": (19900, 500, 19400), "C": (60, 28000, -27940)}),
        "B": (5500, 19900, -14400, {"HQ": (5000, 0, 5000), "A": (500, 19900, -19400)}),
        "C": (28000, 60, 27940, {"A": (28000, 60, 27940)}),
    }
    a_statement = r.json()["statements"][1]
    assert a_statement["entries"] == 6
    vs_c = a_statement["counterparties"][1]
    assert vs_c["by_kind"] == [
        {"kind": "cross_store_return", "receivable_fen": 0, "payable_fen": 25000, "net_fen": -25000},
        {"kind": "package_used", "receivable_fen": 0, "payable_fen": 3000, "net_fen": -3000},
        {"kind": "points_redeemed", "receivable_fen": 60, "payable_fen": 0, "net_fen": 60},
    ]

    # Store staff see their own store only.
    a_mgr = login(client, chain, "a_mgr")
    r = client.get("/api/v1/settlement/statements", params={"period": "2026-10"}, headers=a_mgr)
    assert r.status_code == 200, r.text
    assert statement_summary(r.json()) == {
        "A": (19960, 28500, -8540, {"B": (19900, 500, 19400), "C": (60, 28000, -27940)})
    }
    for code in ("B", "HQ"):
        r = client.get(
            "/api/v1/settlement/statements", params={"period": "2026-10", "store_code": code}, headers=a_mgr
        )
        assert r.status_code == 403, r.text
    r = client.get("/api/v1/settlement/statements", params={"period": "2026-10"}, headers=chain.key("A"))
    assert r.status_code == 403  # a till's key is not a statement reader

    # Drill-down: A's entries with B, each traceable to its order or return.
    r = client.get(
        "/api/v1/settlement/entries",
        params={"period": "2026-10", "store_code": "A", "counterparty": "B"},
        headers=a_mgr,
    )
    assert r.status_code == 200, r.text
    assert [
        (
            e["kind"],
            e["debtor"]["code"],
            e["creditor"]["code"],
            e["amount_fen"],
            e["order_no"],
            e["return_no"],
        )
        for e in r.json()["entries"]
    ] == [
        ("points_redeemed", "A", "B", 500, o3["order_no"], None),
        ("points_redeemed", "B", "A", 500, o3["order_no"], r6["return_no"]),
        ("cross_store_return", "B", "A", 19400, o3["order_no"], r6["return_no"]),
    ]

    # Excel: the netted statement and every entry behind it.
    r = client.get(
        "/api/v1/settlement/statements.xlsx", params={"period": "2026-10", "store_code": "A"}, headers=a_mgr
    )
    assert r.status_code == 200, r.text
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["对账单 statement", "明细 entries"]
    summary = [row for row in wb["对账单 statement"].iter_rows(values_only=True)][1:]
    assert ("2026-10", "open", "A", "B", "合计 total", 19900, 500, 19400, 3) in summary
    assert ("2026-10", "open", "A", "全部 all", "合计 total", 19960, 28500, -8540, 6) in summary
    detail = [row for row in wb["明细 entries"].iter_rows(values_only=True)][1:]
    assert sorted(row[6] for row in detail) == [60, 500, 500, 3000, 19400, 25000]


# --- closing and late entries ------------------------------------------------------------------------


def test_closing_freezes_a_period_and_late_entries_land_in_the_next(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    a, b, c = (chain.stores[k] for k in "ABC")
    with factory() as s:
        settlement.record(s, chain.org_id, "correction", a, b, 1200, source_ref="corr:s1", at=at(9, 20))
        settlement.record(s, chain.org_id, "correction", b, c, 800, source_ref="corr:o1", at=at(10, 9))
        settlement.record(s, chain.org_id, "correction", HQ, a, 300, source_ref="corr:o2", at=at(10, 30))
        s.commit()
    clock[0] = at(11, 2)
    hq, a_mgr = login(client, chain, "hq"), login(client, chain, "a_mgr")

    def close(period: str, headers: dict[str, str], key: str | None = None) -> Any:
        extra = {"Idempotency-Key": key} if key else {}
        return client.post(
            f"/api/v1/settlement/periods/{period}/close",
            json={"reason": "月结"},
            headers={**headers, **extra},
        )

    with factory() as s:
        before = (count(s, AuditLog, chain.org_id), count(s, Event, chain.org_id))
    # Refusals change nothing: a store manager, an unfinished month, a month after an open one.
    r = close("2026-10", a_mgr)
    assert (r.status_code, r.json()["code"]) == (403, "auth.role")
    r = close("2026-11", hq)
    assert (r.status_code, r.json()["code"]) == (409, "settlement.period_not_ended")
    r = close("2026-10", hq)
    assert (r.status_code, r.json()["code"], r.json()["open_period"]) == (
        409,
        "settlement.earlier_period_open",
        "2026-09",
    )
    r = close("2026-1", hq)
    assert (r.status_code, r.json()["code"]) == (422, "settlement.invalid_period")
    with factory() as s:
        assert (count(s, AuditLog, chain.org_id), count(s, Event, chain.org_id)) == before
        assert (
            s.scalar(
                select(func.count()).where(
                    SettlementPeriod.org_id == chain.org_id, SettlementPeriod.status == "closed"
                )
            )
            == 0
        )

    assert close("2026-09", hq).status_code == 200
    r = close("2026-10", hq, key="close-oct")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["period"], body["status"], body["closed_by"], body["entry_count"], body["total_fen"]) == (
        "2026-10",
        "closed",
        "staff:hq",
        2,
        1100,
    )
    replay = close("2026-10", hq, key="close-oct")
    assert (replay.status_code, replay.headers.get("Idempotent-Replayed")) == (200, "true")
    r = close("2026-10", hq)
    assert (r.status_code, r.json()["code"]) == (409, "settlement.period_closed")
    with factory() as s:
        log = s.scalars(
            select(AuditLog).where(
                AuditLog.org_id == chain.org_id,
                AuditLog.action == "settlement.period_closed",
                AuditLog.target_id == "2026-10",
            )
        ).one()
        assert log.actor == "staff:hq"
        assert log.reason == "月结"
        assert log.details == {
            "entry_count": 2,
            "total_fen": 1100,
            "nets": {str(HQ): -300, str(a): 300, str(b): -800, str(c): 800},
        }

    # Anything for October recorded now lands in November: a late checkout hook, an HQ correction.
    with factory() as s:
        late = settlement.record(
            s, chain.org_id, "correction", c, a, 450, source_ref="corr:late", at=at(10, 31)
        )
        assert (late.business_month, late.period) == ("2026-10", "2026-11")
        s.commit()
    r = client.post(
        "/api/v1/settlement/corrections",
        json={
            "debtor": "C",
            "creditor": "B",
            "amount_fen": 100,
            "reason": "10 月次卡漏记一次",
            "business_month": "2026-10",
        },
        headers={**hq, "Idempotency-Key": "corr-1"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["period"], r.json()["business_month"], r.json()["kind"], r.json()["amount_fen"]) == (
        "2026-11",
        "2026-10",
        "correction",
        100,
    )
    r = client.post(
        "/api/v1/settlement/corrections",
        json={"debtor": "C", "creditor": "B", "amount_fen": 100, "reason": "x"},
        headers=a_mgr,
    )
    assert (r.status_code, r.json()["code"]) == (403, "auth.role")
    with factory() as s:
        assert s.scalars(
            select(AuditLog.action).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "settlement.corrected"
            )
        ).all() == ["settlement.corrected"]
        # The database itself refuses a write into the closed period.
        with pytest.raises(DBAPIError), s.begin_nested():
            s.execute(
                insert(SettlementEntry).values(
                    org_id=chain.org_id,
                    period="2026-10",
                    business_month="2026-10",
                    kind="correction",
                    debtor_key=a,
                    creditor_key=b,
                    amount_fen=1,
                    reason="",
                    actor="",
                    details={},
                    occurred_at=at(10, 31),
                    created_at=at(11, 2),
                )
            )
        assert verify_settlement(s, chain.org_id).problems == []

    # October's statement is unchanged and shows it is closed; November carries the late entries.
    r = client.get("/api/v1/settlement/statements", params={"period": "2026-10"}, headers=hq)
    assert r.json()["status"] == "closed"
    assert statement_summary(r.json()) == {
        "HQ": (0, 300, -300, {"A": (0, 300, -300)}),
        "A": (300, 0, 300, {"HQ": (300, 0, 300)}),
        "B": (0, 800, -800, {"C": (0, 800, -800)}),
        "C": (800, 0, 800, {"B": (800, 0, 800)}),
    }
    r = client.get("/api/v1/settlement/statements", params={"period": "2026-11"}, headers=hq)
    assert statement_summary(r.json()) == {
        "A": (450, 0, 450, {"C": (450, 0, 450)}),
        "B": (100, 0, 100, {"C": (100, 0, 100)}),
        "C": (0, 550, -550, {"A": (0, 450, -450), "B": (0, 100, -100)}),
    }
    r = client.get("/api/v1/settlement/periods", headers=hq)
    assert [(p["period"], p["status"]) for p in r.json()] == [
        ("2026-11", "open"),
        ("2026-10", "closed"),
        ("2026-09", "closed"),
    ]


# --- verification ------------------------------------------------------------------------------------


def _give(s: Session, chain: Chain, member_no: str, amount: int, store: str | None) -> None:
    member = members.by_member_no(s, chain.org_id, member_no)
    program = points.default_program(s, chain.org_id)
    account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
    points.earn(s, account, amount, points.EntryContext(store_id=chain.stores[store] if store else None))
    s.flush()


def _redeem(s: Session, chain: Chain, member_no: str, amount: int, store: str) -> int:
    member = members.by_member_no(s, chain.org_id, member_no)
    program = points.default_program(s, chain.org_id)
    account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
    return points.redeem(s, account, amount, points.EntryContext(store_id=chain.stores[store])).id


def _tamper(s: Session, sql: str) -> None:
    """Edit a row behind the ledger's back (the append-only trigger is dropped inside the test's
    transaction, which is rolled back afterwards)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("ALTER TABLE settlement_entries DISABLE TRIGGER settlement_entries_no_update"))
    else:
        s.execute(text("DROP TRIGGER settlement_entries_no_update"))
    s.execute(text(sql))


def test_verify_settlement_detects_tampered_entries(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    member_no = register(client, chain, "A", "18400000011")["member_no"]
    a, b = chain.stores["A"], chain.stores["B"]
    with factory() as s:
        _give(s, chain, member_no, 300, "A")
        _give(s, chain, member_no, 200, None)  # HQ-issued (a goodwill adjustment, say)
        entry_id = _redeem(s, chain, member_no, 400, "B")
        entries = settlement.record_points_redemption(s, chain.org_id, entry_id, b)
        assert [(e.debtor_key, e.creditor_key, e.points, e.amount_fen) for e in entries] == [
            (HQ, b, 100, 100),
            (a, b, 300, 300),
        ]
        s.commit()
    with factory() as s:
        assert verify_settlement(s, chain.org_id).ok
        # The ledger refuses an edit outright.
        with pytest.raises(DBAPIError), s.begin_nested():
            s.execute(text(f"UPDATE settlement_entries SET amount_fen = 299 WHERE id = {entries[1].id}"))
        _tamper(s, f"UPDATE settlement_entries SET amount_fen = 299 WHERE id = {entries[1].id}")
        report = verify_settlement(s, chain.org_id)
        assert report.problems == [
            f"point entry {entry_id}: settlement [({HQ}, {b}, 100, 100), ({a}, {b}, 300, 299)] "
            f"does not match the redemption's lots [({HQ}, {b}, 100, 100), ({a}, {b}, 300, 300)]"
        ]
        s.rollback()


def test_verify_settlement_detects_changes_to_a_closed_period(
    chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    a, b = chain.stores["A"], chain.stores["B"]
    with factory() as s:
        e = settlement.record(s, chain.org_id, "correction", a, b, 700, source_ref="corr:x", at=at(10, 5))
        s.commit()
    clock[0] = at(11, 1)
    with factory() as s:
        settlement.close_period(s, system_principal(chain.org_id), "2026-10")
        s.commit()
    with factory() as s:
        assert verify_settlement(s, chain.org_id).ok
        _tamper(s, f"UPDATE settlement_entries SET creditor_key = {chain.stores['C']} WHERE id = {e.id}")
        problems = verify_settlement(s, chain.org_id).problems
        assert problems == [
            f"org {chain.org_id} period 2026-10: entries changed after close "
            "(1 entries, 700 fen now; 1 entries, 700 fen at close)"
        ]
        s.rollback()


# --- the rules in isolation --------------------------------------------------------------------------


def test_redemption_shares_under_each_policy() -> None:
    a, b, c = 11, 12, 13
    spent = {a: 500, b: 100, HQ: 50}

    def shares(bearer: Bearer, pct: int = 100, fen: int = 100, pts: int = 100) -> list[Share]:
        return settlement.redemption_shares(spent, b, PointsPolicy(bearer, pct, fen, pts))

    assert shares(Bearer.ISSUING_STORE) == [Share(HQ, 50, 50), Share(a, 500, 500)]
    assert shares(Bearer.HQ) == [Share(HQ, 650, 650)]
    assert shares(Bearer.REDEEMING_STORE) == []
    assert shares(Bearer.SPLIT, 60) == [Share(HQ, 50, 30), Share(a, 500, 300)]
    # 200 points a yuan: 650 points are worth 325 fen, split by points with exact fen.
    assert shares(Bearer.ISSUING_STORE, fen=100, pts=200) == [Share(HQ, 50, 25), Share(a, 500, 250)]
    assert settlement.redemption_shares(
        {a: 3, c: 1}, b, PointsPolicy(Bearer.ISSUING_STORE, 100, 100, 200)
    ) == [Share(a, 3, 2)]
    # Refunds in steps reverse exactly what was charged.
    steps = [settlement.refund_share(100, 3, done, 1) for done in range(3)]
    assert steps == [33, 33, 34]
    assert settlement.refund_share(100, 3, 2, 5) == 34  # never more than what is left


def test_bad_records_and_policies_are_refused_and_change_nothing(
    chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    a, b = chain.stores["A"], chain.stores["B"]
    hq = system_principal(chain.org_id)
    clerk = Principal(chain.org_id, "staff", 1, "a_clerk", Role.CLERK, a, frozenset({a}))
    with factory() as s:
        audit_before = count(s, AuditLog, chain.org_id)
        cases: list[tuple[Any, str]] = [
            (
                lambda: settlement.record(s, chain.org_id, "coupon_redeemed", a, b, 0, source_ref="x"),
                "settlement.invalid",
            ),
            (
                lambda: settlement.record(s, chain.org_id, "coupon_redeemed", a, a, 5, source_ref="x"),
                "settlement.invalid",
            ),
            (
                lambda: settlement.record(s, chain.org_id, "gift", a, b, 5, source_ref="x"),
                "settlement.invalid",
            ),
            (
                lambda: settlement.record(s, chain.org_id, "coupon_redeemed", a, 10**9, 5, source_ref="x"),
                "settlement.party_not_found",
            ),
            (lambda: settlement.set_points_policy(s, hq, bearer="members"), "settlement.invalid_policy"),
            (
                lambda: settlement.set_points_policy(s, hq, bearer="split", issuer_pct=101),
                "settlement.invalid_policy",
            ),
            (
                lambda: settlement.set_points_policy(s, hq, bearer="hq", value_fen=1),
                "settlement.invalid_policy",
            ),
            (lambda: settlement.set_points_policy(s, clerk, bearer="hq"), "auth.role"),
            (
                lambda: settlement.record_correction(s, hq, debtor=a, creditor=b, amount_fen=5, reason=" "),
                "settlement.invalid",
            ),
            (lambda: settlement.close_period(s, clerk, "2026-09"), "auth.role"),
        ]
        for call, code in cases:
            with pytest.raises(DomainError) as err:
                call()
            assert err.value.code == code
        s.flush()
        assert count(s, SettlementEntry, chain.org_id) == 0
        assert settlement.points_policy(s, points.default_program(s, chain.org_id)) == PointsPolicy(
            Bearer.ISSUING_STORE, 100, 100, 100
        )
        assert count(s, AuditLog, chain.org_id) == audit_before
        assert count(s, SettlementPeriod, chain.org_id) == 0


# --- closing while tills keep recording --------------------------------------------------------------

WRITERS = 12


def test_close_races_with_tills_recording_into_the_same_month(engine: Engine, clock: list[datetime]) -> None:
    """Tills record entries for a month while HQ closes it: each entry is either in the month and in
    its frozen totals, or in the next month; none slips into the closed month after its close."""
    url = engine.url.render_as_string(hide_password=False)
    race_engine = (
        make_engine(url, pool_size=WRITERS + 5, max_overflow=0)
        if engine.dialect.name != "sqlite"
        else make_engine(url)
    )
    factory = make_sessionmaker(race_engine)
    with factory() as s:
        chain = make_chain(s)
        s.commit()
    a, b = chain.stores["A"], chain.stores["B"]
    hq = system_principal(chain.org_id)
    clock[0] = at(11, 2)
    for month in (7, 8, 9):
        period = f"2026-{month:02d}"
        with factory() as s:  # something already in the month before the race
            settlement.record(
                s, chain.org_id, "correction", a, b, 1, source_ref=f"pre:{month}", at=at(month, 1)
            )
            s.commit()
        barrier = threading.Barrier(WRITERS + 1)
        errors: list[BaseException] = []

        threads = [
            threading.Thread(
                target=_race_write,
                args=(
                    factory,
                    chain.org_id,
                    (a, b),
                    100 + i,
                    f"race:{month}:{i}",
                    at(month, 28),
                    barrier,
                    errors,
                ),
            )
            for i in range(WRITERS)
        ]
        threads.append(threading.Thread(target=_race_close, args=(factory, hq, period, barrier, errors)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with factory() as s:
            row = settlement.period_status(s, chain.org_id, period)
            assert row is not None
            assert row.status == "closed"
            landed = s.execute(
                select(SettlementEntry.period, func.count(), func.sum(SettlementEntry.amount_fen))
                .where(
                    SettlementEntry.org_id == chain.org_id, SettlementEntry.source_ref.like(f"race:{month}:%")
                )
                .group_by(SettlementEntry.period)
            ).all()
            assert sum(n for _, n, _ in landed) == WRITERS
            assert {p for p, _, _ in landed} <= {period, f"2026-{month + 1:02d}"}
            in_month = {p: int(n) for p, n, _ in landed}.get(period, 0)
            assert row.entry_count == in_month + 1 + _carried(s, chain.org_id, period)
            report = verify_settlement(s, chain.org_id)
            assert report.ok, report.problems
    race_engine.dispose()


def _race_write(
    factory: sessionmaker[Session],
    org_id: int,
    pair: tuple[int, int],
    amount: int,
    ref: str,
    when: datetime,
    barrier: threading.Barrier,
    errors: list[BaseException],
) -> None:
    barrier.wait()
    try:
        with factory() as s:
            settlement.record(s, org_id, "correction", *pair, amount, source_ref=ref, at=when)
            s.commit()
    except BaseException as err:  # pragma: no cover - the test reports it
        errors.append(err)


def _race_close(
    factory: sessionmaker[Session],
    hq: Principal,
    period: str,
    barrier: threading.Barrier,
    errors: list[BaseException],
) -> None:
    barrier.wait()
    try:
        with factory() as s:
            settlement.close_period(s, hq, period)
            s.commit()
    except BaseException as err:  # pragma: no cover - the test reports it
        errors.append(err)


def _carried(s: Session, org_id: int, period: str) -> int:
    """Entries of earlier months that landed in ``period`` because their month was already closed."""
    return int(
        s.scalar(
            select(func.count()).where(
                SettlementEntry.org_id == org_id,
                SettlementEntry.period == period,
                SettlementEntry.business_month < period,
            )
        )
        or 0
    )
