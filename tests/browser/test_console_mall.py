"""The points mall's console pages in a real browser: HQ creates a per-store gift and stocks store A,
a member redeems it at A's till, the chart draws it, and A's clerk cancels it with a reason (the points
and the unit go back). Runs on its own org in the shared live database."""

from __future__ import annotations

import secrets

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select

from onemember.members import service as members
from onemember.points import service as points
from onemember.points.models import PointAccount, RewardStock
from tests.browser.conftest import PHONE, Live, shot
from tests.factories import PASSWORD, make_chain


def login(page: Page, live: Live, org_code: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live.url}/console/login")
    page.fill("#org", org_code)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


def test_hq_sets_up_a_gift_and_a_clerk_cancels_its_redemption(page: Page, live: Live) -> None:
    with live.factory() as s:
        chain = make_chain(s, code=f"mallc{secrets.token_hex(3)}")
        s.commit()
    login(page, live, chain.org_code, "hq")
    page.goto(f"{live.url}/console/points")
    page.get_by_test_id("tab-mall").click()
    expect(page).to_have_url(f"{live.url}/console/mall")
    form = page.get_by_test_id("create-form")
    form.get_by_test_id("f-code").fill("MALLC-MUG")
    form.get_by_test_id("f-name").fill("马克杯")
    form.get_by_test_id("f-points").fill("300")
    form.get_by_test_id("f-limit").fill("1")
    form.get_by_test_id("f-mode").select_option("store")
    form.get_by_test_id("f-submit").click()
    expect(page.get_by_test_id("mall-notice")).to_have_text("已创建礼品")
    stock = page.get_by_test_id("stock-form-MALLC-MUG")
    stock.locator("select[name=store_code]").select_option("A")
    stock.locator("input[name=quantity]").fill("8")
    stock.get_by_role("button").click()
    expect(page.get_by_test_id("stock-MALLC-MUG-A")).to_have_text("A 8")

    # A member with 1,000 points redeems the mug at store A's till.
    r = httpx.post(
        f"{live.url}/api/v1/members",
        json={"phone": "18900007301", "name": "李雷", "channel": "pos"},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    member_no = r.json()["member_no"]
    with live.factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        program = points.default_program(s, chain.org_id)
        account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
        points.earn(s, account, 1000, points.EntryContext(store_id=chain.stores["A"], reason="test"))
        s.commit()
    r = httpx.post(
        f"{live.url}/api/v1/members/{member_no}/reward-redemptions",
        json={"reward_code": "MALLC-MUG"},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    page.reload()
    expect(page.get_by_test_id("stock-MALLC-MUG-A")).to_have_text("A 7")
    expect(page.get_by_test_id("chart-redemptions").locator("svg")).to_have_count(1)
    shot(page, "console-mall-rewards")

    login(page, live, chain.org_code, "a_clerk")
    page.goto(f"{live.url}/console/mall/redemptions?status=pending")
    row = page.get_by_test_id(f"redemption-{rid}")
    expect(row.get_by_test_id(f"redemption-status-{rid}")).to_have_text("待处理")
    row.get_by_test_id(f"cancel-reason-{rid}").fill("顾客改主意")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id(f"cancel-{rid}").click()
    expect(page.get_by_test_id("mall-notice")).to_have_text("已取消兑换，积分与库存已退回")
    expect(page.get_by_test_id(f"redemption-{rid}")).to_have_count(0)
    page.goto(f"{live.url}/console/mall/redemptions")
    expect(page.get_by_test_id(f"redemption-status-{rid}")).to_have_text("已取消")
    shot(page, "console-mall-redemptions")
    page.set_viewport_size(PHONE)
    shot(page, "console-mall-redemptions-phone")
    with live.factory() as s:
        balance = s.scalar(select(PointAccount.balance).where(PointAccount.org_id == chain.org_id))
        quantity = s.scalar(select(RewardStock.quantity).where(RewardStock.org_id == chain.org_id))
    assert (balance, quantity) == (1000, 8)
