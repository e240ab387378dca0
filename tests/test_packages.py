"""Service packages (次卡): templates, selling and granting, uses across stores, expiry, refunds by rule
with exact fen, audit, settlement entries for uses at other stores, and a real race for the last use
on parallel connections."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal, system_principal
from onemember.auth.service import authenticate
from onemember.db import make_engine, make_sessionmaker, set_clock
from onemember.errors import DomainError
from onemember.events.models import Event
from onemember.members import service as members
from onemember.org import service as org_service
from onemember.packages import api as packages_api
from onemember.packages import calculations
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.packages.verify import verify_packages
from onemember.settings import get_settings
from onemember.settlement.models import SettlementEntry
from tests.factories import Chain, make_chain
from tests.helpers import login, register

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    set_clock(c)
    yield c
    set_clock(None)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The app with the packages router (added here until app.py registers it)."""
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/api/v1/service-packages" for r in app.routes):
        app.include_router(packages_api.router)
    with TestClient(app) as c:
        yield c


# --- helpers -----------------------------------------------------------------------------------------

MANICURE: dict[str, Any] = {
    "code": "MANI10",
    "name": "美甲十次卡",
    "service_code": "manicure",
    "uses": 10,
    "price_fen": 100_003,  # 3 uses worth 10,001 fen, 7 worth 10,000
    "validity_days": 30,
    "refund_rule": "unused_pro_rata",
    "store_scope": "brand",
    "brand_code": "home",  # stores A and B, not C
}


def create_template(
    client: TestClient, hq: dict[str, str], *, expect: int = 201, **fields: Any
) -> dict[str, Any]:
    r = client.post("/api/v1/service-packages", json=fields, headers=hq)
    assert r.status_code == expect, r.text
    return dict(r.json())


def sell(
    client: TestClient,
    headers: dict[str, str],
    member_no: str,
    code: str,
    amount: int,
    *,
    expect: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    body = {"package_code": code, "payment_method": "wechat_pay", "amount_fen": amount, **extra}
    r = client.post(f"/api/v1/members/{member_no}/packages", json=body, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"] == "application/problem+json"
    return dict(r.json())


def use(
    client: TestClient, headers: dict[str, str], package_id: int, *, expect: int = 201, **body: Any
) -> dict[str, Any]:
    r = client.post(f"/api/v1/member-packages/{package_id}/uses", json=body, headers=headers)
    assert r.status_code == expect, r.text
    if expect >= 400:
        assert r.headers["content-type"] == "application/problem+json"
    return dict(r.json())


def refund(
    client: TestClient,
    headers: dict[str, str],
    package_id: int,
    *,
    expect: int = 200,
    reason: str = "顾客搬家",
) -> dict[str, Any]:
    r = client.post(f"/api/v1/member-packages/{package_id}/refund", json={"reason": reason}, headers=headers)
    assert r.status_code == expect, r.text
    return dict(r.json())


def _count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


def snapshot(factory: sessionmaker[Session], org_id: int) -> dict[str, Any]:
    with factory() as s:
        return {
            "templates": _count(s, ServicePackage, org_id),
            "packages": sorted(
                s.execute(
                    select(
                        MemberPackage.id,
                        MemberPackage.uses_left,
                        MemberPackage.status,
                        MemberPackage.refunded_fen,
                        MemberPackage.uses_refunded,
                    ).where(MemberPackage.org_id == org_id)
                ).all()
            ),
            "uses": _count(s, PackageUse, org_id),
            "settlement": _count(s, SettlementEntry, org_id),
            "events": _count(s, Event, org_id),
            "audit": _count(s, AuditLog, org_id),
        }


def events_of(factory: sessionmaker[Session], org_id: int, prefix: str = "package.") -> list[tuple[str, Any]]:
    with factory() as s:
        rows = s.execute(
            select(Event.type, Event.payload)
            .where(Event.org_id == org_id, Event.type.like(f"{prefix}%"))
            .order_by(Event.id)
        ).all()
        return [(t, p) for t, p in rows]


def audits_of(factory: sessionmaker[Session], org_id: int) -> list[tuple[str, str, Any]]:
    with factory() as s:
        rows = s.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.details)
            .where(AuditLog.org_id == org_id, AuditLog.action.like("packages.%"))
            .order_by(AuditLog.id)
        ).all()
        return [(a, who, d) for a, who, d in rows]


