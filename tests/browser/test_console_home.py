"""The console's login, scope and language switch in a real browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import DESKTOP, PHONE, Live, shot, staff_login


def test_hq_and_store_manager_see_different_scopes(page: Page, live: Live) -> None:
    staff_login(page, live, "hq")
    expect(page.get_by_test_id("scope-label")).to_contain_text("全部门店")
    expect(page.get_by_test_id("scope-filter")).to_be_visible()
    expect(page.locator("[data-chart] svg").first).to_be_visible()
    shot(page, "console-home-hq-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "console-home-hq-phone")
    page.set_viewport_size(DESKTOP)
    page.select_option("#f-store", "B")
    page.get_by_role("button", name="筛选").click()
    expect(page.get_by_test_id("scope-label")).to_contain_text("杭州西湖店")
    page.context.clear_cookies()
    staff_login(page, live, "a_mgr")
    expect(page.get_by_test_id("scope-label")).to_contain_text("上海徐汇店")
    expect(page.get_by_test_id("scope-filter")).to_have_count(0)
    expect(page.get_by_test_id("whoami")).to_contain_text("a_mgr")


def test_wrong_password_and_language_switch(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/console/login")
    page.fill("#org", live.chain.org_code)
    page.fill("#username", "hq")
    page.fill("#password", "wrong-password")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("login-error")).to_have_text("用户名或密码错误")
    staff_login(page, live, "hq")
    expect(page.get_by_role("link", name="会员")).to_be_visible()
    page.get_by_test_id("lang-switch").click()
    expect(page.get_by_role("link", name="Members")).to_be_visible()
    expect(page.get_by_test_id("scope-label")).to_contain_text("All stores")
    page.reload()
    expect(page.get_by_role("link", name="Members")).to_be_visible()
