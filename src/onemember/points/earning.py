"""The earn-rule engine: pure code that turns a basket, a member's context and the rules in force into
points per line, with an explanation of which rule gave what.

How rules combine (documented for HQ in the console):

* exactly one **base rate** gives ``floor(paid_fen × points_per_yuan / 100)`` per line;
* **exclusions** (a category or SKU) earn nothing at all on that line;
* every **multiplier** that applies (category, SKU, tier, birthday month, member day, store bonus) adds
  ``floor(base × (multiplier − 100%))`` to the line: multipliers add up, they do not compound, so a
  2× category on a 2× member day earns 3× base;
* order-level **bonuses** (first purchase) are spread over the lines by paid amount, so a partial return
  takes back its exact share;
* a **store bonus** stops when its points budget is spent;
* **caps** (per order, per member per day) scale the order's points down, again spread over the lines.

Every number is an integer; the same inputs always give the same points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from onemember.points.calculations import allocate


class RuleKind(StrEnum):
    BASE_RATE = "base_rate"
    CATEGORY_MULTIPLIER = "category_multiplier"
    SKU_MULTIPLIER = "sku_multiplier"
    EXCLUDE_CATEGORY = "exclude_category"
    EXCLUDE_SKU = "exclude_sku"
    TIER_MULTIPLIER = "tier_multiplier"
    BIRTHDAY_MONTH_MULTIPLIER = "birthday_month_multiplier"
    MEMBER_DAY_MULTIPLIER = "member_day_multiplier"
    STORE_BONUS_MULTIPLIER = "store_bonus_multiplier"
    FIRST_PURCHASE_BONUS = "first_purchase_bonus"
    REGISTRATION_BONUS = "registration_bonus"
    ORDER_CAP = "order_cap"
    DAILY_CAP = "daily_cap"


MULTIPLIERS = frozenset(
    {
        RuleKind.CATEGORY_MULTIPLIER,
        RuleKind.SKU_MULTIPLIER,
        RuleKind.TIER_MULTIPLIER,
        RuleKind.BIRTHDAY_MONTH_MULTIPLIER,
        RuleKind.MEMBER_DAY_MULTIPLIER,
        RuleKind.STORE_BONUS_MULTIPLIER,
    }
)


@dataclass(frozen=True)
class Rule:
    id: int
    version: int
    kind: RuleKind
    name: str = ""
    points_per_yuan: int | None = None
    multiplier_pct: int | None = None  # 200 means 2×
    category: str | None = None
    sku: str | None = None
    tier_code: str | None = None
    bonus_points: int | None = None
    weekday: int | None = None  # ISO weekday, 1 = Monday
    month_day: int | None = None
    store_id: int | None = None
    cap_points: int | None = None
    budget_left: int | None = None  # store bonus: points still in its budget


@dataclass(frozen=True)
class BasketLine:
    line_no: int
    sku: str
    category: str
    paid_fen: int


@dataclass(frozen=True)
class EarnContext:
    local_date: date
    store_id: int
    tier_code: str | None = None
    birthday: date | None = None
    is_first_purchase: bool = False
    earned_today: int = 0


@dataclass
class Application:
    rule_id: int | None
    version: int | None
    kind: str
    label_zh: str
    label_en: str
    points: int
    lines: dict[int, int] = field(default_factory=dict)  # line_no -> points


@dataclass
class EarnResult:
    per_line: dict[int, int]
    applications: list[Application]
    budget_used: dict[int, int]  # store-bonus rule id -> points taken from its budget

    @property
    def total(self) -> int:
        return sum(self.per_line.values())


def _applies(rule: Rule, line: BasketLine, ctx: EarnContext) -> bool:
    kind = rule.kind
    if kind == RuleKind.CATEGORY_MULTIPLIER:
        return rule.category == line.category
    if kind == RuleKind.SKU_MULTIPLIER:
        return rule.sku == line.sku
    if kind == RuleKind.TIER_MULTIPLIER:
        return ctx.tier_code is not None and rule.tier_code == ctx.tier_code
    if kind == RuleKind.BIRTHDAY_MONTH_MULTIPLIER:
        return ctx.birthday is not None and ctx.birthday.month == ctx.local_date.month
    if kind == RuleKind.MEMBER_DAY_MULTIPLIER:
        return (rule.weekday is not None and ctx.local_date.isoweekday() == rule.weekday) or (
            rule.month_day is not None and ctx.local_date.day == rule.month_day
        )
    if kind == RuleKind.STORE_BONUS_MULTIPLIER:
        return rule.store_id == ctx.store_id
    return False


def label(rule: Rule) -> tuple[str, str]:
    """A zh-CN and English sentence for a rule, as the explanation shows it."""
    m = (rule.multiplier_pct or 100) / 100
    mult = f"{m:g}"
    k = rule.kind
    if k == RuleKind.BASE_RATE:
        return (
            f"基础积分：实付每 1 元得 {rule.points_per_yuan} 积分（按行向下取整）",
            f"Base rate: {rule.points_per_yuan} point(s) per yuan paid, rounded down per line",
        )
    if k == RuleKind.CATEGORY_MULTIPLIER:
        return f"品类「{rule.category}」{mult} 倍积分", f"{mult}× points on category {rule.category}"
    if k == RuleKind.SKU_MULTIPLIER:
        return f"商品 {rule.sku} {mult} 倍积分", f"{mult}× points on SKU {rule.sku}"
    if k == RuleKind.EXCLUDE_CATEGORY:
        return f"品类「{rule.category}」不积分", f"No points on category {rule.category}"
    if k == RuleKind.EXCLUDE_SKU:
        return f"商品 {rule.sku} 不积分", f"No points on SKU {rule.sku}"
    if k == RuleKind.TIER_MULTIPLIER:
        return f"等级 {rule.tier_code} {mult} 倍积分", f"{mult}× points for tier {rule.tier_code}"
    if k == RuleKind.BIRTHDAY_MONTH_MULTIPLIER:
        return f"生日月 {mult} 倍积分", f"{mult}× points in the birthday month"
    if k == RuleKind.MEMBER_DAY_MULTIPLIER:
        when_zh = f"每周{'一二三四五六日'[rule.weekday - 1]}" if rule.weekday else f"每月 {rule.month_day} 日"
        when_en = (
            f"every {['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][rule.weekday - 1]}"
            if rule.weekday
            else f"day {rule.month_day} of every month"
        )
        return f"会员日（{when_zh}）{mult} 倍积分", f"Member day ({when_en}): {mult}× points"
    if k == RuleKind.STORE_BONUS_MULTIPLIER:
        return f"门店限时 {mult} 倍积分（{rule.name}）", f"Store bonus {mult}× ({rule.name})"
    if k == RuleKind.FIRST_PURCHASE_BONUS:
        return f"首单奖励 {rule.bonus_points} 积分", f"First purchase bonus: {rule.bonus_points} points"
    if k == RuleKind.REGISTRATION_BONUS:
        return f"注册奖励 {rule.bonus_points} 积分", f"Registration bonus: {rule.bonus_points} points"
    if k == RuleKind.ORDER_CAP:
        return f"每单最多 {rule.cap_points} 积分", f"At most {rule.cap_points} points per order"
    if k == RuleKind.DAILY_CAP:
        return f"每人每天最多 {rule.cap_points} 积分", f"At most {rule.cap_points} points per member per day"
    return k, k


def _apply_cap(per_line: dict[int, int], cap: int, weights: Sequence[BasketLine]) -> dict[int, int]:
    total = sum(per_line.values())
    if total <= cap:
        return per_line
    keys = [line.line_no for line in weights]
    shares = allocate(max(cap, 0), [per_line[k] for k in keys])
    return dict(zip(keys, shares, strict=True))


def compute(lines: Sequence[BasketLine], rules: Sequence[Rule], ctx: EarnContext) -> EarnResult:
    """Points per line for a basket under ``rules`` (the rules in force at the order's time)."""
    apps: list[Application] = []
    base_rules = [r for r in rules if r.kind == RuleKind.BASE_RATE]
    excluded = {
        line.line_no
        for line in lines
        for r in rules
        if (r.kind == RuleKind.EXCLUDE_CATEGORY and r.category == line.category)
        or (r.kind == RuleKind.EXCLUDE_SKU and r.sku == line.sku)
    }
    base: dict[int, int] = {line.line_no: 0 for line in lines}
    if base_rules:
        rule = min(base_rules, key=lambda r: r.id)
        rate = rule.points_per_yuan or 0
        for line in lines:
            if line.line_no not in excluded:
                base[line.line_no] = line.paid_fen * rate // 100
        zh, en = label(rule)
        apps.append(Application(rule.id, rule.version, rule.kind, zh, en, sum(base.values()), dict(base)))
    for r in rules:
        if r.kind in (RuleKind.EXCLUDE_CATEGORY, RuleKind.EXCLUDE_SKU):
            hit = [line for line in lines if line.line_no in excluded and _applies_exclusion(r, line)]
            if hit:
                zh, en = label(r)
                apps.append(
                    Application(r.id, r.version, r.kind, zh, en, 0, {line.line_no: 0 for line in hit})
                )
    per_line = dict(base)
    budget_used: dict[int, int] = {}
    for r in sorted((r for r in rules if r.kind in MULTIPLIERS), key=lambda r: (r.kind, r.id)):
        extra = {
            line.line_no: base[line.line_no] * ((r.multiplier_pct or 100) - 100) // 100
            for line in lines
            if line.line_no not in excluded and _applies(r, line, ctx)
        }
        extra = {k: v for k, v in extra.items() if v > 0}
        if r.kind == RuleKind.STORE_BONUS_MULTIPLIER and r.budget_left is not None and extra:
            extra = _apply_cap(extra, r.budget_left, [line for line in lines if line.line_no in extra])
            extra = {k: v for k, v in extra.items() if v > 0}
            if extra:
                budget_used[r.id] = sum(extra.values())
        if not extra:
            continue
        for k, v in extra.items():
            per_line[k] += v
        zh, en = label(r)
        apps.append(Application(r.id, r.version, r.kind, zh, en, sum(extra.values()), extra))
    eligible = [line for line in lines if line.line_no not in excluded]
    if ctx.is_first_purchase and eligible and sum(line.paid_fen for line in eligible) > 0:
        for r in (r for r in rules if r.kind == RuleKind.FIRST_PURCHASE_BONUS):
            shares = allocate(r.bonus_points or 0, [line.paid_fen for line in eligible])
            spread = {line.line_no: s for line, s in zip(eligible, shares, strict=True)}
            for k, v in spread.items():
                per_line[k] += v
            zh, en = label(r)
            apps.append(Application(r.id, r.version, r.kind, zh, en, r.bonus_points or 0, spread))
    for r in sorted(
        (r for r in rules if r.kind in (RuleKind.ORDER_CAP, RuleKind.DAILY_CAP)), key=lambda r: r.kind
    ):
        room = (r.cap_points or 0) - (ctx.earned_today if r.kind == RuleKind.DAILY_CAP else 0)
        before = dict(per_line)
        per_line = _apply_cap(per_line, max(room, 0), list(lines))
        cut = {k: per_line[k] - before[k] for k in before if per_line[k] != before[k]}
        if cut:
            zh, en = label(r)
            apps.append(Application(r.id, r.version, r.kind, zh, en, sum(cut.values()), cut))
    return EarnResult(per_line, apps, budget_used)


def _applies_exclusion(rule: Rule, line: BasketLine) -> bool:
    return (rule.kind == RuleKind.EXCLUDE_CATEGORY and rule.category == line.category) or (
        rule.kind == RuleKind.EXCLUDE_SKU and rule.sku == line.sku
    )
