"""Coupons inside checkout and returns, through the HTTP API: discount spread over lines, points earned on
what was paid, a full return restores the coupon, a partial one does not, refusals change nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from onemember.coupons.models import Coupon, CouponRedemption
from onemember.coupons.verify import verify_coupons
from onemember.events.models import Event
from onemember.orders.models import Order
from onemember.points.verify import verify
from tests.factories import Chain
from tests.helpers import line, login, register


def _template(client: TestClient, hq: dict[str, str], **body: Any) -> None:
    r = client.post("/api/v1/coupon-templates", json=body, headers=hq)
    assert r.status_code == 201, r.text


def _issue(client: TestClient, hq: dict[str, str], member_no: str, template: str) -> str:
    r = client.post(
        f"/api/v1/members/{member_no}/coupons",
        json={"template_code": template, "store_code": "A"},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def _coupons(client: TestClient, chain: Chain, member_no: str) -> dict[str, str]:
    r = client.get(f"/api/v1/members/{member_no}/coupons", headers=chain.key("A"))
    assert r.status_code == 200, r.text
    return {c["code"]: c["status"] for c in r.json()["coupons"]}


def test_coupon_at_checkout_and_return(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _template(
        app_client,
        hq,
        code="M300-50",
        name="满300减50",
        kind="amount_off",
        threshold_fen=30000,
        amount_fen=5000,
        valid_days=30,
        return_policy="restore",
    )
    m = register(app_client, chain, "A", "18100009901")
    code = _issue(app_client, hq, m["member_no"], "M300-50")
    lines = [line("COAT", 1, 24000, "服装"), line("SCARF", 1, 8000, "服装")]
    body = {
        "member": {"member_no": m["member_no"]},
        "lines": lines,
        "coupon_codes": [code],
        "payments": [{"method": "wechat_pay", "amount_fen": 27000}],
    }
    r = app_client.post("/api/v1/orders", json=body, headers=chain.key("B"))
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["total_fen"], order["coupon_discount_fen"], order["discount_fen"], order["paid_fen"]) == (
        32000,
        5000,
        5000,
        27000,
    )
    assert [(x["discount_fen"], x["paid_fen"], x["points_earned"]) for x in order["lines"]] == [
        (3750, 20250, 202),
        (1250, 6750, 67),
    ]
    assert _coupons(app_client, chain, m["member_no"])[code] == "redeemed"
    again = app_client.post("/api/v1/orders", json={**body, "client_order_id": "x2"}, headers=chain.key("B"))
    assert (again.status_code, again.json()["code"]) == (409, "coupons.already_used")
    # Returning one line leaves the coupon used; returning the rest gives it back.
    part = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 2, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert part.status_code == 201, part.text
    assert part.json()["refund_fen"] == 6750
    assert part.json()["coupons"] == [{"code": code, "returned_fen": 1250, "action": "kept"}]
    assert _coupons(app_client, chain, m["member_no"])[code] == "redeemed"
    rest = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert rest.status_code == 201, rest.text
    assert rest.json()["refund_fen"] == 20250
    assert rest.json()["coupons"] == [{"code": code, "returned_fen": 3750, "action": "restored"}]
    with factory() as s:
        payloads = [
            (e.type, e.payload.get("order_no"), e.payload.get("coupons"))
            for e in s.scalars(
                select(Event)
                .where(Event.org_id == chain.org_id, Event.type.in_(["coupon.redeemed", "coupon.restored"]))
                .order_by(Event.id)
            )
        ]
    assert payloads == [
        ("coupon.redeemed", order["order_no"], None),
        ("coupon.restored", order["order_no"], None),
    ]
    assert _coupons(app_client, chain, m["member_no"])[code] == "available"
    with factory() as s:
        assert verify(s, chain.org_id).ok
        assert verify_coupons(s, chain.org_id) == []
        # A counter or a coupon that disagrees with the redemptions is reported.
        s.execute(
            text(
                "UPDATE coupon_templates SET budget_used = 5000"
                f" WHERE code = 'M300-50' AND org_id = {chain.org_id}"
            )
        )
        s.execute(text(f"UPDATE coupons SET status = 'redeemed' WHERE code = '{code}'"))
        assert verify_coupons(s, chain.org_id) == [
            "coupon template M300-50: issued, redeemed, budget used (1, 0, 5000), expected (1, 0, 0)",
            f"coupon {code}: status redeemed on order None, standing redemptions on orders []",
        ]
        s.rollback()
        # A standing redemption the coupon does not show, and lines that do not add up to it.
        rid, order_id = s.execute(
            select(CouponRedemption.id, CouponRedemption.order_id)
            .join(Coupon, Coupon.id == CouponRedemption.coupon_id)
            .where(Coupon.org_id == chain.org_id, Coupon.code == code)
        ).one()
        s.execute(text(f"UPDATE coupon_redemptions SET status = 'redeemed' WHERE id = {rid}"))
        s.execute(
            text(
                "UPDATE coupon_redemption_lines SET returned_fen = returned_fen + 1"
                f" WHERE redemption_id = {rid} AND line_no = 1"
            )
        )
        assert verify_coupons(s, chain.org_id) == [
            "coupon template M300-50: issued, redeemed, budget used (1, 0, 0), expected (1, 1, 5000)",
            f"coupon {code}: status available on order None, standing redemptions on orders [{order_id}]",
            f"coupon redemption {rid}: discount, returned (5000, 5000), lines add up to (5000, 5001)",
        ]
        s.rollback()


def test_coupon_refusals_change_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    _template(
        app_client,
        hq,
        code="A-ONLY",
        name="A 店专享",
        kind="amount_off",
        threshold_fen=0,
        amount_fen=1000,
        valid_days=30,
        accept_scope="issuing_store",
    )
    _template(
        app_client,
        hq,
        code="M500-80",
        name="满500减80",
        kind="amount_off",
        threshold_fen=50000,
        amount_fen=8000,
        valid_days=30,
    )
    m = register(app_client, chain, "A", "18100009902")
    a_only = _issue(app_client, hq, m["member_no"], "A-ONLY")
    big = _issue(app_client, hq, m["member_no"], "M500-80")
    with factory() as s:
        before = s.scalar(select(func.count()).select_from(Order).where(Order.org_id == chain.org_id))
    for code, store, expected in (
        (a_only, "B", "coupons.not_usable_here"),
        (big, "A", "coupons.threshold_not_met"),
    ):
        r = app_client.post(
            "/api/v1/orders",
            headers=chain.key(store),
            json={
                "member": {"member_no": m["member_no"]},
                "lines": [line("X", 1, 20000)],
                "coupon_codes": [code],
                "payments": [{"method": "cash", "amount_fen": 19000}],
            },
        )
        assert (r.status_code, r.json()["code"]) == (409, expected), r.text
    guest = app_client.post(
        "/api/v1/orders",
        headers=chain.key("A"),
        json={
            "lines": [line("X", 1, 20000)],
            "coupon_codes": [a_only],
            "payments": [{"method": "cash", "amount_fen": 19000}],
        },
    )
    assert guest.json()["code"] == "coupons.member_required"
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.org_id == chain.org_id)) == before
    assert _coupons(app_client, chain, m["member_no"]) == {a_only: "available", big: "available"}


def _coupon_settlement(factory: sessionmaker[Session], chain: Chain) -> list[tuple[str, str, int, bool]]:
    """(debtor, creditor, fen, is_reversal) of the org's coupon settlement entries, in order."""
    from onemember.org.models import Store
    from onemember.settlement.models import SettlementEntry

    with factory() as s:
        codes = {st.id: st.code for st in s.scalars(select(Store).where(Store.org_id == chain.org_id))}
        rows = s.scalars(
            select(SettlementEntry)
            .where(SettlementEntry.org_id == chain.org_id, SettlementEntry.kind == "coupon_redeemed")
            .order_by(SettlementEntry.id)
        ).all()
        return [
            (
                codes.get(e.debtor_key, "HQ"),
                codes.get(e.creditor_key, "HQ"),
                e.amount_fen,
                e.reverses_id is not None,
            )
            for e in rows
        ]


