"""The console's coupons and service packages in a real browser: HQ creates a coupon template through the
form (the kind's inputs swapped in by htmx), issues it to a member found by phone and sees it on the member's
list and the template's page; a clerk sells a package and records a use. The section runs on its own org
in the shared database, so its numbers are its own."""

from __future__ import annotations

import html
import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from onemember.coupons.models import Coupon
from onemember.packages.models import MemberPackage, PackageUse
from tests.browser.conftest import DESKTOP, PHONE, Live, shot
from tests.factories import PASSWORD, Chain, make_chain


@dataclass
class Site:
    url: str
    chain: Chain
    live: Live


@pytest.fixture(scope="module")
def site(live: Live) -> Site:
    with live.factory() as s:
        chain = make_chain(s, code=f"ben{secrets.token_hex(3)}")
        s.commit()
    return Site(live.url, chain, live)


def login(page: Page, site: Site, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{site.url}/console/login")
    page.fill("#org", site.chain.org_code)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


def register(site: Site, store: str, phone: str, name: str) -> str:
    body = {"phone": phone, "name": name, "birthday": "1992-04-01", "gender": "female", "channel": "pos"}
    r = httpx.post(f"{site.url}/api/v1/members", json=body, headers=site.chain.key(store))
    assert r.status_code == 201, r.text
    return str(r.json()["member_no"])


def chart_option(page: Page, testid: str) -> dict[str, Any]:
    raw = page.get_by_test_id(testid).get_attribute("data-chart")
    assert raw is not None
    return dict(json.loads(html.unescape(raw)))


def both_widths(page: Page, name: str) -> None:
    shot(page, f"{name}-desktop")
    page.set_viewport_size(PHONE)
    shot(page, f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def test_hq_creates_a_template_issues_it_by_phone_and_sees_it_listed(page: Page, site: Site) -> None:
    member = register(site, "A", "18700003001", "周若溪")
    login(page, site, "hq")
    page.goto(f"{site.url}/console/coupons")
    expect(page.get_by_test_id("scope-label")).to_have_text("范围: 全部门店")
    # The value inputs follow the kind: a percent-off coupon asks for the percentage and the cap.
    expect(page.locator("#c-amount")).to_be_visible()
    page.select_option("#c-kind", "percent_off")
    expect(page.locator("#c-percent_off")).to_be_visible()
    expect(page.locator("#c-amount")).to_have_count(0)
    page.fill("#c-code", "P20")
    page.fill("#c-name", "周末八折")
    page.fill("#c-threshold", "100")
    page.fill("#c-percent_off", "20")
    page.fill("#c-cap", "abc")
    page.fill("#c-budget", "500")
    page.get_by_test_id("template-submit").click()
    expect(page.get_by_test_id("error-cap")).to_have_text("最多优惠（元）：须为金额，如 12.50")
    expect(page.locator("#c-percent_off")).to_have_value("20")  # what was typed stays
    page.fill("#c-cap", "30")
    page.get_by_test_id("template-submit").click()
    expect(page.get_by_test_id("notice")).to_have_text("已创建优惠券模板 P20")
    expect(page.get_by_test_id("value-P20")).to_have_text("8折（减20%） · 最多减¥30.00 · 满¥100.00可用")
    expect(page.get_by_test_id("budget-P20")).to_contain_text("¥0.00 / ¥500.00")
    expect(page.get_by_test_id("chart-flows").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("chart-budget").locator("svg")).to_be_visible()

    page.get_by_test_id("tab-issue").click()
    page.get_by_test_id("lookup-input").fill("187 0000 3001")
    page.get_by_test_id("lookup-button").click()
    expect(page.get_by_test_id("member-no")).to_have_text(member)
    expect(page.get_by_test_id("member-phone")).to_have_text("187****3001")
    expect(page.get_by_test_id("no-coupons")).to_be_visible()
    page.select_option("#i-template", "P20")
    page.select_option("#i-store", "A")
    page.fill("#i-reason", "会员日到店")
    page.get_by_test_id("issue-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("已发放优惠券")
    with site.live.factory() as s:
        coupon = s.scalar(select(Coupon).where(Coupon.org_id == site.chain.org_id))
        assert coupon is not None
        assert (coupon.source, coupon.issuing_store_id, coupon.reason, coupon.issued_by) == (
            "staff",
            site.chain.stores["A"],
            "会员日到店",
            "staff:hq",
        )
    expect(page.get_by_test_id("notice")).to_have_text(f"已发放优惠券 {coupon.code}")
    expect(page.get_by_test_id(f"held-status-{coupon.code}")).to_have_text("可使用")
    both_widths(page, "console-coupons-issue")

    page.get_by_test_id(f"held-{coupon.code}").get_by_role("link", name="周末八折").click()
    expect(page.get_by_test_id("template-name")).to_have_text("周末八折")
    expect(page.get_by_test_id("kpi-issued")).to_have_text("1")
    expect(page.get_by_test_id(f"coupon-status-{coupon.code}")).to_have_text("可使用")
    expect(page.get_by_test_id("chart-status").locator("svg")).to_be_visible()
    assert chart_option(page, "chart-status")["series"][0]["data"] == [{"name": "可使用", "value": 1}]
    both_widths(page, "console-coupon-template")
    page.goto(f"{site.url}/console/coupons")
    expect(page.get_by_test_id("issued-P20")).to_have_text("1")
    both_widths(page, "console-coupons")


def test_clerk_sells_a_package_and_records_a_use(page: Page, site: Site) -> None:
    token = httpx.post(
        f"{site.url}/api/v1/auth/login",
        json={"org": site.chain.org_code, "username": "hq", "password": PASSWORD},
    ).json()["token"]
    made = httpx.post(
        f"{site.url}/api/v1/service-packages",
        json={
            "code": "WASH10",
            "name": "洗车 10 次卡",
            "service_code": "CARWASH",
            "uses": 10,
            "price_fen": 30000,
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert made.status_code == 201, made.text
    member = register(site, "A", "18700003002", "吴嘉怡")
    login(page, site, "a_clerk")
    page.goto(f"{site.url}/console/packages/members")
    page.get_by_test_id("lookup-input").fill("18700003002")
    page.get_by_test_id("lookup-button").click()
    expect(page.get_by_test_id("member-no")).to_have_text(member)
    expect(page.get_by_test_id("no-packages")).to_be_visible()
    expect(page.get_by_test_id("grant-form")).to_have_count(0)  # clerks sell; they do not give away
    page.select_option("#s-package", "WASH10")
    page.select_option("#s-method", "cash")
    page.fill("#s-amount", "299")
    page.get_by_test_id("sell-submit").click()
    expect(page.get_by_test_id("form-errors")).to_have_text("该次卡售价 30000 分，实收 29900 分")
    page.fill("#s-amount", "300.00")
    page.get_by_test_id("sell-submit").click()
    expect(page.get_by_test_id("notice")).to_have_text("已售出次卡")
    with site.live.factory() as s:
        package = s.scalar(select(MemberPackage).where(MemberPackage.org_id == site.chain.org_id))
        assert package is not None
        assert (package.price_fen, package.payment_method, package.sold_store_id, package.uses_left) == (
            30000,
            "cash",
            site.chain.stores["A"],
            10,
        )
    pid = package.id
    expect(page.get_by_test_id(f"pkg-left-{pid}")).to_have_text("剩余 10 / 10 次")
    page.fill(f"#u-note-{pid}", "首次精洗")
    page.get_by_test_id(f"use-submit-{pid}").click()
    expect(page.get_by_test_id("notice")).to_have_text("已核销")
    expect(page.get_by_test_id(f"pkg-left-{pid}")).to_have_text("剩余 9 / 10 次")
    history = page.get_by_test_id(f"pkg-uses-{pid}")
    expect(history).to_contain_text("上海徐汇店")
    expect(history).to_contain_text("a_clerk")
    expect(history).to_contain_text("¥30.00")
    expect(history).to_contain_text("首次精洗")
    with site.live.factory() as s:
        uses = list(s.scalars(select(PackageUse).where(PackageUse.member_package_id == pid)))
    assert [(u.used_store_id, u.uses, u.value_fen, u.actor, u.note) for u in uses] == [
        (site.chain.stores["A"], 1, 3000, "staff:a_clerk", "首次精洗")
    ]
    both_widths(page, "console-member-packages")
    page.get_by_test_id("tab-packages").click()
    expect(page.get_by_test_id("sold-WASH10")).to_have_text("1")
    expect(page.get_by_test_id("used-WASH10")).to_have_text("1")
    expect(page.get_by_test_id("readonly-note")).to_be_visible()
    expect(page.get_by_test_id("chart-templates").locator("svg")).to_be_visible()
    both_widths(page, "console-packages")
