"""The points mall on the member page over HTTP: rewards priced against the member's balance, coupon
rewards redeemed online (confirm step, one redemption per submitted form, the coupon in My coupons),
everything else marked for a store, the history of redemptions, and every refusal changing nothing.
Also the service path it uses, ``mall.redeem_online``: a member redeems a coupon reward for themselves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.auth.principal import system_principal
from onemember.coupons.models import Coupon
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members import service as members
from onemember.points import mall
from onemember.points.models import RewardRedemption
from tests.factories import Chain
from tests.helpers import login, register
from tests.test_mall import create_reward, give, set_stock, snapshot
from tests.test_member_benefits_http import Node, page
from tests.test_member_page_http import csrf
from tests.test_member_page_http import login as member_login

PHONE = "18800003001"
OTHER_PHONE = "18800003002"


def _coupons(factory: sessionmaker[Session], org_id: int) -> list[tuple[str, int]]:
    """(template id, holder) of every coupon of the org: what a redemption issues."""
    with factory() as s:
        return [
            (str(t), int(m))
            for t, m in s.execute(
                select(Coupon.template_id, Coupon.member_id)
                .where(Coupon.org_id == org_id)
                .order_by(Coupon.id)
            ).all()
        ]


def state(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    return {**snapshot(factory, org_id), "coupons": _coupons(factory, org_id)}


@pytest.fixture
def mall_setup(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> dict[str, Any]:
    """Six rewards of every kind and stock mode; a member with 1,200 points, logged in."""
    hq = login(app_client, chain, "hq")
    r = app_client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "MALLM-T10",
            "name": "立减10元",
            "kind": "amount_off",
            "amount_fen": 1000,
            "valid_days": 30,
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    create_reward(
        app_client,
        hq,
        code="MALLM-CPN",
        name="10元券",
        kind="coupon",
        points_cost=500,
        per_member_limit=1,
        coupon_template_code="MALLM-T10",
    )
    set_stock(app_client, hq, "MALLM-CPN", 3)
    create_reward(
        app_client,
        hq,
        code="MALLM-OUT",
        name="抢光的券",
        kind="coupon",
        points_cost=100,
        coupon_template_code="MALLM-T10",
    )
    set_stock(app_client, hq, "MALLM-OUT", 0)
    create_reward(
        app_client,
        hq,
        code="MALLM-BIG",
        name="大额券",
        kind="coupon",
        points_cost=5000,
        stock_mode="none",
        coupon_template_code="MALLM-T10",
    )
    create_reward(
        app_client, hq, code="MALLM-GIFT", name="保温杯", kind="gift", points_cost=800, stock_mode="store"
    )
    set_stock(app_client, hq, "MALLM-GIFT", 4, "A")
    create_reward(
        app_client, hq, code="MALLM-SVC", name="免费洗车", kind="service", points_cost=300, stock_mode="none"
    )
    create_reward(
        app_client,
        hq,
        code="MALLM-PC",
        name="雨伞",
        kind="points_cash",
        points_cost=200,
        cash_fen=1500,
        stock_mode="none",
    )
    m = register(app_client, chain, "A", PHONE)
    give(factory, chain, m["member_no"], 1200)
    member_login(app_client, chain, factory, PHONE, m["member_no"])
    return {"hq": hq, "member_no": m["member_no"]}


def rewards(root: Node) -> list[tuple[str, str, str, str, str, str]]:
    """(code, kind label, price, stock, how, refusal) of each reward card."""
    out = []
    for c in root.all("reward"):
        how = "online" if c.all("reward-redeem") else ("store" if c.all("reward-at-store") else "-")
        out.append(
            (
                c.attrs["data-code"],
                c.one("reward-kind").text,
                c.one("reward-price").text,
                c.one("reward-stock").text if c.all("reward-stock") else "",
                how,
                c.one("reward-refusal").text if c.all("reward-refusal") else "",
            )
        )
    return out


def redeem(client: TestClient, code: str, idem: str) -> Any:
    return client.post(
        f"/m/mall/{code}/redeem", data={"csrf": csrf(client), "idem": idem}, follow_redirects=False
    )


def test_mall_lists_rewards_priced_against_the_balance(
    app_client: TestClient, chain: Chain, mall_setup: dict[str, Any]
) -> None:
    r = app_client.get("/m/mall")
    assert r.status_code == 200, r.text
    root = page(r.text)
    assert root.one("mall-balance").text == "可用积分 1,200"
    assert rewards(root) == [
        ("MALLM-OUT", "优惠券", "100 积分", "已兑完", "-", "已兑完"),
        ("MALLM-PC", "积分+现金", "200 积分 + ¥15.00", "", "store", ""),
        ("MALLM-SVC", "服务", "300 积分", "", "store", ""),
        ("MALLM-CPN", "优惠券", "500 积分", "剩余 3 件", "online", ""),
        ("MALLM-GIFT", "礼品", "800 积分", "各门店备货", "store", ""),
        ("MALLM-BIG", "优惠券", "5,000 积分", "", "-", "还差 3,800 积分"),
    ]
    [cpn] = [c for c in root.all("reward") if c.attrs["data-code"] == "MALLM-CPN"]
    assert cpn.one("reward-gives").text == "无门槛立减¥10.00"
    assert cpn.one("reward-limit").text == "每人限兑 1 次，已兑 0 次"
    assert root.texts("reward-at-store") == ["到店兑换"] * 3
    assert [c.attrs["data-affordable"] for c in root.all("reward")] == ["yes"] * 5 + ["no"]

    en = page(app_client.get("/m/mall?lang=en").text)
    assert rewards(en)[1] == ("MALLM-PC", "Points + cash", "200 points + ¥15.00", "", "store", "")
    assert rewards(en)[5][5] == "3,800 more points needed"
    assert en.all("reward-at-store")[0].text == "Redeem at a store"

    # A reward that is not offered has no confirm step.
    missing = app_client.get("/m/mall/MALLM-NONE/redeem")
    assert missing.status_code == 404
    assert "Reward not found" in missing.text  # the language chosen above sticks

    # Entry points: the points tab and the home page.
    for path in ("/m/ledger", "/m"):
        link = page(app_client.get(path).text).one("link-mall")
        assert link.attrs["href"] == "/m/mall"


def test_redeem_a_coupon_reward_online_once(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], mall_setup: dict[str, Any]
) -> None:
    confirm = page(app_client.get("/m/mall/MALLM-CPN/redeem").text)
    assert confirm.one("confirm-balance").text == "1,200"
    assert confirm.one("confirm-spend").text == "-500"
    assert confirm.one("confirm-after").text == "700"
    key = confirm.one("mall-idem").attrs["value"]
    assert len(key) >= 20

    first = redeem(app_client, "MALLM-CPN", key)
    assert first.status_code == 303, first.text
    location = first.headers["location"]
    assert re.fullmatch(r"/m/mall/redemptions\?done=\d+", location)
    after_first = state(factory, chain.org_id)
    # A double submit of the same form answers with the same redemption and changes nothing.
    again = redeem(app_client, "MALLM-CPN", key)
    assert again.status_code == 303
    assert again.headers["location"] == location
    assert state(factory, chain.org_id) == after_first

    with factory() as s:
        member = members.by_member_no(s, chain.org_id, mall_setup["member_no"])
        [red] = s.scalars(select(RewardRedemption).where(RewardRedemption.org_id == chain.org_id)).all()
        assert (red.member_id, red.store_id, red.points, red.cash_fen, red.status, red.actor) == (
            member.id,
            None,
            500,
            0,
            "fulfilled",
            f"member:{member.member_no}",
        )
        [coupon] = s.scalars(select(Coupon).where(Coupon.org_id == chain.org_id)).all()
        assert (coupon.member_id, coupon.source, coupon.issuing_store_id) == (member.id, "mall", None)
        audits = s.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.target_id).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_redeemed"
            )
        ).all()
        assert audits == [("points.reward_redeemed", f"member:{member.member_no}", str(red.id))]
    assert location == f"/m/mall/redemptions?done={red.id}"
    assert after_first["balances"][0][1:] == (700, 0)
    assert [q for rid, key_, q in after_first["stock"] if key_ == 0] == [3 - 1, 0]

    history = page(app_client.get(location).text)
    assert history.one("mall-notice").text == f"已兑换「10元券」，优惠券 {coupon.code} 已放入“我的优惠券”"
    [row] = history.all("redemption")
    assert row.attrs["data-status"] == "fulfilled"
    assert row.one("redemption-name").text == "10元券"
    assert row.one("redemption-status").text == "已完成"
    assert row.one("redemption-place").text == "线上兑换"
    assert row.one("redemption-points").text == "-500"
    assert row.one("redemption-coupon").text == coupon.code
    assert row.one("redemption-coupon").attrs["href"] == f"/m/coupons/{coupon.code}"

    wallet = page(app_client.get("/m/coupons").text)
    assert [c.attrs["data-code"] for c in wallet.one("group-available").all("coupon")] == [coupon.code]
    mall_page = page(app_client.get("/m/mall").text)
    assert mall_page.one("mall-balance").text == "可用积分 700"
    [cpn] = [c for c in mall_page.all("reward") if c.attrs["data-code"] == "MALLM-CPN"]
    assert cpn.one("reward-limit").text == "每人限兑 1 次，已兑 1 次"
    assert cpn.one("reward-refusal").text == "已达兑换上限"
    assert cpn.one("reward-stock").text == "剩余 2 件"


@pytest.mark.parametrize(
    ("code", "status", "zh", "en"),
    [
        (
            "MALLM-BIG",
            409,
            "积分余额不足：可用 1200，需要 5000",
            "Not enough points: 1200 available, 5000 needed",
        ),
        ("MALLM-OUT", 409, "礼品库存不足", "The reward is out of stock"),
        ("MALLM-GIFT", 409, "该礼品须到店兑换", "This reward is redeemed at a store"),
        ("MALLM-PC", 409, "该礼品须到店兑换", "This reward is redeemed at a store"),
        ("MALLM-NONE", 404, "找不到该礼品", "Reward not found"),
    ],
)
def test_refusals_show_a_message_and_change_nothing(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    mall_setup: dict[str, Any],
    code: str,
    status: int,
    zh: str,
    en: str,
) -> None:
    before = state(factory, chain.org_id)
    r = redeem(app_client, code, f"k-{code}")
    assert r.status_code == status, r.text
    assert page(r.text).one("mall-error").text == zh
    assert state(factory, chain.org_id) == before
    app_client.get("/m/mall?lang=en")
    r = redeem(app_client, code, f"k2-{code}")
    assert r.status_code == status
    assert page(r.text).one("mall-error").text == en
    assert state(factory, chain.org_id) == before


def test_limit_reached_changes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], mall_setup: dict[str, Any]
) -> None:
    assert redeem(app_client, "MALLM-CPN", "first").status_code == 303
    before = state(factory, chain.org_id)
    r = redeem(app_client, "MALLM-CPN", "second")
    assert r.status_code == 409
    assert page(r.text).one("mall-error").text == "该礼品每人限兑 1 次，已兑 1 次"
    assert state(factory, chain.org_id) == before
    # The same refused form sent again answers the same refusal.
    r = redeem(app_client, "MALLM-CPN", "second")
    assert r.status_code == 409
    assert page(r.text).one("mall-error").text == "该礼品每人限兑 1 次，已兑 1 次"
    assert state(factory, chain.org_id) == before


def test_history_shows_store_redemptions_and_cancellations(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], mall_setup: dict[str, Any]
) -> None:
    clerk = login(app_client, chain, "a_clerk")
    no = mall_setup["member_no"]
    for code in ("MALLM-GIFT", "MALLM-SVC"):
        r = app_client.post(
            f"/api/v1/members/{no}/reward-redemptions", json={"reward_code": code}, headers=clerk
        )
        assert r.status_code == 201, r.text
        if code == "MALLM-SVC":
            cancelled = app_client.post(f"/api/v1/reward-redemptions/{r.json()['id']}/cancel", headers=clerk)
            assert cancelled.status_code == 200, cancelled.text
    rows = page(app_client.get("/m/mall/redemptions").text).all("redemption")
    assert [
        (
            r.one("redemption-name").text,
            r.one("redemption-status").text,
            r.one("redemption-place").text,
            r.one("redemption-points").text,
            bool(r.all("redemption-coupon")),
        )
        for r in rows
    ] == [
        ("免费洗车", "已取消", "上海徐汇店", "-300", False),
        ("保温杯", "待领取", "上海徐汇店", "-800", False),
    ]


def test_redeem_online_is_for_the_member_themselves(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], mall_setup: dict[str, Any]
) -> None:
    other = register(app_client, chain, "B", OTHER_PHONE)
    before = state(factory, chain.org_id)
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, mall_setup["member_no"])
        someone = members.by_member_no(s, chain.org_id, other["member_no"])
        coupon_reward = mall.reward_by_code(s, chain.org_id, "MALLM-CPN")
        attempts = [
            (system_principal(chain.org_id), member, coupon_reward, "auth.role"),
            (privacy.member_principal(someone), member, coupon_reward, "auth.role"),
            (
                privacy.member_principal(member),
                member,
                mall.reward_by_code(s, chain.org_id, "MALLM-SVC"),
                "points.reward_at_store_only",
            ),
        ]
        for principal, whom, reward, error in attempts:
            with pytest.raises(DomainError) as info:
                mall.redeem_online(s, principal, whom, reward)
            assert info.value.code == error
            s.rollback()
        # A member cannot use the till's path either.
        with pytest.raises(DomainError) as info:
            mall.redeem_reward(s, privacy.member_principal(member), member, coupon_reward, None)
        assert info.value.code == "auth.role"
        s.rollback()
    assert state(factory, chain.org_id) == before
    with factory() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(RewardRedemption)
                .where(RewardRedemption.org_id == chain.org_id)
            )
            == 0
        )
