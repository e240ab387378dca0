"""The console's points section in a real browser: the HQ overview with exact numbers and its charts, the
program form, a category multiplier with a simulated basket, the tier set, and an adjustment approved by a
second HQ admin. The section runs on its own org in the shared database, so its numbers are its own."""

from __future__ import annotations

import html
import io
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from openpyxl import load_workbook
from playwright.sync_api import Page, expect

from onemember.app import create_app
from onemember.common.types import Role
from onemember.org.models import Staff
from onemember.points.calculations import expiry_for
from onemember.settings import get_settings
from onemember.web import console_points
from tests.browser.conftest import DESKTOP, PHONE, Live, _free_port, shot
from tests.factories import PASSWORD, Chain, _password_hash, make_chain


@dataclass
class Site:
    url: str
    chain: Chain


@pytest.fixture(scope="module")
def site(live: Live) -> Iterator[Site]:
    """A chain of its own in the live database (plus a second HQ admin), served with the points pages."""
    with live.factory() as s:
        chain = make_chain(s, code=f"pts{secrets.token_hex(3)}")
        s.add(
            Staff(
                org_id=chain.org_id,
                username="hq2",
                display_name="hq2",
                password_hash=_password_hash(),
                role=str(Role.HQ_ADMIN),
                active=True,
            )
        )
        s.commit()
    if httpx.get(f"{live.url}/console/points", follow_redirects=False).status_code != 404:
        yield Site(live.url, chain)
        return
    # app.py does not register the points pages yet: serve them from a second server on the same database.
    app = create_app(get_settings(), live.factory, start_dispatcher=False)
    app.include_router(console_points.router)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield Site(f"http://127.0.0.1:{port}", chain)
    server.should_exit = True
    thread.join(timeout=10)


