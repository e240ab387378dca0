"""The points mall at the till in a real browser: from the member panel to the rewards offered here, the
confirm step of a points + cash reward, its slip, and handing the gift over from the pending list."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Live, staff_login
from tests.browser.test_pos import points_of, register, seed_points, shots
from tests.browser.test_pos_benefits import hq_headers


def test_redeem_a_points_cash_reward_and_hand_it_over(page: Page, live: Live) -> None:
    hq = hq_headers(live)
    member_no = register(live, "A", "18710009001")
    seed_points(live, "A", member_no, 100000)
    balance, _ = points_of(live, member_no)
    reward = {
        "code": "MALLP-BTEA",
        "name": "茶叶礼盒",
        "kind": "points_cash",
        "points_cost": 500,
        "cash_fen": 1990,
        "stock_mode": "central",
    }
    r = httpx.post(f"{live.url}/api/v1/rewards", json=reward, headers=hq)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{live.url}/api/v1/rewards/MALLP-BTEA/stock", json={"quantity": 3}, headers=hq)
    assert r.status_code == 200, r.text

    staff_login(page, live, "a_clerk", base="/pos")
    expect(page.get_by_test_id("identify-input")).to_be_focused()
    page.keyboard.type("18710009001")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    page.get_by_test_id("rewards-open").click()
    expect(page.get_by_test_id("reward-stock-MALLP-BTEA")).to_have_text("3")
    expect(page.get_by_test_id("reward-cash-MALLP-BTEA")).to_have_text("¥19.90")
    shots(page, "mall-rewards")

    page.get_by_test_id("reward-redeem-MALLP-BTEA").click()
    expect(page.get_by_test_id("confirm-points")).to_have_text("-500")
    expect(page.get_by_test_id("confirm-after")).to_have_text(str(balance - 500))
    expect(page.get_by_test_id("confirm-cash-input")).to_have_value("19.90")
    shots(page, "mall-confirm")
    page.get_by_test_id("confirm-redeem").click()
    expect(page.get_by_test_id("slip-points")).to_have_text("500")
    expect(page.get_by_test_id("slip-cash")).to_have_text("¥19.90")
    expect(page.get_by_test_id("slip-balance")).to_have_text(str(balance - 500))
    expect(page.get_by_test_id("slip-status")).to_have_text("待交付")
    shots(page, "mall-slip")
    rid = page.get_by_test_id("slip-no").inner_text().strip()
    assert points_of(live, member_no) == (balance - 500, 0)

    page.get_by_test_id("slip-back").click()
    page.get_by_test_id(f"pending-fulfil-{rid}").click()
    expect(page.get_by_test_id("rewards-notice")).to_have_text("已标记交付：茶叶礼盒")
    expect(page.get_by_test_id(f"pending-{rid}")).to_have_count(0)
