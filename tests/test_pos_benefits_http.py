"""Coupons and service packages on the POS page over plain HTTP: the usable coupons for a basket with the
best combination pre-selected and a reason for each unusable one, toggling and scanning codes, checkout
with coupons (points earned on what is left), a coupon another till used meanwhile, returns that take
back each coupon's share and restore or void it, and packages used and sold at the till."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.coupons.models import CouponRedemption
from onemember.members import service as members
from onemember.orders.models import Order
from onemember.org.models import Staff
from onemember.packages.models import MemberPackage, PackageUse
from onemember.settlement.models import SettlementEntry
from tests.factories import Chain
from tests.helpers import balance, line, login, register
from tests.test_pos_http import add, by_testid, hidden, order_count, pos_login, post

# --- helpers -----------------------------------------------------------------------------------------


def template(client: TestClient, hq: dict[str, str], code: str, name: str, **rule: Any) -> None:
    body = {"code": code, "name": name, "valid_days": 30, **rule}
    r = client.post("/api/v1/coupon-templates", json=body, headers=hq)
    assert r.status_code == 201, r.text


def issue(client: TestClient, hq: dict[str, str], member_no: str, template_code: str) -> str:
    r = client.post(
        f"/api/v1/members/{member_no}/coupons",
        json={"template_code": template_code, "store_code": "A"},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def coupon_status(client: TestClient, chain: Chain, member_no: str) -> dict[str, str]:
    r = client.get(f"/api/v1/members/{member_no}/coupons", headers=chain.key("A"))
    assert r.status_code == 200, r.text
    return {c["code"]: c["status"] for c in r.json()["coupons"]}


def pressed(html: str, code: str) -> bool:
    match = re.search(rf'aria-pressed="(true|false)"[^>]*data-testid="coupon-{code}"', html)
    assert match, f"no coupon button {code}"
    return match.group(1) == "true"


def checkout_form(html: str, method: str = "wechat_pay") -> dict[str, str]:
    return {
        "basket": hidden(html, "basket"),
        "idem": hidden(html, "idem"),
        "coupons": hidden(html, "coupons"),
        "due": hidden(html, "due"),
        "method": method,
    }


def untranslated(html: str) -> list[str]:
    """Texts shown as their message key: a key the page module never registered."""
    return re.findall(r">[^<]*\bpos\.[a-z_.]+[^<]*<", html) + re.findall(r'"pos\.[a-z_.]+"', html)


def coupon_post(client: TestClient, **data: str) -> Response:
    return post(client, "/pos/coupons", **data)


def redemptions(factory: sessionmaker[Session], org_id: int) -> int:
    with factory() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(CouponRedemption).where(CouponRedemption.org_id == org_id)
            )
            or 0
        )


# --- coupons -----------------------------------------------------------------------------------------


def test_threshold_coupon_on_a_320_yuan_basket(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    template(app_client, hq, "M300-50", "满300减50", kind="amount_off", threshold_fen=30000, amount_fen=5000)
    template(app_client, hq, "M500-80", "满500减80", kind="amount_off", threshold_fen=50000, amount_fen=8000)
    template(
        app_client,
        hq,
        "B-ONLY",
        "杭州店专享",
        kind="amount_off",
        amount_fen=1000,
        accept_scope="stores",
        accept_store_codes=["B"],
    )
    m = register(app_client, chain, "A", "18700002001")
    good = issue(app_client, hq, m["member_no"], "M300-50")
    big = issue(app_client, hq, m["member_no"], "M500-80")
    b_only = issue(app_client, hq, m["member_no"], "B-ONLY")
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700002001")
    page = app_client.get("/pos").text
    assert by_testid(page, "coupons-need-lines") == "添加商品后显示可用优惠券"
    add(app_client, "COAT", "大衣", "2", "160", "服装")
    page = app_client.get("/pos").text
    assert by_testid(page, "basket-total") == "¥320.00"
    assert pressed(page, good)
    assert by_testid(page, f"coupon-discount-{good}") == "-¥50.00"
    assert by_testid(page, "coupon-best-discount") == "¥50.00"
    assert hidden(page, "coupons") == good
    assert by_testid(page, "quote-coupon-discount") == "-¥50.00"
    assert by_testid(page, "quote-due") == "¥270.00"
    assert by_testid(page, "quote-earned") == "270"
    assert "满 ¥300.00 减 ¥50.00" in page
    assert by_testid(page, f"unusable-reason-{big}") == "未达到使用门槛：满 ¥500.00，还差 ¥180.00"
    assert by_testid(page, f"unusable-reason-{b_only}") == "不能在本门店使用"
    assert 'data-testid="quote-price-difference"' not in page
    en = app_client.get("/pos?lang=en").text
    assert untranslated(en) == []
    assert by_testid(en, f"unusable-reason-{big}") == "Below its threshold: ¥500.00 needed, ¥180.00 short"
    assert by_testid(en, f"unusable-reason-{b_only}") == "Not accepted at this store"
    assert "¥50.00 off ¥300.00+" in en
    app_client.get("/pos?lang=zh")

    # A page that showed another amount than the checkout would charge is refused; nothing is written.
    form = checkout_form(page)
    assert form["due"] == "0:27000"
    r = post(app_client, "/pos/checkout", redeem="", **{**form, "due": "0:26999"})
    assert r.status_code == 422
    assert by_testid(r.text, "checkout-error") == "应付金额已变化，请核对后重新结账"
    assert order_count(factory, chain, m["member_no"]) == 0
    assert coupon_status(app_client, chain, m["member_no"])[good] == "available"

    r = post(app_client, "/pos/checkout", redeem="", **checkout_form(r.text))
    assert r.status_code == 303, r.text
    receipt = app_client.get(r.headers["location"]).text
    assert by_testid(receipt, "receipt-total") == "¥320.00"
    assert by_testid(receipt, "receipt-coupon-name") == "满300减50"
    assert by_testid(receipt, "receipt-coupon-discount") == "-¥50.00"
    assert receipt.count('data-testid="receipt-coupon"') == 1
    assert by_testid(receipt, "receipt-paid") == "¥270.00"
    assert by_testid(receipt, "receipt-earned") == "270"
    assert by_testid(receipt, "receipt-balance") == "270"
    assert coupon_status(app_client, chain, m["member_no"]) == {
        good: "redeemed",
        big: "available",
        b_only: "available",
    }
    assert balance(app_client, chain, m["member_no"]) == (270, 0)
    with factory() as s:
        order = s.scalar(select(Order).where(Order.order_no == r.headers["location"].rsplit("/", 1)[1]))
        assert order is not None
        assert (order.total_fen, order.discount_fen, order.paid_fen, order.points_earned) == (
            32000,
            5000,
            27000,
            270,
        )


def test_best_combination_toggles_and_scans(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    full = {"kind": "amount_off", "stack_group": "full"}
    template(app_client, hq, "F300", "满300减50", threshold_fen=30000, amount_fen=5000, **full)
    template(app_client, hq, "F200", "满200减30", threshold_fen=20000, amount_fen=3000, **full)
    template(app_client, hq, "P10", "九折券", kind="percent_off", percent_off=10, cap_fen=2000)
    template(app_client, hq, "X60", "独享立减60", kind="amount_off", amount_fen=6000, exclusive=True)
    template(app_client, hq, "F500", "满500减80", kind="amount_off", threshold_fen=50000, amount_fen=8000)
    m = register(app_client, chain, "A", "18700002002")
    other = register(app_client, chain, "A", "18700002003")
    f300, f200, p10, x60, f500 = (
        issue(app_client, hq, m["member_no"], code) for code in ("F300", "F200", "P10", "X60", "F500")
    )
    not_hers = issue(app_client, hq, other["member_no"], "P10")
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700002002")
    add(app_client, "COAT", "大衣", "2", "160", "服装")
    page = app_client.get("/pos").text
    # Alone: 50, 30, 20 (10 % capped) and 60 (exclusive); together 满300减50 then 10 % of 270 capped
    # at 20 is 70, more than the exclusive 60.
    assert [by_testid(page, f"coupon-discount-{c}") for c in (f300, f200, p10, x60)] == [
        "-¥50.00",
        "-¥30.00",
        "-¥20.00",
        "-¥60.00",
    ]
    assert [pressed(page, c) for c in (f300, f200, p10, x60)] == [True, False, True, False]
    assert sorted(hidden(page, "coupons").split(",")) == sorted([f300, p10])
    assert by_testid(page, "quote-coupon-discount") == "-¥70.00"
    assert by_testid(page, "quote-due") == "¥250.00"
    assert by_testid(page, "quote-earned") == "250"
    assert "9 折，最多减 ¥20.00" in page
    assert by_testid(page, f"unusable-reason-{f500}") == "未达到使用门槛：满 ¥500.00，还差 ¥180.00"
    assert 'data-testid="coupon-best"' not in page

    r = coupon_post(app_client, toggle=p10, redeem="100")
    assert r.status_code == 303
    assert r.headers["location"] == "/pos?redeem=100"  # typed points survive a coupon change
    page = app_client.get(r.headers["location"]).text
    assert [pressed(page, c) for c in (f300, f200, p10, x60)] == [True, False, False, False]
    assert by_testid(page, "quote-coupon-discount") == "-¥50.00"
    assert 'name="redeem" value="100"' in page
    assert by_testid(page, "quote-warning") == "超过会员可用积分"  # the member has no points yet
    assert by_testid(page, "coupon-best-discount") == "¥70.00"
    assert "推荐组合可减" in page
    assert 'data-testid="coupon-best"' in page

    cookie = app_client.cookies.get("om_pos_basket")
    for clash in (f200, x60):  # same stacking group as 满300减50; exclusive
        r = coupon_post(app_client, toggle=clash)
        assert r.status_code == 409
        assert by_testid(r.text, "coupon-error") == "这些优惠不能同时使用"
        assert app_client.cookies.get("om_pos_basket") == cookie
    r = coupon_post(app_client, toggle=f500)
    assert r.status_code == 409
    assert by_testid(r.text, "coupon-error") == (
        f"优惠券 {f500} 暂不可用：未达到使用门槛：满 ¥500.00，还差 ¥180.00"
    )
    r = coupon_post(app_client, scan=not_hers)
    assert r.status_code == 404
    assert by_testid(r.text, "coupon-error") == f"找不到该优惠券（券码 {not_hers}）"
    r = coupon_post(app_client, scan="  ")
    assert r.status_code == 422
    assert by_testid(r.text, "coupon-error") == "请输入或扫描券码"
    assert re.search(r'data-testid="coupon-scan"\s+autofocus', r.text)
    assert app_client.cookies.get("om_pos_basket") == cookie

    # A scanned code (any case, stray spaces) selects that coupon.
    assert coupon_post(app_client, scan=f" {p10.lower()} ").status_code == 303
    page = app_client.get("/pos").text
    assert [pressed(page, c) for c in (f300, f200, p10, x60)] == [True, False, True, False]
    assert by_testid(page, "quote-due") == "¥250.00"
    coupon_post(app_client, none="1")
    page = app_client.get("/pos").text
    assert hidden(page, "coupons") == ""
    assert 'data-testid="quote-coupon-discount"' not in page
    assert by_testid(page, "quote-due") == "¥320.00"
    coupon_post(app_client, toggle=x60)
    page = app_client.get("/pos").text
    assert hidden(page, "coupons") == x60
    assert by_testid(page, "quote-due") == "¥260.00"
    # The htmx quote prices exactly the codes the checkout form carries.
    quote = app_client.get(f"/pos/quote?redeem=0&coupons={f300},{p10}").text
    assert by_testid(quote, "quote-coupon-discount") == "-¥70.00"
    assert by_testid(quote, "quote-earned") == "250"
    quote = app_client.get(f"/pos/quote?coupons={f300},{f200}").text
    assert by_testid(quote, "quote-warning") == "这些优惠不能同时使用"
    coupon_post(app_client, best="1")
    page = app_client.get("/pos").text
    assert sorted(hidden(page, "coupons").split(",")) == sorted([f300, p10])
    # A new line in the basket starts from its best combination again.
    coupon_post(app_client, none="1")
    add(app_client, "SCARF", "围巾", "1", "80", "服装")
    page = app_client.get("/pos").text
    assert by_testid(page, "basket-total") == "¥400.00"
    assert sorted(hidden(page, "coupons").split(",")) == sorted([f300, p10])
    assert by_testid(page, "quote-coupon-discount") == "-¥70.00"
    assert redemptions(factory, chain.org_id) == 0


def test_coupon_used_at_another_till_meanwhile(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    template(app_client, hq, "M300-50", "满300减50", kind="amount_off", threshold_fen=30000, amount_fen=5000)
    m = register(app_client, chain, "A", "18700002004")
    code = issue(app_client, hq, m["member_no"], "M300-50")
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700002004")
    add(app_client, "COAT", "大衣", "2", "160", "服装")
    page = app_client.get("/pos").text
    assert hidden(page, "coupons") == code
    # The member shows the same coupon at store B's till first.
    r = app_client.post(
        "/api/v1/orders",
        headers=chain.key("B"),
        json={
            "member": {"member_no": m["member_no"]},
            "lines": [line("BAG", 1, 30000)],
            "coupon_codes": [code],
            "payments": [{"method": "cash", "amount_fen": 25000}],
        },
    )
    assert r.status_code == 201, r.text
    assert balance(app_client, chain, m["member_no"]) == (250, 0)
    r = post(app_client, "/pos/checkout", redeem="", **checkout_form(page))
    assert r.status_code == 409
    assert by_testid(r.text, "checkout-error") == f"该优惠券已使用或已作废（券码 {code}）"
    assert order_count(factory, chain, m["member_no"]) == 1
    assert balance(app_client, chain, m["member_no"]) == (250, 0)
    assert redemptions(factory, chain.org_id) == 1
    # The page shown again no longer offers the coupon and charges the full amount.
    assert f'data-testid="coupon-{code}"' not in r.text
    assert hidden(r.text, "coupons") == ""
    assert by_testid(r.text, "quote-due") == "¥320.00"
    en = post(app_client, "/pos/checkout?lang=en", redeem="", **checkout_form(page))
    assert by_testid(en.text, "checkout-error") == (
        f"This coupon has already been used or voided (coupon {code})"
    )
    assert order_count(factory, chain, m["member_no"]) == 1


def test_returns_take_back_each_coupons_share_and_restore_or_void_it(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    template(
        app_client,
        hq,
        "M300-50",
        "满300减50",
        kind="amount_off",
        threshold_fen=30000,
        amount_fen=5000,
        return_policy="restore",
    )
    template(
        app_client,
        hq,
        "P10",
        "九折券",
        kind="percent_off",
        percent_off=10,
        cap_fen=2000,
        return_policy="void",
    )
    m = register(app_client, chain, "A", "18700002005")
    m300 = issue(app_client, hq, m["member_no"], "M300-50")
    p10 = issue(app_client, hq, m["member_no"], "P10")
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700002005")
    add(app_client, "COAT", "大衣", "1", "240", "服装")
    add(app_client, "SCARF", "围巾", "1", "80", "服装")
    page = app_client.get("/pos").text
    assert by_testid(page, "quote-coupon-discount") == "-¥70.00"
    r = post(app_client, "/pos/checkout", redeem="", **checkout_form(page))
    assert r.status_code == 303, r.text
    order_no = r.headers["location"].rsplit("/", 1)[1]
    receipt = app_client.get(r.headers["location"]).text
    assert re.findall(r'data-testid="receipt-coupon-discount">([^<]*)<', receipt) == ["-¥50.00", "-¥20.00"]
    # 满300减50 splits 37.50 / 12.50 over the lines, then 10 % capped at 20 splits 15.00 / 5.00.
    assert by_testid(receipt, "receipt-paid") == "¥250.00"
    assert by_testid(receipt, "receipt-earned") == "249"  # 187 on ¥187.50 and 62 on ¥62.50

    pos_login(app_client, chain, "c_clerk")
    page = app_client.get(f"/pos/orders?no={order_no}").text
    assert re.findall(r'data-testid="order-coupon">([^<]*)<', page) == [
        "满300减50 -¥50.00 · 已使用",
        "九折券 -¥20.00 · 已使用",
    ]
    url = f"/pos/orders/{order_no}/returns"
    data = {"csrf": app_client.cookies["om_csrf"], "idem": hidden(page, "idem"), "line": ["1", "2"]}
    r = app_client.post(url, data={**data, "qty": ["0", "1"]}, follow_redirects=False)
    assert r.status_code == 303, r.text
    first = r.headers["location"]
    receipt = app_client.get(first).text
    assert by_testid(receipt, "return-refund") == "¥62.50"
    assert re.findall(r'data-testid="return-coupon-share">([^<]*)<', receipt) == ["¥12.50", "¥5.00"]
    assert re.findall(r'data-testid="return-coupon-action">([^<]*)<', receipt) == [
        "部分退货，优惠券仍为已使用",
        "部分退货，优惠券仍为已使用",
    ]
    assert coupon_status(app_client, chain, m["member_no"]) == {m300: "redeemed", p10: "redeemed"}

    page = app_client.get(f"/pos/orders?no={order_no}").text
    r = app_client.post(
        url, data={**data, "idem": hidden(page, "idem"), "qty": ["1", "0"]}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    receipt = app_client.get(r.headers["location"]).text
    assert by_testid(receipt, "return-refund") == "¥187.50"
    assert re.findall(r'data-testid="return-coupon-share">([^<]*)<', receipt) == ["¥37.50", "¥15.00"]
    assert re.findall(r'data-testid="return-coupon-action">([^<]*)<', receipt) == [
        "优惠券已退回会员账户",
        "优惠券已按规则作废",
    ]
    assert coupon_status(app_client, chain, m["member_no"]) == {m300: "available", p10: "void"}
    # Reprinting the first return still says what that return did.
    receipt = app_client.get(first).text
    assert re.findall(r'data-testid="return-coupon-share">([^<]*)<', receipt) == ["¥12.50", "¥5.00"]
    assert "优惠券已退回会员账户" not in receipt
    en = app_client.get(f"{r.headers['location']}?lang=en").text
    assert untranslated(en) == []
    assert untranslated(app_client.get(f"/pos/orders?no={order_no}").text) == []
    assert "Coupon given back to the member" in en
    assert "Coupon voided, as its rules say" in en
    # The restored coupon is offered again at the next sale.
    app_client.get("/pos?lang=zh")
    post(app_client, "/pos/identify", q="18700002005")
    add(app_client, "COAT", "大衣", "2", "160", "服装")
    page = app_client.get("/pos").text
    assert pressed(page, m300)
    assert f'data-testid="coupon-{p10}"' not in page


# --- service packages --------------------------------------------------------------------------------

WASH: dict[str, Any] = {
    "code": "WASH5",
    "name": "洗车五次卡",
    "service_code": "carwash",
    "uses": 5,
    "price_fen": 50000,
    "validity_days": 30,
    "refund_rule": "unused_pro_rata",
    "store_scope": "brand",
    "brand_code": "home",  # stores A and B, not C
}


def package_counts(factory: sessionmaker[Session], org_id: int) -> tuple[int, int, int]:
    with factory() as s:
        return (
            int(
                s.scalar(
                    select(func.count()).select_from(MemberPackage).where(MemberPackage.org_id == org_id)
                )
                or 0
            ),
            int(
                s.scalar(select(func.count()).select_from(PackageUse).where(PackageUse.org_id == org_id)) or 0
            ),
            sum(s.scalars(select(MemberPackage.uses_left).where(MemberPackage.org_id == org_id))),
        )


def test_package_sold_at_b_and_used_at_a(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    r = app_client.post("/api/v1/service-packages", json=WASH, headers=hq)
    assert r.status_code == 201, r.text
    m = register(app_client, chain, "B", "18700002006")
    register(app_client, chain, "A", "18700002007")

    # Sold at store B by its clerk-manager, for the price shown.
    pos_login(app_client, chain, "b_mgr")
    post(app_client, "/pos/identify", q="18700002006")
    page = app_client.get("/pos").text
    assert by_testid(page, "packages-none") == "该会员没有次卡"
    assert '<option value="WASH5">洗车五次卡 · 5 次 · ¥500.00</option>' in page
    confirm = app_client.get("/pos/packages/sell?package=WASH5").text
    assert by_testid(confirm, "confirm-price") == "¥500.00"
    sell = {"idem": hidden(confirm, "idem"), "package": "WASH5", "method": "wechat_pay"}
    r = post(app_client, "/pos/packages/sell", amount="40000", **sell)
    assert r.status_code == 422
    assert by_testid(r.text, "package-confirm-error") == "该次卡售价 50000 分，实收 40000 分"
    assert package_counts(factory, chain.org_id) == (0, 0, 0)
    sell["idem"] = hidden(r.text, "idem")
    r = post(app_client, "/pos/packages/sell", amount="50000", **sell)
    assert r.status_code == 303, r.text
    again = post(app_client, "/pos/packages/sell", amount="50000", **sell)
    assert again.headers["location"] == r.headers["location"]
    slip = app_client.get(r.headers["location"]).text
    assert by_testid(slip, "package-receipt-store") == "杭州西湖店"
    assert by_testid(slip, "package-receipt-paid") == "¥500.00"
    assert by_testid(slip, "package-receipt-uses") == "5 次"
    assert by_testid(slip, "package-receipt-staff") == "b_mgr"
    assert package_counts(factory, chain.org_id) == (1, 0, 5)
    with factory() as s:
        package = s.scalar(select(MemberPackage).where(MemberPackage.org_id == chain.org_id))
        assert package is not None
        pid = package.id
        assert (package.sold_store_id, package.price_fen, package.payment_method) == (
            chain.stores["B"],
            50000,
            "wechat_pay",
        )

    # Used twice at store A by its clerk.
    pos_login(app_client, chain, "a_clerk")
    post(app_client, "/pos/identify", q="18700002006")
    page = app_client.get("/pos").text
    assert by_testid(page, f"package-name-{pid}") == "洗车五次卡"
    assert by_testid(page, f"package-left-{pid}") == "剩余 5/5 次"
    assert by_testid(page, f"package-here-{pid}") == "本店可用"
    assert "售卡门店 杭州西湖店" in page
    confirm = app_client.get(f"/pos/packages/{pid}/use?uses=2")
    assert confirm.status_code == 200
    assert "<span>售卡门店</span><span>杭州西湖店</span>" in confirm.text
    assert by_testid(confirm.text, "confirm-left") == "剩余 5/5 次"
    assert by_testid(confirm.text, "confirm-store") == "上海徐汇店"
    form = {"idem": hidden(confirm.text, "idem")}
    for bad, status, text in (
        ("0", 422, "核销次数须为 1 到 1000 的整数"),
        ("x", 422, "核销次数须为 1 到 1000 的整数"),
        ("6", 409, "次卡剩余次数不足"),
    ):
        r = post(app_client, f"/pos/packages/{pid}/uses", uses=bad, idem=f"k-{bad}")
        assert r.status_code == status, bad
        assert by_testid(r.text, "package-confirm-error") == text
    assert package_counts(factory, chain.org_id) == (1, 0, 5)
    r = post(app_client, f"/pos/packages/{pid}/uses", uses="2", **form)
    assert r.status_code == 303, r.text
    again = post(app_client, f"/pos/packages/{pid}/uses", uses="2", **form)
    assert again.headers["location"] == r.headers["location"]
    assert package_counts(factory, chain.org_id) == (1, 1, 3)
    slip = app_client.get(r.headers["location"]).text
    assert untranslated(slip) == []
    assert untranslated(app_client.get(f"{r.headers['location']}?lang=en").text) == []
    assert untranslated(app_client.get(f"/pos/packages/{pid}/use").text) == []
    assert untranslated(app_client.get("/pos/packages/sell?package=WASH5").text) == []
    app_client.get("/pos?lang=zh")
    assert by_testid(slip, "package-receipt-used-at") == "上海徐汇店"
    assert by_testid(slip, "package-receipt-staff") == "a_clerk"
    assert by_testid(slip, "package-receipt-uses") == "2"
    assert by_testid(slip, "package-receipt-nos") == "第 1–2 次，共 5 次"
    assert by_testid(slip, "package-receipt-left") == "3"
    assert by_testid(slip, "package-receipt-sold-at") == "杭州西湖店"
    with factory() as s:
        use = s.scalar(select(PackageUse).where(PackageUse.org_id == chain.org_id))
        assert use is not None
        clerk = s.scalar(select(Staff).where(Staff.org_id == chain.org_id, Staff.username == "a_clerk"))
        assert clerk is not None
        assert (use.used_store_id, use.sold_store_id, use.staff_id, use.actor, use.uses, use.value_fen) == (
            chain.stores["A"],
            chain.stores["B"],
            clerk.id,
            "staff:a_clerk",
            2,
            20000,
        )
        entry = s.scalar(select(SettlementEntry).where(SettlementEntry.source_ref == f"package_use:{use.id}"))
        assert entry is not None
        assert (entry.debtor_key, entry.creditor_key, entry.amount_fen) == (
            chain.stores["B"],
            chain.stores["A"],
            20000,
        )
    page = app_client.get("/pos").text
    assert by_testid(page, f"package-left-{pid}") == "剩余 3/5 次"

    # Another member at the till cannot use it.
    post(app_client, "/pos/identify", q="18700002007")
    r = post(app_client, f"/pos/packages/{pid}/uses", uses="1", idem="k-other")
    assert r.status_code == 404
    assert by_testid(r.text, "package-error") == "找不到该会员次卡"
    assert app_client.get(f"/pos/packages/{pid}/use").status_code == 404

    # Store C does not offer the service: shown, and refused if tried anyway.
    pos_login(app_client, chain, "c_clerk")
    post(app_client, "/pos/identify", q="18700002006")
    page = app_client.get("/pos").text
    assert by_testid(page, f"package-here-{pid}") == "本店不提供该服务"
    assert f'data-testid="package-use-{pid}"' not in page
    assert 'data-testid="package-sell"' not in page  # nothing on sale that C performs
    r = post(app_client, f"/pos/packages/{pid}/uses", uses="1", idem="k-at-c")
    assert r.status_code == 409
    assert by_testid(r.text, "package-confirm-error") == "门店 C 不提供服务 carwash"
    assert package_counts(factory, chain.org_id) == (1, 1, 3)
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, m["member_no"])
        assert (
            s.scalar(select(func.count()).select_from(PackageUse).where(PackageUse.member_id == member.id))
            == 1
        )

    # A regional manager serving at store B (chosen, not their own) records the use there, under them.
    pos_login(app_client, chain, "east_mgr")
    app_client.get("/pos?store=B")
    post(app_client, "/pos/identify", q="18700002006")
    confirm = app_client.get(f"/pos/packages/{pid}/use").text
    assert by_testid(confirm, "confirm-store") == "杭州西湖店"
    r = post(app_client, f"/pos/packages/{pid}/uses", uses="1", idem=hidden(confirm, "idem"))
    assert r.status_code == 303, r.text
    assert by_testid(app_client.get(r.headers["location"]).text, "package-receipt-staff") == "east_mgr"
    assert package_counts(factory, chain.org_id) == (1, 2, 2)
    with factory() as s:
        last = s.scalar(select(PackageUse).order_by(PackageUse.id.desc()).limit(1))
        assert last is not None
        assert (last.used_store_id, last.actor, last.first_use_no) == (chain.stores["B"], "staff:east_mgr", 3)
