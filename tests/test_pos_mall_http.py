"""The points mall at the till over plain HTTP: the rewards offered at the store with why each cannot be
redeemed, the confirm step and a redemption replayed on a double submit, the printed slip (with the coupon
a coupon reward issued), handing over and cancelling this store's pending redemptions, and failure paths
(points, limit, stock, cash, scope, a missing reason) that show zh/en messages and change nothing."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.coupons.models import Coupon
from onemember.points.models import RewardRedemption
from tests.factories import Chain
from tests.helpers import login, register
from tests.test_mall import account_of, create_reward, give, set_stock, snapshot, stock
from tests.test_pos_benefits_http import untranslated
from tests.test_pos_http import by_testid, hidden, pos_login, post

GIFT = {"code": "MALLP-MUG", "name": "保温杯", "kind": "gift", "points_cost": 300, "stock_mode": "store"}
TEA = {
    "code": "MALLP-TEA",
    "name": "茶叶礼盒",
    "kind": "points_cash",
    "points_cost": 500,
    "cash_fen": 1990,
    "stock_mode": "central",
    "per_member_limit": 1,
}


def store_id(chain: Chain, code: str) -> int:
    return chain.stores[code]


def redemptions(factory: sessionmaker[Session], org_id: int) -> list[tuple[int, str, int, int]]:
    with factory() as s:
        rows = s.execute(
            select(
                RewardRedemption.id,
                RewardRedemption.status,
                RewardRedemption.points,
                RewardRedemption.cash_fen,
            )
            .where(RewardRedemption.org_id == org_id)
            .order_by(RewardRedemption.id)
        ).all()
        return [(i, st, p, c) for i, st, p, c in rows]


def served(client: TestClient, chain: Chain, phone: str, clerk: str = "a_clerk") -> None:
    pos_login(client, chain, clerk)
    r = post(client, "/pos/identify", q=phone)
    assert r.status_code == 303, r.text


def confirm(client: TestClient, code: str) -> str:
    r = client.get(f"/pos/rewards/{code}/redeem")
    assert r.status_code == 200, r.text
    return r.text


def setup_mall(client: TestClient, chain: Chain) -> dict[str, str]:
    hq = login(client, chain, "hq")
    create_reward(client, hq, **GIFT)
    create_reward(client, hq, **TEA)
    set_stock(client, hq, "MALLP-MUG", 2, "A")
    set_stock(client, hq, "MALLP-TEA", 5)
    return hq


def test_rewards_listed_redeemed_once_slip_and_handover(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    setup_mall(app_client, chain)
    m = register(app_client, chain, "A", "18710001001")
    give(factory, chain, m["member_no"], 1000)
    served(app_client, chain, "18710001001")

    sale = app_client.get("/pos").text
    assert by_testid(sale, "rewards-summary") == "本店 2 件礼品，可兑 2 件"

    page = app_client.get("/pos/rewards").text
    assert by_testid(page, "rewards-balance") == "1000"
    assert by_testid(page, "reward-stock-MALLP-MUG") == "2"
    assert by_testid(page, "reward-points-MALLP-MUG") == "300"
    assert by_testid(page, "reward-stock-MALLP-TEA") == "5"
    assert by_testid(page, "reward-cash-MALLP-TEA") == "¥19.90"
    assert by_testid(page, "reward-limit-MALLP-TEA") == "已兑 0/1"
    assert by_testid(page, "reward-ok-MALLP-TEA") == "可兑换"
    assert by_testid(page, "pending-none") == "本店没有待交付的兑换"
    assert untranslated(page) == []

    form = confirm(app_client, "MALLP-TEA")
    assert by_testid(form, "confirm-balance") == "1000"
    assert by_testid(form, "confirm-points") == "-500"
    assert by_testid(form, "confirm-after") == "500"
    assert by_testid(form, "confirm-cash") == "¥19.90"
    assert re.search(r'name="cash" value="19.90"', form)
    idem = hidden(form, "idem")

    first = post(app_client, "/pos/rewards/MALLP-TEA/redeem", idem=idem, cash="19.90")
    assert first.status_code == 303, first.text
    again = post(app_client, "/pos/rewards/MALLP-TEA/redeem", idem=idem, cash="19.90")
    assert again.status_code == 303
    assert again.headers["location"] == first.headers["location"]
    rows = redemptions(factory, chain.org_id)
    assert [(st, p, c) for _, st, p, c in rows] == [("pending", 500, 1990)]
    rid = rows[0][0]
    assert first.headers["location"] == f"/pos/reward-redemptions/{rid}"
    assert account_of(factory, chain.org_id, m["member_no"]) == (500, 0)
    assert stock(factory, chain.org_id, "MALLP-TEA") == 4

    slip = app_client.get(first.headers["location"]).text
    assert by_testid(slip, "slip-reward") == "茶叶礼盒"
    assert by_testid(slip, "slip-points") == "500"
    assert by_testid(slip, "slip-cash") == "¥19.90"
    assert by_testid(slip, "slip-balance") == "500"
    assert by_testid(slip, "slip-status") == "待交付"
    assert "slip-coupon" not in slip
    assert untranslated(slip) == []

    page = app_client.get("/pos/rewards").text
    assert by_testid(page, f"pending-name-{rid}") == "茶叶礼盒"
    assert by_testid(page, "reward-limit-MALLP-TEA") == "已兑 1/1"
    assert by_testid(page, "reward-why-MALLP-TEA") == "已达每人限兑 1 次"
    assert by_testid(page, "reward-ok-MALLP-MUG") == "可兑换"
    key = hidden(page, "idem")  # the fulfil form's key comes first
    r = post(app_client, f"/pos/reward-redemptions/{rid}/fulfil", idem=key)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/pos/rewards?done={rid}"
    done = app_client.get(r.headers["location"]).text
    assert by_testid(done, "rewards-notice") == "已标记交付：茶叶礼盒"
    assert by_testid(done, "pending-none") == "本店没有待交付的兑换"
    assert redemptions(factory, chain.org_id) == [(rid, "fulfilled", 500, 1990)]
    replay = post(app_client, f"/pos/reward-redemptions/{rid}/fulfil", idem=key)
    assert replay.status_code == 303
    assert redemptions(factory, chain.org_id) == [(rid, "fulfilled", 500, 1990)]
    with factory() as s:
        actions = s.scalars(
            select(AuditLog.action)
            .where(AuditLog.org_id == chain.org_id, AuditLog.target_type == "reward_redemption")
            .order_by(AuditLog.id)
        ).all()
    assert list(actions) == ["points.reward_redeemed", "points.reward_fulfilled"]

    en = app_client.get(f"/pos/reward-redemptions/{rid}?lang=en").text
    assert by_testid(en, "slip-status") == "Handed over"


def test_coupon_reward_slip_shows_the_coupon_issued(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    r = app_client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "MALLP-C10",
            "name": "满100减10",
            "valid_days": 30,
            "kind": "amount_off",
            "threshold_fen": 10000,
            "amount_fen": 1000,
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    create_reward(
        app_client,
        hq,
        code="MALLP-CPN",
        name="10元券",
        kind="coupon",
        points_cost=200,
        stock_mode="none",
        coupon_template_code="MALLP-C10",
    )
    m = register(app_client, chain, "A", "18710001002")
    give(factory, chain, m["member_no"], 250)
    served(app_client, chain, "18710001002")
    page = app_client.get("/pos/rewards").text
    assert by_testid(page, "reward-stock-MALLP-CPN") == "不限"
    form = confirm(app_client, "MALLP-CPN")
    assert by_testid(form, "confirm-after") == "50"
    assert "confirm-cash" not in form
    r = post(app_client, "/pos/rewards/MALLP-CPN/redeem", idem=hidden(form, "idem"), cash="0")
    assert r.status_code == 303, r.text
    slip = app_client.get(r.headers["location"]).text
    with factory() as s:
        codes = s.scalars(select(Coupon.code).where(Coupon.org_id == chain.org_id)).all()
    assert len(codes) == 1
    assert by_testid(slip, "slip-coupon") == codes[0]
    assert by_testid(slip, "slip-points") == "200"
    assert by_testid(slip, "slip-cash") == "¥0.00"
    assert by_testid(slip, "slip-balance") == "50"
    assert by_testid(slip, "slip-status") == "已交付"
    assert by_testid(app_client.get("/pos/rewards").text, "pending-none") == "本店没有待交付的兑换"


def _refused(
    client: TestClient, code: str, cash: str, status: int, zh: str, factory: Any, org_id: int
) -> None:
    before = snapshot(factory, org_id)
    form = confirm(client, code)
    r = post(client, f"/pos/rewards/{code}/redeem", idem=hidden(form, "idem"), cash=cash)
    assert r.status_code == status, r.text
    assert by_testid(r.text, "reward-confirm-error") == zh
    assert snapshot(factory, org_id) == before


def test_failure_paths_show_why_and_change_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = setup_mall(app_client, chain)
    m = register(app_client, chain, "A", "18710001003")
    give(factory, chain, m["member_no"], 400)
    served(app_client, chain, "18710001003")
    org = chain.org_id

    page = app_client.get("/pos/rewards").text
    assert by_testid(page, "reward-why-MALLP-TEA") == "积分不足，还差 100"
    assert "reward-redeem-MALLP-TEA" not in page
    assert by_testid(app_client.get("/pos").text, "rewards-summary") == "本店 2 件礼品，可兑 1 件"
    _refused(app_client, "MALLP-TEA", "19.90", 409, "积分余额不足：可用 400，需要 500", factory, org)

    give(factory, chain, m["member_no"], 600)  # 1000 now
    _refused(
        app_client,
        "MALLP-TEA",
        "19.00",
        422,
        "该礼品需收取现金 1990 分，实收 1900 分",
        factory,
        org,
    )
    _refused(app_client, "MALLP-TEA", "19.9x", 422, i18n_zh("pos.err.price"), factory, org)

    form = confirm(app_client, "MALLP-MUG")
    set_stock(app_client, hq, "MALLP-MUG", 0, "A")  # another till took the last one meanwhile
    before = snapshot(factory, org)
    r = post(app_client, "/pos/rewards/MALLP-MUG/redeem", idem=hidden(form, "idem"), cash="0")
    assert r.status_code == 409
    assert by_testid(r.text, "reward-confirm-error") == "礼品库存不足"
    assert snapshot(factory, org) == before
    page = app_client.get("/pos/rewards").text
    assert by_testid(page, "reward-why-MALLP-MUG") == "本店已兑完"

    form = confirm(app_client, "MALLP-TEA")
    assert (
        post(app_client, "/pos/rewards/MALLP-TEA/redeem", idem=hidden(form, "idem"), cash="19.90").status_code
        == 303
    )
    _refused(app_client, "MALLP-TEA", "19.90", 409, "该礼品每人限兑 1 次，已兑 1 次", factory, org)
    en = app_client.get("/pos/rewards?lang=en").text
    assert by_testid(en, "reward-why-MALLP-TEA") == "Limit of 1 per member reached"
    assert by_testid(en, "reward-why-MALLP-MUG") == "Out of stock here"


def i18n_zh(key: str) -> str:
    from onemember.web import i18n

    return i18n.MESSAGES[key][0]


def test_cancel_needs_a_reason_gives_points_and_stock_back_and_stays_in_scope(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    setup_mall(app_client, chain)
    m = register(app_client, chain, "A", "18710001004")
    give(factory, chain, m["member_no"], 700)
    served(app_client, chain, "18710001004")
    form = confirm(app_client, "MALLP-MUG")
    r = post(app_client, "/pos/rewards/MALLP-MUG/redeem", idem=hidden(form, "idem"), cash="0")
    assert r.status_code == 303
    rid = redemptions(factory, chain.org_id)[0][0]
    assert account_of(factory, chain.org_id, m["member_no"]) == (400, 0)
    assert stock(factory, chain.org_id, "MALLP-MUG", store_id(chain, "A")) == 1

    # A clerk of store C cannot touch store A's redemption (the service's scope rule).
    c = TestClient(app_client.app)
    pos_login(c, chain, "c_clerk")
    page = c.get("/pos/rewards").text
    assert f"pending-{rid}" not in page
    before = snapshot(factory, chain.org_id)
    r = post(c, f"/pos/reward-redemptions/{rid}/fulfil", idem="pos-c-try-1")
    assert r.status_code == 403
    assert snapshot(factory, chain.org_id) == before

    page = app_client.get("/pos/rewards").text
    key = re.search(rf'name="idem" value="([^"]*-c{rid})"', page)
    assert key
    r = post(app_client, f"/pos/reward-redemptions/{rid}/cancel", idem=key.group(1), reason="  ")
    assert r.status_code == 422
    assert by_testid(r.text, "rewards-error") == "请填写取消原因（不超过 200 字）"
    assert snapshot(factory, chain.org_id) == before

    r = post(app_client, f"/pos/reward-redemptions/{rid}/cancel", idem=key.group(1), reason="会员不要了")
    assert r.status_code == 303, r.text
    done = app_client.get(r.headers["location"]).text
    assert by_testid(done, "rewards-notice") == "已取消兑换并退回积分：保温杯"
    assert redemptions(factory, chain.org_id) == [(rid, "cancelled", 300, 0)]
    assert account_of(factory, chain.org_id, m["member_no"]) == (700, 0)
    assert stock(factory, chain.org_id, "MALLP-MUG", store_id(chain, "A")) == 2
    with factory() as s:
        reason = s.scalar(
            select(AuditLog.reason).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_cancelled"
            )
        )
    assert reason == "会员不要了"
    # The same form again replays; cancelling twice is refused by the service with a message.
    assert (
        post(
            app_client, f"/pos/reward-redemptions/{rid}/cancel", idem=key.group(1), reason="会员不要了"
        ).status_code
        == 303
    )
    r = post(app_client, f"/pos/reward-redemptions/{rid}/fulfil", idem="pos-another-key-1")
    assert r.status_code == 409
    assert by_testid(r.text, "rewards-error") == "该兑换已完成或已取消"
    assert account_of(factory, chain.org_id, m["member_no"]) == (700, 0)


def test_rewards_need_a_member(app_client: TestClient, chain: Chain) -> None:
    pos_login(app_client, chain)
    page = app_client.get("/pos/rewards").text
    assert by_testid(page, "rewards-need-member") == "识别会员后可兑换礼品"
    r = app_client.get("/pos/rewards/MALLP-MUG/redeem")
    assert r.status_code == 422
    assert by_testid(r.text, "rewards-error") == "请先识别会员"