def settlement_rows(factory: sessionmaker[Session], org_id: int) -> list[tuple[str, int, int, int, str, str]]:
    with factory() as s:
        rows = s.execute(
            select(
                SettlementEntry.kind,
                SettlementEntry.debtor_key,
                SettlementEntry.creditor_key,
                SettlementEntry.amount_fen,
                SettlementEntry.source_ref,
                SettlementEntry.period,
            )
            .where(SettlementEntry.org_id == org_id)
            .order_by(SettlementEntry.id)
        ).all()
        return [(k, d, c, a, r or "", p) for k, d, c, a, r, p in rows]


# --- pure maths --------------------------------------------------------------------------------------


def test_use_values_split_the_price_exactly_by_largest_remainder() -> None:
    assert calculations.per_use_values(100_003, 10) == [10_001] * 3 + [10_000] * 7
    assert calculations.per_use_values(1000, 3) == [334, 333, 333]
    assert calculations.per_use_values(0, 4) == [0, 0, 0, 0]
    for price in (0, 1, 99, 100_003, 123_457):
        for total in (1, 3, 7, 12):
            values = calculations.per_use_values(price, total)
            assert sum(values) == price
            assert max(values) - min(values) <= 1
            # Any grouping of consecutive uses, plus the refund of the rest, adds up to the price.
            assert (
                calculations.uses_value(price, total, 1, 2 if total > 1 else 1)
                + calculations.pro_rata_refund(price, total, total - (2 if total > 1 else 1))
                == price
            )
    assert calculations.uses_value(100_003, 10, 3, 2) == 20_001
    assert calculations.pro_rata_refund(100_003, 10, 7) == 70_000
    assert calculations.pro_rata_refund(1000, 3, 3) == 1000
    with pytest.raises(ValueError, match="outside"):
        calculations.uses_value(1000, 3, 3, 2)


def test_expiry_counts_the_day_of_sale_and_ends_at_local_midnight() -> None:
    # Sold 10 March (Shanghai), 30 days: valid through 8 April, ending 2026-04-08 16:00 UTC.
    assert calculations.expiry_for(T0, 30, "Asia/Shanghai") == datetime(2026, 4, 8, 16, 0, tzinfo=UTC)
    # 23:30 UTC on 9 March is already 10 March in Shanghai.
    late = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)
    assert calculations.expiry_for(late, 1, "Asia/Shanghai") == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert calculations.expiry_for(T0, None, "Asia/Shanghai") is None


# --- templates ---------------------------------------------------------------------------------------