def login(page: Page, site: Site, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{site.url}/console/login")
    page.fill("#org", site.chain.org_code)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


def register(site: Site, store: str, phone: str, name: str) -> str:
    body = {"phone": phone, "name": name, "birthday": "1990-06-01", "gender": "female", "channel": "pos"}
    r = httpx.post(f"{site.url}/api/v1/members", json=body, headers=site.chain.key(store))
    assert r.status_code == 201, r.text
    return str(r.json()["member_no"])


def buy(
    site: Site, store: str, member_no: str, lines: list[tuple[str, str, int, int]], redeem: int = 0
) -> int:
    """Check out (sku, category, quantity, unit price in fen) at a till; returns the points earned."""
    items = [
        {"sku": sku, "name": sku, "category": cat, "quantity": qty, "unit_price_fen": price}
        for sku, cat, qty, price in lines
    ]
    due = sum(qty * price for _, _, qty, price in lines) - redeem  # 100 points pay one yuan
    body = {
        "member": {"member_no": member_no},
        "lines": items,
        "redeem_points": redeem,
        "payments": [{"method": "wechat_pay", "amount_fen": due}],
    }
    r = httpx.post(f"{site.url}/api/v1/orders", json=body, headers=site.chain.key(store))
    assert r.status_code == 201, r.text
    return int(r.json()["points_earned"])


def chart_option(page: Page, testid: str) -> dict[str, Any]:
    raw = page.get_by_test_id(testid).get_attribute("data-chart")
    assert raw is not None
    return dict(json.loads(html.unescape(raw)))


def both_widths(page: Page, name: str) -> None:
    shot(page, f"{name}-desktop")
    page.set_viewport_size(PHONE)
    shot(page, f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def test_hq_sets_rolling_expiry_and_sees_the_overview_with_exact_numbers(page: Page, site: Site) -> None:
    login(page, site, "hq")
    page.goto(f"{site.url}/console/points/program")
    page.select_option("#p-expiry_policy", "rolling")
    page.fill("#p-expiry_months", "6")
    page.get_by_test_id("program-save").click()
    expect(page.get_by_test_id("saved-notice")).to_have_text("已保存")
    expect(page.locator("#p-expiry_months")).to_have_value("6")
    both_widths(page, "console-points-program")

    one = register(site, "A", "18300002001", "赵雨桐")
    two = register(site, "B", "18300002002", "钱思远")
    assert buy(site, "A", one, [("R1", "食品", 2, 15000)]) == 300
    assert buy(site, "B", two, [("R2", "食品", 1, 12050)]) == 120
    assert buy(site, "B", one, [("R3", "食品", 1, 5000)], redeem=100) == 49

    page.goto(f"{site.url}/console/points")
    expected = {
        "outstanding": "369",
        "liability": "¥3.69",
        "issued": "469",
        "redeemed": "100",
        "expired": "0",
        "breakage": "0.00%",
    }
    for key, value in expected.items():
        expect(page.get_by_test_id(f"kpi-{key}")).to_have_text(value)
    expect(page.get_by_test_id("kpi-note-liability")).to_have_text("每 100 积分价值: ¥1.00")
    expect(page.get_by_test_id("chart-expiring").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("chart-by-store").locator("svg")).to_be_visible()
    ends = expiry_for(datetime.now(UTC), "rolling", "Asia/Shanghai", months=6)
    assert ends is not None
    month = (ends.astimezone(ZoneInfo("Asia/Shanghai")) - timedelta(seconds=1)).strftime("%Y-%m")
    option = chart_option(page, "chart-expiring")
    bars = dict(zip(option["xAxis"]["data"], option["series"][0]["data"], strict=True))
    assert {k: v for k, v in bars.items() if v} == {month: 369}
    grouped = chart_option(page, "chart-by-store")
    assert grouped["xAxis"]["data"] == ["上海徐汇店", "杭州西湖店"]
    assert [(s["name"], s["data"]) for s in grouped["series"]] == [
        ("发放", [300, 169]),
        ("使用", [0, 100]),
        ("过期", [0, 0]),
    ]
    expect(page.get_by_test_id("issued-A")).to_have_text("300")
    expect(page.get_by_test_id("redeemed-B")).to_have_text("100")
    both_widths(page, "console-points-overview")

    with page.expect_download() as download:
        page.get_by_test_id("export").click()
    assert download.value.suggested_filename == "points-by-store.xlsx"
    sheet = load_workbook(io.BytesIO(download.value.path().read_bytes())).active
    assert sheet is not None
    assert list(sheet.iter_rows(values_only=True))[1:] == [
        ("A", "上海徐汇店", 300, 0, 0),
        ("B", "杭州西湖店", 169, 100, 0),
    ]
    page.select_option("#f-store", "B")
    page.get_by_role("button", name="筛选").click()
    expect(page.get_by_test_id("scope-label")).to_contain_text("杭州西湖店")
    expect(page.get_by_test_id("kpi-issued")).to_have_text("169")
    expect(page.get_by_test_id("kpi-outstanding")).to_have_text("169")


def test_hq_creates_a_category_multiplier_and_simulates_a_basket(page: Page, site: Site) -> None:
    member = register(site, "A", "18300002003", "孙佳琪")
    login(page, site, "hq")
    page.goto(f"{site.url}/console/points/rules")
    expect(page.get_by_test_id("how-rules-combine")).to_contain_text("相加而不相乘")
    expect(page.get_by_test_id("program-base-row")).to_contain_text("1 / ¥1")
    # The fields follow the kind; a missing field comes back from the server with its message.
    page.select_option("#r-kind", "sku_multiplier")
    expect(page.locator("#r-sku")).to_be_visible()
    page.fill("#r-multiplier_pct", "200")
    page.get_by_test_id("rule-submit").click()
    expect(page.get_by_test_id("form-errors")).to_have_text("规则类型 sku_multiplier 需要字段 sku")
    page.select_option("#r-kind", "category_multiplier")
    expect(page.locator("#r-category")).to_be_visible()
    expect(page.locator("#r-sku")).to_have_count(0)
    page.fill("#r-name", "母婴双倍")
    page.fill("#r-multiplier_pct", "200")
    page.fill("#r-category", "母婴")
    page.get_by_test_id("rule-submit").click()
    expect(page.get_by_test_id("rule-notice")).to_have_text("已创建规则")
    row = page.locator("[data-testid=rule-row][data-kind=category_multiplier]")
    expect(row.get_by_test_id("rule-terms")).to_contain_text("品类「母婴」2 倍积分")
    expect(row.get_by_test_id("rule-version")).to_have_text("v1")

    page.fill("#sim-member", member)
    page.select_option("#sim-store", "A")
    lines = page.get_by_test_id("sim-line-input")
    for i, (sku, category, qty, price) in enumerate(
        [("MILK", "母婴", "1", "100"), ("RICE", "食品", "2", "25.50")]
    ):
        lines.nth(i).locator("[name=sku]").fill(sku)
        lines.nth(i).locator("[name=category]").fill(category)
        lines.nth(i).locator("[name=quantity]").fill(qty)
        lines.nth(i).locator("[name=price]").fill(price)
    page.get_by_test_id("sim-run").click()
    # base 1 point per yuan: 100 + 51; 母婴 2×: +100 on line 1
    expect(page.get_by_test_id("sim-points")).to_have_text("合计得积分 251")
    expect(page.get_by_test_id("sim-line-points-1")).to_have_text("200")
    expect(page.get_by_test_id("sim-line-points-2")).to_have_text("51")
    expect(page.get_by_test_id("sim-rule-category_multiplier")).to_contain_text("品类「母婴」2 倍积分")
    expect(
        page.get_by_test_id("sim-rule-category_multiplier").get_by_test_id("sim-rule-points")
    ).to_have_text("+100")
    expect(page.get_by_test_id("sim-rule-base_rate").get_by_test_id("sim-rule-points")).to_have_text("+151")
    expect(page.get_by_test_id("sim-result")).to_contain_text("模拟结果，未写入任何数据")
    both_widths(page, "console-points-rules")
    # A real checkout of the same basket earns what the simulation said.
    assert buy(site, "A", member, [("MILK", "母婴", 1, 10000), ("RICE", "食品", 2, 2550)]) == 251

    row.get_by_test_id("rule-revise").click()
    expect(page.locator("#r-category")).to_have_value("母婴")
    page.fill("#r-multiplier_pct", "300")
    both_widths(page, "console-points-rule-revise")
    page.get_by_test_id("rule-submit").click()
    expect(page.get_by_test_id("rule-notice")).to_have_text("已修订规则（新版本已生效）")
    expect(row.get_by_test_id("rule-version")).to_have_text("v2")
    expect(row.get_by_test_id("rule-terms")).to_contain_text("品类「母婴」3 倍积分")


def test_hq_sets_up_tiers_and_sees_members_per_level(page: Page, site: Site) -> None:
    login(page, site, "hq")
    page.goto(f"{site.url}/console/points/tiers")
    expect(page.get_by_test_id("no-tiers")).to_be_visible()
    page.fill("#t-code", "std")
    page.fill("#t-name", "优家会员")
    page.fill("#t-grace", "30")
    levels = [
        {"code": "silver", "name": "银卡", "threshold": "0", "keep_threshold": "0"},
        {
            "code": "gold",
            "name": "金卡",
            "threshold": "500",
            "keep_threshold": "300",
            "points_multiplier_pct": "150",
            "discount_pct": "5",
            "birthday_gift_points": "200",
            "free_service_uses": "1",
        },
    ]
    for n, values in enumerate(levels, start=1):
        for name, value in values.items():
            page.get_by_test_id(f"lvin-{n}-{name}").fill(value)
    shot(page, "console-points-tiers-form-desktop")
    page.get_by_test_id("tier-submit").click()
    expect(page.get_by_test_id("tiers-notice")).to_have_text("已创建等级体系")
    expect(page.get_by_test_id("tier-set-name")).to_have_text("优家会员")
    expect(page.get_by_test_id("level-gold")).to_contain_text("金卡")
    member = register(site, "C", "18300002004", "李书涵")
    assert buy(site, "C", member, [("TOY", "玩具", 1, 60000)]) == 600
    page.reload()
    expect(page.get_by_test_id("level-members-gold")).to_have_text("1")
    expect(page.get_by_test_id("level-members-silver")).to_have_text("0")
    expect(page.get_by_test_id("chart-distribution").locator("svg")).to_be_visible()
    option = chart_option(page, "chart-distribution")
    assert (option["xAxis"]["data"], option["series"][0]["data"]) == (["银卡", "金卡"], [0, 1])
    both_widths(page, "console-points-tiers")


def test_a_large_adjustment_waits_for_a_second_hq_admin(page: Page, site: Site) -> None:
    member = register(site, "A", "18300002005", "周明轩")
    login(page, site, "hq")
    page.goto(f"{site.url}/console/points/adjustments")
    page.get_by_test_id("adj-member").fill(member)
    page.get_by_test_id("adj-points").fill("1500")
    page.get_by_test_id("adj-reason").fill("客诉补偿：商品质量问题")
    page.get_by_test_id("adj-submit").click()
    expect(page.get_by_test_id("adj-notice")).to_have_text("调整已提交，等待审批")
    pending = page.get_by_test_id("pending-table").locator("tbody tr")
    expect(pending).to_have_count(1)
    expect(pending.first).to_contain_text("需另一位总部管理员审批")
    both_widths(page, "console-points-adjustments")
    login(page, site, "hq2")
    page.goto(f"{site.url}/console/points/adjustments")
    pending.first.locator("[name=note]").fill("核实无误")
    pending.first.get_by_role("button", name="批准").click()
    expect(page.get_by_test_id("adj-notice")).to_have_text("已批准并生效")
    expect(page.get_by_test_id("pending-count")).to_have_text("0")
    history = page.get_by_test_id("adjust-table").locator("tbody tr").first
    expect(history).to_contain_text("已生效")
    expect(history).to_contain_text("staff:hq2")
    page.goto(f"{site.url}/console/points")
    expect(page.get_by_test_id("big-adjustment-points").first).to_have_text("+1,500")
    page.goto(f"{site.url}/console/points?lang=en")
    expect(page.get_by_test_id("kpi-outstanding")).to_be_visible()
    shot(page, "console-points-overview-en-desktop")
