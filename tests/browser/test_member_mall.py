"""The points mall on a phone: from the points tab to the mall, a coupon reward redeemed through the
confirm step, the coupon in My coupons, and the redemption in the history."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from onemember.members import service as members
from onemember.points import service as points
from tests.browser.conftest import PHONE, Live
from tests.browser.test_member_benefits import _hq, _log_in, _till
from tests.browser.test_member_page import _both_widths, _full_shot


def _setup(live: Live) -> str:
    """A coupon reward (300 points, 5 in stock) and a gift for a store; a member with 1,000 points."""
    with _hq(live) as hq, _till(live, "A") as a:
        r = hq.post(
            "/api/v1/coupon-templates",
            json={
                "code": "MALLM-BR-T5",
                "name": "立减5元",
                "kind": "amount_off",
                "amount_fen": 500,
                "valid_days": 30,
            },
        )
        assert r.status_code == 201, r.text
        for body in (
            {
                "code": "MALLM-BR-CPN",
                "name": "5元券",
                "kind": "coupon",
                "points_cost": 300,
                "coupon_template_code": "MALLM-BR-T5",
            },
            {
                "code": "MALLM-BR-GIFT",
                "name": "帆布袋",
                "kind": "gift",
                "points_cost": 600,
                "stock_mode": "store",
            },
        ):
            r = hq.post("/api/v1/rewards", json=body)
            assert r.status_code == 201, r.text
        r = hq.post("/api/v1/rewards/MALLM-BR-CPN/stock", json={"store_code": None, "quantity": 5})
        assert r.status_code == 200, r.text
        r = a.post("/api/v1/members", json={"phone": "18800003501", "name": "周一"})
        assert r.status_code == 201, r.text
        member_no = str(r.json()["member_no"])
    with live.factory() as s:
        member = members.by_member_no(s, live.chain.org_id, member_no)
        program = points.default_program(s, live.chain.org_id)
        account = points.ensure_account(s, live.chain.org_id, member.id, program.id)
        account = points.lock_account(s, account.id)
        points.earn(s, account, 1000, points.EntryContext(store_id=live.chain.stores["A"], reason="test"))
        s.commit()
    return member_no


def test_redeem_a_coupon_reward_on_a_phone(phone_page: Page, live: Live) -> None:
    page = phone_page
    member_no = _setup(live)
    _log_in(page, live, "18800003501", member_no)
    page.get_by_test_id("tab-points").click()
    page.get_by_test_id("link-mall").click()
    expect(page).to_have_url(f"{live.url}/m/mall")
    expect(page.get_by_test_id("mall-balance")).to_have_text("可用积分 1,000")
    gift = page.locator("[data-testid=reward][data-code=MALLM-BR-GIFT]")
    expect(gift.get_by_test_id("reward-at-store")).to_have_text("到店兑换")
    coupon = page.locator("[data-testid=reward][data-code=MALLM-BR-CPN]")
    expect(coupon.get_by_test_id("reward-stock")).to_have_text("剩余 5 件")
    _both_widths(page, "member-mall")

    coupon.get_by_test_id("reward-redeem").click()
    expect(page.get_by_test_id("confirm-after")).to_have_text("700")
    _full_shot(page, "member-mall-confirm-phone", PHONE)
    page.get_by_test_id("mall-confirm-submit").click()
    expect(page.get_by_test_id("mall-notice")).to_contain_text("已兑换「5元券」")
    row = page.get_by_test_id("redemption")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("redemption-status")).to_have_text("已完成")
    expect(page.get_by_test_id("mall-balance")).to_have_text("可用积分 700")
    _full_shot(page, "member-mall-redemptions-phone", PHONE)

    code = row.get_by_test_id("redemption-coupon").inner_text()
    row.get_by_test_id("redemption-coupon").click()
    expect(page).to_have_url(f"{live.url}/m/coupons/{code}")
