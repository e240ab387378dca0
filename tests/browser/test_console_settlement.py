"""The console's settlement section in a real browser: last month's statements with their charts, a
store's statement, the drill-down to the entries with one counterparty (linked to their orders), and HQ
closing the month through the confirm step. The section runs on its own org in the shared database."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Page, expect

from onemember.db import set_clock
from tests.browser.conftest import DESKTOP, PHONE, Live, shot
from tests.factories import PASSWORD, Chain, make_chain

SHANGHAI = ZoneInfo("Asia/Shanghai")


def last_month() -> tuple[str, datetime]:
    """Last month in Shanghai, and its 5th at 10:00 local (as UTC)."""
    first = datetime.now(SHANGHAI).replace(day=1, hour=10, minute=0, second=0, microsecond=0)
    day = (first - timedelta(days=1)).replace(day=5)
    return day.strftime("%Y-%m"), day.astimezone(UTC)


@pytest.fixture(scope="module")
def chain(live: Live) -> Chain:
    with live.factory() as s:
        built = make_chain(s, code=f"stl{secrets.token_hex(3)}")
        s.commit()
    return built


def api(live: Live, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    r = httpx.post(f"{live.url}{path}", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def buy(live: Live, chain: Chain, store: str, phone: str, price: int, redeem: int = 0) -> dict[str, Any]:
    body = {
        "member": {"kind": "phone", "value": phone},
        "lines": [{"sku": "S1", "name": "S1", "category": "服装", "quantity": 1, "unit_price_fen": price}],
        "redeem_points": redeem,
        "payments": [{"method": "wechat_pay", "amount_fen": price - redeem}],
    }
    return api(live, "/api/v1/orders", body, chain.key(store))


@pytest.fixture(scope="module")
def month(live: Live, chain: Chain) -> dict[str, Any]:
    """Last month at the tills (the server's clock held on its days while the tills post): 400 points
    earned at A are spent at B (A owes B 4.00), and a jacket bought at A is returned at C (A owes C
    300.00)."""
    period, day = last_month()
    try:
        set_clock(lambda: day)
        member = api(
            live,
            "/api/v1/members",
            {"phone": "18600000001", "name": "周可", "channel": "pos"},
            chain.key("A"),
        )
        jacket = buy(live, chain, "A", "18600000001", 30000)
        buy(live, chain, "A", "18600000001", 10000)
        set_clock(lambda: day + timedelta(days=3))
        shoes = buy(live, chain, "B", "18600000001", 20000, redeem=400)
        set_clock(lambda: day + timedelta(days=6))
        api(
            live,
            f"/api/v1/orders/{jacket['order_no']}/returns",
            {"lines": [{"line_no": 1, "quantity": 1}]},
            chain.key("C"),
        )
    finally:
        set_clock(None)
    return {"period": period, "member_no": member["member_no"], "shoes": shoes}


def login(page: Page, live: Live, chain: Chain, username: str) -> None:
    page.goto(f"{live.url}/console/login")
    page.fill("#org", chain.org_code)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


def test_hq_reads_last_month_drills_down_and_closes_it(
    page: Page, live: Live, chain: Chain, month: dict[str, Any]
) -> None:
    period = month["period"]
    login(page, live, chain, "hq")
    page.goto(f"{live.url}/console/settlement/policy")
    expect(page.get_by_test_id("current-bearer")).to_have_text("发放门店")
    shot(page, "console-settlement-policy-desktop")
    page.goto(f"{live.url}/console")
    page.get_by_role("link", name="门店结算").click()
    page.select_option("#period-select", period)
    page.get_by_role("button", name="查看").click()
    expect(page.get_by_test_id("kpi-volume")).to_have_text("¥304.00")
    expect(page.get_by_test_id("net-A")).to_have_text("-¥304.00")
    expect(page.get_by_test_id("net-B")).to_have_text("+¥4.00")
    expect(page.get_by_test_id("net-C")).to_have_text("+¥300.00")
    expect(page.get_by_test_id("chart-net").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("chart-by-kind").locator("svg")).to_be_visible()
    shot(page, "console-settlement-overview-desktop")

    page.get_by_test_id("open-A").click()
    expect(page.get_by_test_id("party")).to_have_text("A · 上海徐汇店")
    expect(page.get_by_test_id("cp-net-B")).to_have_text("-¥4.00")
    expect(page.get_by_test_id("cp-net-C")).to_have_text("-¥300.00")
    expect(page.get_by_test_id("chart-net").locator("svg")).to_be_visible()
    shot(page, "console-settlement-statement-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "console-settlement-statement-phone")
    page.set_viewport_size(DESKTOP)

    page.get_by_test_id("drill-B").click()
    expect(page.get_by_test_id("pair")).to_have_text("A ↔ B")
    rows = page.locator("[data-testid^=entry-]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("积分抵扣")
    expect(rows.first.locator("[data-testid^=direction-]")).to_have_text("A → B")
    expect(rows.first.locator("[data-testid^=amount-]")).to_have_text("-¥4.00")
    order_no = month["shoes"]["order_no"]
    link = rows.first.get_by_role("link", name=f"订单 {order_no}")
    expect(link).to_have_attribute("href", f"/console/members/{month['member_no']}/orders/{order_no}")
    shot(page, "console-settlement-entries-desktop")

    page.get_by_test_id("back").click()
    page.get_by_test_id("back").click()
    page.get_by_test_id("close-period").click()
    expect(page.get_by_test_id("close-net-A")).to_contain_text("-¥304.00")
    expect(page.get_by_test_id("close-period")).to_have_count(0)  # the confirm step itself
    page.get_by_test_id("close-submit").click()  # the reason is required: the browser keeps us here
    expect(page.get_by_test_id("close-form")).to_be_visible()
    page.fill("#close-reason", "上月对账完成")
    shot(page, "console-settlement-close-desktop")
    page.get_by_test_id("close-submit").click()
    expect(page.get_by_test_id("closed-notice")).to_have_text(f"{period} 已关账，条目已冻结")
    expect(page.get_by_test_id("period-status")).to_have_text("已关账")
    expect(page.get_by_test_id("frozen-A")).to_have_text("-¥304.00")
    expect(page.get_by_test_id("close-period")).to_have_count(0)
    shot(page, "console-settlement-closed-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "console-settlement-closed-phone")
