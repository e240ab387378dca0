"""Pure coupon maths: what a set of coupons takes off a basket, and the best set to use. No I/O.

How a set of coupons applies to a basket (the canonical order, so a set always gives one answer):

1. Unit vouchers first (``fixed_price``, ``free_item``, ``exchange``, ``service``), each on one unit
   of a qualifying line: the unit where it takes off the most that no earlier voucher took. A unit's
   value is its share of the line's net amount (cumulative rounding, so a line's units add up to it).
   ``fixed_price`` takes the unit down to ``price_fen``; the item vouchers cover the unit up to the
   coupon's ``cover_fen`` (the item's price at the issuing store, or the face value) when the template
   makes the member pay the difference (补差价), and the whole unit otherwise. What is left of the
   unit is the price difference the member pays.
2. Then ``amount_off`` (满X减Y), then ``percent_off`` (折扣, with a cap), each on what is left of its
   qualifying lines ("满减 before 折扣"), split over those lines by amount (largest remainder).

A threshold is checked against the amounts as the basket came in (after the member price, before
any coupon): an order coupon's against its qualifying lines, a unit voucher's (满X送Y) against the
whole basket. So whether a coupon is usable never depends on the other coupons chosen.

Stacking: an ``exclusive`` coupon goes alone; at most one coupon per ``stack_group``; at most
``per_order_limit`` coupons of one template. (Whether a coupon combines with the tier discount is a
filter applied before the search.)

The best combination is found by branch and bound over the candidates (≤ ~20): candidates sorted by
what each takes off alone, a depth-first search that includes before it excludes, and a branch cut as
soon as what it has plus what the remaining candidates could add alone (never less than what they add
together, since every coupon works on amounts a set only makes smaller) cannot beat the best found,
nor the basket's total. Exclusive coupons are compared alone. The search is exact; a node budget
(``MAX_NODES``) bounds pathological inputs, and the answer then is the best found so far, which is
never worse than the greedy pick (the first leaf reached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from onemember.points.calculations import allocate, proportional_part


class Kind(StrEnum):
    AMOUNT_OFF = "amount_off"
    PERCENT_OFF = "percent_off"
    FIXED_PRICE = "fixed_price"
    FREE_ITEM = "free_item"
    EXCHANGE = "exchange"
    SERVICE = "service"


UNIT_KINDS = frozenset({Kind.FIXED_PRICE, Kind.FREE_ITEM, Kind.EXCHANGE, Kind.SERVICE})
ITEM_VOUCHERS = frozenset({Kind.FREE_ITEM, Kind.EXCHANGE, Kind.SERVICE})
MAX_NODES = 50_000


@dataclass(frozen=True)
class Line:
    """A basket line at the redeeming store; ``amount_fen`` is what is left after the member price."""

    line_no: int
    sku: str
    category: str
    quantity: int
    amount_fen: int


@dataclass(frozen=True)
class Candidate:
    """What the maths needs to know of one coupon."""

    coupon_id: int
    code: str
    template_id: int
    kind: str
    threshold_fen: int = 0
    amount_fen: int = 0
    percent_off: int = 0
    cap_fen: int | None = None
    price_fen: int = 0
    cover_fen: int | None = None
    pay_difference: bool = True
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    exclusive: bool = False
    stack_group: str | None = None
    per_order_limit: int = 1
    budget_left: int | None = None  # None: the template has no budget
    rank: int = 0  # tie-break: lower first (the caller ranks soonest-expiring first)

    def qualifies(self, line: Line) -> bool:
        if not self.skus and not self.categories:
            return True
        return line.sku in self.skus or (bool(line.category) and line.category in self.categories)


@dataclass
class CouponResult:
    coupon_id: int
    code: str
    discount_fen: int
    price_difference_fen: int
    lines: dict[int, int]  # line_no -> fen taken off that line


@dataclass
class Evaluation:
    results: list[CouponResult]
    line_discounts: dict[int, int]  # line_no -> fen taken off by all coupons
    problem: str | None = None  # an error code when the set cannot be used as a whole
    problem_code: str | None = None  # the coupon the problem is about

    @property
    def discount_fen(self) -> int:
        return sum(r.discount_fen for r in self.results)

    @property
    def price_difference_fen(self) -> int:
        return sum(r.price_difference_fen for r in self.results)


def _order_key(c: Candidate) -> tuple[int, int, int]:
    kind_order = 0 if c.kind in UNIT_KINDS else 1 if c.kind == Kind.AMOUNT_OFF else 2
    return (kind_order, c.rank, c.coupon_id)


def stacking_problem(coupons: Sequence[Candidate]) -> str | None:
    """Why these coupons cannot go on one order together, or None."""
    if len(coupons) > 1 and any(c.exclusive for c in coupons):
        return "exclusive"
    groups = [c.stack_group for c in coupons if c.stack_group]
    if len(groups) != len(set(groups)):
        return "stack_group"
    per_template: dict[int, int] = {}
    for c in coupons:
        per_template[c.template_id] = per_template.get(c.template_id, 0) + 1
        if per_template[c.template_id] > c.per_order_limit:
            return "per_order_limit"
    if len({c.coupon_id for c in coupons}) != len(coupons):
        return "duplicate"
    return None


def evaluate(coupons: Sequence[Candidate], lines: Sequence[Line]) -> Evaluation:
    """Apply ``coupons`` to ``lines`` in the canonical order; ``problem`` says what stops a coupon."""
    left = {ln.line_no: ln.amount_fen for ln in lines}
    units_used = {ln.line_no: 0 for ln in lines}
    results: list[CouponResult] = []
    for c in sorted(coupons, key=_order_key):
        eligible = [ln for ln in lines if c.qualifies(ln) and ln.amount_fen > 0]
        if not eligible:
            return Evaluation(results, {}, "coupons.not_applicable", c.code)
        # 满X: an order coupon counts its qualifying lines; a unit voucher (满X送Y) the whole basket.
        counted = lines if c.kind in UNIT_KINDS else eligible
        if c.threshold_fen and sum(ln.amount_fen for ln in counted) < c.threshold_fen:
            return Evaluation(results, {}, "coupons.threshold_not_met", c.code)
        if c.kind in UNIT_KINDS:
            result = _unit_voucher(c, eligible, left, units_used)
        else:
            result = _order_coupon(c, eligible, left)
        if result is None or result.discount_fen <= 0:
            return Evaluation(results, {}, "coupons.not_applicable", c.code)
        if c.budget_left is not None and result.discount_fen > c.budget_left:
            return Evaluation(results, {}, "coupons.budget_exhausted", c.code)
        results.append(result)
    totals: dict[int, int] = {ln.line_no: 0 for ln in lines}
    for r in results:
        for line_no, fen in r.lines.items():
            totals[line_no] += fen
    return Evaluation(results, totals)


def _unit_value(line: Line, k: int) -> int:
    """The net value of the line's ``k``-th unit (0-based); the units add up to the line's amount."""
    return proportional_part(line.amount_fen, k, 1, line.quantity)


def _unit_discount(c: Candidate, value: int) -> int:
    if c.kind == Kind.FIXED_PRICE:
        return max(0, value - c.price_fen)
    if c.pay_difference and c.cover_fen is not None:
        return min(value, c.cover_fen)
    return value


def _unit_voucher(
    c: Candidate, eligible: list[Line], left: dict[int, int], units_used: dict[int, int]
) -> CouponResult | None:
    best: tuple[int, int, Line] | None = None  # (discount, value, line)
    for ln in eligible:
        k = units_used[ln.line_no]
        if k >= ln.quantity:
            continue
        value = min(_unit_value(ln, k), left[ln.line_no])
        discount = _unit_discount(c, value)
        if best is None or discount > best[0]:
            best = (discount, value, ln)
    if best is None:
        return None
    discount, value, ln = best
    units_used[ln.line_no] += 1
    left[ln.line_no] -= discount
    difference = value - discount if c.kind in ITEM_VOUCHERS else 0
    return CouponResult(c.coupon_id, c.code, discount, difference, {ln.line_no: discount})


def _order_coupon(c: Candidate, eligible: list[Line], left: dict[int, int]) -> CouponResult:
    base = sum(left[ln.line_no] for ln in eligible)
    if c.kind == Kind.AMOUNT_OFF:
        discount = min(c.amount_fen, base)
    else:
        discount = base * c.percent_off // 100
        if c.cap_fen is not None:
            discount = min(discount, c.cap_fen)
    parts = allocate(discount, [left[ln.line_no] for ln in eligible]) if discount else []
    shares: dict[int, int] = {}
    for ln, fen in zip(eligible, parts, strict=True):
        if fen:
            shares[ln.line_no] = fen
            left[ln.line_no] -= fen
    return CouponResult(c.coupon_id, c.code, discount, 0, shares)


@dataclass
class Best:
    coupons: list[Candidate] = field(default_factory=list)
    evaluation: Evaluation = field(default_factory=lambda: Evaluation([], {}))
    nodes: int = 0
    exact: bool = True

    @property
    def discount_fen(self) -> int:
        return self.evaluation.discount_fen


def _better(a: tuple[int, int, tuple[int, ...]], b: tuple[int, int, tuple[int, ...]] | None) -> bool:
    """More off, then fewer coupons, then the lower ranks (soonest-expiring) first."""
    if b is None:
        return True
    return (-a[0], a[1], a[2]) < (-b[0], b[1], b[2])


def best_combination(candidates: Sequence[Candidate], lines: Sequence[Line]) -> Best:
    """The set of candidates that takes the most off the basket under the stacking rules (see above)."""
    alone: list[tuple[Candidate, int]] = []
    for c in candidates:
        ev = evaluate([c], lines)
        if ev.problem is None and ev.discount_fen > 0:
            alone.append((c, ev.discount_fen))
    basket = sum(ln.amount_fen for ln in lines)
    best = Best()
    best_key: tuple[int, int, tuple[int, ...]] | None = None

    def consider(chosen: list[Candidate], ev: Evaluation) -> None:
        nonlocal best_key
        key = (ev.discount_fen, len(chosen), tuple(sorted(c.rank for c in chosen)))
        if _better(key, best_key):
            best_key = key
            best.coupons = list(chosen)
            best.evaluation = ev

    for c, _ in alone:
        if c.exclusive:
            consider([c], evaluate([c], lines))
    pool = sorted(((c, d) for c, d in alone if not c.exclusive), key=lambda cd: (-cd[1], cd[0].rank))
    suffix = [0] * (len(pool) + 1)
    for i in range(len(pool) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + pool[i][1]

    def search(i: int, chosen: list[Candidate], current: int) -> None:
        best.nodes += 1
        if best.nodes > MAX_NODES:
            best.exact = False
            return
        if i == len(pool):
            if chosen:
                consider(chosen, evaluate(chosen, lines))
            return
        bound = min(current + suffix[i], basket)
        if best_key is not None and bound < best_key[0]:
            return
        c = pool[i][0]
        trial = [*chosen, c]
        if stacking_problem(trial) is None:
            ev = evaluate(trial, lines)
            if ev.problem is None:
                search(i + 1, trial, ev.discount_fen)
        search(i + 1, chosen, current)

    search(0, [], 0)
    return best


def end_of_local_day(day: date, tz: str) -> datetime:
    nxt = day + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def validity(
    issued_at: datetime,
    tz: str,
    *,
    valid_from: datetime | None,
    valid_to: datetime | None,
    valid_days: int | None,
) -> tuple[datetime, datetime | None]:
    """A new coupon's window: the template's fixed dates, or N days counting the day of issue (领取后
    N 天内有效: until the end of local day ``issue day + N - 1``); with both, the narrower one."""
    start = max(issued_at, valid_from) if valid_from is not None else issued_at
    end = valid_to
    if valid_days is not None:
        local = issued_at.astimezone(ZoneInfo(tz)).date()
        relative = end_of_local_day(local + timedelta(days=valid_days - 1), tz)
        end = relative if end is None else min(end, relative)
    return start, end


@dataclass(frozen=True)
class StoreRef:
    id: int
    brand_id: int
    region_id: int


def accepted_at(
    store: StoreRef,
    *,
    scope: str,
    brand_id: int | None,
    region_id: int | None,
    store_ids: Sequence[int],
    cross_store: bool,
    issuing_store_id: int | None,
) -> bool:
    """Whether ``store`` accepts a coupon: the template's scope, and without ``cross_store`` only the
    store that issued it (a coupon HQ issued follows the scope alone)."""
    if issuing_store_id is not None and not cross_store and store.id != issuing_store_id:
        return False
    if scope == "all":
        return True
    if scope == "brand":
        return store.brand_id == brand_id
    if scope == "region":
        return store.region_id == region_id
    if scope == "stores":
        return store.id in store_ids
    if scope == "issuing_store":
        return issuing_store_id is not None and store.id == issuing_store_id
    return False
