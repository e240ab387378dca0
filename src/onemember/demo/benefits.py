"""Coupons and service packages for the demo chain, written by the services a live till runs.

After the bulk history is stored, this phase plays the previous and the current month of benefit
activity in time order, with the clock (``db.set_clock``) set to each moment: HQ creates coupon and
package templates; coupons are issued by a campaign, by store staff and by customer service; members
use them at the till through ``orders.checkout.checkout`` with ``coupon_codes`` (a quarter of them
paying part with points), often at another store than the issuer; a few coupon orders come back
through ``orders.returns.return_lines`` (one in full at another store, giving the coupon back);
service packages are sold, used at the selling and at other stores, and one is refunded; HQ books one
settlement correction a month. So every coupon, package and settlement row is the one a live till
would write, and ``onemember verify`` holds.

Coupons live within the last 45 days, packages within the two months, all at the org's opening hours
in its time zone. Besides the random activity each month gets a few fixed events (a complaint coupon
used with another store's points, a car-wash card used at another store, returns, a correction), so
both months' settlement statements have entries of every kind even on the morning of the 1st.
Choices come from the demo's seed; coupon codes and order numbers are drawn by the services
themselves and differ per run. The outbox events the services emit are dropped at the end like the
rest of the demo history: replaying history to webhooks and journeys would message members about the
past.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rich.progress import Progress
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from onemember import db
from onemember.auth.service import staff_principal
from onemember.common.types import MemberStatus
from onemember.coupons import calculations as coupon_calc
from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service.templates import AcceptScope, Bearer, ReturnPolicy, TemplateSpec
from onemember.coupons.service.till import candidate
from onemember.demo.chain import Chain
from onemember.demo.data import PAYMENT_METHODS, PAYMENT_WEIGHTS, Product, catalogue
from onemember.demo.seasons import availability, on_shelf
from onemember.events.models import Event
from onemember.members.models import Member
from onemember.orders import checkout as till
from onemember.orders.returns import return_lines
from onemember.orders.schemas import CheckoutIn, LineIn, MemberRefIn, PaymentIn, ReturnIn, ReturnLineIn
from onemember.org.models import Staff, Store
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, ServicePackage
from onemember.packages.service import PackageSpec, RefundRule, StoreScope
from onemember.points import calculations as points_calc
from onemember.points import service as points_service
from onemember.points.models import PointLot
from onemember.segments.models import MemberStats, MemberStoreStats
from onemember.settlement import service as settlement
from onemember.settlement.models import HQ, SettlementEntry

if TYPE_CHECKING:
    from onemember.demo.generator import DemoResult

COUPONS_PER_MEMBER = 0.15  # coupons issued per demo member ...
MAX_COUPONS = 1500  # ... up to this many: every one goes through the real services
PACKAGES_PER_MEMBER = 0.025
MAX_PACKAGES = 300
MIN_COUPONS, MIN_PACKAGES = 40, 12
COUPON_DAYS = 45  # coupons are issued and used within this many days before now
ACTIVE_DAYS = 90  # members who bought within this many days count as recently active
POINTS_SHARE = 0.25  # coupon orders that also pay with points
POINTS_WISHES = (1000, 2000, 3000, 5000)
OPENING_HOURS = (9, 22)  # local hours [from, to) when stores serve members
_BULK_CATEGORIES = frozenset({"食品", "个护", "酒饮"})
_DRINKS = (
    "东方树叶乌龙茶 500ml×15",
    "伊利安慕希希腊风味酸奶 205g×12",
    "特仑苏纯牛奶 250ml×12",
    "张裕解百纳干红 750ml",
)
_COMPENSATION_REASONS = (
    "客诉补偿：商品临近保质期",
    "客诉补偿：收银排队等候过久",
    "客诉补偿：会员积分未及时到账",
    "客诉补偿：门店缺货未能兑现预订",
)


@dataclass(frozen=True)
class CouponPlan:
    spec: TemplateSpec
    share: float  # of the coupons issued
    how: str  # campaign | staff | compensation
    redeem: float  # the chance a coupon gets used
    cover_fen: int | None = None  # item vouchers: the value the issuing store names


@dataclass(frozen=True)
class PackagePlan:
    spec: PackageSpec
    share: float  # of the packages sold
    every_days: tuple[float, float]  # how long members leave between two uses


def coupon_plans(drink_skus: list[str]) -> list[CouponPlan]:
    return [
        CouponPlan(
            TemplateSpec(
                code="HQ-M300-50",
                name="满300减50 全国门店通用",
                kind=coupon_calc.Kind.AMOUNT_OFF,
                threshold_fen=30000,
                amount_fen=5000,
                valid_days=30,
                per_member_limit=1,
                bearer=Bearer.HQ,
            ),
            0.35,
            "campaign",
            0.5,
        ),
        CouponPlan(
            TemplateSpec(
                code="LIFE-88",
                name="优选生活 8 折券（最高减 30 元）",
                kind=coupon_calc.Kind.PERCENT_OFF,
                percent_off=20,
                cap_fen=3000,
                accept_scope=AcceptScope.BRAND,
                accept_brand_code="life",
                valid_days=14,
                bearer=Bearer.REDEEMING_STORE,
            ),
            0.2,
            "staff",
            0.45,
        ),
        CouponPlan(
            TemplateSpec(
                code="STORE-M100-20",
                name="门店专享 满100减20（仅限发券门店）",
                kind=coupon_calc.Kind.AMOUNT_OFF,
                threshold_fen=10000,
                amount_fen=2000,
                accept_scope=AcceptScope.ISSUING_STORE,
                valid_days=30,
                bearer=Bearer.ISSUING_STORE,
            ),
            0.15,
            "staff",
            0.45,
        ),
        CouponPlan(
            TemplateSpec(
                code="EXCH-DRINK",
                name="饮品兑换券 抵 59.90 元（超出补差价）",
                kind=coupon_calc.Kind.EXCHANGE,
                skus=drink_skus,
                pay_difference=True,
                valid_days=45,
                return_policy=ReturnPolicy.VOID,
                bearer=Bearer.ISSUING_STORE,
            ),
            0.1,
            "staff",
            0.55,
            cover_fen=5990,
        ),
        CouponPlan(
            TemplateSpec(
                code="SPLIT-M500-80",
                name="满500减80（发券门店承担一半）",
                kind=coupon_calc.Kind.AMOUNT_OFF,
                threshold_fen=50000,
                amount_fen=8000,
                valid_days=30,
                bearer=Bearer.SPLIT,
                issuer_pct=50,
            ),
            0.12,
            "staff",
            0.35,
        ),
        CouponPlan(
            TemplateSpec(
                code="COMP-30",
                name="客诉补偿券 无门槛减 30 元",
                kind=coupon_calc.Kind.AMOUNT_OFF,
                amount_fen=3000,
                valid_days=90,
                bearer=Bearer.HQ,
            ),
            0.08,
            "compensation",
            0.6,
        ),
    ]


def package_plans(pt_store_codes: list[str]) -> list[PackagePlan]:
    return [
        PackagePlan(
            PackageSpec(
                code="NAIL-10",
                name="美甲十次卡",
                service_code="NAIL",
                uses=10,
                price_fen=98000,
                validity_days=365,
                refund_rule=RefundRule.UNUSED_PRO_RATA,
                store_scope=StoreScope.BRAND,
                brand_code="life",
                bearer=settlement.Bearer.ISSUING_STORE,
            ),
            0.45,
            (7, 18),
        ),
        PackagePlan(
            PackageSpec(
                code="PT-12",
                name="私教12次课",
                service_code="PT",
                uses=12,
                price_fen=360000,
                validity_days=180,
                refund_rule=RefundRule.UNUSED_PRO_RATA,
                store_scope=StoreScope.STORES,
                store_codes=pt_store_codes,
                bearer=settlement.Bearer.SPLIT,
                issuer_pct=80,
            ),
            0.2,
            (2, 6),
        ),
        PackagePlan(
            PackageSpec(
                code="WASH-5",
                name="洗车5次卡",
                service_code="CARWASH",
                uses=5,
                price_fen=15000,
                validity_days=90,
                refund_rule=RefundRule.FULL_IF_UNUSED,
                store_scope=StoreScope.ALL,
                bearer=settlement.Bearer.ISSUING_STORE,
            ),
            0.35,
            (5, 12),
        ),
    ]


@dataclass
class BenefitsResult:
    coupon_templates: int = 0
    coupons_issued: int = 0
    coupons_redeemed: int = 0
    coupons_redeemed_elsewhere: int = 0  # at another store than the issuer (or issued by HQ)
    coupon_discount_fen: int = 0
    coupon_returns: int = 0
    package_templates: int = 0
    packages_sold: int = 0
    package_uses: int = 0
    package_uses_elsewhere: int = 0
    packages_refunded: int = 0
    corrections: int = 0
    settlement_entries: int = 0
    # What the coupon orders add to the history's figures (``fold_into``).
    orders: int = 0
    order_lines: int = 0
    sales_fen: int = 0
    points_earned: int = 0
    points_redeemed: int = 0
    redeeming_orders: int = 0
    points_settled: int = 0  # points settlement entries their redemptions wrote
    members_with_orders: int = 0  # counted again afterwards
    multi_store_members: int = 0
    seconds: float = 0.0

    def fold_into(self, result: DemoResult) -> None:
        """Count the coupon orders in the demo's order, sales and points figures."""
        result.member_orders += self.orders
        result.order_lines += self.order_lines
        result.sales_fen += self.sales_fen
        result.points_earned += self.points_earned
        result.points_redeemed += self.points_redeemed
        result.redeeming_orders += self.redeeming_orders
        result.settlement_entries += self.points_settled
        result.members_with_orders = self.members_with_orders
        result.multi_store_members = self.multi_store_members
        result.benefits = self

    def summary(self) -> str:
        return "\n".join(
            [
                f"  coupons: {self.coupon_templates} templates, {self.coupons_issued:,} issued, "
                f"{self.coupons_redeemed:,} used ({self.coupons_redeemed_elsewhere:,} away from the "
                f"issuer, ¥{self.coupon_discount_fen / 100:,.2f} off), {self.coupon_returns} returned",
                f"  service packages: {self.package_templates} templates, {self.packages_sold:,} sold, "
                f"{self.package_uses:,} uses ({self.package_uses_elsewhere:,} at another store), "
                f"{self.packages_refunded} refunded; {self.settlement_entries:,} settlement entries "
                f"incl. {self.corrections} corrections; {self.seconds:.1f}s",
            ]
        )


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class _Shopper:
    member: Member
    top_store: Store  # where they shop most: staff there hand them coupons and sell them packages
    stores: list[Store]  # every store they have bought at, most visited first


