"""The console's coupons and service packages pages over plain HTTP: pages in each user's scope with exact
numbers, the template forms (every kind, errors in zh/en writing nothing), stop and resume, issuing by
staff and as compensation, gifting, a template's coupons with paging and Excel, and a member's packages
with sale, use, refund and grant. Wrong roles, stores outside the scope and missing CSRF change nothing."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.members.models import Member
from onemember.org.models import Brand, Region, Staff
from onemember.packages.calculations import expiry_for
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage, ServicePackageStore
from onemember.points.calculations import end_of_local_day
from tests.factories import PASSWORD, Chain
from tests.helpers import line, login, register

SHANGHAI = ZoneInfo("Asia/Shanghai")


# --- helpers -------------------------------------------------------------------------------------------


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


def text_of(page: str) -> str:
    """The page's visible text in one line, for exact-phrase assertions."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def shown(page: str, name: str) -> str:
    """The visible text inside the element carrying ``data-testid=name`` (nested tags of its kind counted)."""
    opening = re.search(rf'<(\w+)[^>]*data-testid="{re.escape(name)}"[^>]*>', page)
    assert opening is not None, f"no element {name}"
    tag, depth, at = opening.group(1), 1, opening.end()
    for match in re.finditer(rf"<(/?){tag}\b[^>]*>", page[at:]):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return text_of(page[at : at + match.start()]).strip()
    raise AssertionError(f"element {name} is not closed")


def chart(page: str, name: str) -> dict[str, Any]:
    found = re.search(rf"data-testid=\"{re.escape(name)}\" data-chart='([^']*)'", page)
    assert found is not None, f"no chart {name}"
    return dict(json.loads(html.unescape(found.group(1))))


def count(factory: sessionmaker[Session], model: Any, *where: Any) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def audits(factory: sessionmaker[Session], org_id: int, action: str | None = None) -> int:
    where = [AuditLog.org_id == org_id] + ([AuditLog.action == action] if action else [])
    return count(factory, AuditLog, *where)


def api_template(client: TestClient, hq: dict[str, str], **body: Any) -> None:
    base = {"name": body["code"], "kind": "amount_off", "amount_fen": 1000, "valid_days": 30}
    r = client.post("/api/v1/coupon-templates", json={**base, **body}, headers=hq)
    assert r.status_code == 201, r.text


def api_issue(
    client: TestClient, hq: dict[str, str], member_no: str, template: str, store: str | None
) -> str:
    r = client.post(
        f"/api/v1/members/{member_no}/coupons",
        json={"template_code": template, "store_code": store},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def api_package(client: TestClient, hq: dict[str, str], **body: Any) -> None:
    base = {"name": "洗车 10 次卡", "service_code": "CARWASH", "uses": 10, "price_fen": 30000}
    r = client.post("/api/v1/service-packages", json={**base, **body}, headers=hq)
    assert r.status_code == 201, r.text


def template_row(factory: sessionmaker[Session], org_id: int, code: str) -> CouponTemplate:
    with factory() as s:
        found = s.scalar(
            select(CouponTemplate).where(CouponTemplate.org_id == org_id, CouponTemplate.code == code)
        )
        assert found is not None
        return found


def coupons_of(factory: sessionmaker[Session], org_id: int) -> list[Coupon]:
    with factory() as s:
        return list(s.scalars(select(Coupon).where(Coupon.org_id == org_id).order_by(Coupon.id)))


def coupon_state(factory: sessionmaker[Session], org_id: int) -> list[tuple[str, int, str, int | None]]:
    return [(c.code, c.member_id, c.status, c.issuing_store_id) for c in coupons_of(factory, org_id)]


def member_id(factory: sessionmaker[Session], org_id: int, member_no: str) -> int:
    with factory() as s:
        found = s.scalar(select(Member.id).where(Member.org_id == org_id, Member.member_no == member_no))
        assert found is not None
        return found


def staff_id(factory: sessionmaker[Session], org_id: int, username: str) -> int:
    with factory() as s:
        found = s.scalar(select(Staff.id).where(Staff.org_id == org_id, Staff.username == username))
        assert found is not None
        return found


def redirect_query(response: Any) -> dict[str, str]:
    assert response.status_code == 303, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def template_form(csrf: str, **fields: Any) -> dict[str, Any]:
    """The create form as the page posts it (the page's defaults, with changes; None drops a field)."""
    form: dict[str, Any] = {
        "csrf": csrf,
        "kind": "amount_off",
        "threshold": "0",
        "accept_scope": "all",
        "cross_store": "on",
        "valid_days": "30",
        "combines_with_tier_discount": "on",
        "per_order_limit": "1",
        "return_policy": "restore",
        "bearer": "hq",
    }
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


def shanghai_midnight_utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=SHANGHAI).astimezone(UTC)


# --- pages in scope ------------------------------------------------------------------------------------


