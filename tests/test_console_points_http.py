"""The console's points pages over plain HTTP: who may change the program, rules, tiers and adjustments,
validation messages in zh/en, rule versions at a past moment, the simulation (nothing written) and the
overview numbers."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.common.types import Role
from onemember.db import set_clock
from onemember.orders.models import Order
from onemember.org.models import Staff
from onemember.points.calculations import expiry_for
from onemember.points.models import EarnRule, PointAccount, PointAdjustment, PointEntry, PointsProgram
from onemember.points.program_api import ProgramIn
from onemember.settings import get_settings
from onemember.tiers.models import MemberTier, TierSet
from onemember.web import console_points
from tests.factories import PASSWORD, Chain, _password_hash
from tests.helpers import checkout, line, register

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The app, with the points pages registered if app.py does not register them yet."""
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/console/points" for r in app.routes):
        app.include_router(console_points.router)
    with TestClient(app) as c:
        yield c


def console_login(client: TestClient, chain: Chain, username: str) -> str:
    """Log in through the console form; returns the CSRF token for later POSTs."""
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


def program_form(csrf: str, **changes: Any) -> dict[str, Any]:
    """The program form as the page sends it: today's defaults of make_chain's program, with changes."""
    form: dict[str, Any] = {
        "csrf": csrf,
        "earn_points_per_yuan": "1",
        "redeem_points_per_yuan": "100",
        "growth_per_yuan": "1",
        "pending_days": "0",
        "expiry_policy": "never",
        "expiry_months": "12",
        "expiry_fixed_month": "12",
        "expiry_fixed_day": "31",
        "expiry_years_after": "1",
        "reminder_days": "30",
        "allow_store_rules": "on",
        "store_bonus_max_multiplier_pct": "300",
        "store_bonus_max_budget": "100000",
        "transfer_max_per_month": "5000",
        "adjust_approval_threshold": "1000",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def program_row(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    with factory() as s:
        p = s.scalar(select(PointsProgram).where(PointsProgram.org_id == org_id))
        assert p is not None
        return {c.key: getattr(p, c.key) for c in PointsProgram.__table__.columns}


def count(factory: sessionmaker[Session], model: Any, *where: Any) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def audits(factory: sessionmaker[Session], org_id: int, action: str | None = None) -> int:
    where = [AuditLog.org_id == org_id] + ([AuditLog.action == action] if action else [])
    return count(factory, AuditLog, *where)


def text_of(page: str) -> str:
    """The page's visible text in one line, for exact-phrase assertions."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def json_loads(text: str) -> dict[str, Any]:
    return dict(json.loads(html.unescape(text)))


def rule_form(csrf: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"csrf": csrf, "kind": kind, **{k: str(v) for k, v in fields.items()}}


def test_clerk_auditor_and_cs_cannot_change_program_rules_or_tiers(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    made = client.post(
        "/console/points/rules",
        data=rule_form(csrf, "category_multiplier", multiplier_pct=200, category="母婴"),
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    with factory() as s:
        hq_rule = s.scalar(select(EarnRule.rule_key).where(EarnRule.org_id == chain.org_id))
    before_program = program_row(factory, chain.org_id)
    before_rules = count(factory, EarnRule, EarnRule.org_id == chain.org_id)
    before_audit = audits(factory, chain.org_id)
    for username in ("a_clerk", "auditor", "cs"):
        csrf = console_login(client, chain, username)
        page = client.get("/console/points/program")
        assert page.status_code == 200
        assert 'data-testid="readonly-note"' in page.text
        assert 'data-testid="program-save"' not in page.text
        rules_page = client.get("/console/points/rules")
        assert 'data-testid="rule-create"' not in rules_page.text
        assert 'data-testid="rule-revise"' not in rules_page.text
        attempts = [
            ("/console/points/program", program_form(csrf, earn_points_per_yuan="9")),
            ("/console/points/rules", rule_form(csrf, "base_rate", points_per_yuan=5)),
            ("/console/points/rules", rule_form(csrf, "store_bonus_multiplier", multiplier_pct=200)),
            (
                f"/console/points/rules/{hq_rule}/revise",
                rule_form(csrf, "category_multiplier", multiplier_pct=300),
            ),
            (f"/console/points/rules/{hq_rule}/end", {"csrf": csrf}),
            ("/console/points/tiers", {"csrf": csrf, "code": "x", "name": "x", "basis": "growth"}),
        ]
        for url, data in attempts:
            r = client.post(url, data=data, follow_redirects=False)
            assert r.status_code == 403, (username, url, r.text)
            assert "无权" in text_of(r.text)
    # A store manager may add store bonuses only: an HQ rule kind or an HQ rule's end is refused too.
    csrf = console_login(client, chain, "a_mgr")
    for url, data in [
        ("/console/points/program", program_form(csrf)),
        ("/console/points/rules", rule_form(csrf, "category_multiplier", multiplier_pct=300, category="x")),
        (f"/console/points/rules/{hq_rule}/end", {"csrf": csrf}),
    ]:
        assert client.post(url, data=data, follow_redirects=False).status_code == 403
    # A post without the CSRF token is refused before anything else.
    forged = client.post("/console/points/program", data=program_form("nope"), follow_redirects=False)
    assert forged.status_code == 403
    assert program_row(factory, chain.org_id) == before_program
    assert count(factory, EarnRule, EarnRule.org_id == chain.org_id) == before_rules
    assert count(factory, EarnRule, EarnRule.org_id == chain.org_id, EarnRule.valid_to.is_not(None)) == 0
    assert count(factory, TierSet, TierSet.org_id == chain.org_id) == 0
    assert audits(factory, chain.org_id) == before_audit


def test_program_errors_in_zh_and_en_change_nothing_and_a_save_is_audited(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    # The form shows every setting the API takes, so a save through the page sends them all.
    shown = {name for group in console_points.PROGRAM_GROUPS.values() for name in group}
    assert shown == set(ProgramIn.model_fields) == set(program_form("x")) - {"csrf"}
    csrf = console_login(client, chain, "hq")
    before = program_row(factory, chain.org_id)
    bad = program_form(csrf, redeem_points_per_yuan="0", expiry_months="abc", pending_days="91")
    r = client.post("/console/points/program", data=bad)
    assert r.status_code == 422
    page = text_of(r.text)
    assert "多少积分抵 1 元：不能小于 1" in page
    assert "滚动有效期（月）：须为整数" in page
    assert "积分冻结天数（退货期）：不能大于 90" in page
    assert 'value="abc"' in r.text  # what was typed stays in the form
    r = client.post("/console/points/program?lang=en", data=bad)
    assert r.status_code == 422
    page = text_of(r.text)
    assert "Points worth one yuan must be at least 1" in page
    assert "Rolling validity (months) must be a whole number" in page
    assert "Days points stay pending (return window) must be at most 90" in page
    assert program_row(factory, chain.org_id) == before
    assert audits(factory, chain.org_id, "points.program_changed") == 0

    good = program_form(csrf, earn_points_per_yuan="2", expiry_policy="rolling", expiry_months="6")
    good.pop("allow_store_rules")  # the switch turned off
    r = client.post("/console/points/program?lang=zh", data=good, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/points/program?saved=1"
    after = program_row(factory, chain.org_id)
    assert (after["earn_points_per_yuan"], after["expiry_policy"], after["expiry_months"]) == (
        2,
        "rolling",
        6,
    )
    assert after["allow_store_rules"] is False
    with factory() as s:
        entry = s.scalar(
            select(AuditLog).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "points.program_changed"
            )
        )
        assert entry is not None
        assert entry.actor == "staff:hq"
        assert entry.details == {
            "earn_points_per_yuan": [1, 2],
            "expiry_policy": ["never", "rolling"],
            "expiry_months": [12, 6],
            "allow_store_rules": [True, False],
        }
    shown = client.get("/console/points/program?saved=1")
    assert 'data-testid="saved-notice"' in shown.text
    assert 'name="earn_points_per_yuan"' in shown.text
    assert 'value="2"' in shown.text


def test_rule_errors_are_shown_and_store_managers_stay_inside_hq_caps(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    r = client.post("/console/points/rules", data=rule_form(csrf, "category_multiplier", multiplier_pct=200))
    assert r.status_code == 422
    assert "规则类型 category_multiplier 需要字段 category" in text_of(r.text)
    assert 'value="200"' in r.text
    r = client.post(
        "/console/points/rules?lang=en", data=rule_form(csrf, "category_multiplier", multiplier_pct=200)
    )
    assert "A category_multiplier rule needs category" in text_of(r.text)
    r = client.post(
        "/console/points/rules?lang=zh", data=rule_form(csrf, "sku_multiplier", multiplier_pct=50, sku="MILK")
    )
    assert r.status_code == 422
    assert "multiplier_pct 须在 100 到 1000 之间" in text_of(r.text)
    r = client.post(
        "/console/points/rules", data=rule_form(csrf, "order_cap", cap_points="lots", valid_to="tomorrow")
    )
    assert r.status_code == 422
    page = text_of(r.text)
    assert "积分上限：须为整数" in page
    assert "结束时间：日期时间格式不正确" in page
    assert count(factory, EarnRule, EarnRule.org_id == chain.org_id) == 0

    csrf = console_login(client, chain, "a_mgr")
    page = client.get("/console/points/rules")
    assert 'data-testid="rule-kind-fixed"' in page.text  # only store bonuses for a store manager
    assert "最多 300% ，预算最多 100000 积分" in text_of(page.text)
    ends = (datetime.now(SHANGHAI) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    over = rule_form(
        csrf, "store_bonus_multiplier", multiplier_pct=500, budget_points=1000, store_code="A", valid_to=ends
    )
    r = client.post("/console/points/rules", data=over)
    assert r.status_code == 422
    assert "门店加倍不得超过总部上限 300%" in text_of(r.text)
    other = {**over, "multiplier_pct": "200", "store_code": "B"}
    r = client.post("/console/points/rules", data=other)
    assert r.status_code == 403
    assert "该门店不在您的权限范围内" in text_of(r.text)
    assert count(factory, EarnRule, EarnRule.org_id == chain.org_id) == 0
    ok = {**over, "multiplier_pct": "200", "name": "周年庆"}
    r = client.post("/console/points/rules", data=ok, follow_redirects=False)
    assert r.status_code == 303, r.text
    with factory() as s:
        row = s.scalar(select(EarnRule).where(EarnRule.org_id == chain.org_id))
        assert row is not None
        assert (row.kind, row.multiplier_pct, row.budget_points, row.store_id) == (
            "store_bonus_multiplier",
            200,
            1000,
            chain.stores["A"],
        )
        assert row.valid_to is not None
        assert row.valid_to.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M") == ends
    listed = client.get("/console/points/rules?done=created")
    assert "门店限时 2 倍积分（周年庆）" in text_of(listed.text)
    assert 'data-testid="rule-revise"' in listed.text
    # Store B's manager sees no store bonus of store A, and may not revise it.
    csrf_b = console_login(client, chain, "b_mgr")
    assert "周年庆" not in client.get("/console/points/rules").text
    r = client.post(
        f"/console/points/rules/{row.rule_key}/end", data={"csrf": csrf_b}, follow_redirects=False
    )
    assert r.status_code == 404
    assert count(factory, EarnRule, EarnRule.valid_to.is_not(None), EarnRule.rule_key == row.rule_key) == 1


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock(datetime(2026, 11, 25, 3, 0, tzinfo=UTC))  # Wednesday 11:00 in Shanghai
    set_clock(c)
    yield c
    set_clock(None)


def test_a_revision_is_visible_in_the_versions_at_a_past_moment(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    t0 = clock.now
    csrf = console_login(client, chain, "hq")
    r = client.post(
        "/console/points/rules",
        data=rule_form(csrf, "sku_multiplier", name="牛奶加倍", multiplier_pct=200, sku="MILK"),
        follow_redirects=False,
    )
    assert r.status_code == 303
    with factory() as s:
        key = s.scalar(select(EarnRule.rule_key).where(EarnRule.org_id == chain.org_id))
    assert key is not None
    clock.now = t0 + timedelta(days=1)
    csrf = console_login(client, chain, "hq")  # staff sessions last 12 hours
    form = client.get(f"/console/points/rules/{key}/revise")
    assert form.status_code == 200
    assert 'value="MILK"' in form.text
    assert 'value="200"' in form.text
    r = client.post(
        f"/console/points/rules/{key}/revise",
        data=rule_form(csrf, "sku_multiplier", name="牛奶加倍", multiplier_pct=300, sku="MILK"),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/console/points/rules?done=revised#rule-{key}"

    def shown(at: str | None) -> tuple[list[str], str]:
        page = client.get("/console/points/rules", params={"at": at} if at else {})
        assert page.status_code == 200
        versions = re.findall(r'data-testid="rule-version">(v\d+)<', page.text)
        return versions, text_of(page.text)

    then = (t0 + timedelta(hours=1)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
    versions, page = shown(then)
    assert versions == ["v1"]
    assert "商品 MILK 2 倍积分" in page
    assert "正在查看该时间点生效的规则版本" in page
    versions, page = shown(None)
    assert versions == ["v2"]
    assert "商品 MILK 3 倍积分" in page
    before_t0 = (t0 - timedelta(hours=1)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
    assert shown(before_t0)[0] == []
    history = client.get(f"/console/points/rules/{key}/revise").text
    assert history.count('data-testid="history-row"') == 2
    # Ending the rule takes it out of "now" and leaves the past alone.
    clock.now = t0 + timedelta(days=2)
    csrf = console_login(client, chain, "hq")
    r = client.post(f"/console/points/rules/{key}/end", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert shown(None)[0] == []
    assert shown(then)[0] == ["v1"]
    assert audits(factory, chain.org_id, "points.rule_revised") == 1
    assert audits(factory, chain.org_id, "points.rule_ended") == 1
    xlsx = client.get("/console/points/rules.xlsx", params={"at": then})
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert [(r[0], r[1], r[4]) for r in rows[1:]] == [(key, 1, "商品 MILK 2 倍积分")]


def test_simulation_shows_exact_points_line_by_line_and_writes_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    for data in (
        rule_form(csrf, "base_rate", points_per_yuan=2),
        rule_form(csrf, "category_multiplier", multiplier_pct=200, category="母婴"),
        rule_form(csrf, "exclude_sku", sku="TOBACCO"),
    ):
        assert client.post("/console/points/rules", data=data, follow_redirects=False).status_code == 303
    member = register(client, chain, "A", "18300001001")
    before = (
        count(factory, PointEntry),
        count(factory, PointAccount),
        count(factory, Order),
        count(factory, AuditLog),
    )
    basket = {
        "csrf": csrf,
        "member_no": member["member_no"],
        "store_code": "B",
        "sku": ["MILK", "TOBACCO", "RICE", ""],
        "category": ["母婴", "烟酒", "食品", ""],
        "quantity": ["2", "1", "1", "1"],
        "price": ["50.00", "30", "12.34", ""],
    }
    r = client.post("/console/points/rules/simulate", data=basket, headers={"HX-Request": "true"})
    assert r.status_code == 200, r.text
    points = dict(re.findall(r'data-testid="sim-line-points-(\d)">(\d+)<', r.text))
    # base 2/yuan: 200, 0 (excluded), 24; 母婴 2×: +200
    assert points == {"1": "400", "2": "0", "3": "24"}
    assert 'data-testid="sim-points">合计得积分 424<' in r.text
    why = text_of(r.text)
    assert "品类「母婴」2 倍积分" in why
    assert "商品 TOBACCO 不积分" in why
    assert "模拟结果，未写入任何数据" in why
    after = (
        count(factory, PointEntry),
        count(factory, PointAccount),
        count(factory, Order),
        count(factory, AuditLog),
    )
    assert after == before
    order = checkout(
        client,
        chain,
        "B",
        {"member_no": member["member_no"]},
        [line("MILK", 2, 5000, "母婴"), line("TOBACCO", 1, 3000, "烟酒"), line("RICE", 1, 1234)],
    )
    assert order["points_earned"] == 424
    # Errors come back in the panel: an unknown member, a bad price (without htmx: the whole page).
    r = client.post(
        "/console/points/rules/simulate", data={**basket, "member_no": "M404"}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 404
    assert 'data-testid="form-errors"' in r.text
    r = client.post("/console/points/rules/simulate", data={**basket, "price": ["5.001", "", "", ""]})
    assert r.status_code == 422
    assert "第 1 行 · 须为金额，如 12.50" in text_of(r.text)
    r = client.post("/console/points/rules/simulate", data={**basket, "quantity": ["0", "1", "1", "1"]})
    assert r.status_code == 422
    assert "第 1 行 · 数量：不能小于 1" in text_of(r.text)
    assert 'data-testid="rules-table"' in r.text


def test_overview_numbers_store_filter_and_export(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    r = client.post(
        "/console/points/program",
        data=program_form(csrf, expiry_policy="rolling", expiry_months="6"),
        follow_redirects=False,
    )
    assert r.status_code == 303
    one = register(client, chain, "A", "18300001002")
    two = register(client, chain, "B", "18300001003")
    checkout(client, chain, "A", {"member_no": one["member_no"]}, [line("R1", 2, 15000)])  # 300 points
    checkout(client, chain, "B", {"member_no": two["member_no"]}, [line("R2", 1, 12050)])  # 120 points
    checkout(client, chain, "B", {"member_no": one["member_no"]}, [line("R3", 1, 5000)], redeem=100)  # 49
    page = client.get("/console/points")
    assert page.status_code == 200
    kpis = dict(re.findall(r'data-testid="kpi-(\w+)">([^<]+)<', page.text))
    assert kpis == {
        "outstanding": "369",
        "liability": "¥3.69",
        "issued": "469",
        "redeemed": "100",
        "expired": "0",
        "breakage": "0.00%",
    }
    month = expiry_for(datetime.now(UTC), "rolling", "Asia/Shanghai", months=6)
    assert month is not None
    expected_month = (month.astimezone(SHANGHAI) - timedelta(seconds=1)).strftime("%Y-%m")
    chart = re.search(r'data-testid="chart-expiring" data-chart=\'([^\']+)\'', page.text)
    assert chart is not None
    option = json_loads(chart.group(1))
    expiring = dict(zip(option["xAxis"]["data"], option["series"][0]["data"], strict=True))
    assert expiring[expected_month] == 369
    assert sum(expiring.values()) == 369
    rows = re.findall(r'data-testid="issued-(\w)">(\d+)<', page.text)
    assert rows == [("A", "300"), ("B", "169")]
    assert 'data-testid="big-adjustments"' in page.text
    only_b = client.get("/console/points", params={"store": "B"})
    kpis = dict(re.findall(r'data-testid="kpi-(\w+)">([^<]+)<', only_b.text))
    # B issued 169 and redeemed 100 (taken from store A's lot: outstanding counts the lots' stores).
    assert (kpis["issued"], kpis["redeemed"], kpis["outstanding"]) == ("169", "100", "169")
    xlsx = client.get("/console/points/stores.xlsx", params={"sort": "store"})
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    assert list(sheet.iter_rows(values_only=True)) == [
        ("门店编号", "门店", "发放", "使用", "过期"),
        ("A", "上海徐汇店", 300, 0, 0),
        ("B", "杭州西湖店", 169, 100, 0),
    ]
    console_login(client, chain, "a_mgr")
    mine = client.get("/console/points")
    assert dict(re.findall(r'data-testid="kpi-(\w+)">([^<]+)<', mine.text))["issued"] == "300"
    assert 'data-testid="big-adjustments"' not in mine.text
    assert 'data-testid="scope-filter"' not in mine.text


def test_tier_set_errors_creation_and_distribution(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    page = client.get("/console/points/tiers")
    assert 'data-testid="tier-form"' in page.text

    def tier_form(**changes: Any) -> dict[str, Any]:
        form: dict[str, Any] = {
            "csrf": csrf,
            "code": "std",
            "name": "会员等级",
            "basis": "growth",
            "grace_days": "30",
            "level_code": ["silver", "gold", ""],
            "level_name": ["银卡", "金卡", ""],
            "level_threshold": ["0", "500", ""],
            "level_keep_threshold": ["0", "300", ""],
            "level_points_multiplier_pct": ["100", "150", "100"],
            "level_discount_pct": ["0", "5", "0"],
            "level_birthday_gift_points": ["0", "200", "0"],
            "level_free_service_uses": ["0", "1", "0"],
        }
        form.update(changes)
        return form

    r = client.post("/console/points/tiers", data=tier_form(level_threshold=["10", "500", ""]))
    assert r.status_code == 422
    assert "第一个等级的门槛须为 0" in text_of(r.text)
    r = client.post("/console/points/tiers", data=tier_form(code="", level_keep_threshold=["0", "x", ""]))
    assert r.status_code == 422
    page = text_of(r.text)
    assert "代码：至少 1 个字符" in page
    assert "第 2 级 · 保级门槛：须为整数" in page
    assert count(factory, TierSet, TierSet.org_id == chain.org_id) == 0
    r = client.post("/console/points/tiers", data=tier_form(), follow_redirects=False)
    assert r.status_code == 303
    member = register(client, chain, "A", "18300001004")
    checkout(client, chain, "A", {"member_no": member["member_no"]}, [line("BIG", 1, 60000)])
    other = register(client, chain, "A", "18300001005")
    checkout(client, chain, "A", {"member_no": other["member_no"]}, [line("SMALL", 1, 1000)])
    page = client.get("/console/points/tiers")
    counts = dict(re.findall(r'data-testid="level-members-(\w+)">(\d+)<', page.text))
    assert counts == {"silver": "1", "gold": "1"}
    assert 'data-testid="tier-form"' not in page.text
    assert count(factory, MemberTier, MemberTier.org_id == chain.org_id) == 2
    xlsx = client.get("/console/points/tiers.xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    assert list(sheet.iter_rows(values_only=True))[1:] == [
        ("silver", "银卡", 0, 0, 100, 0, 0, 0, 1),
        ("gold", "金卡", 500, 300, 150, 5, 200, 1, 1),
    ]
    assert audits(factory, chain.org_id, "tiers.set_created") == 1


def test_adjustment_above_threshold_waits_for_a_second_hq_admin(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    with factory() as s:
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
    member = register(client, chain, "A", "18300001006")
    no = member["member_no"]
    csrf = console_login(client, chain, "hq")
    r = client.post(
        "/console/points/adjustments",
        data={"csrf": csrf, "member_no": no, "points": "x", "reason": "补偿"},
    )
    assert r.status_code == 422
    assert "积分：须为整数" in text_of(r.text)
    r = client.post(
        "/console/points/adjustments", data={"csrf": csrf, "member_no": no, "points": "1500", "reason": " "}
    )
    assert r.status_code == 422
    assert "请填写调整原因" in text_of(r.text)
    assert count(factory, PointAdjustment) == 0
    r = client.post(
        "/console/points/adjustments",
        data={"csrf": csrf, "member_no": no, "points": "1500", "reason": "客诉补偿", "store_code": "A"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/points/adjustments?done=waiting"
    with factory() as s:
        adj = s.scalar(select(PointAdjustment).where(PointAdjustment.org_id == chain.org_id))
        assert adj is not None
        assert adj.status == "pending"
    page = client.get("/console/points/adjustments")
    assert f'data-testid="own-{adj.id}"' in page.text
    assert f'data-testid="approve-{adj.id}"' not in page.text
    r = client.post(f"/console/points/adjustments/{adj.id}/approve", data={"csrf": csrf})
    assert r.status_code == 403
    assert "不能审批自己提交的积分调整" in text_of(r.text)
    csrf = console_login(client, chain, "auditor")
    page = client.get("/console/points/adjustments")
    assert f'data-testid="pending-{adj.id}"' in page.text
    assert 'data-testid="adjust-form"' not in page.text
    r = client.post(f"/console/points/adjustments/{adj.id}/approve", data={"csrf": csrf})
    assert r.status_code == 403
    assert count(factory, PointEntry, PointEntry.kind == "adjust") == 0

    csrf = console_login(client, chain, "hq2")
    r = client.post(
        f"/console/points/adjustments/{adj.id}/approve",
        data={"csrf": csrf, "note": "核实无误"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with factory() as s:
        done = s.get(PointAdjustment, adj.id)
        assert done is not None
        assert (done.status, done.decided_by) == ("applied", "staff:hq2")
        account = s.scalar(select(PointAccount).where(PointAccount.member_id == done.member_id))
        assert account is not None
        assert account.balance == 1500
    page = client.get("/console/points/adjustments?status=applied")
    assert f'data-testid="adjustment-status-{adj.id}"' in page.text
    assert "已生效" in text_of(page.text)
    overview = client.get("/console/points")
    assert re.findall(r'data-testid="big-adjustment-points">([^<]+)<', overview.text) == ["+1,500"]
    # Within the threshold an adjustment applies at once.
    r = client.post(
        "/console/points/adjustments",
        data={"csrf": csrf, "member_no": no, "points": "-200", "reason": "误发"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/console/points/adjustments?done=applied"
    assert 'data-testid="adj-notice">调整已生效<' in client.get(r.headers["location"]).text
    xlsx = client.get("/console/points/adjustments.xlsx", params={"status": "applied"})
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    assert [(row[2], row[4]) for row in list(sheet.iter_rows(values_only=True))[1:]] == [
        (-200, "已生效"),
        (1500, "已生效"),
    ]
    # A clerk may not ask for one.
    csrf = console_login(client, chain, "a_clerk")
    r = client.post(
        "/console/points/adjustments", data={"csrf": csrf, "member_no": no, "points": "5", "reason": "x"}
    )
    assert r.status_code == 403
    assert count(factory, PointAdjustment) == 2