def test_coupon_settlement_follows_the_bearer_and_returns(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    """A coupon issued at A and redeemed at B: A repays B the discount (issuing_store), or 30 % of it
    (split), or HQ does (hq); redeemed at A itself nothing is owed. Returns reverse the returned share
    so the entries net to what the kept discount costs, and a full return nets to zero."""
    from onemember.settlement.verify import verify_settlement

    hq = login(app_client, chain, "hq")
    common = {"kind": "amount_off", "threshold_fen": 30000, "amount_fen": 5000, "valid_days": 30}
    _template(app_client, hq, code="ISS", name="A 店券", bearer="issuing_store", **common)
    _template(app_client, hq, code="SPL", name="分摊券", bearer="split", issuer_pct=30, **common)
    _template(app_client, hq, code="HQP", name="总部券", bearer="hq", **common)
    m = register(app_client, chain, "A", "18100009911")
    lines = [line("COAT", 1, 24000, "服装"), line("SCARF", 1, 8000, "服装")]

    def buy(store: str, template: str) -> dict[str, Any]:
        code = _issue(app_client, hq, m["member_no"], template)  # issued at store A
        r = app_client.post(
            "/api/v1/orders",
            json={
                "member": {"member_no": m["member_no"]},
                "lines": lines,
                "coupon_codes": [code],
                "payments": [{"method": "cash", "amount_fen": 27000}],
            },
            headers=chain.key(store),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    iss = buy("B", "ISS")
    spl = buy("B", "SPL")
    hqp = buy("C", "HQP")
    same = buy("A", "ISS")  # redeemed where it was issued: no one owes anything
    assert _coupon_settlement(factory, chain) == [
        ("A", "B", 5000, False),
        ("A", "B", 1500, False),  # 30 % of 5000
        ("HQ", "C", 5000, False),
    ]
    # Return the scarf of the ISS order at C: its coupon share 1250 comes back, A owes B 3750 now.
    r = app_client.post(
        f"/api/v1/orders/{iss['order_no']}/returns",
        json={"lines": [{"line_no": 2, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 201, r.text
    # Split: the whole order back; owed was 30 % of 5000 = 1500, reversed in two steps to zero.
    for line_no in (1, 2):
        r = app_client.post(
            f"/api/v1/orders/{spl['order_no']}/returns",
            json={"lines": [{"line_no": line_no, "quantity": 1}]},
            headers=chain.key("B"),
        )
        assert r.status_code == 201, r.text
    entries = _coupon_settlement(factory, chain)
    assert entries[3:] == [
        ("B", "A", 1250, True),
        # 30 % of what is still kept: 30 % of 5000 - 30 % of 1250 (line 2 kept) = 1500 - 375
        ("B", "A", 1125, True),
        ("B", "A", 375, True),
    ]
    # A return from the order that settled nothing reverses nothing.
    r = app_client.post(
        f"/api/v1/orders/{same['order_no']}/returns",
        json={"lines": [{"line_no": 2, "quantity": 1}]},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["coupons"][0]["returned_fen"] == 1250
    assert _coupon_settlement(factory, chain) == entries
    with factory() as s:
        report = verify_settlement(s, chain.org_id)
        assert report.problems == []
    assert hqp["coupon_discount_fen"] == 5000

    # verify re-derives every coupon entry from its redemption: an edited amount, a lost reversal and an
    # entry whose redemption does not exist are each reported.
    from onemember.settlement.models import SettlementEntry
    from tests.test_settlement import _tamper

    with factory() as s:
        org_entries = select(SettlementEntry).where(
            SettlementEntry.org_id == chain.org_id, SettlementEntry.kind == "coupon_redeemed"
        )
        first, second, hq_entry, rev1 = s.scalars(org_entries.order_by(SettlementEntry.id)).all()[:4]
        r1, r2, r3 = (
            s.scalars(select(CouponRedemption.id).where(CouponRedemption.order_id == e.order_id)).one()
            for e in (first, second, hq_entry)
        )
        _tamper(s, f"UPDATE settlement_entries SET amount_fen = 1499 WHERE id = {second.id}")
        s.execute(text(f"UPDATE settlement_entries SET amount_fen = 1000 WHERE id = {rev1.id}"))
        s.execute(text(f"UPDATE settlement_entries SET source_ref = 'coupon:0' WHERE id = {hq_entry.id}"))
        s.expire_all()
        a, b, c = (chain.stores[k] for k in "ABC")
        assert verify_settlement(s, chain.org_id).problems == [
            f"coupon redemption {r1}: 4000 fen owed after returns, expected 3750",
            f"coupon redemption {r2}: settlement [({a}, {b}, 1499)] does not match [({a}, {b}, 1500)]",
            f"coupon redemption {r3}: settlement [] does not match [(0, {c}, 5000)]",
            "settlement coupon:0: no such coupon redemption",
        ]
        s.rollback()
