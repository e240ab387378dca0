"""The POS page in a real browser: a clerk at store A serves a member who joined at store B, redeems
points and checks out (a double submit makes one order); a clerk at store C takes a return of it."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from playwright.sync_api import Page, ViewportSize, expect
from sqlalchemy import func, select

from onemember.members import service as members
from onemember.orders.models import Order
from tests.browser.conftest import DESKTOP, PHONE, Live, shot, staff_login

TABLET = ViewportSize(width=1024, height=768)


def register(live: Live, store: str, phone: str) -> str:
    r = httpx.post(
        f"{live.url}/api/v1/members",
        json={"phone": phone, "name": "王小明", "gender": "male", "channel": "pos"},
        headers=live.chain.key(store),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["member_no"])


def seed_points(live: Live, store: str, member_no: str, fen: int) -> None:
    body: dict[str, Any] = {
        "member": {"member_no": member_no},
        "lines": [{"sku": "SEED", "name": "开卡礼", "quantity": 1, "unit_price_fen": fen}],
        "payments": [{"method": "cash", "amount_fen": fen}],
    }
    r = httpx.post(f"{live.url}/api/v1/orders", json=body, headers=live.chain.key(store))
    assert r.status_code == 201, r.text


def points_of(live: Live, member_no: str) -> tuple[int, int]:
    r = httpx.get(f"{live.url}/api/v1/members/{member_no}/points", headers=live.chain.key("C"))
    assert r.status_code == 200, r.text
    return r.json()["balance"], r.json()["debt"]


def shots(page: Page, name: str) -> None:
    """The same screen at desktop, tablet and phone width."""
    for label, size in (("desktop", DESKTOP), ("tablet", TABLET), ("phone", PHONE)):
        page.set_viewport_size(ViewportSize(width=size["width"], height=size["height"]))
        shot(page, f"pos-{name}-{label}")
    page.set_viewport_size(ViewportSize(width=DESKTOP["width"], height=DESKTOP["height"]))


def add_line(page: Page, sku: str, name: str, category: str, qty: str, price: str) -> None:
    expect(page.get_by_test_id("line-sku")).to_be_focused()
    page.keyboard.type(sku)
    page.keyboard.press("Tab")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(category)
    page.keyboard.press("Tab")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(qty)
    page.keyboard.press("Tab")
    page.keyboard.type(price)
    page.keyboard.press("Enter")


def test_sale_at_a_and_return_at_c(page: Page, live: Live) -> None:
    member_no = register(live, "B", "18700001001")
    seed_points(live, "B", member_no, 50000)
    assert points_of(live, member_no) == (500, 0)

    staff_login(page, live, "a_clerk", base="/pos")
    expect(page).to_have_url(f"{live.url}/pos")
    expect(page.get_by_test_id("pos-store")).to_have_text("上海徐汇店")
    expect(page.get_by_test_id("identify-input")).to_be_focused()
    shots(page, "identify")

    page.keyboard.type("18700001001")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("member-name")).to_have_text("王**")
    expect(page.get_by_test_id("member-phone")).to_have_text("187****1001")
    expect(page.get_by_test_id("member-balance")).to_have_text("500")
    expect(page.get_by_test_id("member-tier")).to_have_text("普通会员")

    add_line(page, "SKU-TEA", "龙井茶", "茶叶", "2", "38.50")
    expect(page.get_by_test_id("basket-line")).to_have_count(1)
    add_line(page, "SKU-CUP", "茶杯", "茶具", "1", "25")
    expect(page.get_by_test_id("basket-line")).to_have_count(2)
    expect(page.get_by_test_id("basket-total")).to_have_text("¥102.00")
    page.reload()  # the basket and the member survive a reload
    expect(page.get_by_test_id("basket-line")).to_have_count(2)
    expect(page.get_by_test_id("member-balance")).to_have_text("500")
    expect(page.get_by_test_id("redeem-max")).to_contain_text("最多可用 500 积分 · 100 积分 = ¥1.00")
    page.get_by_test_id("redeem-input").fill("300")
    expect(page.get_by_test_id("quote-due")).to_have_text("¥99.00")
    expect(page.get_by_test_id("quote-value")).to_have_text("-¥3.00")
    shots(page, "basket")

    form = page.get_by_test_id("checkout-form")
    sent: dict[str, str | float | bool] = {
        name: form.locator(f"input[name={name}]").input_value()
        for name in ("csrf", "basket", "idem", "redeem")
    }
    sent["method"] = "wechat_pay"
    page.get_by_test_id("checkout").dblclick()
    expect(page.get_by_test_id("receipt")).to_be_visible()
    order_no = page.get_by_test_id("receipt-order-no").inner_text()
    assert re.fullmatch(r"S\d{16}", order_no)
    expect(page.get_by_test_id("receipt-total")).to_have_text("¥102.00")
    expect(page.get_by_test_id("receipt-points-value")).to_have_text("-¥3.00")
    expect(page.get_by_test_id("receipt-paid")).to_have_text("¥99.00")
    expect(page.get_by_test_id("receipt-redeemed")).to_have_text("300")
    expect(page.get_by_test_id("receipt-earned")).to_have_text("98")
    expect(page.get_by_test_id("receipt-balance")).to_have_text("298")
    expect(page.get_by_test_id("receipt-explanation")).to_contain_text("基础积分：实付每 1 元得 1 积分")
    expect(page.get_by_test_id("receipt-line")).to_have_count(2)
    expect(page.get_by_test_id("next-sale")).to_be_focused()
    shots(page, "receipt")
    page.emulate_media(media="print")  # the printed receipt has no navigation or buttons
    expect(page.locator("nav")).to_be_hidden()
    expect(page.get_by_test_id("print")).to_be_hidden()
    expect(page.get_by_test_id("receipt-paid")).to_be_visible()
    shot(page, "pos-receipt-print")
    page.emulate_media(media="screen")

    # Resubmitting the very same form (a double click that got through, a retry) replays the order.
    again = page.request.post(f"{live.url}/pos/checkout", form=sent)
    assert again.ok
    assert again.url.endswith(f"/pos/receipt/{order_no}")
    with live.factory() as s:
        member = members.by_member_no(s, live.chain.org_id, member_no)
        at_a = select(func.count()).where(
            Order.member_id == member.id, Order.store_id == live.chain.stores["A"]
        )
        assert s.scalar(at_a) == 1
        assert s.scalar(select(func.count()).where(Order.member_id == member.id)) == 2
    assert points_of(live, member_no) == (298, 0)
    page.get_by_test_id("next-sale").click()
    expect(page.get_by_test_id("basket-empty")).to_be_visible()
    expect(page.get_by_test_id("identify-input")).to_be_focused()

    # A clerk at store C takes back one of the two teas.
    page.context.clear_cookies()
    staff_login(page, live, "c_clerk", base="/pos")
    page.get_by_test_id("nav-returns").click()
    expect(page.get_by_test_id("order-no-input")).to_be_focused()
    page.keyboard.type(order_no)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("order-store")).to_have_text("上海徐汇店")
    expect(page.get_by_test_id("cross-store")).to_be_visible()
    expect(page.get_by_test_id("returnable-1")).to_have_text("2")
    expect(page.get_by_test_id("returnable-2")).to_have_text("1")
    expect(page.get_by_test_id("order-member")).to_have_text(f"王** 187****1001 · {member_no}")
    expect(page.get_by_test_id("return-qty-1")).to_be_focused()
    page.get_by_test_id("return-qty-1").fill("1")
    page.get_by_test_id("return-reason").fill("包装破损")
    shots(page, "return")
    page.get_by_test_id("return-submit").click()
    expect(page.get_by_test_id("return-receipt")).to_be_visible()
    # Line 1 paid ¥74.74 for 2 units and earned 74 points; 226 of the 300 redeemed points paid for it.
    expect(page.get_by_test_id("return-refund")).to_have_text("¥37.37")
    expect(page.get_by_test_id("return-points-reversed")).to_have_text("-37")
    expect(page.get_by_test_id("return-points-refunded")).to_have_text("+113")
    expect(page.get_by_test_id("return-balance")).to_have_text("374")
    expect(page.get_by_test_id("return-original-store")).to_have_text("上海徐汇店")
    shots(page, "return-receipt")
    assert points_of(live, member_no) == (298 + 113 - 37, 0)

    page.get_by_test_id("next-return").click()
    page.get_by_test_id("order-no-input").fill(order_no)
    page.get_by_test_id("order-find").click()
    expect(page.get_by_test_id("returnable-1")).to_have_text("1")
    expect(page.get_by_test_id("order-status")).to_have_text("部分退货")
    expect(page.get_by_test_id("past-returns")).to_be_visible()


def test_identify_with_member_code(page: Page, live: Live) -> None:
    member_no = register(live, "B", "18700001002")
    r = httpx.post(f"{live.url}/api/v1/members/{member_no}/member-code", headers=live.chain.key("A"))
    assert r.status_code == 200, r.text
    staff_login(page, live, "a_clerk", base="/pos")
    page.get_by_test_id("identify-input").fill(r.json()["code"])
    page.get_by_test_id("identify-input").press("Enter")
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    expect(page.get_by_test_id("member-balance")).to_have_text("0")
    expect(page.get_by_test_id("line-sku")).to_be_focused()
    page.get_by_test_id("clear-member").click()
    expect(page.get_by_test_id("no-member")).to_be_visible()

    with live.factory() as s:
        member = members.by_member_no(s, live.chain.org_id, member_no)
        expired, _ = members.issue_member_code(member, now=time.time() - 1000)
    page.get_by_test_id("identify-input").fill(expired)
    page.get_by_test_id("identify-input").press("Enter")
    expect(page.get_by_test_id("identify-error")).to_have_text("会员码已过期，请刷新后重试")
    expect(page.get_by_test_id("member-panel")).to_have_count(0)
    expect(page.get_by_test_id("identify-input")).to_have_value("")
    expect(page.get_by_test_id("identify-input")).to_be_focused()
    shots(page, "identify-error")
    expect(page.get_by_test_id("identify-input")).to_have_attribute("accesskey", "m")
    expect(page.get_by_test_id("checkout")).to_have_attribute("accesskey", "c")
    page.reload()  # a reload shows the same basket screen, not a form resubmission
    expect(page.get_by_test_id("identify-input")).to_be_visible()
    expect(page.get_by_test_id("identify-error")).to_have_count(0)


def test_phone_sale_with_quick_add(phone_page: Page, live: Live) -> None:
    page = phone_page
    member_no = register(live, "A", "18700001003")
    staff_login(page, live, "a_clerk", base="/pos")
    # The till's own htmx config (4xx pages swap in) also settles at once, so autofocus is never late.
    page.wait_for_function("() => window.htmx !== undefined")  # the script is deferred
    assert page.evaluate("[htmx.config.defaultSettleDelay, htmx.config.responseHandling.length]") == [0, 3]
    page.get_by_test_id("identify-input").fill("18700001003")
    page.get_by_test_id("identify-submit").tap()
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    # htmx focuses the autofocus field when the swap settles; typing before that would land in the
    # wrong field, so wait for the focus as a clerk's eyes would.
    expect(page.get_by_test_id("line-sku")).to_be_focused()
    page.get_by_test_id("line-sku").fill("SKU-PEN")
    page.get_by_test_id("line-name").fill("钢笔")
    page.get_by_test_id("line-price").fill("12.345")
    page.get_by_test_id("line-add").tap()
    expect(page.get_by_test_id("line-error")).to_contain_text("最多两位小数")
    expect(page.get_by_test_id("basket-empty")).to_be_visible()
    # The refused form came back with what was typed; wait for htmx to settle before typing again.
    expect(page.get_by_test_id("line-price")).to_have_value("12.345")
    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("line-sku")).to_be_focused()
    page.get_by_test_id("line-price").fill("12.30")
    page.get_by_test_id("line-add").tap()
    expect(page.get_by_test_id("basket-total")).to_have_text("¥12.30")
    page.get_by_role("button", name="+1").tap()
    expect(page.get_by_test_id("basket-total")).to_have_text("¥24.60")
    shot(page, "pos-phone-basket")
    page.get_by_test_id("checkout").tap()
    expect(page.get_by_test_id("receipt-paid")).to_have_text("¥24.60")
    expect(page.get_by_test_id("receipt-earned")).to_have_text("24")
    page.get_by_test_id("next-sale").tap()
    expect(page.get_by_test_id("quick-SKU-PEN")).to_be_visible()
    page.get_by_test_id("quick-SKU-PEN").tap()
    expect(page.get_by_test_id("basket-total")).to_have_text("¥12.30")
    page.get_by_test_id("lang-switch").tap()
    expect(page.get_by_test_id("checkout")).to_contain_text("Check out")
    shot(page, "pos-phone-quick-add-en")
    page.get_by_test_id("lang-switch").tap()
    expect(page.get_by_test_id("checkout")).to_contain_text("结账")
