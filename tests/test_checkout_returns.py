"""Checkout with points and returns at other stores, through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.events.models import Event
from onemember.members.models import Member
from onemember.orders.models import Order, OrderReturn
from onemember.org.models import Org
from onemember.points.models import PointEntry, PointLot
from onemember.points.verify import verify
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from tests.factories import Chain
from tests.helpers import balance, checkout, line, register


def _count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


def _snapshot(factory: sessionmaker[Session], org_id: int) -> dict[str, int]:
    with factory() as s:
        return {
            "orders": _count(s, Order, org_id),
            "returns": _count(s, OrderReturn, org_id),
            "entries": _count(s, PointEntry, org_id),
            "lots": _count(s, PointLot, org_id),
            "events": _count(s, Event, org_id),
            "stats_orders": int(
                s.scalar(
                    select(func.coalesce(func.sum(MemberStats.order_count), 0)).where(
                        MemberStats.org_id == org_id
                    )
                )
                or 0
            ),
        }


def _return(
    client: TestClient,
    chain: Chain,
    store: str,
    order_no: str,
    lines: list[tuple[int, int]],
    expect: int = 201,
) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/orders/{order_no}/returns",
        json={"lines": [{"line_no": n, "quantity": q} for n, q in lines]},
        headers=chain.key(store),
    )
    assert r.status_code == expect, r.text
    return dict(r.json())


def test_checkout_earns_base_rate_per_line_and_explains(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13900000001")
    order = checkout(
        app_client,
        chain,
        "B",
        {"kind": "phone", "value": "139-0000-0001"},
        [line("MILK", 3, 1290, "母婴"), line("LIP", 1, 9999, "美妆"), line("SOCK", 2, 49, "服装")],
    )
    assert order["store_code"] == "B"
    assert order["member_no"] == m["member_no"]
    assert order["total_fen"] == 3870 + 9999 + 98
    assert order["paid_fen"] == 13967
    assert [line_["points_earned"] for line_ in order["lines"]] == [38, 99, 0]
    assert order["points_earned"] == 137
    assert order["points_balance"] == 137
    rule = order["explanation"][0]
    assert rule["rule"] == "base_rate"
    assert rule["points"] == 137
    assert [(x["line_no"], x["eligible_fen"], x["points"]) for x in rule["lines"]] == [
        (1, 3870, 38),
        (2, 9999, 99),
        (3, 98, 0),
    ]
    assert "1 积分" in rule["label_zh"]


def test_redeem_points_as_payment_spreads_over_lines(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13900000002")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("TV", 1, 100000, "数码")])
    assert balance(app_client, chain, m["member_no"]) == (1000, 0)
    order = checkout(
        app_client,
        chain,
        "B",
        {"member_no": m["member_no"]},
        [line("X", 1, 3000), line("Y", 1, 1000)],
        redeem=400,
    )
    assert order["points_value_fen"] == 400
    assert order["paid_fen"] == 3600
    assert [(x["points_redeemed"], x["paid_fen"], x["points_earned"]) for x in order["lines"]] == [
        (300, 2700, 27),
        (100, 900, 9),
    ]
    assert order["points_balance"] == 1000 - 400 + 36


def test_insufficient_points_changes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000003")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 5000)])
    before = _snapshot(factory, chain.org_id)
    r = app_client.post(
        "/api/v1/orders",
        headers=chain.key("B"),
        json={
            "member": {"member_no": m["member_no"]},
            "lines": [line("Y", 1, 9000)],
            "redeem_points": 60,
            "payments": [{"method": "cash", "amount_fen": 8940}],
        },
    )
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "points.insufficient_balance"
    assert body["available"] == 50
    assert body["requested"] == 60
    assert body["message_zh"] == "积分余额不足：可用 50，需要 60"
    assert body["message_en"] == "Not enough points: 50 available, 60 needed"
    assert _snapshot(factory, chain.org_id) == before
    assert balance(app_client, chain, m["member_no"]) == (50, 0)


def test_bad_checkouts_are_refused_with_codes(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000004")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 50000)])
    before = _snapshot(factory, chain.org_id)
    cases = [
        (
            {"lines": [line("Y", 1, 1000)], "payments": [{"method": "cash", "amount_fen": 999}]},
            422,
            "orders.payment_mismatch",
        ),
        (
            {
                "lines": [line("Y", 1, 1000)],
                "redeem_points": 2000,
                "member": {"member_no": m["member_no"]},
                "payments": [],
            },
            422,
            "points.invalid_redeem_amount",
        ),
        (
            {
                "lines": [line("Y", 1, 1000)],
                "redeem_points": 10,
                "payments": [{"method": "cash", "amount_fen": 990}],
            },
            422,
            "points.member_required",
        ),
        ({"lines": [], "payments": []}, 422, "request.invalid"),
        ({"lines": [line("Y", 0, 1000)], "payments": []}, 422, "request.invalid"),
        ({"lines": [line("Y", 1, -5)], "payments": []}, 422, "request.invalid"),
        (
            {
                "member": {"member_no": "000000000"},
                "lines": [line("Y", 1, 100)],
                "payments": [{"method": "cash", "amount_fen": 100}],
            },
            404,
            "members.not_found",
        ),
        (
            {
                "member": {"kind": "phone", "value": "12345"},
                "lines": [line("Y", 1, 100)],
                "payments": [{"method": "cash", "amount_fen": 100}],
            },
            422,
            "members.invalid_identifier",
        ),
    ]
    for body, status, code in cases:
        r = app_client.post("/api/v1/orders", json=body, headers=chain.key("B"))
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
    en = app_client.post(
        "/api/v1/orders", json=cases[0][0], headers={**chain.key("B"), "Accept-Language": "en"}
    )
    assert en.json()["detail"] == "Due 1000 fen, payments add up to 999 fen"
    assert _snapshot(factory, chain.org_id) == before


def test_partial_returns_in_steps_reverse_exactly(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000005")
    order = checkout(
        app_client,
        chain,
        "A",
        {"member_no": m["member_no"]},
        [line("CREAM", 3, 3333, "美妆"), line("BREAD", 1, 1500, "食品")],
    )
    assert order["lines"][0]["points_earned"] == 99
    assert order["points_earned"] == 114
    steps = [_return(app_client, chain, "B", order["order_no"], [(1, 1)]) for _ in range(3)]
    assert [s["points_reversed"] for s in steps] == [33, 33, 33]
    assert [s["refund_fen"] for s in steps] == [3333, 3333, 3333]
    assert balance(app_client, chain, m["member_no"]) == (15, 0)
    r = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 409
    assert r.json()["code"] == "orders.return_exceeds_quantity"
    assert r.json()["returnable"] == 0
    last = _return(app_client, chain, "C", order["order_no"], [(2, 1)])
    assert last["points_reversed"] == 15
    assert balance(app_client, chain, m["member_no"]) == (0, 0)
    view = app_client.get(f"/api/v1/orders/{order['order_no']}", headers=chain.key("C")).json()
    assert view["status"] == "returned"
    assert view["refunded_fen"] == 3 * 3333 + 1500
    assert [r_["store_code"] for r_ in view["returns"]] == ["B", "B", "B", "C"]
    with factory() as s:
        st = s.get(MemberStats, _member_id(s, chain, m["member_no"]))
        assert st is not None
        assert (st.order_count, st.total_spend_fen, st.return_count, st.returned_fen) == (1, 0, 4, 11499)
        assert verify(s, chain.org_id).ok


def _member_id(s: Session, chain: Chain, member_no: str) -> int:
    member_id = s.scalar(
        select(Member.id).where(Member.member_no == member_no, Member.org_id == chain.org_id)
    )
    assert member_id is not None
    return int(member_id)


def test_uneven_steps_still_sum_to_the_line_total(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13900000006")
    order = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("P", 7, 1000)])
    assert order["points_earned"] == 70
    parts = [
        _return(app_client, chain, "A", order["order_no"], [(1, q)])["points_reversed"] for q in (2, 4, 1)
    ]
    assert parts == [20, 40, 10]
    assert sum(parts) == 70


def test_return_refunds_redeemed_points_into_their_lots(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000007")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("BIG", 1, 30000)])
    order = checkout(
        app_client,
        chain,
        "B",
        {"member_no": m["member_no"]},
        [line("X", 2, 1000), line("Y", 1, 2000)],
        redeem=200,
    )
    assert order["points_balance"] == 300 - 200 + 38
    ret = _return(app_client, chain, "C", order["order_no"], [(1, 2)])
    assert ret["points_refunded"] == 100
    assert ret["points_reversed"] == 19
    assert ret["refund_fen"] == 1900
    assert ret["points_balance"] == 138 + 100 - 19
    with factory() as s:
        first_lot = s.scalars(
            select(PointLot)
            .where(PointLot.member_id == _member_id(s, chain, m["member_no"]))
            .order_by(PointLot.id)
        ).first()
        assert first_lot is not None
        assert (first_lot.amount, first_lot.remaining) == (300, 200)
        assert verify(s, chain.org_id).ok


def test_return_after_points_spent_creates_debt_that_earning_repays(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000008")
    first = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("COAT", 1, 12000, "服装")])
    checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("TEA", 1, 100)], redeem=100)
    assert balance(app_client, chain, m["member_no"]) == (20, 0)
    ret = _return(app_client, chain, "C", first["order_no"], [(1, 1)])
    assert (ret["points_reversed"], ret["points_shortfall"], ret["shortfall_policy"]) == (120, 100, "debt")
    assert (ret["points_balance"], ret["points_debt"]) == (0, 100)
    member = app_client.get(f"/api/v1/members/{m['member_no']}", headers=chain.key("A")).json()
    assert member["points"]["debt"] == 100
    later = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("RICE", 1, 15000)])
    assert later["points_earned"] == 150
    assert later["debt_repaid"] == 100
    assert (later["points_balance"], later["points_debt"]) == (50, 0)
    with factory() as s:
        assert verify(s, chain.org_id).ok


def _set_policy(factory: sessionmaker[Session], org_id: int, policy: str) -> None:
    with factory() as s:
        org = s.get(Org, org_id)
        assert org is not None
        org.return_shortfall_policy = policy
        s.commit()


def test_shortfall_deducted_from_refund(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    _set_policy(factory, chain.org_id, "deduct_refund")
    m = register(app_client, chain, "A", "13900000009")
    first = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("COAT", 1, 12000)])
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("TEA", 1, 100)], redeem=100)
    ret = _return(app_client, chain, "B", first["order_no"], [(1, 1)])
    assert (ret["points_shortfall"], ret["refund_deducted_fen"], ret["refund_fen"]) == (100, 100, 11900)
    assert (ret["points_balance"], ret["points_debt"]) == (0, 0)
    with factory() as s:
        kinds = list(
            s.scalars(
                select(PointEntry.kind)
                .where(PointEntry.member_id == _member_id(s, chain, m["member_no"]))
                .order_by(PointEntry.id)
            )
        )
        assert kinds == ["earn", "redeem", "earn_reversal", "debt_cash_settle"]
        assert verify(s, chain.org_id).ok


def test_shortfall_written_off(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    _set_policy(factory, chain.org_id, "write_off")
    m = register(app_client, chain, "A", "13900000010")
    first = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("COAT", 1, 12000)])
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("TEA", 1, 100)], redeem=100)
    ret = _return(app_client, chain, "B", first["order_no"], [(1, 1)])
    assert (ret["points_shortfall"], ret["refund_deducted_fen"], ret["refund_fen"]) == (100, 0, 12000)
    assert (ret["points_balance"], ret["points_debt"]) == (0, 0)
    with factory() as s:
        assert verify(s, chain.org_id).ok


def test_return_notifies_original_store_and_updates_stats(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13900000011")
    order = checkout(
        app_client,
        chain,
        "A",
        {"member_no": m["member_no"]},
        [line("DIAPER", 2, 8900, "母婴"), line("SOAP", 1, 1200, "家居")],
    )
    checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("SOAP", 1, 1200, "家居")])
    ret = _return(app_client, chain, "C", order["order_no"], [(1, 1)])
    with factory() as s:
        event = s.scalars(
            select(Event).where(Event.type == "order.returned", Event.org_id == chain.org_id)
        ).one()
        assert event.store_ids == sorted([chain.stores["A"], chain.stores["C"]])
        assert event.payload["original_store_code"] == "A"
        assert event.payload["store_code"] == "C"
        assert event.payload["return_no"] == ret["return_no"]
        mid = _member_id(s, chain, m["member_no"])
        st = s.get(MemberStats, mid)
        assert st is not None
        assert (st.order_count, st.total_spend_fen, st.store_count) == (2, 8900 + 1200 + 1200, 2)
        per_store = {
            row.store_id: (row.order_count, row.spend_fen)
            for row in s.scalars(select(MemberStoreStats).where(MemberStoreStats.member_id == mid))
        }
        assert per_store == {chain.stores["A"]: (1, 8900 + 1200), chain.stores["B"]: (1, 1200)}
        per_cat = {
            row.category: (row.order_count, row.quantity, row.spend_fen)
            for row in s.scalars(select(MemberCategoryStats).where(MemberCategoryStats.member_id == mid))
        }
        assert per_cat == {"母婴": (1, 1, 8900), "家居": (2, 2, 2400)}


def test_member_orders_and_ledger_visible_from_any_store(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13900000012")
    o1 = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("A1", 1, 2000)])
    o2 = checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("B1", 1, 3000)], redeem=10)
    r = app_client.get(f"/api/v1/members/{m['member_no']}/orders", headers=chain.key("C"))
    assert r.status_code == 200
    assert [o["order_no"] for o in r.json()] == [o2["order_no"], o1["order_no"]]
    ledger = app_client.get(f"/api/v1/members/{m['member_no']}/points", headers=chain.key("C")).json()
    assert [(e["kind"], e["amount"], e["store_code"]) for e in ledger["entries"]] == [
        ("earn", 29, "B"),
        ("redeem", -10, "B"),
        ("earn", 20, "A"),
    ]
    assert ledger["balance"] == 39
    assert [(lot["amount"], lot["remaining"], lot["store_code"]) for lot in ledger["open_lots"]] == [
        (20, 10, "A"),
        (29, 29, "B"),
    ]


def test_order_number_clash_draws_another(
    app_client: TestClient, chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = checkout(app_client, chain, "A", None, [line("X", 1, 100)])
    numbers = iter([first["order_no"], "S2611230000000001"])
    monkeypatch.setattr("onemember.orders.checkout.public_no", lambda *_: next(numbers))
    second = checkout(app_client, chain, "A", None, [line("Y", 1, 100)])
    assert second["order_no"] == "S2611230000000001"