def test_pages_show_each_user_the_numbers_of_their_scope(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(
        app_client,
        hq,
        code="M300-50",
        name="满300减50",
        threshold_fen=30000,
        amount_fen=5000,
        budget_fen=20000,
    )
    api_template(app_client, hq, code="NEW10", name="新客立减", amount_fen=1000)
    m = register(app_client, chain, "A", "13900000001")
    at_a = api_issue(app_client, hq, m["member_no"], "M300-50", "A")
    api_issue(app_client, hq, m["member_no"], "M300-50", "B")
    body = {
        "member": {"member_no": m["member_no"]},
        "lines": [line("COAT", 1, 32000, "服装")],
        "coupon_codes": [at_a],
        "payments": [{"method": "wechat_pay", "amount_fen": 27000}],
    }
    assert app_client.post("/api/v1/orders", json=body, headers=chain.key("B")).status_code == 201
    api_package(app_client, hq, code="WASH10")
    sold = app_client.post(
        f"/api/v1/members/{m['member_no']}/packages",
        json={"package_code": "WASH10", "store_code": "A", "payment_method": "cash", "amount_fen": 30000},
        headers=hq,
    )
    assert sold.status_code == 201, sold.text
    used = app_client.post(
        f"/api/v1/member-packages/{sold.json()['id']}/uses", json={"store_code": "B"}, headers=hq
    )
    assert used.status_code == 201, used.text

    console_login(app_client, chain, "hq")
    page = app_client.get("/console/coupons")
    assert page.status_code == 200
    assert shown(page.text, "scope-label") == "范围: 全部门店"
    assert 'data-testid="template-create"' in page.text
    assert 'data-testid="readonly-note"' not in page.text
    assert (shown(page.text, "issued-M300-50"), shown(page.text, "redeemed-M300-50")) == ("2", "1")
    assert shown(page.text, "value-M300-50") == "满¥300.00减¥50.00"
    assert shown(page.text, "budget-M300-50").startswith("¥50.00 / ¥200.00")
    flows = chart(page.text, "chart-flows")
    assert flows["xAxis"]["data"] == ["满300减50", "新客立减"]
    assert [s["data"] for s in flows["series"]] == [[2, 0], [1, 0]]
    budget = chart(page.text, "chart-budget")
    assert budget["yAxis"]["data"] == ["满300减50"]
    assert [s["data"] for s in budget["series"]] == [[50.0], [150.0]]
    detail = app_client.get("/console/coupons/M300-50")
    assert detail.status_code == 200
    assert shown(detail.text, "by-store-count-B") == "1"
    assert shown(detail.text, "by-store-discount-B") == "¥50.00"
    assert (shown(detail.text, "kpi-issued"), shown(detail.text, "kpi-redeemed")) == ("2", "1")
    assert shown(detail.text, "kpi-rate") == "50.0%"
    by_store = chart(detail.text, "chart-by-store")
    assert by_store["xAxis"]["data"] == ["杭州西湖店"]
    assert [s["data"] for s in by_store["series"]] == [[1], [50.0]]
    assert len(re.findall(r'data-testid="coupon-[0-9A-Z]{12}"', detail.text)) == 2
    packages = app_client.get("/console/packages")
    assert (shown(packages.text, "sold-WASH10"), shown(packages.text, "used-WASH10")) == ("1", "1")
    assert shown(packages.text, "revenue-WASH10") == "¥300.00"

    # A store manager sees their store: what A issued (1) and redeemed (0), with the chain's totals beside.
    console_login(app_client, chain, "a_mgr")
    page = app_client.get("/console/coupons")
    assert page.status_code == 200
    assert shown(page.text, "scope-label") == "范围: 上海徐汇店"
    assert 'data-testid="readonly-note"' in page.text
    assert 'data-testid="template-create"' not in page.text
    assert 'data-testid="stop-M300-50"' not in page.text
    assert (shown(page.text, "issued-M300-50"), shown(page.text, "redeemed-M300-50")) == ("1", "0")
    assert shown(page.text, "chain-flow-M300-50") == "全部门店: 2 / 1"
    detail = app_client.get("/console/coupons/M300-50")
    assert 'data-testid="by-store-B"' not in detail.text
    assert re.findall(r'data-testid="coupon-([0-9A-Z]{12})"', detail.text) == [at_a]
    packages = app_client.get("/console/packages")
    assert (shown(packages.text, "sold-WASH10"), shown(packages.text, "used-WASH10")) == ("1", "0")
    holders = app_client.get("/console/packages/members", params={"q": "139 0000 0001"})
    assert holders.status_code == 200
    assert shown(holders.text, f"pkg-left-{sold.json()['id']}") == "剩余 9 / 10 次"
    assert "杭州西湖店" in shown(holders.text, f"use-{used.json()['id']}")

    # B's manager sees B: the coupon B issued and the one redeemed at B, and the use B performed.
    console_login(app_client, chain, "b_mgr")
    page = app_client.get("/console/coupons?lang=en")
    assert (shown(page.text, "issued-M300-50"), shown(page.text, "redeemed-M300-50")) == ("1", "1")
    assert shown(page.text, "value-M300-50") == "¥50.00 off from ¥300.00"
    detail = app_client.get("/console/coupons/M300-50")
    assert shown(detail.text, "by-store-count-B") == "1"
    assert len(re.findall(r'data-testid="coupon-[0-9A-Z]{12}"', detail.text)) == 2
    packages = app_client.get("/console/packages")
    assert (shown(packages.text, "sold-WASH10"), shown(packages.text, "used-WASH10")) == ("0", "1")

    # An auditor reads every page and is offered no form.
    console_login(app_client, chain, "auditor")
    for url in (
        "/console/coupons",
        "/console/coupons/issue",
        "/console/packages",
        "/console/packages/members",
    ):
        r = app_client.get(url)
        assert r.status_code == 200, url
        assert 'data-testid="readonly-note"' in r.text, url
        assert r.text.count('method="post"') == 1, url  # the log-out button alone


# --- coupon templates ----------------------------------------------------------------------------------


def test_hq_creates_every_kind_through_the_form_with_exact_rows(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "hq")
    made = app_client.post(
        "/console/coupons",
        data=template_form(
            csrf,
            code="M300-50",
            name="满300减50",
            threshold="300",
            amount="50.00",
            percent_off="20",  # not a field of this kind: ignored, not an error
            categories="服装, 鞋，服装",
            accept_scope="brand",
            accept_brand_code="home",
            cross_store=None,
            valid_from="2031-01-01",
            valid_to="2031-12-31",
            valid_days="",
            exclusive="on",
            combines_with_tier_discount=None,
            per_member_limit="2",
            total_quantity="1000",
            budget="20000",
            return_policy="void",
            giftable="on",
            bearer="split",
            issuer_pct="30",
        ),
        follow_redirects=False,
    )
    assert redirect_query(made) == {"done": "created", "code": "M300-50"}
    with factory() as s:
        home = s.scalar(select(Brand.id).where(Brand.org_id == chain.org_id, Brand.code == "home"))
        east = s.scalar(select(Region.id).where(Region.org_id == chain.org_id, Region.code == "east"))
    t = template_row(factory, chain.org_id, "M300-50")
    assert (t.name, t.kind, t.threshold_fen, t.amount_fen, t.percent_off, t.cap_fen) == (
        "满300减50",
        "amount_off",
        30000,
        5000,
        0,
        None,
    )
    assert (t.skus, t.categories, t.accept_scope, t.accept_brand_id, t.accept_store_ids) == (
        [],
        ["服装", "鞋"],
        "brand",
        home,
        [],
    )
    assert (t.cross_store, t.valid_from, t.valid_to, t.valid_days) == (
        False,
        shanghai_midnight_utc(2031, 1, 1),
        shanghai_midnight_utc(2032, 1, 1),
        None,
    )
    assert (t.exclusive, t.stack_group, t.combines_with_tier_discount, t.per_order_limit) == (
        True,
        None,
        False,
        1,
    )
    assert (t.per_member_limit, t.total_quantity, t.budget_fen, t.issued_count, t.budget_used) == (
        2,
        1000,
        2000000,
        0,
        0,
    )
    assert (t.return_policy, t.giftable, t.bearer, t.issuer_pct, t.active, t.created_by) == (
        "void",
        True,
        "split",
        30,
        True,
        "staff:hq",
    )
    assert audits(factory, chain.org_id, "coupons.template_created") == 1

    forms = [
        dict(
            code="P20",
            name="八折券",
            kind="percent_off",
            threshold="100",
            percent_off="20",
            cap="30",
            accept_scope="stores",
            accept_store_codes=["C", "A"],
            valid_days="15",
            stack_group="weekend",
        ),
        dict(
            code="FIX9",
            name="9.9元一口价",
            kind="fixed_price",
            price="9.90",
            skus="SKU1 SKU2",
            accept_scope="region",
            accept_region_code="east",
        ),
        dict(
            code="FREE-TEA",
            name="免费奶茶",
            kind="free_item",
            face_value="25",
            pay_difference="on",
            categories="饮品",
            accept_scope="issuing_store",
            bearer="issuing_store",
        ),
        dict(code="SWAP", name="兑换券", kind="exchange", skus="GIFT-BOX", bearer="redeeming_store"),
        dict(code="WASH", name="洗车券", kind="service", categories="洗车", pay_difference="on"),
    ]
    for fields in forms:
        r = app_client.post("/console/coupons", data=template_form(csrf, **fields), follow_redirects=False)
        assert redirect_query(r)["done"] == "created", fields["code"]
    p20 = template_row(factory, chain.org_id, "P20")
    assert (p20.kind, p20.threshold_fen, p20.percent_off, p20.cap_fen, p20.valid_days, p20.stack_group) == (
        "percent_off",
        10000,
        20,
        3000,
        15,
        "weekend",
    )
    assert (p20.accept_scope, p20.accept_store_ids) == (
        "stores",
        sorted([chain.stores["A"], chain.stores["C"]]),
    )
    fix = template_row(factory, chain.org_id, "FIX9")
    assert (fix.kind, fix.price_fen, fix.skus, fix.accept_scope, fix.accept_region_id) == (
        "fixed_price",
        990,
        ["SKU1", "SKU2"],
        "region",
        east,
    )
    tea = template_row(factory, chain.org_id, "FREE-TEA")
    assert (tea.face_value_fen, tea.pay_difference, tea.categories, tea.accept_scope, tea.bearer) == (
        2500,
        True,
        ["饮品"],
        "issuing_store",
        "issuing_store",
    )
    swap = template_row(factory, chain.org_id, "SWAP")
    assert (swap.kind, swap.face_value_fen, swap.pay_difference, swap.skus, swap.bearer) == (
        "exchange",
        None,
        False,
        ["GIFT-BOX"],
        "redeeming_store",
    )
    wash = template_row(factory, chain.org_id, "WASH")
    assert (wash.kind, wash.face_value_fen, wash.pay_difference, wash.categories) == (
        "service",
        None,
        True,
        ["洗车"],
    )
    assert audits(factory, chain.org_id, "coupons.template_created") == 6

    page = app_client.get("/console/coupons")
    assert shown(page.text, "value-P20") == "8折（减20%） · 最多减¥30.00 · 满¥100.00可用"
    assert shown(page.text, "stores-P20") == "门店：上海徐汇店、北京朝阳店 可在其他门店核销"
    assert shown(page.text, "value-FIX9") == "一口价¥9.90"
    assert shown(page.text, "value-FREE-TEA") == "面值¥25.00"
    assert shown(page.text, "stores-FREE-TEA") == "仅发券门店 跨店价格更高时会员补差价"
    assert shown(page.text, "value-SWAP") == "整件抵扣"
    assert shown(page.text, "stores-SWAP") == "全部门店 可在其他门店核销 不补差价，整件抵扣"
    assert shown(page.text, "validity-M300-50") == "2031-01-01 至 2031-12-31"
    assert shown(page.text, "stores-M300-50") == "品牌：优家 仅限发券门店核销"
    assert shown(page.text, "stacking-M300-50") == "不与其他券同用 不与会员价同享 每单限用 1 张"
    assert shown(page.text, "limits-M300-50") == "每人限领 2 张 总量 1,000 张 剩余 1,000 张"
    # The kind's value inputs come with the kind (htmx swaps them in).
    values = app_client.get("/console/coupons/form/values", params={"kind": "percent_off"})
    assert re.findall(r'name="(\w+)"', values.text) == ["threshold", "percent_off", "cap"]


def test_template_form_errors_in_zh_and_en_write_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="TAKEN")
    csrf = console_login(app_client, chain, "hq")
    before = (
        count(factory, CouponTemplate, CouponTemplate.org_id == chain.org_id),
        audits(factory, chain.org_id),
    )
    cases: list[tuple[dict[str, Any], int, str, str, str]] = [
        (
            {"code": "X1", "name": "x", "threshold": "abc", "amount": "5"},
            422,
            "threshold",
            "使用门槛（元）：须为金额，如 12.50",
            "Threshold (yuan) must be an amount such as 12.50",
        ),
        (
            {"code": "X2", "name": "x", "amount": "5", "per_order_limit": "0"},
            422,
            "per_order_limit",
            "每单限用（张）：不能小于 1",
            "Per order (coupons) must be at least 1",
        ),
        (
            {"code": "X3", "name": "x", "kind": "percent_off", "percent_off": "0"},
            422,
            "percent_off",
            "折扣券的折扣须在 1 到 99 之间",
            "percent_off must be 1 to 99",
        ),
        (
            {"code": "X4", "name": "x", "kind": "fixed_price", "price": "9.9"},
            422,
            "skus",
            "商品类优惠券须指定适用商品或品类",
            "An item coupon must name its products or categories",
        ),
        (
            {"code": "X5", "name": "x", "amount": "5", "valid_days": ""},
            422,
            "valid_to",
            "请设置固定有效期 valid_to 或领取后有效天数 valid_days",
            "Give fixed dates (valid_to) or days after issue (valid_days)",
        ),
        (
            {"code": "X6", "name": "x", "amount": "5", "valid_to": "2031-13-01"},
            422,
            "valid_to",
            "结束日期（含）：日期格式不正确",
            "End date (inclusive) is not a valid date",
        ),
        (
            {"code": "X7", "name": "x", "amount": "5", "accept_scope": "stores"},
            422,
            "accept_store_codes",
            "请指定适用门店",
            "Name the stores (accept_store_codes)",
        ),
        (
            {"code": "TAKEN", "name": "x", "amount": "5"},
            409,
            "",
            "优惠券模板编码 TAKEN 已存在",
            "A coupon template with code TAKEN already exists",
        ),
    ]
    for fields, status, field, zh, en in cases:
        for lang, message in (("zh", zh), ("en", en)):
            r = app_client.post(f"/console/coupons?lang={lang}", data=template_form(csrf, **fields))
            assert r.status_code == status, (fields, r.text)
            assert shown(r.text, f"error-{field}" if field else "form-errors") == message, fields
            assert 'data-testid="form-errors"' in r.text
    r = app_client.post(
        "/console/coupons?lang=zh", data=template_form(csrf, code="Y", name="y", threshold="abc")
    )
    assert 'value="abc"' in r.text
    assert 'value="Y"' in r.text
    assert (
        count(factory, CouponTemplate, CouponTemplate.org_id == chain.org_id),
        audits(factory, chain.org_id),
    ) == before


