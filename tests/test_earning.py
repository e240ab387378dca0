"""The earn-rule engine, rule type by rule type, with exact points and explanations."""

from __future__ import annotations

from datetime import date

from onemember.points.earning import BasketLine, EarnContext, Rule, RuleKind, compute

BASE = Rule(1, 1, RuleKind.BASE_RATE, points_per_yuan=1)
LINES = [
    BasketLine(1, "MILK", "母婴", 12990),
    BasketLine(2, "LIP", "美妆", 9999),
    BasketLine(3, "RICE", "食品", 5000),
]
WED = date(2026, 11, 25)  # a Wednesday
CTX = EarnContext(local_date=WED, store_id=10)


def test_base_rate_only() -> None:
    r = compute(LINES, [BASE], CTX)
    assert r.per_line == {1: 129, 2: 99, 3: 50}
    assert [(a.kind, a.points) for a in r.applications] == [("base_rate", 278)]


def test_category_and_sku_multipliers_add_up() -> None:
    rules = [
        BASE,
        Rule(2, 1, RuleKind.CATEGORY_MULTIPLIER, multiplier_pct=200, category="母婴"),
        Rule(3, 3, RuleKind.SKU_MULTIPLIER, multiplier_pct=150, sku="MILK"),
    ]
    r = compute(LINES, rules, CTX)
    assert r.per_line == {1: 129 + 129 + 64, 2: 99, 3: 50}
    assert [(a.kind, a.version, a.points, a.lines) for a in r.applications[1:]] == [
        ("category_multiplier", 1, 129, {1: 129}),
        ("sku_multiplier", 3, 64, {1: 64}),
    ]
    assert r.applications[1].label_zh == "品类「母婴」2 倍积分"
    assert r.applications[2].label_en == "1.5× points on SKU MILK"


def test_exclusions_earn_nothing_even_with_multipliers() -> None:
    rules = [
        BASE,
        Rule(2, 1, RuleKind.EXCLUDE_CATEGORY, category="食品"),
        Rule(4, 1, RuleKind.EXCLUDE_SKU, sku="LIP"),
        Rule(3, 1, RuleKind.MEMBER_DAY_MULTIPLIER, multiplier_pct=200, weekday=3),
    ]
    r = compute(LINES, rules, CTX)
    assert r.per_line == {1: 258, 2: 0, 3: 0}
    kinds = [(a.kind, a.points) for a in r.applications]
    assert kinds == [
        ("base_rate", 129),
        ("exclude_category", 0),
        ("exclude_sku", 0),
        ("member_day_multiplier", 129),
    ]
    assert r.applications[3].label_zh == "会员日（每周三）2 倍积分"


def test_member_day_by_month_day_and_birthday_and_tier() -> None:
    rules = [
        BASE,
        Rule(5, 1, RuleKind.MEMBER_DAY_MULTIPLIER, multiplier_pct=300, month_day=8),
        Rule(6, 1, RuleKind.BIRTHDAY_MONTH_MULTIPLIER, multiplier_pct=200),
        Rule(7, 1, RuleKind.TIER_MULTIPLIER, multiplier_pct=120, tier_code="gold"),
    ]
    ctx = EarnContext(
        local_date=date(2026, 12, 8), store_id=10, tier_code="gold", birthday=date(1990, 12, 30)
    )
    r = compute([BasketLine(1, "A", "x", 10000)], rules, ctx)
    assert r.per_line == {1: 100 + 200 + 100 + 20}
    assert compute([BasketLine(1, "A", "x", 10000)], rules, CTX).per_line == {1: 100}


def test_store_bonus_stops_at_its_budget() -> None:
    bonus = Rule(
        8, 1, RuleKind.STORE_BONUS_MULTIPLIER, multiplier_pct=300, store_id=10, budget_left=150, name="店庆"
    )
    r = compute(LINES, [BASE, bonus], CTX)
    assert r.budget_used == {8: 150}
    assert sum(r.per_line.values()) == 278 + 150
    assert compute(LINES, [BASE, bonus], EarnContext(local_date=WED, store_id=11)).budget_used == {}
    spent = Rule(8, 1, RuleKind.STORE_BONUS_MULTIPLIER, multiplier_pct=300, store_id=10, budget_left=0)
    assert compute(LINES, [BASE, spent], CTX).per_line == {1: 129, 2: 99, 3: 50}


def test_first_purchase_bonus_is_spread_over_lines() -> None:
    rules = [BASE, Rule(9, 1, RuleKind.FIRST_PURCHASE_BONUS, bonus_points=100)]
    first = compute(LINES, rules, EarnContext(local_date=WED, store_id=10, is_first_purchase=True))
    assert first.applications[-1].lines == {1: 46, 2: 36, 3: 18}  # largest remainders: .86 and .72
    assert first.total == 278 + 100
    assert compute(LINES, rules, CTX).total == 278


def test_caps_per_order_and_per_day() -> None:
    rules = [
        BASE,
        Rule(10, 1, RuleKind.ORDER_CAP, cap_points=200),
        Rule(11, 1, RuleKind.DAILY_CAP, cap_points=500),
    ]
    r = compute(LINES, rules, CTX)
    assert r.total == 200
    assert r.per_line == {1: 93, 2: 71, 3: 36}
    assert (r.applications[-1].kind, r.applications[-1].points) == ("order_cap", -78)
    late = compute(LINES, rules, EarnContext(local_date=WED, store_id=10, earned_today=450))
    assert late.total == 50
    done = compute(LINES, rules, EarnContext(local_date=WED, store_id=10, earned_today=600))
    assert done.total == 0


def test_no_rules_no_points() -> None:
    assert compute(LINES, [], CTX).total == 0
