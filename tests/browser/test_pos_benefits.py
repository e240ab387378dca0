"""Coupons and service packages at the till in a real browser: the best coupon pre-selected for the
basket, toggled off and back on from the keyboard (the quote follows), a checkout that redeems it, and
a package sold at store B used at store A with its confirm step and slip."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Live, shot, staff_login
from tests.browser.test_pos import add_line, register, shots
from tests.factories import PASSWORD


def hq_headers(live: Live) -> dict[str, str]:
    r = httpx.post(
        f"{live.url}/api/v1/auth/login",
        json={"org": live.chain.org_code, "username": "hq", "password": PASSWORD},
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_checkout_with_a_coupon_and_a_package_use(page: Page, live: Live) -> None:
    hq = hq_headers(live)
    member_no = register(live, "A", "18700003001")
    for body in (
        {
            "code": "POS-M300",
            "name": "满300减50",
            "kind": "amount_off",
            "threshold_fen": 30000,
            "amount_fen": 5000,
        },
        {
            "code": "POS-M500",
            "name": "满500减80",
            "kind": "amount_off",
            "threshold_fen": 50000,
            "amount_fen": 8000,
        },
    ):
        r = httpx.post(f"{live.url}/api/v1/coupon-templates", json={**body, "valid_days": 30}, headers=hq)
        assert r.status_code == 201, r.text
    codes = []
    for template_code in ("POS-M300", "POS-M500"):
        r = httpx.post(
            f"{live.url}/api/v1/members/{member_no}/coupons",
            json={"template_code": template_code, "store_code": "A"},
            headers=hq,
        )
        assert r.status_code == 201, r.text
        codes.append(r.json()["code"])
    good, big = codes
    package = {
        "code": "BR-WASH",
        "name": "洗车五次卡",
        "service_code": "carwash",
        "uses": 5,
        "price_fen": 50000,
        "validity_days": 30,
    }
    r = httpx.post(f"{live.url}/api/v1/service-packages", json=package, headers=hq)
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{live.url}/api/v1/members/{member_no}/packages",
        json={"package_code": "BR-WASH", "payment_method": "cash", "amount_fen": 50000},
        headers=live.chain.key("B"),
    )
    assert r.status_code == 201, r.text
    package_id = r.json()["id"]

    staff_login(page, live, "a_clerk", base="/pos")
    expect(page.get_by_test_id("identify-input")).to_be_focused()
    page.keyboard.type("18700003001")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    expect(page.get_by_test_id("coupons-need-lines")).to_be_visible()
    add_line(page, "COAT", "大衣", "服装", "2", "160")
    expect(page.get_by_test_id("basket-total")).to_have_text("¥320.00")
    coupon = page.get_by_test_id(f"coupon-{good}")
    expect(coupon).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id(f"coupon-discount-{good}")).to_have_text("-¥50.00")
    expect(page.get_by_test_id(f"unusable-reason-{big}")).to_have_text(
        "未达到使用门槛：满 ¥500.00，还差 ¥180.00"
    )
    expect(page.get_by_test_id("quote-coupon-discount")).to_have_text("-¥50.00")
    expect(page.get_by_test_id("quote-due")).to_have_text("¥270.00")
    expect(page.get_by_test_id("quote-earned")).to_have_text("270")
    expect(page.get_by_test_id(f"package-left-{package_id}")).to_have_text("剩余 5/5 次")
    shots(page, "coupons")

    # Off with a tap, back on with the keyboard: the quote follows and focus stays on the coupon.
    coupon.click()
    expect(page.get_by_test_id(f"coupon-{good}")).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_test_id("quote-due")).to_have_text("¥320.00")
    expect(page.get_by_test_id("quote-coupon-discount")).to_have_count(0)
    expect(page.get_by_test_id(f"coupon-{good}")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id(f"coupon-{good}")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("quote-due")).to_have_text("¥270.00")
    expect(page.get_by_test_id("checkout-coupons")).to_have_value(good)

    page.get_by_test_id("checkout").click()
    expect(page.get_by_test_id("receipt")).to_be_visible()
    expect(page.get_by_test_id("receipt-coupon-name")).to_have_text("满300减50")
    expect(page.get_by_test_id("receipt-coupon-discount")).to_have_text("-¥50.00")
    expect(page.get_by_test_id("receipt-total")).to_have_text("¥320.00")
    expect(page.get_by_test_id("receipt-paid")).to_have_text("¥270.00")
    expect(page.get_by_test_id("receipt-earned")).to_have_text("270")
    shots(page, "coupon-receipt")
    r = httpx.get(f"{live.url}/api/v1/members/{member_no}/coupons", headers=live.chain.key("A"))
    assert {c["code"]: c["status"] for c in r.json()["coupons"]} == {good: "redeemed", big: "available"}

    # The same customer has a car wash on the package bought at store B.
    page.get_by_test_id("next-sale").click()
    page.get_by_test_id("identify-input").fill("18700003001")
    page.get_by_test_id("identify-input").press("Enter")
    expect(page.get_by_test_id(f"package-here-{package_id}")).to_have_text("本店可用")
    page.get_by_test_id(f"package-use-{package_id}").click()
    expect(page.get_by_test_id("package-confirm")).to_be_visible()
    expect(page.get_by_test_id("confirm-left")).to_have_text("剩余 5/5 次")
    expect(page.get_by_test_id("confirm-use")).to_be_focused()
    shots(page, "package-confirm")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("package-receipt")).to_be_visible()
    expect(page.get_by_test_id("package-receipt-used-at")).to_have_text("上海徐汇店")
    expect(page.get_by_test_id("package-receipt-sold-at")).to_have_text("杭州西湖店")
    expect(page.get_by_test_id("package-receipt-staff")).to_have_text("a_clerk")
    expect(page.get_by_test_id("package-receipt-nos")).to_have_text("第 1 次，共 5 次")
    expect(page.get_by_test_id("package-receipt-left")).to_have_text("4")
    shots(page, "package-slip")
    page.emulate_media(media="print")
    expect(page.get_by_test_id("package-back")).to_be_hidden()
    shot(page, "pos-package-slip-print")
    page.emulate_media(media="screen")
    page.get_by_test_id("package-back").click()
    expect(page.get_by_test_id(f"package-left-{package_id}")).to_have_text("剩余 4/5 次")