def test_only_hq_changes_templates_and_a_post_needs_the_csrf_token(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="KEEP")
    api_package(app_client, hq, code="WASH10")
    before = (
        count(factory, CouponTemplate, CouponTemplate.org_id == chain.org_id),
        count(factory, ServicePackage, ServicePackage.org_id == chain.org_id),
        audits(factory, chain.org_id),
    )
    package_form = {"code": "NEW", "name": "n", "service_code": "S", "uses": "5", "price": "100"}
    for username in ("a_mgr", "a_clerk", "cs", "auditor", "east_mgr"):
        csrf = console_login(app_client, chain, username)
        r = app_client.post("/console/coupons", data=template_form(csrf, code="NEW", name="n", amount="5"))
        assert r.status_code == 403, username
        assert "您的角色无权管理优惠券模板" in text_of(r.text)
        for url in ("/console/coupons/KEEP/stop", "/console/packages/WASH10/withdraw"):
            r = app_client.post(url, data={"csrf": csrf}, follow_redirects=False)
            assert r.status_code == 403, (username, url)
        r = app_client.post("/console/packages", data={"csrf": csrf, **package_form})
        assert r.status_code == 403, username
        assert "您的角色无权管理次卡" in text_of(r.text)
        assert app_client.get("/console/coupons/form/values?kind=percent_off").status_code == 403
    csrf = console_login(app_client, chain, "hq")
    for url, data in (
        ("/console/coupons", template_form("forged", code="NEW", name="n", amount="5")),
        ("/console/coupons/KEEP/stop", {"csrf": "forged"}),
        ("/console/packages", {"csrf": "forged", **package_form}),
        ("/console/packages/WASH10/withdraw", {}),
    ):
        r = app_client.post(url, data=data, follow_redirects=False)
        assert r.status_code == 403, url
        assert "页面已过期" in text_of(r.text)
    after = (
        count(factory, CouponTemplate, CouponTemplate.org_id == chain.org_id),
        count(factory, ServicePackage, ServicePackage.org_id == chain.org_id),
        audits(factory, chain.org_id),
    )
    assert after == before
    assert template_row(factory, chain.org_id, "KEEP").active is True
    assert (
        count(factory, ServicePackage, ServicePackage.org_id == chain.org_id, ServicePackage.active.is_(True))
        == 1
    )


