"""The console's Stores and Audit sections in a real browser: scope, API keys shown once, staff, audit log."""

from __future__ import annotations

import io

import httpx
from openpyxl import load_workbook
from playwright.sync_api import Page, ViewportSize, expect

from tests.browser.conftest import DESKTOP, PHONE, Live, shot, staff_login
from tests.factories import PASSWORD


def size(viewport: dict[str, int]) -> ViewportSize:
    return {"width": viewport["width"], "height": viewport["height"]}


def test_tree_follows_scope(page: Page, live: Live) -> None:
    staff_login(page, live, "hq")
    page.goto(f"{live.url}/console/stores")
    for code in ("A", "B", "C"):
        expect(page.get_by_test_id(f"store-row-{code}")).to_be_visible()
    expect(page.get_by_test_id("brand-home")).to_contain_text("优家")
    expect(page.get_by_test_id("brand-kids")).to_contain_text("优童")
    expect(page.get_by_test_id("store-row-B")).to_contain_text("杭州")
    expect(page.get_by_test_id("staff-section")).to_contain_text("auditor")  # HQ-level staff
    shot(page, "console-stores-tree-desktop")
    page.set_viewport_size(size(PHONE))
    shot(page, "console-stores-tree-phone")
    page.set_viewport_size(size(DESKTOP))

    page.context.clear_cookies()
    staff_login(page, live, "a_mgr")
    page.goto(f"{live.url}/console/stores")
    expect(page.get_by_test_id("store-row-A")).to_be_visible()
    expect(page.locator("[data-testid^=store-row-]")).to_have_count(1)
    expect(page.get_by_test_id("staff-section")).to_have_count(0)
    response = page.goto(f"{live.url}/console/stores/B")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_test_id("error-message")).to_have_text("该门店不在您的权限范围内")


def test_store_manager_key_is_shown_once_then_revoked_and_audited(page: Page, live: Live) -> None:
    staff_login(page, live, "a_mgr")
    page.goto(f"{live.url}/console/stores/A")
    expect(page.get_by_test_id("store-title")).to_have_text("上海徐汇店")
    page.fill("#key-name", "org-test till 9")
    page.get_by_test_id("key-create-submit").click()
    secret_box = page.get_by_test_id("new-secret")
    expect(secret_box).to_be_visible()
    expect(page.get_by_test_id("secret-note")).to_contain_text("只显示这一次")
    secret = secret_box.inner_text().strip()
    assert secret.startswith("omk_")
    prefix = secret[4:12]
    expect(page.get_by_test_id(f"key-status-{prefix}")).to_have_text("有效")
    shot(page, "console-store-page-desktop")
    page.set_viewport_size(size(PHONE))
    shot(page, "console-store-page-phone")
    page.set_viewport_size(size(DESKTOP))

    me = httpx.get(f"{live.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert (me.json()["kind"], me.json()["store_code"]) == ("api_key", "A")

    page.reload()
    expect(page.get_by_test_id(f"key-row-{prefix}")).to_be_visible()
    expect(page.get_by_test_id("new-secret")).to_have_count(0)
    assert secret not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id(f"revoke-{prefix}").click()
    expect(page.get_by_test_id("revoked-notice")).to_contain_text(prefix)
    expect(page.get_by_test_id(f"key-status-{prefix}")).to_contain_text("已吊销")
    expect(page.get_by_test_id(f"revoke-{prefix}")).to_have_count(0)
    gone = httpx.get(f"{live.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert (gone.status_code, gone.json()["code"]) == (401, "auth.invalid_api_key")

    page.goto(f"{live.url}/console/audit")
    page.select_option("#f-action", "apikey.created")
    page.fill("#f-actor", "staff:a_mgr")
    page.get_by_test_id("audit-apply").click()
    expect(page.get_by_test_id("audit-row")).to_have_count(1)
    expect(page.get_by_test_id("audit-target")).to_have_text([prefix])
    expect(page.get_by_test_id("audit-actor")).to_have_text(["staff:a_mgr"])
    expect(page.get_by_test_id("audit-store")).to_have_text(["A"])
    assert "action=apikey.created" in page.url
    shot(page, "console-audit-desktop")
    page.set_viewport_size(size(PHONE))
    shot(page, "console-audit-phone")
    page.set_viewport_size(size(DESKTOP))

    with page.expect_download() as download:
        page.get_by_test_id("audit-export").click()
    assert download.value.suggested_filename == "audit-log.xlsx"
    sheet = load_workbook(io.BytesIO(download.value.path().read_bytes())).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:6] == ("时间", "操作人", "角色", "操作", "对象类型", "对象编号")
    assert [(r[1], r[3], r[4], r[5], r[7]) for r in rows[1:]] == [
        ("staff:a_mgr", "apikey.created", "api_key", prefix, "A")
    ]

    page.select_option("#f-action", "apikey.revoked")
    page.get_by_test_id("audit-apply").click()
    expect(page.get_by_test_id("audit-target")).to_have_text([prefix])


def test_hq_creates_a_clerk_for_store_b(page: Page, live: Live) -> None:
    staff_login(page, live, "hq")
    page.goto(f"{live.url}/console/stores")
    before = int(page.get_by_test_id("staff-count-B").inner_text())
    page.get_by_test_id("store-link-B").click()
    expect(page.get_by_test_id("store-title")).to_have_text("杭州西湖店")
    page.get_by_test_id("staff-create-toggle").click()
    expect(page.locator("#new-role option")).to_have_text(["店员", "店长"])
    page.fill("#new-username", "org_b_clerk")
    page.fill("#new-display-name", "杭州新店员")
    page.fill("#new-password", PASSWORD)
    page.select_option("#new-role", "clerk")
    page.get_by_test_id("staff-create-submit").click()
    expect(page.get_by_test_id("staff-notice")).to_contain_text("org_b_clerk")
    expect(page.get_by_test_id("staff-role-org_b_clerk")).to_have_text("店员")

    page.get_by_test_id("staff-create-toggle").click()
    page.fill("#new-username", "org_b_clerk")
    page.fill("#new-password", PASSWORD)
    page.get_by_test_id("staff-create-submit").click()
    expect(page.get_by_test_id("staff-error")).to_have_text("用户名已存在")

    page.goto(f"{live.url}/console/stores")
    expect(page.get_by_test_id("staff-count-B")).to_have_text(str(before + 1))
    token = httpx.post(
        f"{live.url}/api/v1/auth/login",
        json={"org": live.chain.org_code, "username": "org_b_clerk", "password": PASSWORD},
    )
    assert token.status_code == 200
    me = httpx.get(f"{live.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token.json()['token']}"})
    assert (me.json()["role"], me.json()["store_code"]) == ("clerk", "B")

    page.goto(f"{live.url}/console/audit?action=staff.created&actor=staff:hq")
    expect(page.get_by_test_id("audit-target")).to_have_text(["org_b_clerk"])
    expect(page.get_by_test_id("audit-store")).to_have_text(["B"])
    page.goto(f"{live.url}/console/audit?lang=en")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    shot(page, "console-audit-hq-en-desktop")