@dataclass
class _Issue:
    plan: CouponPlan
    shopper: _Shopper
    at: datetime
    store: Store | None  # the issuing store; None for HQ
    campaign_ref: str = ""
    coupon: Coupon | None = None


@dataclass
class _Sale:
    issue: _Issue
    store: Store
    at: datetime
    lines: list[LineIn]
    points_wish: int = 0  # points the member would like to pay with, as far as they have them
    order_no: str = ""


@dataclass
class _Package:
    plan: PackagePlan
    shopper: _Shopper
    store: Store
    at: datetime
    uses: list[tuple[datetime, Store]] = field(default_factory=list)
    package: MemberPackage | None = None


@dataclass(order=True)
class _Event:
    at: datetime
    seq: int
    run: Callable[[], None] = field(compare=False)


def _fixed(at: datetime) -> datetime:
    return at


def _month_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=tz).astimezone(UTC)


class _Benefits:
    def __init__(
        self, session: Session, rng: random.Random, chain: Chain, now: datetime, members: int
    ) -> None:
        self.session = session
        self.rng = rng
        self.chain = chain
        self.org_id = chain.org.id
        self.now = now
        self.members = members
        self.tz_name = chain.org.timezone
        self.tz = ZoneInfo(self.tz_name)
        local = now.astimezone(self.tz).date()
        self.cur_start = _month_start(local, self.tz)
        self.prev_start = _month_start(local.replace(day=1) - timedelta(days=1), self.tz)
        self.coupon_start = max(self.prev_start, now - timedelta(days=COUPON_DAYS))
        self.result = BenefitsResult()
        self.events: list[_Event] = []
        self.stores = list(
            session.scalars(select(Store).where(Store.org_id == self.org_id).order_by(Store.id))
        )
        self.store_by_id = {s.id: s for s in self.stores}
        self.life_brand = chain.brands["life"].id if "life" in chain.brands else None
        staff = {s.username: s for s in session.scalars(select(Staff).where(Staff.org_id == self.org_id))}
        self.hq = staff_principal(session, staff["admin"])
        self.cs = staff_principal(session, staff["cs"])
        self.clerk = {s.id: staff_principal(session, staff[f"{s.code.lower()}_clerk"]) for s in self.stores}
        self.manager = {s.id: staff_principal(session, staff[f"{s.code.lower()}_mgr"]) for s in self.stores}
        self.products = catalogue()
        self.shelves: dict[date, tuple[list[Product], list[float]]] = {}
        drinks = [p.sku for p in self.products if p.name in _DRINKS]
        life = [s.code for s in self.stores if s.brand_id == self.life_brand]
        self.coupon_plans = coupon_plans(drinks)
        self.package_plans = package_plans(life[:3] or [self.stores[0].code])
        self.templates: dict[str, CouponTemplate] = {}
        self.package_templates: dict[str, ServicePackage] = {}
        program = points_service.default_program(session, self.org_id)
        self.redeem_rate = program.redeem_points_per_yuan
        self.redeem_unit = points_calc.redeem_unit(program.redeem_points_per_yuan)

    # --- time ---

    def _when(self, lo: datetime, hi: datetime) -> datetime:
        """A moment in ``[lo, hi]``, uniform over its opening hours where it has any."""
        spans: list[tuple[datetime, float]] = []
        day = lo.astimezone(self.tz).date()
        while (opens := datetime(day.year, day.month, day.day, OPENING_HOURS[0], tzinfo=self.tz)) <= hi:
            start = max(lo, opens)
            end = min(hi, opens + timedelta(hours=OPENING_HOURS[1] - OPENING_HOURS[0]))
            if start < end:
                spans.append((start, (end - start).total_seconds()))
            day += timedelta(days=1)
        if not spans:
            spans = [(lo, max((hi - lo).total_seconds(), 0.0))]
        u = self.rng.random() * sum(length for _, length in spans)
        at = spans[-1][0] + timedelta(seconds=spans[-1][1])
        for start, length in spans:
            if u <= length:
                at = start + timedelta(seconds=u)
                break
            u -= length
        return at.astimezone(UTC).replace(microsecond=0)

    def _add(self, at: datetime, run: Callable[[], None]) -> None:
        self.events.append(_Event(at, len(self.events), run))

    # --- who and where ---

    def _shoppers(self) -> list[_Shopper]:
        """Members who bought recently and joined before the coupon window, by member id."""
        since = self.now - timedelta(days=ACTIVE_DAYS)
        rows = self.session.execute(
            select(MemberStats.member_id)
            .join(Member, Member.id == MemberStats.member_id)
            .where(
                MemberStats.org_id == self.org_id,
                MemberStats.last_purchase_at >= since,
                Member.created_at < self.prev_start - timedelta(days=7),
                Member.status == MemberStatus.ACTIVE,
            )
            .order_by(MemberStats.member_id)
        ).all()
        ids = [int(r[0]) for r in rows]
        wanted = min(len(ids), self._coupon_count() + self._package_count())
        chosen = sorted(self.rng.sample(ids, wanted))
        shoppers: list[_Shopper] = []
        for start in range(0, len(chosen), 500):
            part = chosen[start : start + 500]
            visits: dict[int, list[tuple[int, int]]] = {}
            for member_id, store_id, n in self.session.execute(
                select(MemberStoreStats.member_id, MemberStoreStats.store_id, MemberStoreStats.order_count)
                .where(MemberStoreStats.member_id.in_(part))
                .order_by(MemberStoreStats.member_id, MemberStoreStats.store_id)
            ):
                visits.setdefault(int(member_id), []).append((-int(n), int(store_id)))
            found = self.session.scalars(select(Member).where(Member.id.in_(part)).order_by(Member.id))
            for member in found:
                stores = [self.store_by_id[sid] for _, sid in sorted(visits.get(member.id, []))]
                if stores:
                    shoppers.append(_Shopper(member, stores[0], stores))
        return shoppers

    def _coupon_count(self) -> int:
        return min(max(round(self.members * COUPONS_PER_MEMBER), MIN_COUPONS), MAX_COUPONS)

    def _package_count(self) -> int:
        return min(max(round(self.members * PACKAGES_PER_MEMBER), MIN_PACKAGES), MAX_PACKAGES)

    def _other_store(self, shopper: _Shopper, not_here: Store, allowed: list[Store]) -> Store | None:
        """Another store for this member: one they already shop at, else one in the same city, else any."""
        for pool in (
            [s for s in shopper.stores if s in allowed],
            [s for s in allowed if s.city == not_here.city],
            allowed,
        ):
            pool = [s for s in pool if s.id != not_here.id]
            if pool:
                return self.rng.choice(pool)
        return None

    def _shelf(self, at: datetime) -> tuple[list[Product], list[float]]:
        day = at.astimezone(self.tz).date()
        shelf = self.shelves.get(day)
        if shelf is None:
            avail = availability(day)
            items = [p for p in self.products if on_shelf(p.season, avail)]
            shelf = (items, list(accumulate(p.weight for p in items)))
            self.shelves[day] = shelf
        return shelf

    def _basket(
        self, at: datetime, threshold_fen: int, must: Product | None = None, picks: int | None = None
    ) -> list[LineIn]:
        """A basket for a coupon order: picks weighted like the shelves sell, topped up past the
        coupon's threshold the way members add an item to reach 满X."""
        rng = self.rng
        items, cum = self._shelf(at)
        quantities: dict[str, int] = {}
        chosen: dict[str, Product] = {}
        if must is not None:
            quantities[must.sku], chosen[must.sku] = 1, must
        if picks is None:
            picks = rng.choice((0, 1, 1, 2, 3)) if must is not None else rng.choice((1, 1, 2, 2, 3, 4))
        target = threshold_fen + (rng.choice((0, 0, 1500, 4000, 9000)) if threshold_fen else 0)
        total = sum(p.price_fen for p in chosen.values())
        while picks > 0 or total < target:
            p = rng.choices(items, cum_weights=cum)[0]
            qty = rng.choice((1, 1, 1, 2)) if p.category in _BULK_CATEGORIES else 1
            quantities[p.sku] = quantities.get(p.sku, 0) + qty
            chosen[p.sku] = p
            total += p.price_fen * qty
            picks -= 1
        return [
            LineIn(
                sku=sku,
                name=p.name,
                category=p.category,
                quantity=quantities[sku],
                unit_price_fen=p.price_fen,
            )
            for sku, p in chosen.items()
        ]

    # --- coupons ---

    def plan_coupons(self, shoppers: list[_Shopper]) -> list[_Sale]:
        rng = self.rng
        total = self._coupon_count()
        sales: list[_Sale] = []
        for plan in self.coupon_plans:
            template = self.templates[plan.spec.code]
            if plan.spec.accept_scope == AcceptScope.BRAND:
                eligible = [s for s in shoppers if s.top_store.brand_id == template.accept_brand_id]
            else:
                eligible = shoppers
            chosen = rng.sample(eligible, min(len(eligible), round(total * plan.share)))
            issues: list[_Issue] = []
            if plan.how == "campaign":
                # Two waves of HQ's campaign, one in each month; a batch job issues them a second apart.
                waves = [
                    self._when(self.coupon_start, min(self.coupon_start + timedelta(days=3), self.cur_start)),
                    self._when(self.cur_start, min(self.cur_start + timedelta(days=3), self.now)),
                ]
                for i, shopper in enumerate(chosen):
                    wave = waves[i % 2]
                    ref = f"{wave.astimezone(self.tz):%Y-%m}-{plan.spec.code}"
                    at = min(wave + timedelta(seconds=i // 2), self.now)
                    issues.append(_Issue(plan, shopper, at, None, campaign_ref=ref))
            else:
                for shopper in chosen:
                    store = shopper.top_store if plan.how == "staff" else None
                    issues.append(_Issue(plan, shopper, self._when(self.coupon_start, self.now), store))
            for issue in issues:
                self._add(issue.at, partial(self._issue, issue))
                sale = self._plan_use(issue, template)
                if sale is not None:
                    sales.append(sale)
                    self._add(sale.at, partial(self._redeem, sale))
        return sales

    def _plan_use(self, issue: _Issue, template: CouponTemplate) -> _Sale | None:
        rng = self.rng
        if rng.random() >= issue.plan.redeem:
            return None
        _, valid_to = coupon_calc.validity(
            issue.at,
            self.tz_name,
            valid_from=template.valid_from,
            valid_to=template.valid_to,
            valid_days=template.valid_days,
        )
        lo = issue.at + timedelta(minutes=30)
        hi = min(valid_to or self.now, self.now)
        if hi - lo < timedelta(hours=1):
            return None
        at = self._when(lo, hi)

        def accepts(store: Store) -> bool:
            return coupon_calc.accepted_at(
                coupon_calc.StoreRef(store.id, store.brand_id, store.region_id),
                scope=template.accept_scope,
                brand_id=template.accept_brand_id,
                region_id=template.accept_region_id,
                store_ids=template.accept_store_ids or [],
                cross_store=template.cross_store,
                issuing_store_id=issue.store.id if issue.store else None,
            )

        shopper = issue.shopper
        own = [s for s in shopper.stores if accepts(s)]
        if not own:
            return None
        store = own[0] if rng.random() < 0.6 else rng.choice(own)
        if rng.random() < 0.15:  # on a trip or near work: a store they have not shopped at yet
            away = self._other_store(shopper, store, [s for s in self.stores if accepts(s)])
            store = away or store
        must = None
        if template.kind == coupon_calc.Kind.EXCHANGE:
            drinks = [p for p in self._shelf(at)[0] if p.sku in set(template.skus)]
            if not drinks:
                return None
            must = rng.choice(drinks)
        wish = rng.choice(POINTS_WISHES) if rng.random() < POINTS_SHARE else 0
        return _Sale(issue, store, at, self._basket(at, template.threshold_fen, must), wish)

    def _issue(self, issue: _Issue) -> None:
        template = self.templates[issue.plan.spec.code]
        member = issue.shopper.member
        if issue.plan.how == "campaign":
            coupon = coupons.issue_for_campaign(
                self.session, self.org_id, template.code, member, campaign_ref=issue.campaign_ref
            )
        elif issue.plan.how == "compensation":
            coupon = coupons.issue_compensation(
                self.session, self.cs, template, member, self.rng.choice(_COMPENSATION_REASONS)
            )
        else:
            assert issue.store is not None
            coupon = coupons.issue_by_staff(
                self.session,
                self.clerk[issue.store.id],
                template,
                member,
                issue.store,
                reason="到店消费赠券",
                cover_fen=issue.plan.cover_fen,
            )
        issue.coupon = coupon
        self.result.coupons_issued += 1

    def _redeem(self, sale: _Sale) -> None:
        coupon = sale.issue.coupon
        assert coupon is not None
        template = self.templates[sale.issue.plan.spec.code]
        # What the member pays: the coupon maths the checkout applies (the demo has no tier discount),
        # less the points they pay with; the checkout refuses a payment that does not match.
        lines = [
            coupon_calc.Line(i, ln.sku, ln.category, ln.quantity, ln.quantity * ln.unit_price_fen)
            for i, ln in enumerate(sale.lines, start=1)
        ]
        off = coupon_calc.evaluate([candidate(coupon, template)], lines).discount_fen
        net = sum(ln.amount_fen for ln in lines) - off
        redeem = 0
        if sale.points_wish:
            spendable, _ = self._spendable(sale.issue.shopper.member.id, sale.at)
            redeem = min(sale.points_wish, spendable, net * self.redeem_rate // 100)
            redeem -= redeem % self.redeem_unit
        due = net - points_calc.points_value_fen(redeem, self.redeem_rate)
        method = self.rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0]
        data = CheckoutIn(
            member=MemberRefIn(member_no=sale.issue.shopper.member.member_no),
            lines=sale.lines,
            coupon_codes=[coupon.code],
            redeem_points=redeem,
            payments=[PaymentIn(method=method, amount_fen=due)] if due else [],
        )
        out = till.checkout(self.session, self.clerk[sale.store.id], data)
        sale.order_no = out.order_no
        r = self.result
        r.coupons_redeemed += 1
        r.coupon_discount_fen += out.coupon_discount_fen
        r.orders += 1
        r.order_lines += len(out.lines)
        r.sales_fen += out.total_fen
        r.points_earned += out.points_earned
        r.points_redeemed += out.points_redeemed
        r.redeeming_orders += bool(out.points_redeemed)
        if sale.issue.store is None or sale.issue.store.id != sale.store.id:
            r.coupons_redeemed_elsewhere += 1

    def _parts(self) -> list[tuple[datetime, datetime]]:
        """The coupon window's part in the previous month and in this month."""
        return [(self.coupon_start, self.cur_start - timedelta(seconds=1)), (self.cur_start, self.now)]

    def _spendable(self, member_id: int, at: datetime) -> tuple[int, set[int | None]]:
        """The points a member can spend at ``at`` (available, unexpired lots, as the checkout counts
        them) and the stores that issued them (None: HQ)."""
        total, issuers = 0, set()
        for remaining, store_id in self.session.execute(
            select(PointLot.remaining, PointLot.store_id).where(
                PointLot.member_id == member_id,
                PointLot.remaining > 0,
                PointLot.available_at <= at,
                or_(PointLot.expires_at.is_(None), PointLot.expires_at > at),
            )
        ):
            total += int(remaining)
            issuers.add(store_id)
        return total, issuers

    def plan_anchors(self, shoppers: list[_Shopper], sales: list[_Sale]) -> None:
        """Whatever day the demo is loaded, each month gets (besides the random activity) a complaint
        coupon from customer service used with points at a store that issued none of them, and a
        car-wash card sold at one store and used at another: every kind of settlement entry."""
        if len(self.stores) < 2:
            return
        rng = self.rng
        busy = {s.issue.shopper.member.id for s in sales}
        free = [s for s in shoppers if s.member.id not in busy]
        rng.shuffle(free)
        comp = next(p for p in self.coupon_plans if p.how == "compensation")
        wash = next(p for p in self.package_plans if p.spec.store_scope == StoreScope.ALL)
        for lo, hi in self._parts():
            span = hi - lo
            issued, used = lo + span * 0.05, self._when(lo + span * 0.3, lo + span * 0.5)
            while free:
                shopper = free.pop()
                spendable, issuers = self._spendable(shopper.member.id, used)
                away = [s for s in self.stores if s.id not in issuers]
                if spendable >= self.redeem_unit and away:
                    near = [s for s in away if s.city == shopper.top_store.city]
                    store = rng.choice(near or away)
                    issue = _Issue(comp, shopper, self._when(issued, lo + span * 0.25), None)
                    self._add(issue.at, partial(self._issue, issue))
                    wish = min(rng.choice(POINTS_WISHES), spendable)
                    sale = _Sale(issue, store, used, self._basket(used, 15000, picks=2), wish)
                    sales.append(sale)
                    self._add(sale.at, partial(self._redeem, sale))
                    break
            if shoppers:
                buyer = rng.choice(shoppers)
                pkg = _Package(wash, buyer, buyer.top_store, self._when(issued, lo + span * 0.25))
                other = self._other_store(buyer, pkg.store, self.stores)
                if other is not None:
                    pkg.uses.append((self._when(lo + span * 0.55, lo + span * 0.75), other))
                self._add(pkg.at, partial(self._sell, pkg))
                for at, where in pkg.uses:
                    self._add(at, partial(self._use, pkg, where))

    def plan_returns(self, sales: list[_Sale]) -> None:
        """Three coupon orders come back: last month one in full at another store (the coupon is given
        back), this month one line at another store and one order in full where it was bought."""
        rng = self.rng
        (_, last_end), (this_start, _) = self._parts()

        def pick(found: list[_Sale]) -> _Sale | None:
            hq = [s for s in found if s.issue.plan.spec.bearer == Bearer.HQ]
            return rng.choice(hq or found) if found else None

        def later(sale: _Sale, limit: datetime) -> datetime:
            """A few hours to three days after the sale, before ``limit``."""
            return self._when(
                sale.at + min(timedelta(hours=2), (limit - sale.at) / 3),
                min(sale.at + timedelta(days=3), limit),
            )

        restorable = [s for s in sales if s.issue.plan.spec.return_policy == ReturnPolicy.RESTORE]
        whole = pick([s for s in restorable if s.at < last_end - timedelta(minutes=1)])
        if whole is not None:
            away = self._other_store(whole.issue.shopper, whole.store, self.stores)
            lines = [(i, ln.quantity) for i, ln in enumerate(whole.lines, start=1)]
            self._plan_return(
                whole, later(whole, last_end), away or whole.store, lines, "尺码不合适，整单退货"
            )
        this_month = [s for s in sales if this_start <= s.at < self.now - timedelta(minutes=1)]
        part = pick([s for s in this_month if len(s.lines) > 1])
        if part is not None:
            away = self._other_store(part.issue.shopper, part.store, self.stores)
            line = [(1, part.lines[0].quantity)]
            self._plan_return(part, later(part, self.now), away or part.store, line, "商品有瑕疵，退一件")
        rest = [s for s in this_month if s is not part]
        if rest:
            whole = rng.choice(rest)
            lines = [(i, ln.quantity) for i, ln in enumerate(whole.lines, start=1)]
            self._plan_return(whole, later(whole, self.now), whole.store, lines, "会员改变主意，整单退货")

    def _plan_return(
        self, sale: _Sale, at: datetime, store: Store, lines: list[tuple[int, int]], reason: str
    ) -> None:
        self._add(at, partial(self._return, sale, store, lines, reason))

    def _return(self, sale: _Sale, store: Store, lines: list[tuple[int, int]], reason: str) -> None:
        data = ReturnIn(lines=[ReturnLineIn(line_no=n, quantity=q) for n, q in lines], reason=reason)
        return_lines(self.session, self.clerk[store.id], sale.order_no, data)
        self.result.coupon_returns += 1

    # --- service packages ---

    def plan_packages(self, shoppers: list[_Shopper]) -> None:
        rng = self.rng
        total = self._package_count()
        sold: list[_Package] = []
        for plan in self.package_plans:
            template = self.package_templates[plan.spec.code]
            offering = [s for s in self.stores if packages.offers_service(self.session, template, s)]
            eligible = [s for s in shoppers if s.top_store in offering]
            for shopper in rng.sample(eligible, min(len(eligible), round(total * plan.share))):
                at = self._when(self.prev_start, self.now - timedelta(hours=1))
                pkg = _Package(plan, shopper, shopper.top_store, at)
                when = at + timedelta(minutes=40) if rng.random() < 0.5 else at + self._gap(plan)
                while when < self.now and len(pkg.uses) < plan.spec.uses:
                    when = self._when(when, min(when + timedelta(days=1), self.now))
                    store = pkg.store
                    if rng.random() < 0.3:
                        store = self._other_store(shopper, pkg.store, offering) or store
                    pkg.uses.append((when, store))
                    when += self._gap(plan)
                sold.append(pkg)
        refund = self._pick_refund(sold)
        for pkg in sold:
            self._add(pkg.at, partial(self._sell, pkg))
            for at, store in pkg.uses:
                self._add(at, partial(self._use, pkg, store))
        if refund is not None:
            self._add(refund[1], partial(self._refund, refund[0]))

    def _gap(self, plan: PackagePlan) -> timedelta:
        return timedelta(days=self.rng.uniform(*plan.every_days))

    def _pick_refund(self, sold: list[_Package]) -> tuple[_Package, datetime] | None:
        """One member gives up a package after two uses and gets the unused ones refunded, this month
        when the second use allows it; later uses never happen."""
        found = [
            p
            for p in sold
            if p.plan.spec.refund_rule == RefundRule.UNUSED_PRO_RATA
            and len(p.uses) >= 3
            and p.uses[2][0] - p.uses[1][0] > timedelta(hours=3)
        ]
        if not found:
            return None
        pkg = self.rng.choice(found)
        second, third = pkg.uses[1][0], pkg.uses[2][0]
        lo = max(second + timedelta(hours=1), min(self.cur_start, third - timedelta(hours=2)))
        at = self._when(lo, third - timedelta(hours=1))
        pkg.uses = pkg.uses[:2]
        return pkg, at

    def _sell(self, pkg: _Package) -> None:
        template = self.package_templates[pkg.plan.spec.code]
        method = self.rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0]
        pkg.package = packages.sell_package(
            self.session,
            self.clerk[pkg.store.id],
            pkg.shopper.member,
            template,
            pkg.store,
            payment_method=method,
            amount_fen=template.price_fen,
        )
        self.result.packages_sold += 1

    def _use(self, pkg: _Package, store: Store) -> None:
        assert pkg.package is not None
        packages.use_package(
            self.session, self.clerk[store.id], pkg.package.id, store, member=pkg.shopper.member
        )
        self.result.package_uses += 1
        if store.id != pkg.store.id:
            self.result.package_uses_elsewhere += 1

    def _refund(self, pkg: _Package) -> None:
        assert pkg.package is not None
        packages.refund_package(
            self.session, self.manager[pkg.store.id], pkg.package.id, reason="会员搬家，申请退还剩余次数"
        )
        self.result.packages_refunded += 1

    # --- settlement corrections ---

    def plan_corrections(self) -> None:
        """HQ books one correction in each month: last month it pays a store's anniversary materials,
        this month it moves a freight share between two stores."""
        if len(self.stores) < 2:
            return
        first, second = self.stores[0], self.stores[1]
        last_month = f"{self.prev_start.astimezone(self.tz):%Y-%m}"
        this_month = f"{self.cur_start.astimezone(self.tz):%Y-%m}"
        reason = f"总部承担 {first.code} 店庆活动物料费"
        at = self._when(self.prev_start + (self.cur_start - self.prev_start) / 2, self.cur_start)
        self._add(at, partial(self._correct, HQ, first.id, 80000, reason, last_month))
        reason = f"更正：{first.code} 向 {second.code} 调拨商品运费分摊"
        at = self._when(self.cur_start + (self.now - self.cur_start) / 2, self.now)
        self._add(at, partial(self._correct, first.id, second.id, 12000, reason, this_month))

    def _correct(self, debtor: int, creditor: int, fen: int, reason: str, month: str) -> None:
        settlement.record_correction(
            self.session,
            self.hq,
            debtor=debtor,
            creditor=creditor,
            amount_fen=fen,
            reason=reason,
            business_month=month,
        )
        self.result.corrections += 1

    # --- running it ---

    def run(self, progress: Progress) -> BenefitsResult:
        session = self.session
        shoppers = self._shoppers()
        last_entry = session.scalar(
            select(func.coalesce(func.max(SettlementEntry.id), 0)).where(
                SettlementEntry.org_id == self.org_id
            )
        )
        # HQ sets the templates up a few days before the first sale.
        db.set_clock(partial(_fixed, self.prev_start - timedelta(days=3)))
        self.templates = {
            p.spec.code: coupons.create_template(session, self.hq, p.spec) for p in self.coupon_plans
        }
        self.package_templates = {
            p.spec.code: packages.create_template(session, self.hq, p.spec) for p in self.package_plans
        }
        self.result.coupon_templates = len(self.templates)
        self.result.package_templates = len(self.package_templates)
        sales = self.plan_coupons(shoppers)
        self.plan_anchors(shoppers, sales)
        self.plan_returns(sales)
        self.plan_packages(shoppers)
        self.plan_corrections()
        self.events.sort()
        task = progress.add_task("优惠券与次卡 coupons & packages", total=len(self.events))
        for event in self.events:
            db.set_clock(partial(_fixed, event.at))
            event.run()
            progress.advance(task)
        db.set_clock(partial(_fixed, self.now))
        coupons.expire_coupons(session, self.org_id, self.now)  # what the nightly job would have done
        session.flush()  # every event written before they go
        session.execute(delete(Event).where(Event.org_id == self.org_id))
        self._count(int(last_entry or 0))
        return self.result

    def _count(self, last_entry: int) -> None:
        r, org = self.result, self.org_id
        for kind, reversal, n in self.session.execute(
            select(SettlementEntry.kind, SettlementEntry.reverses_id.is_not(None), func.count())
            .where(SettlementEntry.org_id == org, SettlementEntry.id > last_entry)
            .group_by(SettlementEntry.kind, SettlementEntry.reverses_id.is_not(None))
        ):
            r.settlement_entries += int(n)
            if kind == settlement.Kind.POINTS_REDEEMED and not reversal:
                r.points_settled += int(n)
        stats = select(func.count()).select_from(MemberStats).where(MemberStats.org_id == org)
        r.members_with_orders = int(self.session.scalar(stats.where(MemberStats.order_count > 0)) or 0)
        r.multi_store_members = int(self.session.scalar(stats.where(MemberStats.store_count > 1)) or 0)


def add_benefits(
    session: Session, progress: Progress, rng: random.Random, chain: Chain, now: datetime, members: int
) -> BenefitsResult:
    """Coupons, service packages, their uses and returns for the demo chain (see the module docstring);
    the caller's transaction, clock restored afterwards."""
    previous = db._clock  # a caller's own simulated clock, put back when done
    started = time.perf_counter()
    session.flush()
    try:
        result = _Benefits(session, rng, chain, now, members).run(progress)
    finally:
        db.set_clock(previous)
    result.seconds = time.perf_counter() - started
    return result
