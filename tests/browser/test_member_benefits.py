"""The member's coupons and service packages on a phone: the coupon list, a coupon's QR, giving it to a
friend by phone number through the confirm step, the friend's view, and the packages page with its chart."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select

from onemember.coupons.models import Coupon
from onemember.members.models import Member
from tests.browser.conftest import PHONE, Live
from tests.browser.test_member_page import _code_from_outbox, _full_shot
from tests.factories import PASSWORD


def _hq(live: Live) -> httpx.Client:
    r = httpx.post(
        f"{live.url}/api/v1/auth/login",
        json={"org": live.chain.org_code, "username": "hq", "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=10
    )


def _till(live: Live, store: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers=live.chain.key(store), timeout=10)


def _setup(live: Live) -> tuple[str, str, str, int]:
    """Member 1 with a giftable 满300减50 coupon, a 8折 one that may not be given and a used package;
    member 2 with nothing yet."""
    with _hq(live) as hq, _till(live, "A") as a:
        for body in (
            {
                "code": "BR-M300",
                "name": "满300减50",
                "kind": "amount_off",
                "threshold_fen": 30000,
                "amount_fen": 5000,
                "valid_days": 30,
                "giftable": True,
            },
            {
                "code": "BR-D8",
                "name": "八折券",
                "kind": "percent_off",
                "percent_off": 20,
                "cap_fen": 2000,
                "accept_scope": "brand",
                "accept_brand_code": "home",
                "valid_days": 7,
            },
        ):
            r = hq.post("/api/v1/coupon-templates", json=body)
            assert r.status_code == 201, r.text
        r = hq.post(
            "/api/v1/service-packages",
            json={
                "code": "BR-MANI",
                "name": "美甲十次卡",
                "service_code": "manicure",
                "uses": 10,
                "price_fen": 50000,
                "validity_days": 30,
                "store_scope": "brand",
                "brand_code": "home",
            },
        )
        assert r.status_code == 201, r.text
        numbers = []
        for phone, name in (("18800000601", "韩梅梅"), ("18800000602", "李雷")):
            r = a.post("/api/v1/members", json={"phone": phone, "name": name})
            assert r.status_code == 201, r.text
            numbers.append(r.json()["member_no"])
        m1, m2 = numbers
        codes = []
        for template in ("BR-M300", "BR-D8"):
            r = a.post(f"/api/v1/members/{m1}/coupons", json={"template_code": template})
            assert r.status_code == 201, r.text
            codes.append(r.json()["code"])
        r = a.post(
            f"/api/v1/members/{m1}/packages",
            json={"package_code": "BR-MANI", "amount_fen": 50000, "payment_method": "wechat_pay"},
        )
        assert r.status_code == 201, r.text
        package_id = r.json()["id"]
        r = a.post(f"/api/v1/member-packages/{package_id}/uses", json={"uses": 3})
        assert r.status_code == 201, r.text
    return m1, m2, codes[0], package_id


def _log_in(page: Page, live: Live, phone: str, member_no: str) -> None:
    page.goto(f"{live.url}/m/login?org={live.chain.org_code}")
    page.fill("#phone", phone)
    page.get_by_test_id("send-code").click()
    expect(page.get_by_test_id("code-form")).to_be_visible()
    page.fill("#code", _code_from_outbox(live, member_no))
    page.get_by_test_id("verify").click()
    expect(page).to_have_url(f"{live.url}/m")


def test_coupons_and_a_gift_on_a_phone(phone_page: Page, live: Live) -> None:
    page = phone_page
    m1, m2, code, package_id = _setup(live)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    _log_in(page, live, "18800000601", m1)
    expect(page.get_by_test_id("home-coupons-count")).to_have_text("2")
    expect(page.get_by_test_id("home-package-uses")).to_have_text("7")

    page.get_by_test_id("tab-benefits").click()
    expect(page).to_have_url(f"{live.url}/m/coupons")
    cards = page.get_by_test_id("group-available").get_by_test_id("coupon")
    expect(cards).to_have_count(2)
    expect(cards.nth(0).get_by_test_id("coupon-headline")).to_have_text("8折")
    expect(cards.nth(0).get_by_test_id("coupon-gives")).to_have_text("8折，最高减¥20.00")
    expect(cards.nth(0).get_by_test_id("coupon-where")).to_have_text("优家品牌门店通用")
    expect(cards.nth(1)).to_have_attribute("data-code", code)
    expect(cards.nth(1).get_by_test_id("coupon-gives")).to_have_text("满¥300.00减¥50.00")
    expect(cards.nth(1).get_by_test_id("coupon-validity")).to_have_text(
        f"{today.isoformat()} 至 {(today + timedelta(days=29)).isoformat()}"
    )
    # Five tabs still fit one row on a phone.
    tabs = page.get_by_test_id("member-tabs").locator("a")
    expect(tabs).to_have_count(5)
    tops = {round(tabs.nth(i).bounding_box()["y"]) for i in range(5)}  # type: ignore[index]
    assert len(tops) == 1
    _full_shot(page, "member-coupons-phone", PHONE)

    cards.nth(1).click()
    expect(page.locator("[data-testid=coupon-qr] svg")).to_be_visible()
    expect(page.get_by_test_id("coupon-code")).to_have_text(f"{code[:4]} {code[4:8]} {code[8:]}")
    _full_shot(page, "member-coupon-detail-phone", PHONE)

    page.fill("#gift-phone", "18800000699")  # nobody's number: refused, nothing moves
    page.get_by_test_id("gift-next").click()
    expect(page.get_by_test_id("gift-error")).to_have_text("没有会员使用该手机号，请核对号码")
    page.fill("#gift-phone", "18800000602")
    page.get_by_test_id("gift-next").click()
    expect(page.get_by_test_id("gift-confirm-lead")).to_have_text(
        "将「满300减50」转赠给 188****0602？转赠后无法撤回。"
    )
    _full_shot(page, "member-gift-confirm-phone", PHONE)
    page.get_by_test_id("gift-confirm-submit").click()
    expect(page.get_by_test_id("coupons-notice")).to_have_text("已将「满300减50」转赠给 188****0602")
    expect(page.get_by_test_id("group-available").get_by_test_id("coupon")).to_have_count(1)
    page.get_by_test_id("group-gifted").locator("summary").click()
    gifted = page.get_by_test_id("group-gifted").get_by_test_id("coupon")
    expect(gifted).to_have_attribute("data-code", code)
    expect(gifted.get_by_test_id("coupon-note")).to_have_text(f"{today.isoformat()} 转赠给 188****0602")
    _full_shot(page, "member-coupons-gifted-phone", PHONE)
    with live.factory() as s:
        holder = s.scalar(
            select(Member.member_no)
            .join(Coupon, Coupon.member_id == Member.id)
            .where(Coupon.org_id == live.chain.org_id, Coupon.code == code)
        )
        assert holder == m2

    page.get_by_test_id("nav-packages").click()
    package = page.get_by_test_id("package")
    expect(package).to_have_attribute("data-package-id", str(package_id))
    expect(package.get_by_test_id("package-uses")).to_have_text("剩余 7 / 10 次")
    expect(package.get_by_test_id("use-row")).to_have_count(1)
    expect(package.get_by_test_id("use-no")).to_have_text("第 1–3 次")
    expect(page.locator("[data-testid=chart-uses] svg")).to_be_visible()
    _full_shot(page, "member-packages-phone", PHONE)

    page.get_by_test_id("logout").click()
    _log_in(page, live, "18800000602", m2)
    page.get_by_test_id("home-coupons").click()
    received = page.get_by_test_id("group-available").get_by_test_id("coupon")
    expect(received).to_have_attribute("data-code", code)
    expect(received.get_by_test_id("coupon-received")).to_have_text("好友转赠")
    _full_shot(page, "member-coupons-received-phone", PHONE)
