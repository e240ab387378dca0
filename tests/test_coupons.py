"""Coupons: each kind's maths, validity, store scope, price difference, stacking, limits, the best
combination, redemption and returns (restore / void), gifting, and the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal, system_principal
from onemember.auth.service import authenticate
from onemember.coupons import api as coupons_api
from onemember.coupons import calculations as calc
from onemember.coupons import service as coupons
from onemember.coupons.errors import (
    AlreadyUsed,
    BudgetExhausted,
    CouponNotFound,
    Expired,
    InvalidTemplate,
    LimitReached,
    NotApplicable,
    NotGiftable,
    NotStackable,
    NotUsableHere,
    SoldOut,
    ThresholdNotMet,
)
from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate
from onemember.db import set_clock
from onemember.errors import DomainError
from onemember.events.models import Event
from onemember.members import service as members
from onemember.members.models import Member
from onemember.orders.models import Order
from onemember.org.models import Store
from onemember.settings import get_settings
from tests.factories import Chain
from tests.helpers import login, register

NOW = datetime(2030, 6, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    set_clock(lambda: NOW)
    yield
    set_clock(None)


@pytest.fixture
def hq(chain: Chain) -> Principal:
    return system_principal(chain.org_id)


def member(s: Session, chain: Chain, n: int) -> Member:
    till = authenticate(s, chain.keys["A"])
    return members.register(
        s, till, chain.stores["A"], members.Registration(phone=f"1810000{n:04d}", name=f"券{n}")
    )


def store(s: Session, chain: Chain, code: str) -> Store:
    found = s.get(Store, chain.stores[code])
    assert found is not None
    return found


def template(s: Session, hq: Principal, code: str, kind: str, **fields: Any) -> CouponTemplate:
    fields.setdefault("valid_days", 30)
    return coupons.create_template(s, hq, coupons.TemplateSpec(code=code, name=code, kind=kind, **fields))


def issue(
    s: Session, hq: Principal, t: CouponTemplate, m: Member, store_: Store | None = None, **kw: Any
) -> Coupon:
    return coupons.issue_coupon(s, hq, t, m, source="staff", issuing_store=store_, **kw)


def L(no: int, sku: str, qty: int, amount: int, category: str = "食品") -> calc.Line:
    return calc.Line(no, sku, category, qty, amount)


def order(s: Session, chain: Chain, m: Member, code: str = "A", no: str = "S1") -> int:
    o = Order(
        org_id=chain.org_id,
        order_no=f"{no}-{m.id}",
        store_id=chain.stores[code],
        member_id=m.id,
        total_fen=0,
        paid_fen=0,
        occurred_at=NOW,
        created_at=NOW,
        earn_explanation=[],
    )
    s.add(o)
    s.flush()
    return o.id


def counters(s: Session, template_id: int) -> tuple[int, int, int]:
    t = s.scalars(
        select(CouponTemplate)
        .where(CouponTemplate.id == template_id)
        .execution_options(populate_existing=True)
    ).one()
    return t.issued_count, t.redeemed_count, t.budget_used


def count(s: Session, model: Any, org_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0)


def snapshot(s: Session, org_id: int) -> dict[str, Any]:
    s.flush()
    s.expire_all()
    return {
        "coupons": sorted(
            s.execute(select(Coupon.id, Coupon.member_id, Coupon.status).where(Coupon.org_id == org_id)).all()
        ),
        "templates": sorted(
            s.execute(
                select(
                    CouponTemplate.id,
                    CouponTemplate.issued_count,
                    CouponTemplate.redeemed_count,
                    CouponTemplate.budget_used,
                ).where(CouponTemplate.org_id == org_id)
            ).all()
        ),
        "redemptions": count(s, CouponRedemption, org_id),
        "events": count(s, Event, org_id),
        "audit": count(s, AuditLog, org_id),
    }


def failing(s: Session, org_id: int, err: type[DomainError], fn: Any, *args: Any, **kw: Any) -> DomainError:
    """Run ``fn`` in a savepoint, expect ``err`` and prove nothing changed."""
    before = snapshot(s, org_id)
    nested = s.begin_nested()
    with pytest.raises(err) as info:
        fn(*args, **kw)
    nested.rollback()
    assert snapshot(s, org_id) == before
    return info.value


# --- pure maths --------------------------------------------------------------------------------------


def cand(cid: int, kind: str, **kw: Any) -> calc.Candidate:
    return calc.Candidate(
        coupon_id=cid, code=f"C{cid}", template_id=kw.pop("template_id", cid), kind=kind, **kw
    )


def test_amount_off_needs_its_threshold_and_is_split_over_qualifying_lines() -> None:
    c = cand(1, "amount_off", threshold_fen=30000, amount_fen=5000, categories=frozenset({"服装"}))
    lines = [L(1, "T1", 1, 20000, "服装"), L(2, "T2", 2, 10001, "服装"), L(3, "F", 1, 9999)]
    ev = calc.evaluate([c], lines)
    assert ev.problem is None
    assert ev.discount_fen == 5000
    # 5000 over 20000 : 10001 -> 3333.22 : 1666.77 -> largest remainder gives the extra fen to line 2
    assert ev.line_discounts == {1: 3333, 2: 1667, 3: 0}
    short = [L(1, "T1", 1, 20000, "服装"), L(3, "F", 1, 20000)]
    assert calc.evaluate([c], short).problem == "coupons.threshold_not_met"


def test_percent_off_with_and_without_cap() -> None:
    lines = [L(1, "A", 1, 12345), L(2, "B", 3, 30000)]
    assert (
        calc.evaluate([cand(1, "percent_off", percent_off=20)], lines).discount_fen == 8469
    )  # 42345*20//100
    capped = calc.evaluate([cand(1, "percent_off", percent_off=20, cap_fen=5000)], lines)
    assert capped.discount_fen == 5000
    assert capped.line_discounts == {1: 1458, 2: 3542}


def test_fixed_price_takes_the_dearest_unit_down_to_its_price() -> None:
    c = cand(1, "fixed_price", price_fen=990, skus=frozenset({"LATTE", "MOCHA"}))
    ev = calc.evaluate([c], [L(1, "LATTE", 2, 3200), L(2, "MOCHA", 1, 3500), L(3, "CAKE", 1, 2800)])
    assert ev.results[0].lines == {2: 2510}
    assert calc.evaluate([c], [L(1, "LATTE", 1, 900)]).problem == "coupons.not_applicable"


def test_item_vouchers_cover_up_to_their_value_and_the_member_pays_the_difference() -> None:
    lines = [L(1, "NAIL", 2, 25000, "服务")]  # 125.00 a unit here
    covered = cand(1, "exchange", skus=frozenset({"NAIL"}), cover_fen=9900)
    ev = calc.evaluate([covered], lines)
    assert (ev.discount_fen, ev.price_difference_fen, ev.line_discounts) == (9900, 2600, {1: 9900})
    full = cand(2, "service", skus=frozenset({"NAIL"}), cover_fen=9900, pay_difference=False)
    assert calc.evaluate([full], lines).discount_fen == 12500
    cheaper = calc.evaluate([covered], [L(1, "NAIL", 1, 8000, "服务")])
    assert (cheaper.discount_fen, cheaper.price_difference_fen) == (8000, 0)
    gift = cand(3, "free_item", skus=frozenset({"SOCK"}), threshold_fen=20000)
    assert calc.evaluate([gift], [L(1, "SOCK", 1, 1500)]).problem == "coupons.threshold_not_met"
    both = calc.evaluate([gift], [L(1, "SOCK", 1, 1500), L(2, "COAT", 1, 19000)])
    assert (both.discount_fen, both.line_discounts) == (1500, {1: 1500, 2: 0})


def test_canonical_order_unit_vouchers_then_amount_then_percent() -> None:
    lines = [L(1, "A", 1, 30000), L(2, "B", 1, 10000)]
    free = cand(1, "free_item", skus=frozenset({"B"}))
    amount = cand(2, "amount_off", threshold_fen=30000, amount_fen=5000)
    pct = cand(3, "percent_off", percent_off=10)
    ev = calc.evaluate([pct, amount, free], lines)
    # B free (10000); 5000 off the 30000 left; 10 % of the 25000 left.
    assert [(r.code, r.discount_fen) for r in ev.results] == [("C1", 10000), ("C2", 5000), ("C3", 2500)]
    assert ev.line_discounts == {1: 7500, 2: 10000}


def test_stacking_rules() -> None:
    assert (
        calc.stacking_problem([cand(1, "amount_off", exclusive=True), cand(2, "percent_off")]) == "exclusive"
    )
    a = cand(1, "amount_off", stack_group="full")
    b = cand(2, "amount_off", stack_group="full")
    assert calc.stacking_problem([a, b]) == "stack_group"
    same = [cand(1, "free_item", template_id=7), cand(2, "free_item", template_id=7)]
    assert calc.stacking_problem(same) == "per_order_limit"
    two = [
        cand(1, "free_item", template_id=7, per_order_limit=2),
        cand(2, "free_item", template_id=7, per_order_limit=2),
    ]
    assert calc.stacking_problem(two) is None


def test_best_combination_beats_greedy_and_respects_groups() -> None:
    lines = [L(1, "A", 1, 30000), L(2, "B", 1, 20000)]
    candidates = [
        cand(1, "amount_off", threshold_fen=50000, amount_fen=12000, exclusive=True),
        cand(2, "amount_off", threshold_fen=30000, amount_fen=6000, stack_group="g"),
        cand(3, "amount_off", threshold_fen=10000, amount_fen=5000, stack_group="g"),
        cand(4, "percent_off", percent_off=10),
        cand(5, "free_item", skus=frozenset({"B"}), cover_fen=8000),
    ]
    best = calc.best_combination(candidates, lines)
    # Without the exclusive: 8000 (B) + 6000 + 10 % of 36000 = 17600 > 12000 alone.
    assert [c.coupon_id for c in best.coupons] == [5, 2, 4]
    assert best.discount_fen == 17600
    assert best.exact
    # Brute force agrees.
    import itertools

    top = 0
    for r in range(1, len(candidates) + 1):
        for combo in itertools.combinations(candidates, r):
            if calc.stacking_problem(combo) is None:
                ev = calc.evaluate(combo, lines)
                if ev.problem is None:
                    top = max(top, ev.discount_fen)
    assert top == 17600


def test_best_combination_of_twenty_candidates_is_exact_and_quick() -> None:
    lines = [L(i, f"S{i}", 1 + i % 3, 1000 + 37 * i, "c" + str(i % 4)) for i in range(1, 51)]
    candidates = [
        cand(
            i,
            ["amount_off", "percent_off", "fixed_price", "free_item"][i % 4],
            amount_fen=500 * i if i % 4 == 0 else 0,
            threshold_fen=1000 * i if i % 4 == 0 else 0,
            percent_off=5 + i if i % 4 == 1 else 0,
            cap_fen=3000 if i % 4 == 1 else None,
            price_fen=100 if i % 4 == 2 else 0,
            skus=frozenset({f"S{i}", f"S{i + 1}"}) if i % 4 in (2, 3) else frozenset(),
            categories=frozenset({"c" + str(i % 4)}) if i % 4 < 2 else frozenset(),
            stack_group="g" + str(i % 5),
        )
        for i in range(1, 21)
    ]
    best = calc.best_combination(candidates, lines)
    assert best.exact
    assert best.nodes < calc.MAX_NODES
    assert best.discount_fen > 0


def test_validity_counts_the_day_of_issue() -> None:
    start, end = calc.validity(NOW, "Asia/Shanghai", valid_from=None, valid_to=None, valid_days=7)
    assert start == NOW
    assert end == datetime(2030, 6, 16, 16, 0, tzinfo=UTC)  # end of 16 June in Shanghai
    fixed = datetime(2030, 6, 12, 16, 0, tzinfo=UTC)
    assert calc.validity(NOW, "Asia/Shanghai", valid_from=None, valid_to=fixed, valid_days=7)[1] == fixed


# --- templates and issuance --------------------------------------------------------------------------


def test_bad_templates_are_refused(session: Session, chain: Chain, hq: Principal) -> None:
    bad: list[dict[str, Any]] = [
        {"kind": "amount_off"},
        {"kind": "percent_off", "percent_off": 100},
        {"kind": "free_item"},
        {"kind": "amount_off", "amount_fen": 100, "valid_days": None},
        {"kind": "amount_off", "amount_fen": 100, "accept_scope": "brand"},
        {"kind": "amount_off", "amount_fen": 100, "bearer": "split"},
        {"kind": "amount_off", "amount_fen": 100, "accept_scope": "brand", "accept_brand_code": "nope"},
        {"kind": "amount_off", "amount_fen": 100, "valid_days": None, "valid_to": NOW},
    ]
    for fields in bad:
        failing(session, chain.org_id, InvalidTemplate, template, session, hq, "BAD", **fields)
    for code, field in (("issue", "code"), ("A/B", "code"), ("满减", "code"), ("x" * 41, "code")):
        err = failing(
            session, chain.org_id, InvalidTemplate, template, session, hq, code, "amount_off", amount_fen=1
        )
        assert err.extra["field"] == field
    clerk = authenticate(session, chain.keys["A"])
    with pytest.raises(DomainError) as info:
        template(session, clerk, "X", "amount_off", amount_fen=100)
    assert info.value.code == "auth.role"


def test_issue_sets_validity_and_cover_and_is_audited(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "NAIL", "service", skus=["NAIL"], face_value_fen=9900, valid_days=7)
    m = member(session, chain, 1)
    c = issue(session, hq, t, m, store(session, chain, "A"), reason="开业")
    assert (c.status, c.cover_fen, c.valid_from, c.source) == ("available", 9900, NOW, "staff")
    assert c.valid_to == datetime(2030, 6, 16, 16, 0, tzinfo=UTC)
    c2 = issue(session, hq, t, m, cover_fen=12000)
    assert c2.cover_fen == 12000
    assert counters(session, t.id) == (2, 0, 0)
    audit = session.scalars(select(AuditLog).where(AuditLog.target_id == c.code)).one()
    assert (audit.action, audit.reason, audit.details["template_code"]) == ("coupons.issued", "开业", "NAIL")


def test_quantity_member_limit_and_ended_templates(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "Q", "amount_off", amount_fen=500, total_quantity=3, per_member_limit=2)
    m1, m2 = member(session, chain, 1), member(session, chain, 2)
    issue(session, hq, t, m1)
    issue(session, hq, t, m1)
    err = failing(session, chain.org_id, LimitReached, issue, session, hq, t, m1)
    assert err.extra == {"limit": 2, "used": 2}
    issue(session, hq, t, m2)
    failing(session, chain.org_id, SoldOut, issue, session, hq, t, m2)
    assert counters(session, t.id) == (3, 0, 0)
    ended = template(
        session, hq, "OLD", "amount_off", amount_fen=500, valid_days=None, valid_to=NOW + timedelta(hours=1)
    )
    set_clock(lambda: NOW + timedelta(hours=1))
    failing(session, chain.org_id, Expired, issue, session, hq, ended, m1)
    assert counters(session, ended.id) == (0, 0, 0)


def test_campaign_and_mall_issue_once_per_reference(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "CAMP", "amount_off", amount_fen=1000)
    m = member(session, chain, 1)
    first = coupons.issue_for_campaign(session, chain.org_id, "CAMP", m, campaign_ref="spring:1")
    again = coupons.issue_for_campaign(session, chain.org_id, "CAMP", m, campaign_ref="spring:1")
    assert first.id == again.id
    mall1 = coupons.issue_from_mall(session, hq, t, m, 42, "积分商城兑换")
    assert coupons.issue_from_mall(session, hq, t, m, 42, "积分商城兑换").id == mall1.id
    assert (first.source, mall1.source, mall1.issuing_store_id, mall1.source_ref) == (
        "campaign",
        "mall",
        None,
        "mall:42",
    )
    assert counters(session, t.id) == (2, 0, 0)


def test_compensation_needs_a_reason_and_a_role(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "SORRY", "amount_off", amount_fen=2000)
    m = member(session, chain, 1)
    failing(session, chain.org_id, DomainError, coupons.issue_compensation, session, hq, t, m, " ")
    clerk = authenticate(session, chain.keys["A"])  # an API key acts as a clerk
    err = failing(
        session, chain.org_id, DomainError, coupons.issue_compensation, session, clerk, t, m, "迟到"
    )
    assert err.code == "auth.role"
    c = coupons.issue_compensation(session, hq, t, m, "客诉 #12 补偿")
    assert (c.source, c.reason) == ("compensation", "客诉 #12 补偿")


# --- at the till -------------------------------------------------------------------------------------


def apply(
    s: Session,
    chain: Chain,
    m: Member,
    code: str,
    lines: list[calc.Line],
    codes: list[str],
    tier: bool = False,
) -> coupons.Application:
    return coupons.apply_coupons(
        s, m, store(s, chain, code), lines, codes, tier_discount_applied=tier, lock=True
    )


def test_store_scopes(session: Session, chain: Chain, hq: Principal) -> None:
    m = member(session, chain, 1)
    lines = [L(1, "X", 1, 10000)]
    a_store = store(session, chain, "A")
    cases: dict[str, tuple[dict[str, Any], Store | None, set[str]]] = {
        "ALL": ({"accept_scope": "all"}, None, {"A", "B", "C"}),
        "BRAND": ({"accept_scope": "brand", "accept_brand_code": "home"}, None, {"A", "B"}),
        "REGION": ({"accept_scope": "region", "accept_region_code": "north"}, None, {"C"}),
        "LIST": ({"accept_scope": "stores", "accept_store_codes": ["B", "C"]}, None, {"B", "C"}),
        "MINE": ({"accept_scope": "issuing_store"}, a_store, {"A"}),
        "NOCROSS": ({"cross_store": False}, a_store, {"A"}),
        "HQNOCROSS": ({"cross_store": False}, None, {"A", "B", "C"}),
    }
    for code, (fields, issuer, accepted) in cases.items():
        t = template(session, hq, code, "amount_off", amount_fen=100, **fields)
        c = issue(session, hq, t, m, issuer)
        for s_code in "ABC":
            if s_code in accepted:
                assert apply(session, chain, m, s_code, lines, [c.code]).discount_fen == 100
            else:
                failing(
                    session, chain.org_id, NotUsableHere, apply, session, chain, m, s_code, lines, [c.code]
                )
    issuer_only = template(session, hq, "MINE2", "amount_off", amount_fen=100, accept_scope="issuing_store")
    failing(session, chain.org_id, InvalidTemplate, issue, session, hq, issuer_only, m)


def test_cross_store_voucher_with_price_difference(session: Session, chain: Chain, hq: Principal) -> None:
    """A manicure voucher bought at A (99.00 there) used at B where it costs 125.00: the member pays
    26.00; at a store where it costs 88.00 it covers it all."""
    t = template(session, hq, "NAILV", "service", skus=["NAIL"], pay_difference=True)
    m = member(session, chain, 1)
    c = issue(session, hq, t, m, store(session, chain, "A"), cover_fen=9900)
    at_b = apply(session, chain, m, "B", [L(1, "NAIL", 1, 12500, "服务"), L(2, "OIL", 1, 3000)], [c.code])
    assert (at_b.discount_fen, at_b.price_difference_fen, at_b.line_discounts) == (9900, 2600, [9900, 0])
    at_c = apply(session, chain, m, "C", [L(1, "NAIL", 1, 8800, "服务")], [c.code])
    assert (at_c.discount_fen, at_c.price_difference_fen) == (8800, 0)
    failing(
        session, chain.org_id, NotApplicable, apply, session, chain, m, "B", [L(1, "OIL", 1, 3000)], [c.code]
    )


def test_stacking_and_tier_discount_at_the_till(session: Session, chain: Chain, hq: Principal) -> None:
    m = member(session, chain, 1)
    solo = issue(session, hq, template(session, hq, "SOLO", "amount_off", amount_fen=3000, exclusive=True), m)
    g1 = issue(session, hq, template(session, hq, "G1", "amount_off", amount_fen=1000, stack_group="full"), m)
    g2 = issue(session, hq, template(session, hq, "G2", "amount_off", amount_fen=2000, stack_group="full"), m)
    pct = issue(
        session,
        hq,
        template(session, hq, "PCT", "percent_off", percent_off=10, combines_with_tier_discount=False),
        m,
    )
    lines = [L(1, "X", 1, 20000)]
    for codes in ([solo.code, g1.code], [g1.code, g2.code]):
        failing(session, chain.org_id, NotStackable, apply, session, chain, m, "A", lines, codes)
    failing(session, chain.org_id, NotStackable, apply, session, chain, m, "A", lines, [pct.code], True)
    ok = apply(session, chain, m, "A", lines, [g2.code, pct.code])
    assert ok.discount_fen == 3800
    suggestion = coupons.best_for_basket(session, m, store(session, chain, "A"), lines)
    assert sorted(suggestion.codes) == sorted([g2.code, pct.code])
    assert suggestion.best.discount_fen == 3800
    with_tier = coupons.best_for_basket(
        session, m, store(session, chain, "A"), lines, tier_discount_applied=True
    )
    assert with_tier.codes == [solo.code]  # 3000 alone beats 2000 in the group
    assert {u.coupon.code: u.reason for u in with_tier.usability.unusable} == {
        pct.code: "coupons.not_stackable"
    }


def test_unusable_reasons_and_wrong_member(session: Session, chain: Chain, hq: Principal) -> None:
    m, other = member(session, chain, 1), member(session, chain, 2)
    big = issue(
        session, hq, template(session, hq, "BIG", "amount_off", amount_fen=5000, threshold_fen=30000), m
    )
    soon = issue(session, hq, template(session, hq, "SOON", "amount_off", amount_fen=100, valid_days=1), m)
    lines = [L(1, "X", 1, 20000)]
    failing(session, chain.org_id, ThresholdNotMet, apply, session, chain, m, "A", lines, [big.code])
    failing(session, chain.org_id, CouponNotFound, apply, session, chain, other, "A", lines, [big.code])
    failing(session, chain.org_id, CouponNotFound, apply, session, chain, m, "A", lines, ["NOSUCHCODE"])
    set_clock(lambda: NOW + timedelta(days=1))
    failing(session, chain.org_id, Expired, apply, session, chain, m, "A", lines, [soon.code])
    usability = coupons.usable_coupons(session, m, store(session, chain, "A"), lines)
    assert {u.coupon.code: u.reason for u in usability.unusable} == {
        big.code: "coupons.threshold_not_met",
        soon.code: "coupons.expired",
    }


def test_redeem_then_full_return_restores(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "R", "amount_off", amount_fen=5000, threshold_fen=30000, budget_fen=100000)
    m = member(session, chain, 1)
    c = issue(session, hq, t, m, store(session, chain, "A"))
    lines = [L(1, "X", 3, 30000), L(2, "Y", 1, 10000)]
    app_ = apply(session, chain, m, "B", lines, [c.code])
    assert app_.line_discounts == [3750, 1250]
    oid = order(session, chain, m, "B")
    [red] = coupons.redeem_applied(session, app_, oid, chain.stores["B"])
    assert (red.discount_fen, red.issuing_store_id, red.redeeming_store_id, red.bearer) == (
        5000,
        chain.stores["A"],
        chain.stores["B"],
        "hq",
    )
    session.refresh(c)
    assert (c.status, c.redeemed_order_id, c.discount_fen) == ("redeemed", oid, 5000)
    assert counters(session, t.id) == (1, 1, 5000)
    failing(session, chain.org_id, AlreadyUsed, apply, session, chain, m, "A", lines, [c.code])
    # Return one of three X, then the rest and Y: shares 1250 + 2500 + 1250, then the coupon is back.
    [r1] = coupons.on_return(session, oid, [(1, 1)])
    assert (r1.returned_fen, r1.lines, r1.action) == (1250, {1: 1250}, "kept")
    [r2] = coupons.on_return(session, oid, [(1, 2), (2, 1)])
    assert (r2.returned_fen, r2.lines, r2.action) == (3750, {1: 2500, 2: 1250}, "restored")
    session.refresh(c)
    assert (c.status, c.redeemed_order_id, c.discount_fen) == ("available", None, 0)
    assert counters(session, t.id) == (1, 0, 0)
    session.refresh(red)
    assert (red.status, red.returned_fen) == ("restored", 5000)
    assert coupons.on_return(session, oid, [(1, 1)]) == []  # nothing more to take back


def test_return_voids_and_a_restored_coupon_past_its_end_is_expired(
    session: Session, chain: Chain, hq: Principal
) -> None:
    m = member(session, chain, 1)
    void_t = template(session, hq, "V", "free_item", skus=["SOCK"], return_policy="void")
    short_t = template(session, hq, "S", "percent_off", percent_off=10, valid_days=1)
    v, s_ = issue(session, hq, void_t, m), issue(session, hq, short_t, m)
    app_ = apply(session, chain, m, "A", [L(1, "SOCK", 2, 3000), L(2, "X", 1, 7001)], [v.code, s_.code])
    # SOCK free (1500); 10 % of 1500 + 7001 = 850, split 150 : 700.
    assert app_.line_discounts == [1650, 700]
    oid = order(session, chain, m)
    coupons.redeem_applied(session, app_, oid, chain.stores["A"])
    set_clock(lambda: NOW + timedelta(days=2))
    out = coupons.on_return(session, oid, [(1, 2), (2, 1)])
    assert sorted((r.code, r.returned_fen, r.action) for r in out) == sorted(
        [(v.code, 1500, "voided"), (s_.code, 850, "restored")]
    )
    session.refresh(v)
    session.refresh(s_)
    assert (v.status, s_.status) == ("void", "expired")
    assert counters(session, void_t.id) == (1, 0, 0)


def test_budget_is_spent_atomically_at_redemption(session: Session, chain: Chain, hq: Principal) -> None:
    t = template(session, hq, "BUD", "amount_off", amount_fen=3000, budget_fen=5000, per_order_limit=1)
    m = member(session, chain, 1)
    c1, c2 = issue(session, hq, t, m), issue(session, hq, t, m)
    lines = [L(1, "X", 1, 10000)]
    coupons.redeem_applied(
        session, apply(session, chain, m, "A", lines, [c1.code]), order(session, chain, m), chain.stores["A"]
    )
    assert counters(session, t.id) == (2, 1, 3000)
    failing(session, chain.org_id, BudgetExhausted, apply, session, chain, m, "A", lines, [c2.code])
    # Even an application made before the budget ran low cannot overspend it.
    stale = coupons.Application(
        chain.org_id,
        m.id,
        chain.stores["A"],
        False,
        [
            coupons.AppliedCoupon(
                c2.id, c2.code, t.id, t.code, t.name, t.kind, 3000, 0, {1: 3000}, None, "hq", 0
            )
        ],
        [3000],
        {1: 1},
        NOW,
    )
    oid = order(session, chain, m, no="S2")
    failing(
        session, chain.org_id, BudgetExhausted, coupons.redeem_applied, session, stale, oid, chain.stores["A"]
    )


def test_gifting(session: Session, chain: Chain, hq: Principal) -> None:
    m1, m2 = member(session, chain, 1), member(session, chain, 2)
    gift_t = template(session, hq, "GIFT", "amount_off", amount_fen=1000, giftable=True, per_member_limit=1)
    plain = issue(session, hq, template(session, hq, "PLAIN", "amount_off", amount_fen=1000), m1)
    c = issue(session, hq, gift_t, m1)
    failing(session, chain.org_id, NotGiftable, coupons.gift_coupon, session, hq, plain.code, m1, m2)
    failing(session, chain.org_id, CouponNotFound, coupons.gift_coupon, session, hq, c.code, m2, m1)
    failing(session, chain.org_id, DomainError, coupons.gift_coupon, session, hq, c.code, m1, m1)
    coupons.gift_coupon(session, hq, c.code, m1, m2, "生日礼物")
    session.refresh(c)
    assert (c.member_id, c.gifted_from_member_id, c.issued_to_member_id) == (m2.id, m1.id, m1.id)
    # The receiver's own limit is untouched: they can still get one issued.
    issue(session, hq, gift_t, m2)
    event = session.scalars(
        select(Event).where(Event.type == "coupon.gifted", Event.org_id == chain.org_id)
    ).one()
    assert event.payload["to_member_no"] == m2.member_no
    assert (
        session.scalars(select(AuditLog).where(AuditLog.action == "coupons.gifted")).one().reason
        == "生日礼物"
    )
    lines = [L(1, "X", 1, 5000)]
    assert apply(session, chain, m2, "C", lines, [c.code]).discount_fen == 1000
    failing(session, chain.org_id, CouponNotFound, apply, session, chain, m1, "C", lines, [c.code])


def test_redemption_lines_are_kept_per_line(session: Session, chain: Chain, hq: Principal) -> None:
    m = member(session, chain, 1)
    c = issue(session, hq, template(session, hq, "P", "percent_off", percent_off=15, cap_fen=2000), m)
    app_ = apply(session, chain, m, "A", [L(1, "X", 2, 9999), L(2, "Y", 1, 3333), L(3, "Z", 1, 1)], [c.code])
    oid = order(session, chain, m)
    coupons.redeem_applied(session, app_, oid, chain.stores["A"])
    rows = session.execute(
        select(CouponRedemptionLine.line_no, CouponRedemptionLine.quantity, CouponRedemptionLine.discount_fen)
        .where(CouponRedemptionLine.order_id == oid)
        .order_by(CouponRedemptionLine.line_no)
    ).all()
    # 15 % of 13333 = 1999 (under the cap), split 1499.18 : 499.71 : 0.15 -> 1499 : 500 : 0.
    assert [tuple(r) for r in rows] == [(1, 2, 1499), (2, 1, 500)]
    assert app_.discount_fen == 1999


# --- HTTP --------------------------------------------------------------------------------------------


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(get_settings(), factory, start_dispatcher=False)
    if not any(getattr(r, "path", "") == "/api/v1/coupon-templates" for r in app.routes):
        app.include_router(coupons_api.router)
    with TestClient(app) as c:
        yield c


def test_http_templates_issue_usable_and_gift(client: TestClient, chain: Chain) -> None:
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/coupon-templates",
        json={
            "code": "M300",
            "name": "满300减50",
            "kind": "amount_off",
            "threshold_fen": 30000,
            "amount_fen": 5000,
            "valid_days": 30,
            "giftable": True,
            "accept_scope": "brand",
            "accept_brand_code": "home",
        },
        headers=hq,
    )
    assert r.status_code == 201, r.text
    assert (r.json()["accept_brand_code"], r.json()["issued_count"]) == ("home", 0)
    bad = client.post(
        "/api/v1/coupon-templates",
        json={"code": "B", "name": "B", "kind": "nope", "valid_days": 1},
        headers=hq,
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "coupons.invalid_template")
    assert [t["code"] for t in client.get("/api/v1/coupon-templates", headers=hq).json()["templates"]] == [
        "M300"
    ]
    m1 = register(client, chain, "A", "18100000101")
    m2 = register(client, chain, "A", "18100000102")
    till = chain.key("A")
    r = client.post(
        f"/api/v1/members/{m1['member_no']}/coupons", json={"template_code": "M300"}, headers=till
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    assert (r.json()["status"], r.json()["issuing_store_code"], r.json()["source"]) == (
        "available",
        "A",
        "staff",
    )
    comp = client.post(
        f"/api/v1/members/{m1['member_no']}/coupons",
        json={"template_code": "M300", "source": "compensation", "reason": ""},
        headers=hq,
    )
    assert (comp.status_code, comp.json()["code"]) == (422, "coupons.reason_required")
    listed = client.get(f"/api/v1/members/{m1['member_no']}/coupons", headers=till).json()
    assert [c["code"] for c in listed["coupons"]] == [code]
    basket = {"lines": [{"sku": "X", "quantity": 2, "unit_price_fen": 16000, "discount_fen": 2000}]}
    usable = client.post(f"/api/v1/members/{m1['member_no']}/coupons/usable", json=basket, headers=till)
    assert usable.status_code == 200, usable.text
    body = usable.json()
    assert (body["best_codes"], body["best_discount_fen"], body["best_line_discounts"]) == (
        [code],
        5000,
        [5000],
    )
    at_c = client.post(
        f"/api/v1/members/{m1['member_no']}/coupons/usable", json=basket, headers=chain.key("C")
    ).json()
    assert (at_c["best_codes"], at_c["unusable"][0]["reason"]) == ([], "coupons.not_usable_here")
    gift = client.post(
        f"/api/v1/members/{m1['member_no']}/coupons/{code}/gift",
        json={"to_member_no": m2["member_no"]},
        headers={**till, "Idempotency-Key": "g1"},
    )
    assert (gift.status_code, gift.json()["member_no"]) == (200, m2["member_no"])
    again = client.post(
        f"/api/v1/members/{m1['member_no']}/coupons/{code}/gift",
        json={"to_member_no": m2["member_no"]},
        headers={**till, "Idempotency-Key": "g1"},
    )
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert client.get(f"/api/v1/members/{m1['member_no']}/coupons", headers=till).json()["coupons"] == []