def test_a_stopped_template_issues_nothing_until_resumed(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="M100-10", name="满100减10", threshold_fen=10000)
    m = register(app_client, chain, "A", "13900000002")
    csrf = console_login(app_client, chain, "hq")
    back = "/console/coupons/M100-10?status=available"
    r = app_client.post(
        "/console/coupons/M100-10/stop", data={"csrf": csrf, "back": back}, follow_redirects=False
    )
    assert r.headers["location"] == f"{back}&done=stopped&code=M100-10"
    assert template_row(factory, chain.org_id, "M100-10").active is False
    assert audits(factory, chain.org_id, "coupons.template_stopped") == 1
    assert shown(app_client.get("/console/coupons").text, "status-M100-10") == "已停发"
    refused = app_client.post(
        "/console/coupons/issue",
        data={"csrf": csrf, "member": m["member_no"], "template_code": "M100-10", "source": "staff"},
    )
    assert refused.status_code == 409
    assert "该优惠券已停止发放" in shown(refused.text, "form-errors")
    assert coupons_of(factory, chain.org_id) == []
    r = app_client.post("/console/coupons/M100-10/resume", data={"csrf": csrf}, follow_redirects=False)
    assert redirect_query(r) == {"done": "resumed", "code": "M100-10"}
    assert template_row(factory, chain.org_id, "M100-10").active is True
    assert audits(factory, chain.org_id, "coupons.template_resumed") == 1


# --- issuing and gifting -------------------------------------------------------------------------------


def test_issue_by_staff_and_as_compensation_with_exact_rows(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="M100-10", name="满100减10", threshold_fen=10000)
    api_template(
        app_client, hq, code="TEA", name="奶茶券", kind="free_item", amount_fen=0, categories=["饮品"]
    )
    m = register(app_client, chain, "A", "13900000003")
    mid = member_id(factory, chain.org_id, m["member_no"])

    csrf = console_login(app_client, chain, "a_clerk")
    page = app_client.get("/console/coupons/issue", params={"q": "13900000003"})
    assert page.status_code == 200
    assert shown(page.text, "member-no") == m["member_no"]
    assert shown(page.text, "member-phone") == "139****0003"
    assert 'data-testid="i-source-compensation"' not in page.text  # a clerk may not compensate
    form = {
        "csrf": csrf,
        "idem": "form-1",
        "member": "139-0000-0003",
        "template_code": "M100-10",
        "source": "staff",
        "store_code": "A",
        "reason": "开业活动",
    }
    r = app_client.post("/console/coupons/issue", data=form, follow_redirects=False)
    query = redirect_query(r)
    assert (query["q"], query["done"]) == (m["member_no"], "issued")
    again = app_client.post("/console/coupons/issue", data=form, follow_redirects=False)
    assert redirect_query(again)["code"] == query["code"]  # the same form twice issues once
    [c] = coupons_of(factory, chain.org_id)
    local_day = c.issued_at.astimezone(SHANGHAI).date()
    assert (c.code, c.member_id, c.issued_to_member_id, c.issuing_store_id, c.source, c.reason) == (
        query["code"],
        mid,
        mid,
        chain.stores["A"],
        "staff",
        "开业活动",
    )
    assert (c.status, c.issued_by, c.cover_fen, c.valid_from, c.valid_to) == (
        "available",
        "staff:a_clerk",
        None,
        c.issued_at,
        end_of_local_day(local_day + timedelta(days=29), "Asia/Shanghai"),
    )
    assert template_row(factory, chain.org_id, "M100-10").issued_count == 1
    listed = app_client.get(r.headers["location"])
    assert shown(listed.text, "notice") == f"已发放优惠券 {c.code}"
    assert shown(listed.text, f"held-status-{c.code}") == "可使用"

    csrf = console_login(app_client, chain, "cs")
    r = app_client.post(
        "/console/coupons/issue",
        data={
            "csrf": csrf,
            "member": m["member_no"],
            "template_code": "M100-10",
            "source": "compensation",
            "reason": "客诉 #88 补偿",
        },
        follow_redirects=False,
    )
    assert redirect_query(r)["done"] == "issued"
    csrf = console_login(app_client, chain, "a_mgr")
    r = app_client.post(
        "/console/coupons/issue",
        data={
            "csrf": csrf,
            "member": m["member_no"],
            "template_code": "TEA",
            "source": "staff",
            "cover": "12.50",
        },
        follow_redirects=False,
    )
    assert redirect_query(r)["done"] == "issued"
    _, comp, tea = coupons_of(factory, chain.org_id)
    assert (comp.source, comp.issuing_store_id, comp.reason, comp.issued_by) == (
        "compensation",
        None,
        "客诉 #88 补偿",
        "staff:cs",
    )
    assert (tea.source, tea.issuing_store_id, tea.cover_fen, tea.issued_by) == (
        "staff",
        chain.stores["A"],
        1250,
        "staff:a_mgr",
    )
    with factory() as s:
        issued = list(
            s.scalars(
                select(AuditLog)
                .where(AuditLog.org_id == chain.org_id, AuditLog.action == "coupons.issued")
                .order_by(AuditLog.id)
            )
        )
    assert [(a.actor, a.target_id, a.reason) for a in issued] == [
        ("staff:a_clerk", c.code, "开业活动"),
        ("staff:cs", comp.code, "客诉 #88 补偿"),
        ("staff:a_mgr", tea.code, ""),
    ]