def test_hq_creates_templates_with_each_store_scope(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    created = create_template(client, hq, **MANICURE)
    assert created == {
        "code": "MANI10",
        "name": "美甲十次卡",
        "service_code": "manicure",
        "uses": 10,
        "price_fen": 100_003,
        "per_use_fen": [10_001] * 3 + [10_000] * 7,
        "validity_days": 30,
        "refund_rule": "unused_pro_rata",
        "store_scope": "brand",
        "brand_code": "home",
        "region_code": None,
        "store_codes": [],
        "bearer": "issuing_store",
        "issuer_pct": 100,
        "active": True,
    }
    create_template(
        client,
        hq,
        code="PT12",
        name="私教12节",
        service_code="pt",
        uses=12,
        price_fen=360_000,
        store_scope="stores",
        store_codes=["C", "A"],
        refund_rule="full_if_unused",
        validity_days=None,
    )
    create_template(
        client,
        hq,
        code="KIDS",
        name="儿童理发5次",
        service_code="kids_cut",
        uses=5,
        price_fen=20_000,
        store_scope="region",
        region_code="north",
        refund_rule="none",
        bearer="split",
        issuer_pct=60,
    )
    till_b = chain.key("B")
    r = client.get("/api/v1/service-packages", params={"store_code": "B"}, headers=till_b)
    assert r.status_code == 200, r.text
    assert [p["code"] for p in r.json()["packages"]] == ["MANI10"]
    r = client.get("/api/v1/service-packages", params={"store_code": "C"}, headers=chain.key("C"))
    assert [p["code"] for p in r.json()["packages"]] == ["KIDS", "PT12"]
    r = client.get("/api/v1/service-packages", headers=hq)
    pt = {p["code"]: p for p in r.json()["packages"]}["PT12"]
    assert pt["store_codes"] == ["A", "C"]
    assert pt["validity_days"] is None
    assert {p["code"]: p for p in r.json()["packages"]}["KIDS"]["issuer_pct"] == 60

    before = snapshot(factory, chain.org_id)
    dup = create_template(client, hq, expect=409, **MANICURE)
    assert dup["code"] == "packages.code_taken"
    bad = create_template(client, hq, expect=422, **{**MANICURE, "code": "X", "uses": 0})
    assert (bad["code"], bad["field"]) == ("packages.invalid_template", "uses")
    bad = create_template(client, hq, expect=422, **{**MANICURE, "code": "X", "refund_rule": "half"})
    assert bad["field"] == "refund_rule"
    bad = create_template(client, hq, expect=422, **{**MANICURE, "code": "X", "brand_code": "nope"})
    assert bad["field"] == "brand_code"
    missing = create_template(
        client, hq, expect=404, **{**MANICURE, "code": "X", "store_scope": "stores", "store_codes": ["Z"]}
    )
    assert missing["code"] == "org.store_not_found"
    clerk = create_template(client, chain.key("A"), expect=403, **{**MANICURE, "code": "Y"})
    assert clerk["code"] == "auth.role"
    assert snapshot(factory, chain.org_id) == before
    assert [a for a, _, _ in audits_of(factory, chain.org_id)] == ["packages.template_created"] * 3


# --- selling and using -------------------------------------------------------------------------------


def test_sold_at_a_used_at_b_refused_at_c(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **MANICURE)
    member = register(client, chain, "A", "18200000001")
    no = member["member_no"]
    sold = sell(client, chain.key("A"), no, "MANI10", 100_003)
    pid = sold["id"]
    assert sold | {"id": 0, "sold_by": ""} == {
        "id": 0,
        "member_no": no,
        "package_code": "MANI10",
        "package_name": "美甲十次卡",
        "service_code": "manicure",
        "uses_total": 10,
        "uses_left": 10,
        "price_fen": 100_003,
        "value_fen": 100_003,
        "payment_method": "wechat_pay",
        "source": "sale",
        "reason": "",
        "sold_store_code": "A",
        "sold_by": "",
        "sold_at": "2026-03-10T02:00:00Z",
        "expires_at": "2026-04-08T16:00:00Z",
        "expired": False,
        "status": "active",
        "refunded_fen": 0,
        "uses_refunded": 0,
        "refunded_at": None,
        "uses": None,
    }
    assert sold["sold_by"].startswith("api_key:")

    clock.now = T0 + timedelta(days=2)
    at_b = use(client, chain.key("B"), pid, note="法式美甲", member_no=no)
    assert at_b | {"id": 0, "actor": ""} == {
        "id": 0,
        "member_package_id": pid,
        "store_code": "B",
        "sold_store_code": "A",
        "uses": 1,
        "first_use_no": 1,
        "value_fen": 10_001,
        "actor": "",
        "note": "法式美甲",
        "used_at": "2026-03-12T02:00:00Z",
    }
    b_mgr = login(client, chain, "b_mgr")
    two = use(client, b_mgr, pid, uses=2)
    assert (two["first_use_no"], two["value_fen"], two["actor"]) == (2, 20_002, "staff:b_mgr")
    three = use(client, chain.key("A"), pid)
    assert (three["first_use_no"], three["value_fen"]) == (4, 10_000)

    before = snapshot(factory, chain.org_id)
    refused = use(client, chain.key("C"), pid, expect=409)
    assert refused["code"] == "packages.not_offered_here"
    too_many = use(client, chain.key("A"), pid, uses=7, expect=409)
    assert (too_many["code"], too_many["uses_left"]) == ("packages.insufficient_uses", 6)
    assert use(client, chain.key("A"), pid, uses=0, expect=422)["code"] == "packages.invalid_uses"
    other = register(client, chain, "A", "18200000002")
    wrong = use(client, chain.key("A"), pid, member_no=other["member_no"], expect=404)
    assert wrong["code"] == "packages.member_package_not_found"
    scope = use(client, chain.key("A"), pid, store_code="B", expect=403)
    assert scope["code"] == "auth.store_scope"
    after = snapshot(factory, chain.org_id)
    assert after == before | {"events": after["events"], "audit": after["audit"]}  # the new member only
    assert after["events"] == before["events"] + 1  # member.registered

    r = client.get(f"/api/v1/members/{no}/packages", headers=chain.key("C"))
    assert r.status_code == 200, r.text
    [listed] = r.json()["packages"]
    assert (listed["id"], listed["uses_left"]) == (pid, 6)
    r = client.get(f"/api/v1/member-packages/{pid}", headers=chain.key("B"))
    assert r.status_code == 200, r.text
    assert [(u["store_code"], u["uses"], u["value_fen"]) for u in r.json()["uses"]] == [
        ("B", 1, 10_001),
        ("B", 2, 20_002),
        ("A", 1, 10_000),
    ]
    assert [(t, p.get("uses_left"), p.get("value_fen")) for t, p in events_of(factory, chain.org_id)] == [
        ("package.sold", None, None),
        ("package.used", 9, 10_001),
        ("package.used", 7, 20_002),
        ("package.used", 6, 10_000),
    ]
    assert [(a, who) for a, who, _ in audits_of(factory, chain.org_id)][1:] == [
        ("packages.sold", sold["sold_by"]),
        ("packages.used", at_b["actor"]),
        ("packages.used", "staff:b_mgr"),
        ("packages.used", three["actor"]),
    ]

    # Settlement: each use at B is owed by A; the use at A owes nothing.
    with factory() as s:
        facts = packages.settlement_facts(s, chain.org_id)
        assert [(f.sold_store_id, f.used_store_id, f.value_fen) for f in facts] == [
            (chain.stores["A"], chain.stores["B"], 10_001),
            (chain.stores["A"], chain.stores["B"], 20_002),
            (chain.stores["A"], chain.stores["A"], 10_000),
        ]
        owed = [packages.owed_for(f) for f in facts]
        assert owed == [
            packages.OwedPart(chain.stores["A"], chain.stores["B"], 10_001),
            packages.OwedPart(chain.stores["A"], chain.stores["B"], 20_002),
            None,
        ]
        march = packages.settlement_facts(
            s, chain.org_id, since=T0 + timedelta(days=2), until=T0 + timedelta(days=2, seconds=1)
        )
        assert len(march) == 3
        staff_use = s.get(PackageUse, two["id"])
        assert staff_use is not None
        assert staff_use.staff_id is not None
        assert staff_use.api_key_id is None
        assert verify_packages(s, chain.org_id) == []
    assert settlement_rows(factory, chain.org_id) == [
        (
            "package_used",
            chain.stores["A"],
            chain.stores["B"],
            10_001,
            f"package_use:{at_b['id']}",
            "2026-03",
        ),
        ("package_used", chain.stores["A"], chain.stores["B"], 20_002, f"package_use:{two['id']}", "2026-03"),
    ]


def test_sale_refusals_change_nothing(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **MANICURE)
    no = register(client, chain, "A", "18200000003")["member_no"]
    before = snapshot(factory, chain.org_id)
    wrong = sell(client, chain.key("A"), no, "MANI10", 100_000, expect=422)
    assert (wrong["code"], wrong["price_fen"]) == ("packages.payment_mismatch", 100_003)
    assert sell(client, chain.key("A"), no, "NOPE", 1, expect=404)["code"] == "packages.not_found"
    no_method = sell(client, chain.key("A"), no, "MANI10", 100_003, payment_method=" ", expect=422)
    assert no_method["code"] == "packages.payment_method_required"
    assert sell(client, hq, no, "MANI10", 100_003, expect=422)["code"] == "packages.store_required"
    auditor = login(client, chain, "auditor")
    assert sell(client, auditor, no, "MANI10", 100_003, store_code="A", expect=403)["code"] == "auth.role"
    with factory() as s:
        packages.set_active(
            s, system_principal(chain.org_id), packages.template_by_code(s, chain.org_id, "MANI10"), False
        )
        s.commit()
    assert sell(client, chain.key("A"), no, "MANI10", 100_003, expect=409)["code"] == "packages.inactive"
    after = snapshot(factory, chain.org_id)
    assert after == before | {"audit": before["audit"] + 1}  # the withdrawal only


def test_expired_package_is_refused(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **MANICURE)
    no = register(client, chain, "A", "18200000004")["member_no"]
    pid = sell(client, chain.key("A"), no, "MANI10", 100_003)["id"]
    clock.now = datetime(2026, 4, 8, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on the last day in Shanghai
    assert use(client, chain.key("B"), pid)["uses"] == 1
    clock.now = datetime(2026, 4, 8, 16, 0, tzinfo=UTC)
    before = snapshot(factory, chain.org_id)
    expired = use(client, chain.key("B"), pid, expect=409)
    assert (expired["code"], expired["expires_at"]) == ("packages.expired", "2026-04-08T16:00:00+00:00")
    assert snapshot(factory, chain.org_id) == before
    r = client.get(f"/api/v1/members/{no}/packages", headers=chain.key("A"))
    assert [(p["uses_left"], p["expired"]) for p in r.json()["packages"]] == [(9, True)]


# --- refunds -----------------------------------------------------------------------------------------


def test_pro_rata_refund_pays_exactly_the_unused_uses_and_closes(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **MANICURE)
    no = register(client, chain, "A", "18200000005")["member_no"]
    pid = sell(client, chain.key("A"), no, "MANI10", 100_003)["id"]
    used = (
        use(client, chain.key("B"), pid, uses=2)["value_fen"] + use(client, chain.key("A"), pid)["value_fen"]
    )
    assert used == 30_003

    before = snapshot(factory, chain.org_id)
    b_mgr = login(client, chain, "b_mgr")
    assert refund(client, b_mgr, pid, expect=403)["code"] == "auth.store_scope"  # sold at A
    assert refund(client, chain.key("A"), pid, expect=403)["code"] == "auth.role"  # a till may not
    assert refund(client, hq, pid, reason=" ", expect=422)["code"] == "packages.reason_required"
    assert snapshot(factory, chain.org_id) == before

    clock.now = T0 + timedelta(days=3)
    a_mgr = login(client, chain, "a_mgr")
    done = refund(client, a_mgr, pid)
    assert (done["status"], done["uses_left"], done["uses_refunded"], done["refunded_fen"]) == (
        "refunded",
        0,
        7,
        70_000,
    )
    assert used + done["refunded_fen"] == 100_003
    assert done["refunded_at"] == "2026-03-13T02:00:00Z"
    after = snapshot(factory, chain.org_id)
    assert after["uses"] == before["uses"]
    closed = use(client, chain.key("A"), pid, expect=409)
    assert closed["code"] == "packages.closed"
    assert refund(client, a_mgr, pid, expect=409)["code"] == "packages.closed"
    assert snapshot(factory, chain.org_id) == after
    action, actor, details = audits_of(factory, chain.org_id)[-1]
    assert (action, actor) == ("packages.refunded", "staff:a_mgr")
    assert details == {
        "package_code": "MANI10",
        "refund_rule": "unused_pro_rata",
        "uses_refunded": 7,
        "refunded_fen": 70_000,
        "price_fen": 100_003,
        "payment_method": "wechat_pay",
    }
    assert events_of(factory, chain.org_id)[-1] == (
        "package.refunded",
        {
            "member_package_id": pid,
            "package_code": "MANI10",
            "member_no": no,
            "uses_refunded": 7,
            "refunded_fen": 70_000,
            "payment_method": "wechat_pay",
        },
    )
    r = client.get(f"/api/v1/members/{no}/packages", headers=chain.key("A"))
    assert r.json()["packages"] == []
    r = client.get(f"/api/v1/members/{no}/packages", params={"include_closed": True}, headers=chain.key("A"))
    assert [p["status"] for p in r.json()["packages"]] == ["refunded"]
    with factory() as s:
        assert verify_packages(s, chain.org_id) == []


def test_full_if_unused_and_no_refund_rules(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_template(
        client,
        hq,
        code="PT12",
        name="私教12节",
        service_code="pt",
        uses=12,
        price_fen=360_001,
        refund_rule="full_if_unused",
    )
    create_template(
        client,
        hq,
        code="WASH",
        name="洗车3次",
        service_code="wash",
        uses=3,
        price_fen=9_900,
        refund_rule="none",
    )
    no = register(client, chain, "A", "18200000006")["member_no"]
    unused = sell(client, chain.key("A"), no, "PT12", 360_001)["id"]
    started = sell(client, chain.key("A"), no, "PT12", 360_001)["id"]
    wash = sell(client, chain.key("A"), no, "WASH", 9_900)["id"]
    use(client, chain.key("B"), started)

    before = snapshot(factory, chain.org_id)
    refused = refund(client, hq, started, expect=409)
    assert (refused["code"], refused["message_en"]) == (
        "packages.not_refundable",
        "This package is refundable only while unused",
    )
    assert refund(client, hq, wash, expect=409)["code"] == "packages.not_refundable"
    assert snapshot(factory, chain.org_id) == before
    full = refund(client, hq, unused)
    assert (full["refunded_fen"], full["uses_refunded"], full["status"]) == (360_001, 12, "refunded")
    with factory() as s:
        assert verify_packages(s, chain.org_id) == []
        s.execute(update(MemberPackage).where(MemberPackage.id == wash).values(uses_left=2))
        assert verify_packages(s, chain.org_id) == [
            f"member package {wash}: 3 uses != 2 left + 0 used + 0 refunded"
        ]
        s.rollback()


def test_granted_package_is_audited_valued_for_settlement_and_not_refundable(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **{**MANICURE, "bearer": "split", "issuer_pct": 60})
    no = register(client, chain, "A", "18200000007")["member_no"]
    cs = login(client, chain, "cs")

    def grant(headers: dict[str, str], expect: int = 201, **body: Any) -> dict[str, Any]:
        r = client.post(
            f"/api/v1/members/{no}/package-grants", json={"package_code": "MANI10", **body}, headers=headers
        )
        assert r.status_code == expect, r.text
        return dict(r.json())

    before = snapshot(factory, chain.org_id)
    assert grant(cs, 422, source="compensation", reason="")["code"] == "packages.invalid_grant"
    assert grant(cs, 422, source="sale", reason="x")["code"] == "packages.invalid_grant"
    assert grant(chain.key("A"), 403, source="compensation", reason="x")["code"] == "auth.role"
    assert snapshot(factory, chain.org_id) == before

    by_hq = grant(cs, source="compensation", reason="客诉 #88 补偿")
    assert (by_hq["price_fen"], by_hq["value_fen"], by_hq["source"], by_hq["sold_store_code"]) == (
        0,
        100_003,
        "compensation",
        None,
    )
    a_mgr = login(client, chain, "a_mgr")
    by_a = grant(a_mgr, source="goodwill", reason="老顾客回馈")
    assert by_a["sold_store_code"] == "A"
    assert [(a, who, d["source"], d["price_fen"]) for a, who, d in audits_of(factory, chain.org_id)[1:]] == [
        ("packages.granted", "staff:cs", "compensation", 0),
        ("packages.granted", "staff:a_mgr", "goodwill", 0),
    ]
    assert refund(client, hq, by_hq["id"], expect=409)["code"] == "packages.not_refundable"

    u1 = use(client, chain.key("B"), by_hq["id"])
    u2 = use(client, chain.key("B"), by_a["id"])
    u3 = use(client, chain.key("A"), by_a["id"])
    with factory() as s:
        facts = {f.use_id: f for f in packages.settlement_facts(s, chain.org_id)}
    a, b = chain.stores["A"], chain.stores["B"]
    # A split: the issuer (HQ for HQ's grant, else the granting store) repays 60 %, rounded down, of
    # the use's value; the performing store bears the rest. The granting store's own use owes nothing.
    assert packages.owed_for(facts[u1["id"]]) == packages.OwedPart(None, b, 6_000)
    assert packages.owed_for(facts[u2["id"]]) == packages.OwedPart(a, b, 6_000)
    assert packages.owed_for(facts[u3["id"]]) is None
    assert settlement_rows(factory, chain.org_id) == [
        ("package_used", 0, b, 6_000, f"package_use:{u1['id']}", "2026-03"),
        ("package_used", a, b, 6_000, f"package_use:{u2['id']}", "2026-03"),
    ]


@pytest.mark.parametrize(
    ("bearer", "expected"),
    [
        ("hq", [("HQ", "B", 10_001), ("HQ", "A", 10_001)]),
        ("redeeming_store", []),
        ("issuing_store", [("A", "B", 10_001)]),
    ],
)
def test_each_bearer_charges_the_right_party(
    client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    clock: Clock,
    bearer: str,
    expected: list[tuple[str, str, int]],
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **{**MANICURE, "bearer": bearer})
    no = register(client, chain, "A", "18200000009")["member_no"]
    pid = sell(client, chain.key("A"), no, "MANI10", 100_003)["id"]
    use(client, chain.key("B"), pid)
    use(client, chain.key("A"), pid)
    names = {0: "HQ", chain.stores["A"]: "A", chain.stores["B"]: "B"}
    rows = settlement_rows(factory, chain.org_id)
    assert [(names[d], names[c], fen) for _, d, c, fen, _, _ in rows] == expected


def test_a_retried_use_is_taken_once(
    client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(client, chain, "hq")
    create_template(client, hq, **MANICURE)
    no = register(client, chain, "A", "18200000008")["member_no"]
    pid = sell(client, chain.key("A"), no, "MANI10", 100_003)["id"]
    headers = chain.key("B") | {"Idempotency-Key": "use-1"}
    first = client.post(f"/api/v1/member-packages/{pid}/uses", json={"uses": 1}, headers=headers)
    again = client.post(f"/api/v1/member-packages/{pid}/uses", json={"uses": 1}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    with factory() as s:
        assert s.scalar(select(MemberPackage.uses_left).where(MemberPackage.id == pid)) == 9
        assert _count(s, PackageUse, chain.org_id) == 1


# --- a real race for the last use --------------------------------------------------------------------

TILLS = 2
ROUNDS = 10


def test_two_tills_race_for_the_last_use(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    race_engine = (
        make_engine(url, pool_size=TILLS * 2 + 2, max_overflow=0)
        if engine.dialect.name != "sqlite"
        else make_engine(url)
    )
    factory = make_sessionmaker(race_engine)
    with factory() as s:
        chain = make_chain(s)
        till_a = authenticate(s, chain.keys["A"])
        hq = system_principal(chain.org_id)
        member = members.register(
            s, till_a, chain.stores["A"], members.Registration(phone="18200000099", name="抢次")
        )
        template = packages.create_template(
            s,
            hq,
            packages.PackageSpec(code="LAST", name="最后一次", service_code="svc", uses=2, price_fen=999),
        )
        store_a = org_service.acting_store(s, till_a, None)
        ids = []
        for _ in range(ROUNDS):
            package = packages.sell_package(
                s, till_a, member, template, store_a, payment_method="cash", amount_fen=999
            )
            packages.use_package(s, till_a, package.id, store_a)  # one use left
            ids.append(package.id)
        s.commit()
    tills = [_principal(factory, chain.keys[code]) for code in "AB"]
    for round_no, package_id in enumerate(ids, start=1):
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(TILLS)
        threads = [
            threading.Thread(target=_race, args=(factory, tills[i % 2], package_id, barrier, outcomes, lock))
            for i in range(TILLS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes == Counter({"ok": 1, "packages.insufficient_uses": TILLS - 1}), round_no
        with factory() as s:
            assert s.scalar(select(MemberPackage.uses_left).where(MemberPackage.id == package_id)) == 0
            values = s.scalars(
                select(PackageUse.value_fen)
                .where(PackageUse.member_package_id == package_id)
                .order_by(PackageUse.id)
            ).all()
            assert list(values) == [500, 499]
            assert verify_packages(s, chain.org_id) == []
    with factory() as s:
        # Every winning use at B (sold at A) is settled once: A owes B its value.
        at_b = s.execute(
            select(PackageUse.id, PackageUse.value_fen).where(
                PackageUse.org_id == chain.org_id, PackageUse.used_store_id == chain.stores["B"]
            )
        ).all()
        entries = s.execute(
            select(SettlementEntry.source_ref, SettlementEntry.amount_fen).where(
                SettlementEntry.org_id == chain.org_id
            )
        ).all()
        assert sorted(entries) == sorted((f"package_use:{i}", v) for i, v in at_b)
    race_engine.dispose()


def _principal(factory: sessionmaker[Session], secret: str) -> Principal:
    with factory() as s:
        return authenticate(s, secret)


def _race(
    factory: sessionmaker[Session],
    till: Principal,
    package_id: int,
    barrier: threading.Barrier,
    outcomes: Counter[str],
    lock: threading.Lock,
) -> None:
    barrier.wait()
    with factory() as s:
        try:
            store = org_service.acting_store(s, till, None)
            packages.use_package(s, till, package_id, store)
            s.commit()
            result = "ok"
        except DomainError as err:
            s.rollback()
            result = err.code
    with lock:
        outcomes[result] += 1
