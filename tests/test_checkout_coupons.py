"""Coupons inside checkout and returns, through the HTTP API: discount spread over lines, points earned on
what was paid, a full return restores the coupon, a partial one does not, refusals change nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

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
    assert _coupons(app_client, chain, m["member_no"])[code] == "redeemed"
    rest = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert rest.status_code == 201, rest.text
    assert rest.json()["refund_fen"] == 20250
    assert _coupons(app_client, chain, m["member_no"])[code] == "available"
    with factory() as s:
        assert verify(s, chain.org_id).ok


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