def test_issue_refusals_show_the_reason_and_change_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="ONCE", per_member_limit=1)
    api_template(app_client, hq, code="A-ONLY", accept_scope="issuing_store")
    m = register(app_client, chain, "A", "13900000004")
    api_issue(app_client, hq, m["member_no"], "ONCE", "A")
    before = (coupon_state(factory, chain.org_id), audits(factory, chain.org_id))
    issued_before = template_row(factory, chain.org_id, "ONCE").issued_count

    def post(username: str, expect: int, message: str, **fields: str) -> None:
        csrf = console_login(app_client, chain, username)
        data = {"csrf": csrf, "member": m["member_no"], "template_code": "ONCE", "source": "staff", **fields}
        r = app_client.post("/console/coupons/issue", data=data)
        assert r.status_code == expect, (username, fields, r.text)
        assert message in text_of(r.text), (username, fields)

    post("a_clerk", 403, "您的角色无权发放补偿券", source="compensation", reason="x")
    post("auditor", 403, "您的角色无权发放优惠券")
    post("a_mgr", 403, "该门店不在您的权限范围内", store_code="B")
    post("cs", 422, "补偿发券须填写原因", source="compensation", reason=" ")
    post("hq", 422, "补偿券不能指定抵扣价值", source="compensation", reason="x", cover="5")
    post("hq", 422, "发放方式：格式不正确", source="gift")
    post("hq", 404, "找不到该会员", member="13900009999")
    post("hq", 422, "抵扣价值（元）：须为金额，如 12.50", cover="1.234")
    post("hq", 409, "该优惠券每人限领 1 张，已领 1 张", store_code="A")
    post("hq", 422, "仅限发券门店使用的优惠券须由门店发放", template_code="A-ONLY")
    console_login(app_client, chain, "hq")
    forged = app_client.post(
        "/console/coupons/issue",
        data={"csrf": "forged", "member": m["member_no"], "template_code": "A-ONLY", "store_code": "A"},
    )
    assert forged.status_code == 403
    assert (coupon_state(factory, chain.org_id), audits(factory, chain.org_id)) == before
    assert template_row(factory, chain.org_id, "ONCE").issued_count == issued_before


def test_gifting_moves_a_giftable_coupon_and_refuses_others(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="GIFT", giftable=True)
    api_template(app_client, hq, code="MINE")
    giver = register(app_client, chain, "A", "13900000005")
    taker = register(app_client, chain, "B", "13900000006")
    gift = api_issue(app_client, hq, giver["member_no"], "GIFT", "A")
    mine = api_issue(app_client, hq, giver["member_no"], "MINE", "A")

    csrf = console_login(app_client, chain, "auditor")
    r = app_client.post(
        "/console/coupons/gift",
        data={"csrf": csrf, "member_no": giver["member_no"], "code": gift, "to": taker["member_no"]},
    )
    assert r.status_code == 403
    assert "您的角色无权转赠优惠券" in shown(r.text, "form-errors")
    csrf = console_login(app_client, chain, "a_clerk")
    page = app_client.get("/console/coupons/issue", params={"q": giver["member_no"]})
    assert f'data-testid="gift-form-{gift}"' in page.text
    assert f'data-testid="gift-form-{mine}"' not in page.text
    r = app_client.post(
        "/console/coupons/gift",
        data={"csrf": csrf, "member_no": giver["member_no"], "code": mine, "to": "13900000006"},
    )
    assert r.status_code == 409
    assert "该优惠券不可转赠" in shown(r.text, "form-errors")
    assert [(c.code, c.member_id) for c in coupons_of(factory, chain.org_id)] == [
        (gift, member_id(factory, chain.org_id, giver["member_no"])),
        (mine, member_id(factory, chain.org_id, giver["member_no"])),
    ]
    r = app_client.post(
        "/console/coupons/gift",
        data={
            "csrf": csrf,
            "member_no": giver["member_no"],
            "code": gift,
            "to": "13900000006",
            "reason": "送朋友",
        },
        follow_redirects=False,
    )
    assert redirect_query(r) == {"q": giver["member_no"], "done": "gifted", "code": gift}
    moved = coupons_of(factory, chain.org_id)[0]
    assert (moved.member_id, moved.gifted_from_member_id, moved.issued_to_member_id) == (
        member_id(factory, chain.org_id, taker["member_no"]),
        member_id(factory, chain.org_id, giver["member_no"]),
        member_id(factory, chain.org_id, giver["member_no"]),
    )
    assert audits(factory, chain.org_id, "coupons.gifted") == 1


