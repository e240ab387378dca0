"""Regressions found reviewing the coupons, packages and settlement pages: input that used to end in a
500 (or, for a period, in a write) is refused with a clear message and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.packages.models import MemberPackage, ServicePackage
from onemember.settlement import service as settlement
from onemember.settlement.errors import InvalidPeriod
from onemember.settlement.models import SettlementEntry, SettlementPeriod, SettlementPolicy
from onemember.web.forms import yuan_to_fen
from tests.factories import Chain
from tests.helpers import login, register
from tests.test_console_benefits_http import api_package, console_login, shown, template_form
from tests.test_console_settlement_http import cell

NOT_AMOUNTS = ("NaN", "sNaN", "Infinity", "-Infinity", "1e999999", "1" * 30)


def written(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    """Everything the refused forms below could have written."""
    models: dict[str, Any] = {
        "coupons": Coupon,
        "templates": CouponTemplate,
        "packages": ServicePackage,
        "member_packages": MemberPackage,
        "entries": SettlementEntry,
        "policies": SettlementPolicy,
        "audits": AuditLog,
    }
    with factory() as s:
        found: dict[str, Any] = {
            name: s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id))
            for name, model in models.items()
        }
        found["periods"] = s.execute(
            select(SettlementPeriod.period, SettlementPeriod.status).where(SettlementPeriod.org_id == org_id)
        ).all()
    return found


def test_yuan_to_fen_refuses_what_is_no_amount() -> None:
    assert [yuan_to_fen(t) for t in ("12.50", "0.07", "-0", "1234567890123.00")] == [
        1250,
        7,
        0,
        123456789012300,
    ]
    assert [yuan_to_fen(t) for t in NOT_AMOUNTS] == [None] * len(NOT_AMOUNTS)
    assert yuan_to_fen("12345678901234") is None  # past 10^13 yuan: more than any form accepts


def test_money_fields_refuse_nan_infinity_and_huge_exponents(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    r = app_client.post(
        "/api/v1/coupon-templates",
        json={"code": "FREE", "name": "免费洗车", "kind": "free_item", "skus": ["WASH"], "valid_days": 30},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    api_package(app_client, hq, code="WASH10")
    m = register(app_client, chain, "A", "13900000001")
    csrf = console_login(app_client, chain, "hq")
    before = written(factory, chain.org_id)
    for i, text in enumerate(NOT_AMOUNTS):
        r = app_client.post(
            "/console/coupons/issue",
            data={
                "csrf": csrf,
                "idem": f"i{i}",
                "member": m["member_no"],
                "template_code": "FREE",
                "source": "staff",
                "store_code": "A",
                "cover": text,
            },
        )
        assert (r.status_code, shown(r.text, "error-cover")) == (422, "抵扣价值（元）：须为金额，如 12.50")
        r = app_client.post(
            "/console/packages/sell",
            data={
                "csrf": csrf,
                "idem": f"s{i}",
                "member": m["member_no"],
                "package_code": "WASH10",
                "store_code": "A",
                "payment_method": "cash",
                "amount": text,
            },
        )
        assert (r.status_code, shown(r.text, "error-amount")) == (422, "实收金额（元）：须为金额，如 12.50")
        r = app_client.post(
            "/console/packages",
            data={
                "csrf": csrf,
                "code": f"P{i}",
                "name": "x",
                "service_code": "S",
                "uses": "3",
                "price": text,
            },
        )
        assert (r.status_code, shown(r.text, "error-price")) == (422, "售价（元）：须为金额，如 12.50")
        r = app_client.post("/console/coupons", data=template_form(csrf, code=f"T{i}", name="x", amount=text))
        assert (r.status_code, shown(r.text, "error-amount")) == (422, "减免金额（元）：须为金额，如 12.50")
        r = app_client.post(
            "/console/settlement/corrections",
            data={"csrf": csrf, "debtor": "A", "creditor": "B", "amount": text, "reason": "补记"},
        )
        assert (r.status_code, cell(r.text, "error-amount")) == (
            422,
            "金额（元）：须为大于 0 的金额，最多两位小数，如 12.50",
        )
        r = app_client.post(
            "/console/settlement/policy",
            data={
                "csrf": csrf,
                "bearer": "hq",
                "issuer_pct": "100",
                "value_points": "100",
                "value_yuan": text,
            },
        )
        assert (r.status_code, cell(r.text, "error-value_yuan")) == (
            422,
            "价值（元）：须为金额，最多两位小数，如 1.00",
        )
    assert written(factory, chain.org_id) == before


@pytest.mark.parametrize("period", ["2025-01%0A", "%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%95-01"])
def test_a_period_with_a_trailing_newline_or_wide_digits_is_not_closed(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], period: str
) -> None:
    csrf = console_login(app_client, chain, "hq")
    before = written(factory, chain.org_id)
    r = app_client.get(f"/console/settlement/periods/{period}/close")
    assert r.status_code == 422
    assert cell(r.text, "error-message").endswith("格式应为 YYYY-MM")
    r = app_client.post(
        f"/console/settlement/periods/{period}/close", data={"csrf": csrf, "reason": "月结", "key": "k1"}
    )
    assert r.status_code == 422
    hq = login(app_client, chain, "hq")
    r = app_client.post(f"/api/v1/settlement/periods/{period}/close", json={"reason": "月结"}, headers=hq)
    assert (r.status_code, r.json()["code"]) == (422, "settlement.invalid_period")
    assert written(factory, chain.org_id) == before
    assert settlement.check_period("2025-01") == "2025-01"
    for bad in ("2025-01\n", "２０２５-01", " 2025-01", "2025-1"):
        with pytest.raises(InvalidPeriod):
            settlement.check_period(bad)


def test_superscripts_and_overlong_numbers_are_refused_not_a_crash(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "hq")
    before = written(factory, chain.org_id)
    base = {"csrf": csrf, "bearer": "split", "issuer_pct": "50", "value_points": "100", "value_yuan": "1.00"}
    r = app_client.post("/console/settlement/policy", data={**base, "issuer_pct": "²"})
    assert (r.status_code, cell(r.text, "error-issuer_pct")) == (422, "发放门店承担比例（%）：须为整数")
    r = app_client.post("/console/settlement/policy", data={**base, "value_points": "²"})
    assert (r.status_code, cell(r.text, "error-value_points")) == (422, "积分数：须为整数")
    good = {"csrf": csrf, "debtor": "A", "creditor": "B", "amount": "10.00", "reason": "补记"}
    for entry in ("²", "99999999999999999999999"):
        r = app_client.post("/console/settlement/corrections", data={**good, "corrects_entry_id": entry})
        assert (r.status_code, cell(r.text, "error-corrects_entry_id")) == (
            422,
            "更正的结算编号（可选）：须为结算编号（整数）",
        )
    for corrected in ("²", "99999999999999999999999"):
        r = app_client.get("/console/settlement", params={"corrected": corrected})
        assert r.status_code == 200
        assert 'data-testid="corrected-' not in r.text
    assert written(factory, chain.org_id) == before


@pytest.mark.parametrize(("name", "day"), [("valid_to", "9999-12-31"), ("valid_from", "0001-01-01")])
def test_template_dates_past_the_calendar_are_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], name: str, day: str
) -> None:
    csrf = console_login(app_client, chain, "hq")
    before = written(factory, chain.org_id)
    r = app_client.post(
        "/console/coupons", data=template_form(csrf, code="EDGE", name="边界", amount="5", **{name: day})
    )
    label = {"valid_to": "结束日期（含）", "valid_from": "开始日期"}[name]
    assert (r.status_code, shown(r.text, f"error-{name}")) == (422, f"{label}：日期格式不正确")
    assert written(factory, chain.org_id) == before


def test_ids_too_large_for_the_database_are_bad_input(app_client: TestClient, chain: Chain) -> None:
    """An id above 2**63 in a URL is refused as out of range (422), never a crash, on both databases."""
    r = app_client.get(f"/api/v1/member-packages/{2**64}", headers=chain.key("A"))
    assert (r.status_code, r.json()["code"], r.json()["message_en"]) == (
        422,
        "request.out_of_range",
        "A number in the request is out of range",
    )
    assert r.headers["content-type"] == "application/problem+json"
