"""Settlement at scale: ``verify_settlement`` reads sources in batches (a refund whose redemption and
earlier refunds sit in earlier batches, coupons and packages across batches, and each kind of
problem are found the same way whatever the batch size), and the drilldown reads a pair of parties'
entries in both directions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.db import set_clock
from onemember.orders.models import OrderReturn
from onemember.settings import get_settings
from onemember.settlement import service as settlement
from onemember.settlement import statements, verify
from onemember.settlement.models import HQ, SettlementEntry
from tests.factories import Chain
from tests.helpers import checkout, line, login, register


def at(day: int) -> datetime:
    return datetime(2026, 10, day, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    now = [at(1)]
    set_clock(lambda: now[0])
    yield now
    set_clock(None)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings(), factory, start_dispatcher=False)) as c:
        yield c


def returned(client: TestClient, chain: Chain, store: str, order_no: str, qty: int) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/orders/{order_no}/returns",
        json={"lines": [{"line_no": 1, "quantity": qty}]},
        headers=chain.key(store),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def month(client: TestClient, chain: Chain, clock: list[datetime]) -> dict[str, Any]:
    """Points from two stores redeemed at a third and given back in two returns (one cross-store), an
    HQ coupon used and returned, a package sold at A and used at C."""
    m1 = {"kind": "phone", "value": "18500000001"}
    m1_no = register(client, chain, "A", "18500000001")["member_no"]
    clock[0] = at(3)
    checkout(client, chain, "A", m1, [line("COAT", 2, 25000, "服装")])  # 500 points, A's lot
    clock[0] = at(5)
    checkout(client, chain, "B", m1, [line("BAG", 1, 30000, "箱包")])  # 300 points, B's lot
    clock[0] = at(8)
    shoes = checkout(client, chain, "C", m1, [line("SHOE", 3, 10000, "鞋")], redeem=600)
    clock[0] = at(10)
    first = returned(client, chain, "C", shoes["order_no"], 1)
    clock[0] = at(12)
    second = returned(client, chain, "A", shoes["order_no"], 1)
    clock[0] = at(14)
    hq = login(client, chain, "hq")
    template = {"code": "HQ20", "name": "总部 20 元券", "kind": "amount_off", "amount_fen": 2000}
    r = client.post(
        "/api/v1/coupon-templates", json={**template, "valid_days": 30, "bearer": "hq"}, headers=hq
    )
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/members/{m1_no}/coupons", json={"template_code": "HQ20"}, headers=hq)
    assert r.status_code == 201, r.text
    hat = checkout(
        client,
        chain,
        "B",
        m1,
        [line("HAT", 1, 10000, "服装")],
        coupon_codes=[r.json()["code"]],
        payments=[{"method": "cash", "amount_fen": 8000}],
    )
    clock[0] = at(15)
    returned(client, chain, "B", hat["order_no"], 1)
    clock[0] = at(16)
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
    r = client.post(
        f"/api/v1/members/{m1_no}/packages",
        json={"package_code": "NAIL10", "payment_method": "cash", "amount_fen": 30000},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/member-packages/{r.json()['id']}/uses", json={"uses": 1}, headers=chain.key("C")
    )
    assert r.status_code == 201, r.text
    return {"first": first, "second": second}


def entries(s: Session, chain: Chain) -> list[tuple[Any, ...]]:
    rows = s.execute(
        select(
            SettlementEntry.kind,
            SettlementEntry.debtor_key,
            SettlementEntry.creditor_key,
            SettlementEntry.amount_fen,
            SettlementEntry.points,
            SettlementEntry.reverses_id.is_not(None),
        )
        .where(SettlementEntry.org_id == chain.org_id)
        .order_by(SettlementEntry.id)
    ).all()
    return [tuple(r) for r in rows]


def _tamper(s: Session, sql: str) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("ALTER TABLE settlement_entries DISABLE TRIGGER settlement_entries_no_update"))
    else:
        s.execute(text("DROP TRIGGER IF EXISTS settlement_entries_no_update"))
    s.execute(text(sql))


@pytest.mark.parametrize("batch", [1, 2, verify.BATCH])
def test_verify_in_batches_finds_the_same_month_whole_and_each_problem(
    client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    clock: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    monkeypatch.setattr(verify, "BATCH", batch)
    rets = month(client, chain, clock)
    a, b, c = (chain.stores[k] for k in "ABC")
    with factory() as s:
        # 600 points at C: A's 500 then B's 100. Each return of one shoe gives back 200 points, to the
        # lots last taken first (B's 100 and 100 of A's, then 200 of A's); the second is at A, which
        # refunds 100.00 in cash for C.
        assert entries(s, chain) == [
            ("points_redeemed", a, c, 500, 500, False),
            ("points_redeemed", b, c, 100, 100, False),
            ("points_redeemed", c, a, 100, 100, True),
            ("points_redeemed", c, b, 100, 100, True),
            ("points_redeemed", c, a, 200, 200, True),
            ("cross_store_return", c, a, 9800, None, False),
            ("coupon_redeemed", HQ, b, 2000, None, False),
            ("coupon_redeemed", b, HQ, 2000, None, True),
            ("package_used", a, c, 3000, None, False),
        ]
        report = verify.verify_settlement(s, chain.org_id)
        assert (report.problems, report.entries, report.sources, report.closed_periods) == ([], 9, 5, 0)

        # Problems: an entry for a coupon redemption and a package use that do not exist, a points entry
        # without its point entry, a cross-store return whose amount was changed, and the second
        # refund's reversal changed (its redemption and the first refund sit in earlier batches).
        clock[0] = at(20)
        settlement.record(s, chain.org_id, "coupon_redeemed", HQ, a, 100, source_ref="coupon:999999")
        settlement.record(s, chain.org_id, "package_used", b, a, 100, source_ref="package_use:999999")
        stray = settlement.record(s, chain.org_id, "points_redeemed", a, b, 100, source_ref=None)
        return_no = rets["second"]["return_no"]
        return_id = s.scalars(select(OrderReturn.id).where(OrderReturn.return_no == return_no)).one()
        cash = s.scalars(
            select(SettlementEntry.id).where(
                SettlementEntry.return_id == return_id, SettlementEntry.kind == "cross_store_return"
            )
        ).one()
        refund = s.execute(
            select(SettlementEntry.id, SettlementEntry.point_entry_id).where(
                SettlementEntry.return_id == return_id, SettlementEntry.kind == "points_redeemed"
            )
        ).one()
        _tamper(s, f"UPDATE settlement_entries SET amount_fen = 9799 WHERE id = {cash}")
        _tamper(s, f"UPDATE settlement_entries SET points = 199, amount_fen = 199 WHERE id = {refund.id}")
        report = verify.verify_settlement(s, chain.org_id)
        assert report.problems == [
            f"settlement entry {stray.id}: points entry without its point entry",
            f"point entry {refund.point_entry_id}: settlement [({c}, {a}, 199, 199)] does not match the "
            f"redemption's lots [({c}, {a}, 200, 200)]",
            f"return {return_no}: settlement ({c}, {a}, 9799) does not match the return ({c}, {a}, 9800)",
            "settlement coupon:999999: no such coupon redemption",
            "settlement package_use:999999: no such package use",
        ]
        assert (report.entries, report.sources) == (12, 5)
        s.rollback()


def test_drilldown_finds_a_pair_in_both_directions(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: list[datetime]
) -> None:
    month(client, chain, clock)
    a, b, c = (chain.stores[k] for k in "ABC")
    with factory() as s:

        def pair(party: int, other: int | None, limit: int | None = None) -> list[tuple[int, int, int]]:
            rows = statements.entries(
                s, chain.org_id, "2026-10", party_key=party, counterparty_key=other, limit=limit
            )
            return [(e.debtor.key, e.creditor.key, e.amount_fen) for e in rows]

        a_c = [(a, c, 500), (c, a, 100), (c, a, 200), (c, a, 9800), (a, c, 3000)]
        assert pair(a, c) == pair(c, a) == a_c
        assert pair(a, c, limit=2) == a_c[:2]
        assert pair(b, HQ) == [(HQ, b, 2000), (b, HQ, 2000)]
        assert pair(a, b) == []
        # The same party twice is that party's entries, as before.
        assert pair(a, a) == pair(a, None) == a_c