def test_a_templates_coupons_page_by_page_filtered_and_in_excel(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_template(app_client, hq, code="MANY", name="多张券", amount_fen=500)
    m = register(app_client, chain, "A", "13900000007")
    codes = [api_issue(app_client, hq, m["member_no"], "MANY", "A") for _ in range(21)]
    body = {
        "member": {"member_no": m["member_no"]},
        "lines": [line("TEA", 1, 2000)],
        "coupon_codes": [codes[0]],
        "payments": [{"method": "cash", "amount_fen": 1500}],
    }
    assert app_client.post("/api/v1/orders", json=body, headers=chain.key("C")).status_code == 201
    console_login(app_client, chain, "hq")
    first = app_client.get("/console/coupons/MANY")
    assert re.findall(r'data-testid="coupon-([0-9A-Z]{12})"', first.text) == codes[::-1][:20]
    assert 'data-testid="next-page"' in first.text
    second = app_client.get("/console/coupons/MANY?page=2")
    assert re.findall(r'data-testid="coupon-([0-9A-Z]{12})"', second.text) == [codes[0]]
    redeemed = app_client.get("/console/coupons/MANY?status=redeemed")
    assert re.findall(r'data-testid="coupon-([0-9A-Z]{12})"', redeemed.text) == [codes[0]]
    assert shown(redeemed.text, f"coupon-status-{codes[0]}") == "已使用"
    status = chart(first.text, "chart-status")
    assert status["series"][0]["data"] == [{"name": "可使用", "value": 20}, {"name": "已使用", "value": 1}]

    xlsx = app_client.get("/console/coupons/MANY/coupons.xlsx?status=redeemed")
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == (
        "券码",
        "持有会员",
        "来源",
        "发券门店",
        "发放时间",
        "发放人",
        "有效至",
        "状态",
        "核销门店",
        "核销时间",
        "优惠",
        "原因",
    )
    assert len(rows) == 2
    assert (
        rows[1][0],
        rows[1][1],
        rows[1][2],
        rows[1][3],
        rows[1][5],
        rows[1][7],
        rows[1][8],
        rows[1][10],
    ) == (
        codes[0],
        m["member_no"],
        "员工发放",
        "上海徐汇店",
        "staff:hq",
        "已使用",
        "北京朝阳店",
        5,
    )
    everything = load_workbook(
        io.BytesIO(app_client.get("/console/coupons/MANY/coupons.xlsx").content)
    ).active
    assert everything is not None
    assert everything.max_row == 22


# --- service packages ----------------------------------------------------------------------------------


def test_package_template_form_exact_rows_and_errors(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "hq")
    form = {
        "csrf": csrf,
        "code": "WASH10",
        "name": "洗车 10 次卡",
        "service_code": "CARWASH",
        "uses": "10",
        "price": "300",
        "validity_days": "180",
        "refund_rule": "unused_pro_rata",
        "store_scope": "stores",
        "store_codes": ["A", "B"],
        "bearer": "split",
        "issuer_pct": "60",
    }
    bad = [
        (
            {"price": "3.001"},
            422,
            "price",
            "售价（元）：须为金额，如 12.50",
            "Price (yuan) must be an amount such as 12.50",
        ),
        ({"uses": "0"}, 422, "uses", "次数须为 1 到 1000", "uses must be 1 to 1000"),
        ({"uses": "two"}, 422, "uses", "次数：须为整数", "Uses must be a whole number"),
        (
            {"store_scope": "brand"},
            422,
            "brand_code",
            "按品牌适用须指定品牌",
            "A brand scope needs brand_code",
        ),
        (
            {"store_codes": []},
            422,
            "store_codes",
            "按门店列表适用须至少指定一家门店",
            "A store list needs at least one store",
        ),
    ]
    for changes, status, field, zh, en in bad:
        for lang, message in (("zh", zh), ("en", en)):
            r = app_client.post(f"/console/packages?lang={lang}", data={**form, **changes})
            assert r.status_code == status, (changes, r.text)
            assert shown(r.text, f"error-{field}") == message
    assert count(factory, ServicePackage, ServicePackage.org_id == chain.org_id) == 0
    r = app_client.post("/console/packages", data=form, follow_redirects=False)
    assert redirect_query(r) == {"done": "created", "code": "WASH10"}
    with factory() as s:
        p = s.scalar(select(ServicePackage).where(ServicePackage.org_id == chain.org_id))
        assert p is not None
        stores = sorted(
            s.scalars(select(ServicePackageStore.store_id).where(ServicePackageStore.package_id == p.id))
        )
    assert (p.code, p.name, p.service_code, p.uses, p.price_fen, p.validity_days, p.refund_rule) == (
        "WASH10",
        "洗车 10 次卡",
        "CARWASH",
        10,
        30000,
        180,
        "unused_pro_rata",
    )
    assert (p.store_scope, stores, p.bearer, p.issuer_pct, p.active, p.created_by) == (
        "stores",
        sorted([chain.stores["A"], chain.stores["B"]]),
        "split",
        60,
        True,
        "staff:hq",
    )
    taken = app_client.post("/console/packages?lang=zh", data=form)
    assert taken.status_code == 409
    assert "次卡编码 WASH10 已存在" in shown(taken.text, "form-errors")
    assert count(factory, ServicePackage, ServicePackage.org_id == chain.org_id) == 1
    assert audits(factory, chain.org_id, "packages.template_created") == 1
    page = app_client.get("/console/packages")
    row = shown(page.text, "package-WASH10")
    assert row.startswith("洗车 10 次卡")
    r = app_client.post("/console/packages/WASH10/withdraw", data={"csrf": csrf}, follow_redirects=False)
    assert redirect_query(r) == {"done": "withdrawn", "code": "WASH10"}
    assert shown(app_client.get("/console/packages").text, "status-WASH10") == "已停售"
    assert audits(factory, chain.org_id, "packages.template_withdrawn") == 1


def test_sell_use_refund_and_grant_with_exact_rows(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_package(
        app_client, hq, code="WASH10", validity_days=180, store_scope="stores", store_codes=["A", "B"]
    )
    m = register(app_client, chain, "A", "13900000008")
    mid = member_id(factory, chain.org_id, m["member_no"])

    csrf = console_login(app_client, chain, "a_clerk")
    page = app_client.get("/console/packages/members", params={"q": m["member_no"]})
    assert 'data-testid="sell-form"' in page.text
    assert 'data-testid="grant-form"' not in page.text  # a clerk sells but does not give packages away
    assert shown(page.text, "no-packages") == "该会员没有次卡"
    r = app_client.post(
        "/console/packages/sell",
        data={
            "csrf": csrf,
            "member": m["member_no"],
            "package_code": "WASH10",
            "store_code": "A",
            "payment_method": "wechat_pay",
            "amount": "300.00",
        },
        follow_redirects=False,
    )
    query = redirect_query(r)
    package_id = int(query["id"])
    assert (query["q"], query["done"]) == (m["member_no"], "sold")
    with factory() as s:
        p = s.get(MemberPackage, package_id)
        assert p is not None
    assert (p.member_id, p.uses_total, p.uses_left, p.price_fen, p.value_fen, p.payment_method, p.source) == (
        mid,
        10,
        10,
        30000,
        30000,
        "wechat_pay",
        "sale",
    )
    assert (p.sold_store_id, p.sold_by, p.status, p.expires_at) == (
        chain.stores["A"],
        "staff:a_clerk",
        "active",
        expiry_for(p.sold_at, 180, "Asia/Shanghai"),
    )

    csrf = console_login(app_client, chain, "b_mgr")
    form = {
        "csrf": csrf,
        "idem": "use-1",
        "member_no": m["member_no"],
        "store_code": "B",
        "uses": "2",
        "note": "精洗",
    }
    r = app_client.post(f"/console/member-packages/{package_id}/uses", data=form, follow_redirects=False)
    assert redirect_query(r) == {"q": m["member_no"], "done": "used", "id": str(package_id)}
    again = app_client.post(f"/console/member-packages/{package_id}/uses", data=form, follow_redirects=False)
    assert again.status_code == 303  # the same form twice takes the uses once
    with factory() as s:
        [use] = s.scalars(select(PackageUse).where(PackageUse.member_package_id == package_id)).all()
        left = s.scalar(select(MemberPackage.uses_left).where(MemberPackage.id == package_id))
    assert (use.used_store_id, use.sold_store_id, use.uses, use.first_use_no, use.value_fen, use.note) == (
        chain.stores["B"],
        chain.stores["A"],
        2,
        1,
        6000,
        "精洗",
    )
    assert (use.actor, use.staff_id, use.member_id, left) == (
        "staff:b_mgr",
        staff_id(factory, chain.org_id, "b_mgr"),
        mid,
        8,
    )
    page = app_client.get(r.headers["location"])
    assert shown(page.text, f"pkg-left-{package_id}") == "剩余 8 / 10 次"
    last_day = (p.expires_at.astimezone(SHANGHAI) - timedelta(days=1)).date().isoformat()  # ends at midnight
    assert shown(page.text, f"pkg-expires-{package_id}") == last_day
    assert shown(page.text, f"use-{use.id}").split()[2:] == [
        "杭州西湖店",
        "b_mgr",
        "2",
        "1–2",
        "¥60.00",
        "精洗",
    ]
    assert f'data-testid="refund-form-{package_id}"' not in page.text  # B did not sell it

    csrf = console_login(app_client, chain, "a_mgr")
    page = app_client.get("/console/packages/members", params={"q": "13900000008"})
    assert shown(page.text, f"refundable-{package_id}") == "按规则可退 ¥240.00（8 次）"
    r = app_client.post(
        f"/console/member-packages/{package_id}/refund",
        data={"csrf": csrf, "member_no": m["member_no"], "reason": "会员搬家"},
        follow_redirects=False,
    )
    assert redirect_query(r)["done"] == "refunded"
    with factory() as s:
        p = s.get(MemberPackage, package_id)
        assert p is not None
    assert (p.status, p.uses_left, p.uses_refunded, p.refunded_fen, p.refunded_by) == (
        "refunded",
        0,
        8,
        24000,
        "staff:a_mgr",
    )
    assert audits(factory, chain.org_id, "packages.refunded") == 1

    csrf = console_login(app_client, chain, "cs")
    r = app_client.post(
        "/console/packages/grant",
        data={
            "csrf": csrf,
            "member": "13900000008",
            "package_code": "WASH10",
            "source": "compensation",
            "reason": "洗车划伤补偿",
            "store_code": "",
        },
        follow_redirects=False,
    )
    granted_id = int(redirect_query(r)["id"])
    with factory() as s:
        g = s.get(MemberPackage, granted_id)
        assert g is not None
    assert (g.source, g.reason, g.price_fen, g.value_fen, g.sold_store_id, g.sold_by, g.uses_left) == (
        "compensation",
        "洗车划伤补偿",
        0,
        30000,
        None,
        "staff:cs",
        10,
    )
    page = app_client.get(r.headers["location"])
    assert shown(page.text, f"pkg-status-{package_id}") == "已退款"
    assert shown(page.text, f"pkg-refunded-{package_id}").startswith("已退款 ¥240.00（8 次）")
    assert shown(page.text, f"not-refundable-{granted_id}") == "赠送的次卡不可退款"


def test_package_refusals_show_the_reason_and_change_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    api_package(app_client, hq, code="WASH10", store_scope="stores", store_codes=["A", "B"])
    m = register(app_client, chain, "A", "13900000009")
    sold = app_client.post(
        f"/api/v1/members/{m['member_no']}/packages",
        json={"package_code": "WASH10", "store_code": "A", "payment_method": "cash", "amount_fen": 30000},
        headers=hq,
    )
    package_id = sold.json()["id"]

    def snapshot() -> tuple[Any, ...]:
        with factory() as s:
            rows = s.execute(select(MemberPackage.id, MemberPackage.uses_left, MemberPackage.status)).all()
        return (
            sorted(tuple(r) for r in rows),
            count(factory, PackageUse, PackageUse.org_id == chain.org_id),
            audits(factory, chain.org_id),
        )

    before = snapshot()
    sell = {"member": m["member_no"], "package_code": "WASH10", "store_code": "A", "payment_method": "cash"}
    attempts: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("auditor", "/console/packages/sell", {**sell, "amount": "300"}, 403, "您的角色无权售卖次卡"),
        ("cs", "/console/packages/sell", {**sell, "amount": "300"}, 403, "您的角色无权售卖次卡"),
        (
            "a_clerk",
            "/console/packages/sell",
            {**sell, "amount": "299"},
            422,
            "该次卡售价 30000 分，实收 29900 分",
        ),
        ("a_clerk", "/console/packages/sell", {**sell, "amount": "abc"}, 422, "实收金额（元）：须为金额"),
        (
            "a_clerk",
            "/console/packages/sell",
            {**sell, "store_code": "B", "amount": "300"},
            403,
            "该门店不在您的权限范围内",
        ),
        (
            "a_clerk",
            "/console/packages/grant",
            {**sell, "source": "goodwill", "reason": "x"},
            403,
            "您的角色无权赠送次卡",
        ),
        (
            "cs",
            "/console/packages/grant",
            {**sell, "store_code": "", "source": "goodwill", "reason": " "},
            422,
            "请填写赠送原因",
        ),
        (
            "cs",
            "/console/packages/grant",
            {**sell, "store_code": "", "source": "sale", "reason": "x"},
            422,
            "未知的赠送来源 sale",
        ),
        (
            "a_clerk",
            f"/console/member-packages/{package_id}/refund",
            {"member_no": m["member_no"], "reason": "x"},
            403,
            "您的角色无权次卡退款",
        ),
        (
            "b_mgr",
            f"/console/member-packages/{package_id}/refund",
            {"member_no": m["member_no"], "reason": "x"},
            403,
            "该门店不在您的权限范围内",
        ),
        (
            "a_mgr",
            f"/console/member-packages/{package_id}/refund",
            {"member_no": m["member_no"], "reason": ""},
            422,
            "请填写退款原因",
        ),
        (
            "auditor",
            f"/console/member-packages/{package_id}/uses",
            {"member_no": m["member_no"], "store_code": "A"},
            403,
            "您的角色无权核销次卡",
        ),
        (
            "c_clerk",
            f"/console/member-packages/{package_id}/uses",
            {"member_no": m["member_no"], "store_code": "C"},
            409,
            "门店 C 不提供服务 CARWASH",
        ),
        (
            "a_clerk",
            f"/console/member-packages/{package_id}/uses",
            {"member_no": m["member_no"], "store_code": "A", "uses": "11"},
            409,
            "次卡剩余次数不足",
        ),
        (
            "a_clerk",
            f"/console/member-packages/{package_id}/uses",
            {"member_no": m["member_no"], "store_code": "A", "uses": "x"},
            422,
            "次数：须为整数",
        ),
        (
            "a_clerk",
            f"/console/member-packages/{package_id}/uses",
            {"member_no": "000000000", "store_code": "A"},
            404,
            "找不到该会员",
        ),
    ]
    for username, url, data, status, message in attempts:
        csrf = console_login(app_client, chain, username)
        r = app_client.post(url, data={"csrf": csrf, **data})
        assert r.status_code == status, (username, url, r.text)
        assert 'data-testid="form-errors"' in r.text
        assert message in text_of(r.text), (username, url)
    csrf = console_login(app_client, chain, "a_mgr")
    forged = app_client.post(
        f"/console/member-packages/{package_id}/refund",
        data={"csrf": "forged", "member_no": m["member_no"], "reason": "x"},
    )
    assert forged.status_code == 403
    assert snapshot() == before
    assert count(factory, MemberPackage, MemberPackage.org_id == chain.org_id) == 1
    # The page offers a use only at stores in scope that perform the service.
    console_login(app_client, chain, "c_clerk")
    page = app_client.get("/console/packages/members", params={"q": m["member_no"]})
    assert shown(page.text, f"no-use-store-{package_id}") == "您范围内没有提供该服务的门店"


def test_both_template_lists_say_what_the_last_action_did(app_client: TestClient, chain: Chain) -> None:
    console_login(app_client, chain, "hq")
    cases = [
        ("/console/coupons?done=created&code=M300-50", "已创建优惠券模板 M300-50"),
        ("/console/coupons?done=stopped&code=M300-50", "已停发 · M300-50"),
        ("/console/coupons?done=resumed&code=M300-50", "已恢复发放 · M300-50"),
        ("/console/packages?done=created&code=WASH10", "已创建次卡 WASH10"),
        ("/console/packages?done=withdrawn&code=WASH10", "已停售 · WASH10"),
        ("/console/packages?done=relisted&code=WASH10", "已恢复售卖 · WASH10"),
    ]
    for url, notice in cases:
        page = app_client.get(url)
        assert page.status_code == 200, url
        assert shown(page.text, "notice") == notice, url
        assert shown(page.text, "scope-label") == "范围: 全部门店", url
        assert 'data-testid="readonly-note"' not in page.text, url
    for url in ("/console/coupons?done=bogus&code=X", "/console/packages?done=stopped&code=X"):
        assert 'data-testid="notice"' not in app_client.get(url).text, url


def test_each_held_package_lists_its_own_uses_and_the_stores_in_scope(
    app_client: TestClient, chain: Chain
) -> None:
    hq = login(app_client, chain, "hq")
    api_package(app_client, hq, code="WASH10")
    api_package(app_client, hq, code="CUT5", name="剪发 5 次卡", service_code="HAIRCUT", uses=5)
    m = register(app_client, chain, "A", "13900000011")
    sold: dict[int, int] = {}
    for n, code in ((1, "WASH10"), (2, "CUT5"), (3, "WASH10")):
        r = app_client.post(
            f"/api/v1/members/{m['member_no']}/packages",
            json={"package_code": code, "store_code": "A", "payment_method": "cash", "amount_fen": 30000},
            headers=hq,
        )
        assert r.status_code == 201, r.text
        sold[n] = r.json()["id"]
    used: dict[int, list[int]] = {n: [] for n in sold}
    for n, store in ((1, "B"), (3, "A"), (1, "A"), (3, "C")):
        r = app_client.post(f"/api/v1/member-packages/{sold[n]}/uses", json={"store_code": store}, headers=hq)
        assert r.status_code == 201, r.text
        used[n].append(r.json()["id"])

    def card(text: str, package_id: int) -> str:
        return re.split(r'data-testid="pkg-\d+"', text.split(f'data-testid="pkg-{package_id}"')[1])[0]

    def use_stores(text: str, package_id: int) -> list[str]:
        form = text.split(f'data-testid="use-store-{package_id}"')[1].split("</select>")[0]
        return re.findall(r'<option value="(\w+)"', form)

    console_login(app_client, chain, "hq")
    page = app_client.get("/console/packages/members", params={"q": m["member_no"]})
    assert page.status_code == 200
    left = {1: "剩余 8 / 10 次", 2: "剩余 5 / 5 次", 3: "剩余 8 / 10 次"}
    for n, package_id in sold.items():
        assert (
            sorted(int(u) for u in re.findall(r'data-testid="use-(\d+)"', card(page.text, package_id)))
            == used[n]
        )
        assert shown(page.text, f"pkg-left-{package_id}") == left[n]
        assert use_stores(page.text, package_id) == ["A", "B", "C"], n
    console_login(app_client, chain, "a_clerk")
    page = app_client.get("/console/packages/members", params={"q": m["member_no"]})
    assert [use_stores(page.text, package_id) for package_id in sold.values()] == [["A"]] * 3


def test_package_list_pages_its_rows_and_charts_every_template(app_client: TestClient, chain: Chain) -> None:
    hq = login(app_client, chain, "hq")
    for i in range(1, 21):
        api_package(app_client, hq, code=f"P{i:02}", name=f"次卡{i:02}")
    api_package(app_client, hq, code="P21", name="次卡21", store_scope="stores", store_codes=["B", "A"])
    m = register(app_client, chain, "A", "13900000012")
    for code in ("P05", "P21", "P05"):
        r = app_client.post(
            f"/api/v1/members/{m['member_no']}/packages",
            json={"package_code": code, "store_code": "A", "payment_method": "cash", "amount_fen": 30000},
            headers=hq,
        )
        assert r.status_code == 201, r.text
    console_login(app_client, chain, "hq")
    first = app_client.get("/console/packages")
    assert re.findall(r'data-testid="package-(P\d+)"', first.text) == [f"P{i:02}" for i in range(1, 21)]
    second = app_client.get("/console/packages", params={"page": "2"})
    assert re.findall(r'data-testid="package-(P\d+)"', second.text) == ["P21"]
    assert "门店：上海徐汇店、杭州西湖店" in shown(second.text, "package-P21")
    assert shown(second.text, "sold-P21") == "1"
    for page_text in (first.text, second.text):
        option = json.loads(
            html.unescape(re.search(r"data-testid=\"chart-templates\" data-chart='([^']*)'", page_text)[1])
        )
        assert option["xAxis"]["data"] == ["次卡05", "次卡21"] + [
            f"次卡{i:02}" for i in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11)
        ]
        assert option["series"][0]["data"] == [2, 1] + [0] * 10
