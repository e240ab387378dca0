"""The console's points-mall pages over plain HTTP: HQ's reward form (every kind, refused inputs in zh/en
with nothing written), stock and shelf controls, the 30-day chart, the redemptions list with its scope,
filters, paging and Excel export, and fulfilling or cancelling pending redemptions by role and store."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.auth.principal import system_principal
from onemember.coupons.models import CouponTemplate
from onemember.coupons.service import templates as coupon_templates
from onemember.db import set_clock
from onemember.members import service as members
from onemember.points import service as points
from onemember.points.models import PointAccount, Reward, RewardRedemption, RewardStock
from onemember.settings import get_settings
from onemember.web import console_mall
from tests.factories import PASSWORD, Chain
from tests.helpers import login, register


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/console/mall" for r in app.routes):
        app.include_router(console_mall.router)
    with TestClient(app) as c:
        yield c


def console_login(client: TestClient, chain: Chain, username: str) -> str:
    client.cookies.clear()
    client.get("/console/login")
    csrf = str(client.cookies["om_csrf"])
    r = client.post(
        "/console/login",
        data={"org": chain.org_code, "username": username, "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def shown(page: str, name: str) -> str:
    """The visible text of the element carrying ``data-testid=name``."""
    found = re.search(rf'data-testid="{re.escape(name)}"[^>]*>(.*?)</(td|div|span|p)>', page, re.S)
    assert found, name
    return text_of(found.group(1)).strip()


def give(factory: sessionmaker[Session], chain: Chain, member_no: str, amount: int) -> None:
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        program = points.default_program(s, chain.org_id)
        account = points.ensure_account(s, chain.org_id, member.id, program.id)
        account = points.lock_account(s, account.id)
        points.earn(s, account, amount, points.EntryContext(store_id=chain.stores["A"], reason="test"))
        s.commit()


def balance_of(factory: sessionmaker[Session], chain: Chain, member_no: str) -> int:
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member.id)).one()
        return account.balance


def snapshot(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    with factory() as s:
        return {
            "rewards": sorted(
                s.execute(
                    select(
                        Reward.code, Reward.kind, Reward.active, Reward.points_cost, Reward.cash_fen
                    ).where(Reward.org_id == org_id)
                ).all()
            ),
            "stock": sorted(
                s.execute(
                    select(RewardStock.reward_id, RewardStock.store_key, RewardStock.quantity).where(
                        RewardStock.org_id == org_id
                    )
                ).all()
            ),
            "redemptions": sorted(
                s.execute(
                    select(RewardRedemption.id, RewardRedemption.status, RewardRedemption.fulfilled_by).where(
                        RewardRedemption.org_id == org_id
                    )
                ).all()
            ),
            "balances": sorted(
                s.execute(
                    select(PointAccount.id, PointAccount.balance).where(PointAccount.org_id == org_id)
                ).all()
            ),
            "audit": int(
                s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.org_id == org_id)) or 0
            ),
        }


def reward_form(csrf: str, **fields: Any) -> dict[str, str]:
    form = {
        "csrf": csrf,
        "code": "MALLC-G1",
        "name": "保温杯",
        "kind": "gift",
        "points_cost": "500",
        "cash": "",
        "per_member_limit": "",
        "stock_mode": "central",
        "coupon_template_code": "",
    }
    form.update({k: str(v) for k, v in fields.items()})
    return form


def coupon_template(client: TestClient, hq: dict[str, str], code: str, **extra: Any) -> None:
    body = {"code": code, "name": f"{code} 券", "kind": "amount_off", "amount_fen": 500, "valid_days": 30}
    r = client.post("/api/v1/coupon-templates", json={**body, **extra}, headers=hq)
    assert r.status_code == 201, r.text


def stop_template(factory: sessionmaker[Session], chain: Chain, code: str) -> None:
    """HQ stops issuing a template (the coupons console does this; here through the service)."""
    with factory() as s:
        template = coupon_templates.template_by_code(s, chain.org_id, code)
        coupon_templates.set_active(s, system_principal(chain.org_id), template, False)
        s.commit()


def redeem(client: TestClient, headers: dict[str, str], member_no: str, code: str, **extra: Any) -> int:
    r = client.post(
        f"/api/v1/members/{member_no}/reward-redemptions",
        json={"reward_code": code, **extra},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def post(client: TestClient, url: str, data: dict[str, str], lang: str = "zh") -> Any:
    return client.post(f"{url}?lang={lang}", data=data, follow_redirects=False)


# --- rewards ---------------------------------------------------------------------------------------------


def test_hq_creates_every_kind_sets_stock_and_the_list_shows_them(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    coupon_template(client, hq, "MALLC-T20")
    coupon_template(client, hq, "MALLC-AONLY", accept_scope="issuing_store")
    coupon_template(client, hq, "MALLC-OFF")
    stop_template(factory, chain, "MALLC-OFF")
    csrf = console_login(client, chain, "hq")
    page = client.get("/console/mall").text
    # The picker offers the active templates the mall may issue, nothing else.
    picker = re.search(r'data-testid="f-template">(.*?)</select>', page, re.S)
    assert picker
    assert re.findall(r'<option value="([^"]*)"', picker.group(1)) == ["", "MALLC-T20"]

    forms = [
        {
            "code": "MALLC-GIFT",
            "name": "保温杯",
            "kind": "gift",
            "points_cost": "500",
            "per_member_limit": "2",
        },
        {
            "code": "MALLC-CASH",
            "name": "电饭煲",
            "kind": "points_cash",
            "points_cost": "2000",
            "cash": "39.90",
        },
        {"code": "MALLC-CPN", "name": "5 元券", "kind": "coupon", "points_cost": "100", "stock_mode": "none"},
        {
            "code": "MALLC-WASH",
            "name": "洗车",
            "kind": "service",
            "points_cost": "300",
            "stock_mode": "store",
        },
    ]
    forms[2]["coupon_template_code"] = "MALLC-T20"
    for form in forms:
        r = post(client, "/console/mall/rewards", reward_form(csrf, **form))
        assert (r.status_code, r.headers["location"]) == (303, "/console/mall?done=created"), r.text
    for url, data in (
        ("/console/mall/rewards/MALLC-GIFT/stock", {"quantity": "12"}),
        ("/console/mall/rewards/MALLC-CASH/stock", {"quantity": "3"}),
        ("/console/mall/rewards/MALLC-WASH/stock", {"quantity": "5", "store_code": "A"}),
        ("/console/mall/rewards/MALLC-WASH/stock", {"quantity": "7", "store_code": "B"}),
    ):
        r = post(client, url, {"csrf": csrf, **data})
        assert (r.status_code, r.headers["location"]) == (303, "/console/mall?done=stock"), r.text
    with factory() as s:
        rows = s.execute(
            select(
                Reward.code,
                Reward.kind,
                Reward.points_cost,
                Reward.cash_fen,
                Reward.per_member_limit,
                Reward.stock_mode,
                CouponTemplate.code,
            )
            .outerjoin(CouponTemplate, CouponTemplate.id == Reward.coupon_template_id)
            .where(Reward.org_id == chain.org_id)
            .order_by(Reward.code)
        ).all()
        created = s.scalars(
            select(AuditLog.target_id).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_created"
            )
        ).all()
    assert [tuple(x) for x in rows] == [
        ("MALLC-CASH", "points_cash", 2000, 3990, None, "central", None),
        ("MALLC-CPN", "coupon", 100, 0, None, "none", "MALLC-T20"),
        ("MALLC-GIFT", "gift", 500, 0, 2, "central", None),
        ("MALLC-WASH", "service", 300, 0, None, "store", None),
    ]
    assert sorted(created) == ["MALLC-CASH", "MALLC-CPN", "MALLC-GIFT", "MALLC-WASH"]

    page = client.get("/console/mall?done=stock").text
    assert shown(page, "mall-notice") == "库存已更新"
    assert shown(page, "cash-MALLC-CASH") == "¥39.90"
    assert shown(page, "limit-MALLC-GIFT") == "2"
    assert shown(page, "limit-MALLC-CPN") == "不限"
    assert shown(page, "stock-MALLC-GIFT") == "12"
    assert shown(page, "stock-MALLC-CPN") == "∞"
    assert shown(page, "stock-MALLC-WASH-A") == "A 5"
    assert shown(page, "stock-MALLC-WASH-B") == "B 7"
    assert shown(page, "template-MALLC-CPN") == "MALLC-T20 · MALLC-T20 券"
    assert shown(page, "chart-none") == "近 30 天没有兑换"
    # A store manager reads the list with only their own store's stock, and no controls.
    console_login(client, chain, "a_mgr")
    page = client.get("/console/mall").text
    assert 'data-testid="stock-MALLC-WASH-A"' in page
    assert 'data-testid="stock-MALLC-WASH-B"' not in page
    assert 'data-testid="create-form"' not in page
    assert 'data-testid="stock-form-MALLC-GIFT"' not in page
    assert shown(page, "readonly") == "只读：只有总部管理员可以设置礼品和库存"


@pytest.mark.parametrize(
    ("fields", "lang", "field", "message", "status"),
    [
        ({"points_cost": "abc"}, "zh", "points_cost", "所需积分：须为整数", 422),
        ({"points_cost": "0"}, "en", "points_cost", "points_cost must be a positive number", 422),
        ({"cash": "1.234"}, "en", "cash", "Cash part (yuan) must be an amount such as 12.50", 422),
        ({"cash": "5"}, "zh", "cash", "只有积分+现金礼品可以收取现金", 422),
        ({"kind": "points_cash"}, "en", "cash", "A points + cash reward needs cash_fen", 422),
        ({"per_member_limit": "0"}, "zh", "per_member_limit", "每人限兑数量须至少为 1", 422),
        ({"per_member_limit": "x"}, "en", "per_member_limit", "Limit per member must be a whole number", 422),
        ({"code": "X" * 41}, "en", "code", "Code has at most 40 characters", 422),
        ({"name": ""}, "zh", "name", "礼品名称须为 1 到 120 个字符", 422),
        ({"kind": "coupon"}, "en", "coupon_template_code", "A coupon reward needs a coupon template", 422),
        (
            {"kind": "coupon", "coupon_template_code": "MALLC-OFF"},
            "zh",
            "coupon_template_code",
            "请选择启用中的券模板",
            422,
        ),
        (
            {"kind": "coupon", "coupon_template_code": "MALLC-AONLY"},
            "zh",
            "coupon_template_code",
            "请选择启用中的券模板",
            422,
        ),
        ({"code": "MALLC-TAKEN"}, "en", "code", "A reward with code MALLC-TAKEN already exists", 409),
    ],
)
def test_refused_reward_inputs_show_field_errors_and_write_nothing(
    client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    fields: dict[str, str],
    lang: str,
    field: str,
    message: str,
    status: int,
) -> None:
    hq = login(client, chain, "hq")
    coupon_template(client, hq, "MALLC-AONLY", accept_scope="issuing_store")
    coupon_template(client, hq, "MALLC-OFF")
    stop_template(factory, chain, "MALLC-OFF")
    r = client.post(
        "/api/v1/rewards",
        json={"code": "MALLC-TAKEN", "name": "旧", "kind": "gift", "points_cost": 1},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    csrf = console_login(client, chain, "hq")
    before = snapshot(factory, chain.org_id)
    r = post(client, "/console/mall/rewards", reward_form(csrf, **fields), lang)
    assert r.status_code == status, r.text
    assert shown(r.text, f"error-{field}") == message
    assert snapshot(factory, chain.org_id) == before
    # The typed values stay in the form.
    if fields.get("name"):
        assert f'value="{fields["name"]}"' in r.text


def test_only_hq_changes_rewards_stock_or_shelf(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/rewards",
        json={"code": "MALLC-G", "name": "杯", "kind": "gift", "points_cost": 10, "stock_mode": "store"},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    before = snapshot(factory, chain.org_id)
    for username in ("a_mgr", "east_mgr", "cs", "auditor"):
        csrf = console_login(client, chain, username)
        for url, data in (
            ("/console/mall/rewards", reward_form(csrf)),
            ("/console/mall/rewards/MALLC-G/stock", {"csrf": csrf, "quantity": "5", "store_code": "A"}),
            ("/console/mall/rewards/MALLC-G/active", {"csrf": csrf, "active": "false"}),
        ):
            r = post(client, url, data)
            assert r.status_code == 403, (username, url, r.text)
    # Without the CSRF token HQ is refused too.
    console_login(client, chain, "hq")
    r = post(client, "/console/mall/rewards/MALLC-G/active", {"active": "false"})
    assert r.status_code == 403
    assert snapshot(factory, chain.org_id) == before


def test_stock_refusals_change_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    for code, mode in (("MALLC-C", "central"), ("MALLC-S", "store"), ("MALLC-N", "none")):
        r = client.post(
            "/api/v1/rewards",
            json={"code": code, "name": code, "kind": "gift", "points_cost": 10, "stock_mode": mode},
            headers=hq,
        )
        assert r.status_code == 201, r.text
    csrf = console_login(client, chain, "hq")
    assert (
        post(client, "/console/mall/rewards/MALLC-C/stock", {"csrf": csrf, "quantity": "4"}).status_code
        == 303
    )
    before = snapshot(factory, chain.org_id)
    for code, data, lang, status, message in (
        ("MALLC-C", {"quantity": "-1"}, "en", 422, "MALLC-C · The quantity must not be negative"),
        ("MALLC-C", {"quantity": "x"}, "zh", 422, "MALLC-C · 数量：须为整数"),
        (
            "MALLC-C",
            {"quantity": "3", "store_code": "A"},
            "en",
            422,
            "MALLC-C · This reward is stocked centrally, not per store",
        ),
        ("MALLC-S", {"quantity": "3"}, "zh", 409, "MALLC-S · 该礼品按门店备货，请指定兑换门店"),
        ("MALLC-N", {"quantity": "3"}, "zh", 422, "MALLC-N · 该礼品不限库存"),
        ("MALLC-S", {"quantity": "3", "store_code": "ZZ"}, "en", 404, None),
        ("MALLC-NOPE", {"quantity": "3"}, "en", 404, "MALLC-NOPE · Reward not found"),
    ):
        r = post(client, f"/console/mall/rewards/{code}/stock", {"csrf": csrf, **data}, lang)
        assert r.status_code == status, (code, data, r.text)
        if message is not None:
            assert shown(r.text, "action-error") == message
    assert snapshot(factory, chain.org_id) == before
    page = client.get("/console/mall").text
    assert shown(page, "stock-MALLC-C") == "4"


def test_withdraw_and_put_back_on_the_shelf(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/rewards",
        json={"code": "MALLC-G", "name": "杯", "kind": "gift", "points_cost": 10},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/rewards/MALLC-G/stock", json={"quantity": 3}, headers=hq)
    assert r.status_code == 200, r.text
    r = client.get("/api/v1/rewards?store_code=A", headers=hq)
    assert [x["code"] for x in r.json()["rewards"]] == ["MALLC-G"]
    csrf = console_login(client, chain, "hq")
    r = post(client, "/console/mall/rewards/MALLC-G/active", {"csrf": csrf, "active": "false"})
    assert (r.status_code, r.headers["location"]) == (303, "/console/mall?done=withdrawn")
    page = client.get("/console/mall?lang=en").text
    assert shown(page, "active-MALLC-G") == "Withdrawn"
    assert ">Put on the shelf</button>" in page
    # The API no longer offers it at a store.
    r = client.get("/api/v1/rewards?store_code=A", headers=hq)
    assert [x["code"] for x in r.json()["rewards"]] == []
    r = post(client, "/console/mall/rewards/MALLC-G/active", {"csrf": csrf, "active": "true"})
    assert (r.status_code, r.headers["location"]) == (303, "/console/mall?done=listed")
    r = client.get("/api/v1/rewards?store_code=A", headers=hq)
    assert [x["code"] for x in r.json()["rewards"]] == ["MALLC-G"]
    with factory() as s:
        actions = s.scalars(
            select(AuditLog.action)
            .where(AuditLog.org_id == chain.org_id, AuditLog.target_id == "MALLC-G")
            .order_by(AuditLog.id)
        ).all()
    assert actions == [
        "points.reward_created",
        "points.reward_stock_set",
        "points.reward_withdrawn",
        "points.reward_listed",
    ]


# --- redemptions -----------------------------------------------------------------------------------------


def mall_with_redemptions(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> tuple[str, dict[str, int]]:
    """Gift MALLC-CUP stocked at A and B, redeemed once at A, once at B and once by HQ (no store) for a
    member with 1,000 points; returns the member no. and the redemption ids by place."""
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/rewards",
        json={
            "code": "MALLC-CUP",
            "name": "保温杯",
            "kind": "gift",
            "points_cost": 100,
            "stock_mode": "store",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/rewards",
        json={
            "code": "MALLC-SPA",
            "name": "护理",
            "kind": "service",
            "points_cost": 50,
            "stock_mode": "none",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    for store in ("A", "B"):
        r = client.post(
            "/api/v1/rewards/MALLC-CUP/stock", json={"store_code": store, "quantity": 5}, headers=hq
        )
        assert r.status_code == 200, r.text
    member = register(client, chain, "A", "18900007001")
    give(factory, chain, member["member_no"], 1000)
    ids = {
        "A": redeem(client, chain.key("A"), member["member_no"], "MALLC-CUP"),
        "B": redeem(client, chain.key("B"), member["member_no"], "MALLC-CUP"),
        "HQ": redeem(client, hq, member["member_no"], "MALLC-SPA"),
    }
    return member["member_no"], ids


def listed_ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-testid="redemption-(\d+)"', page)]


def test_redemptions_list_scope_filters_and_chart(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ids = mall_with_redemptions(client, chain, factory)
    console_login(client, chain, "hq")
    page = client.get("/console/mall/redemptions").text
    assert listed_ids(page) == [ids["HQ"], ids["B"], ids["A"]]
    assert shown(page, f"redemption-store-{ids['HQ']}") == "总部"
    assert listed_ids(client.get("/console/mall/redemptions?store=A").text) == [ids["A"]]
    assert listed_ids(client.get("/console/mall/redemptions?store=hq").text) == [ids["HQ"]]
    assert listed_ids(client.get("/console/mall/redemptions?status=fulfilled").text) == []
    assert listed_ids(client.get("/console/mall/redemptions?status=pending&store=B").text) == [ids["B"]]
    # Paging (two rows a page here): newest first, a next link while more rows follow.
    monkeypatch.setattr(console_mall, "PAGE_SIZE", 2)
    page = client.get("/console/mall/redemptions").text
    assert listed_ids(page) == [ids["HQ"], ids["B"]]
    assert 'href="/console/mall/redemptions?page=2"' in page
    page = client.get("/console/mall/redemptions?page=2").text
    assert listed_ids(page) == [ids["A"]]
    assert 'data-testid="next-page"' not in page
    monkeypatch.undo()
    # Store staff see their own store only, whatever they ask for, and only their rows have buttons.
    console_login(client, chain, "a_clerk")
    page = client.get("/console/mall/redemptions").text
    assert listed_ids(page) == [ids["A"]]
    assert f'data-testid="fulfil-{ids["A"]}"' in page
    assert listed_ids(client.get("/console/mall/redemptions?store=B").text) == [ids["A"]]
    assert listed_ids(client.get("/console/mall/redemptions?store=hq").text) == [ids["A"]]
    console_login(client, chain, "east_mgr")
    assert listed_ids(client.get("/console/mall/redemptions").text) == [ids["B"], ids["A"]]
    # The auditor sees everything and handles nothing.
    console_login(client, chain, "auditor")
    page = client.get("/console/mall/redemptions").text
    assert listed_ids(page) == [ids["HQ"], ids["B"], ids["A"]]
    assert 'data-testid="fulfil-' not in page
    # The chart counts the last 30 days per reward and status, in the viewer's scope.
    page = client.get("/console/mall").text
    found = re.search(r"data-chart='([^']*)'", page)
    assert found
    option = json.loads(html.unescape(found.group(1)))
    assert option["yAxis"]["data"] == ["护理", "保温杯"]
    assert [(s["name"], s["data"]) for s in option["series"]] == [
        ("已完成", [0, 0]),
        ("待处理", [1, 2]),
        ("已取消", [0, 0]),
    ]
    console_login(client, chain, "b_mgr")
    option = json.loads(
        html.unescape(re.findall(r"data-chart='([^']*)'", client.get("/console/mall").text)[0])
    )
    assert option["yAxis"]["data"] == ["保温杯"]
    assert [s["data"] for s in option["series"]] == [[0], [1], [0]]


def test_redemptions_older_than_30_days_leave_the_chart(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    mall_with_redemptions(client, chain, factory)
    later = datetime.now(UTC) + timedelta(days=31)
    set_clock(lambda: later)
    try:
        console_login(client, chain, "hq")
        page = client.get("/console/mall").text
    finally:
        set_clock(None)
    assert shown(page, "chart-none") == "近 30 天没有兑换"


def test_staff_fulfil_and_cancel_by_role_and_store(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    member_no, ids = mall_with_redemptions(client, chain, factory)
    assert balance_of(factory, chain, member_no) == 750
    # B's manager may not touch A's redemption, a clerk not HQ's, the auditor none.
    before = snapshot(factory, chain.org_id)
    for username, rid, message in (
        ("b_mgr", ids["A"], "That store is outside your scope"),
        ("a_clerk", ids["HQ"], "HQ handles this redemption"),
        ("auditor", ids["A"], "Your role may not handle redemptions"),
    ):
        csrf = console_login(client, chain, username)
        for action, extra in (("fulfil", {}), ("cancel", {"reason": "顾客不要了"})):
            r = post(client, f"/console/mall/redemptions/{rid}/{action}", {"csrf": csrf, **extra}, "en")
            assert r.status_code == 403, (username, action, r.text)
            assert shown(r.text, "action-error") == f"#{rid} · {message}"
    # Cancelling needs a reason.
    csrf = console_login(client, chain, "a_clerk")
    r = post(client, f"/console/mall/redemptions/{ids['A']}/cancel", {"csrf": csrf, "reason": " "})
    assert r.status_code == 422
    assert shown(r.text, "action-error") == f"#{ids['A']} · 请填写取消原因"
    assert snapshot(factory, chain.org_id) == before

    back = "/console/mall/redemptions?status=pending"
    r = post(client, f"/console/mall/redemptions/{ids['A']}/fulfil", {"csrf": csrf, "back": back})
    assert (r.status_code, r.headers["location"]) == (303, f"{back}&done=fulfilled")
    page = client.get(r.headers["location"]).text
    assert shown(page, "mall-notice") == "已完成兑换"
    assert listed_ids(page) == []
    # Twice is refused and changes nothing.
    before = snapshot(factory, chain.org_id)
    r = post(client, f"/console/mall/redemptions/{ids['A']}/fulfil", {"csrf": csrf}, "en")
    assert r.status_code == 409
    assert shown(r.text, "action-error") == f"#{ids['A']} · This redemption is no longer pending"
    assert snapshot(factory, chain.org_id) == before

    csrf = console_login(client, chain, "b_mgr")
    r = post(
        client,
        f"/console/mall/redemptions/{ids['B']}/cancel",
        {"csrf": csrf, "reason": "缺货", "back": "https://evil.example/"},
    )
    assert (r.status_code, r.headers["location"]) == (303, "/console/mall/redemptions?done=cancelled")
    csrf = console_login(client, chain, "cs")
    r = post(client, f"/console/mall/redemptions/{ids['HQ']}/fulfil", {"csrf": csrf})
    assert r.status_code == 303
    with factory() as s:
        rows = s.execute(
            select(RewardRedemption.id, RewardRedemption.status, RewardRedemption.fulfilled_by)
            .where(RewardRedemption.org_id == chain.org_id)
            .order_by(RewardRedemption.id)
        ).all()
        stock = s.execute(
            select(RewardStock.store_key, RewardStock.quantity)
            .where(RewardStock.org_id == chain.org_id)
            .order_by(RewardStock.store_key)
        ).all()
        reason = s.scalar(
            select(AuditLog.reason).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "points.reward_cancelled"
            )
        )
    assert [tuple(x) for x in rows] == [
        (ids["A"], "fulfilled", "staff:a_clerk"),
        (ids["B"], "cancelled", ""),
        (ids["HQ"], "fulfilled", "staff:cs"),
    ]
    assert [tuple(x) for x in stock] == [(chain.stores["A"], 4), (chain.stores["B"], 5)]
    assert reason == "缺货"
    assert balance_of(factory, chain, member_no) == 850


def test_redemptions_export_follows_scope_and_filters(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    member_no, ids = mall_with_redemptions(client, chain, factory)
    console_login(client, chain, "hq")
    r = client.get("/console/mall/redemptions.xlsx?status=pending&lang=en")
    assert r.status_code == 200
    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0] == [
        "No.",
        "Redeemed at",
        "Member no.",
        "Code",
        "Reward",
        "Kind",
        "Store",
        "Points",
        "Cash part (¥)",
        "Status",
        "Redeemed by",
        "Handled",
        "Handled · Redeemed at",
    ]
    assert [(x[0], x[2], x[3], x[5], x[6], x[7], x[8], x[9]) for x in rows[1:]] == [
        (ids["HQ"], member_no, "MALLC-SPA", "Service", "HQ", 50, "0.00", "Pending"),
        (ids["B"], member_no, "MALLC-CUP", "Gift", "B", 100, "0.00", "Pending"),
        (ids["A"], member_no, "MALLC-CUP", "Gift", "A", 100, "0.00", "Pending"),
    ]
    console_login(client, chain, "a_mgr")
    r = client.get("/console/mall/redemptions.xlsx")
    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == [ids["A"]]
