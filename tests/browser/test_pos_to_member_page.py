"""One story across the three pages: a clerk at store A sells on the POS page, the member sees the
points on the member page, a clerk at store C takes a return, and the member page shows the change."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, Live, shot, staff_login
from tests.browser.test_member_page import _code_from_outbox
from tests.browser.test_pos import register


def _member_login(page: Page, live: Live, phone: str, member_no: str) -> None:
    page.goto(f"{live.url}/m/login?org={live.chain.org_code}")
    page.fill("#phone", phone)
    page.get_by_test_id("send-code").click()
    expect(page.get_by_test_id("login-notice")).to_be_visible()
    page.fill("#code", _code_from_outbox(live, member_no))
    page.get_by_test_id("verify").click()
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)


def test_pos_sale_and_cross_store_return_show_on_the_member_page(
    page: Page, browser: Browser, live: Live
) -> None:
    phone = "18700009901"
    member_no = register(live, "B", phone)
    staff_login(page, live, "a_clerk", base="/pos")
    page.get_by_test_id("identify-input").fill(phone)
    page.get_by_test_id("identify-input").press("Enter")
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    for sku, name, price in (("TEA-1", "龙井茶", "120.00"), ("CUP-1", "茶杯", "30.50")):
        expect(page.get_by_test_id("line-sku")).to_be_focused()  # the swap has settled
        page.get_by_test_id("line-sku").fill(sku)
        page.get_by_test_id("line-name").fill(name)
        page.get_by_test_id("line-price").fill(price)
        page.get_by_test_id("line-add").click()
        expect(page.get_by_test_id("basket-total")).not_to_have_text("¥0.00")
        page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("basket-total")).to_have_text("¥150.50")
    page.get_by_test_id("checkout").click()
    expect(page.get_by_test_id("receipt-balance")).to_have_text("150")
    order_no = page.get_by_test_id("receipt-order-no").inner_text()

    member = browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True).new_page()
    _member_login(member, live, phone, member_no)
    expect(member.get_by_test_id("balance")).to_have_text("150")
    shot(member, "story-member-after-sale-phone")

    page.context.clear_cookies()
    staff_login(page, live, "c_clerk", base="/pos")
    page.get_by_test_id("nav-returns").click()
    page.get_by_test_id("order-no-input").fill(order_no)
    page.get_by_test_id("order-no-input").press("Enter")
    expect(page.get_by_test_id("cross-store")).to_be_visible()
    page.get_by_test_id("return-qty-1").fill("1")
    page.get_by_test_id("return-reason").fill("口味不合适")
    page.get_by_test_id("return-submit").click()
    expect(page.get_by_test_id("return-refund")).to_have_text("¥120.00")
    expect(page.get_by_test_id("return-points-reversed")).to_have_text("-120")
    expect(page.get_by_test_id("return-balance")).to_have_text("30")
    page.set_viewport_size(DESKTOP)

    member.reload()
    expect(member.get_by_test_id("balance")).to_have_text("30")
    member.goto(f"{live.url}/m/ledger")
    expect(member.locator("body")).to_contain_text("-120")
    shot(member, "story-member-after-return-phone")
    member.context.close()
