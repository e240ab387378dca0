"""Generates a realistic chain's history in Python and bulk-writes it in one transaction.

Each member is simulated on their own, in time order, the way the real checkout would have written
their orders: lines planned with ``checkout.plan_lines`` (points payment spread by amount), points from
the program's earning rules in force (``points.earning.compute``, with the same explanation), growth
value per line, redemptions spending the soonest-expiring available lots first, earned points as new
lots, and the running member, store, category and monthly stats. So ``onemember verify`` holds and the
analytics see the same shapes as live data.

The demo program uses a common Chinese retail rule, ``fixed_yearly`` expiry: points earned in a year
expire at the end of the next calendar year (积分次年年底清零). Lots already past that point carry an
EXPIRE entry at the moment they expired. No outbox events are written for demo history.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from math import exp, sqrt
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from onemember.common.counters import member_no_for, next_value
from onemember.common.crypto import get_cipher, mask
from onemember.common.types import EntryKind, IdentityKind, MemberStatus
from onemember.db import utcnow
from onemember.demo.benefits import BenefitsResult, add_benefits
from onemember.demo.bulk import Batch, BulkWriter, table_of
from onemember.demo.chain import ADMIN_PASSWORD, STORE_PASSWORD, Chain, StoreInfo, build_chain
from onemember.demo.data import (
    CATEGORIES,
    FEMALE_CHARS,
    MALE_CHARS,
    PAYMENT_METHODS,
    PAYMENT_WEIGHTS,
    PHONE_PREFIXES,
    SURNAME_WEIGHTS,
    SURNAMES,
    Product,
    catalogue,
)
from onemember.demo.seasons import (
    HOUR_WEIGHTS,
    HOURS,
    SEASON_KEYS,
    availability,
    category_boosts,
    day_profile,
    on_shelf,
)
from onemember.members.models import Member, MemberIdentity
from onemember.orders.checkout import plan_lines
from onemember.orders.models import Order, OrderLine, OrderPayment
from onemember.orders.schemas import EarnLineOut, EarnRuleOut
from onemember.points import calculations as calc
from onemember.points import earning
from onemember.points import rules as rules_service
from onemember.points import service as points_service
from onemember.points.models import (
    GrowthEntry,
    PointAccount,
    PointEntry,
    PointLot,
    PointLotMovement,
    PointsProgram,
)
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from onemember.settlement import service as settlement
from onemember.settlement.models import SettlementEntry, SettlementPeriod
from onemember.tiers.models import MemberMonthlyStats

CHUNK = 2000  # members simulated and written per batch
WALK_IN_SHARE = 0.35  # orders without a member, relative to member orders
HISTORY_YEARS = 3  # members registered before the order window joined within this many years
CAT_INDEX = tuple(range(len(CATEGORIES)))
_F = {c: i for i, c in enumerate(CATEGORIES)}

# Base category tastes (CATEGORIES order) by gender, before each member's own twist.
_TASTE = {
    "female": (0.2, 0.2, 2.0, 1.8, 1.6, 2.0, 0.4, 1.2, 0.6),
    "male": (0.2, 0.2, 0.3, 1.4, 1.0, 2.0, 1.4, 0.8, 1.8),
    "unknown": (0.2, 0.2, 1.1, 1.6, 1.3, 2.0, 0.9, 1.0, 1.2),
}
_BULK_CATEGORIES = frozenset({_F["食品"], _F["个护"], _F["酒饮"]})

MEMBER_COLS = (
    "id",
    "org_id",
    "member_no",
    "name",
    "gender",
    "birthday",
    "channel",
    "registered_store_id",
    "status",
    "merged_into_id",
    "created_at",
    "updated_at",
    "erased_at",
)
IDENTITY_COLS = ("id", "org_id", "member_id", "kind", "value_enc", "value_bidx", "value_masked", "created_at")
ACCOUNT_COLS = (
    "id",
    "org_id",
    "member_id",
    "program_id",
    "balance",
    "debt",
    "lifetime_earned",
    "lifetime_redeemed",
    "updated_at",
    "growth_value",
)
ORDER_COLS = (
    "id",
    "org_id",
    "order_no",
    "store_id",
    "member_id",
    "client_order_id",
    "status",
    "source",
    "total_fen",
    "points_redeemed",
    "points_value_fen",
    "paid_fen",
    "points_earned",
    "refunded_fen",
    "earn_explanation",
    "actor",
    "occurred_at",
    "created_at",
    "discount_fen",
    "growth_earned",
)
LINE_COLS = (
    "id",
    "org_id",
    "order_id",
    "line_no",
    "sku",
    "name",
    "category",
    "quantity",
    "unit_price_fen",
    "amount_fen",
    "points_redeemed",
    "points_value_fen",
    "paid_fen",
    "points_earned",
    "returned_quantity",
    "discount_fen",
    "growth_earned",
)
PAYMENT_COLS = ("id", "org_id", "order_id", "method", "amount_fen")
ENTRY_COLS = (
    "id",
    "org_id",
    "account_id",
    "member_id",
    "kind",
    "amount",
    "debt_change",
    "balance_after",
    "debt_after",
    "store_id",
    "order_id",
    "return_id",
    "reverses_entry_id",
    "ref",
    "reason",
    "actor",
    "created_at",
)
LOT_COLS = (
    "id",
    "org_id",
    "account_id",
    "member_id",
    "entry_id",
    "amount",
    "remaining",
    "store_id",
    "order_id",
    "earned_at",
    "available_at",
    "expires_at",
)
MOVEMENT_COLS = ("id", "org_id", "lot_id", "entry_id", "amount", "created_at")
GROWTH_COLS = (
    "id",
    "org_id",
    "account_id",
    "member_id",
    "kind",
    "amount",
    "order_id",
    "return_id",
    "created_at",
)
MONTHLY_COLS = ("member_id", "month", "org_id", "orders", "spend_fen")
SETTLEMENT_COLS = (
    "id",
    "org_id",
    "period",
    "business_month",
    "kind",
    "debtor_key",
    "creditor_key",
    "amount_fen",
    "points",
    "order_id",
    "return_id",
    "point_entry_id",
    "reverses_id",
    "source_ref",
    "reason",
    "actor",
    "details",
    "occurred_at",
    "created_at",
)
STATS_COLS = (
    "member_id",
    "org_id",
    "first_purchase_at",
    "first_store_id",
    "last_purchase_at",
    "last_store_id",
    "order_count",
    "total_spend_fen",
    "return_count",
    "returned_fen",
    "store_count",
)
STORE_STATS_COLS = ("member_id", "store_id", "org_id", "order_count", "spend_fen", "last_purchase_at")
CATEGORY_STATS_COLS = (
    "member_id",
    "category",
    "org_id",
    "order_count",
    "quantity",
    "spend_fen",
    "last_purchase_at",
)


@dataclass
class DemoResult:
    org_id: int
    org_code: str
    org_name: str
    backend: str
    brands: int = 0
    regions: int = 0
    store_codes: list[str] = field(default_factory=list)
    logins: list[tuple[str, str, str]] = field(default_factory=list)
    members: int = 0
    members_with_orders: int = 0
    multi_store_members: int = 0
    drifting_members: int = 0
    member_orders: int = 0
    walk_in_orders: int = 0
    order_lines: int = 0
    sales_fen: int = 0
    redeeming_orders: int = 0
    points_earned: int = 0
    points_redeemed: int = 0
    points_expired: int = 0
    settlement_entries: int = 0
    benefits: BenefitsResult | None = None
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"演示连锁 demo chain「{self.org_name}」(org {self.org_code}, {self.backend}) "
            f"loaded in {self.seconds:.1f}s",
            f"  {self.brands} brands, {self.regions} regions, {len(self.store_codes)} stores "
            f"({', '.join(self.store_codes[:8])}{' …' if len(self.store_codes) > 8 else ''})",
            f"  {self.members:,} members ({self.members_with_orders:,} with orders, "
            f"{self.multi_store_members:,} shop at more than one store, "
            f"{self.drifting_members:,} drifting away)",
            f"  {self.member_orders + self.walk_in_orders:,} orders ({self.member_orders:,} by members, "
            f"{self.walk_in_orders:,} walk-in), {self.order_lines:,} lines, "
            f"sales ¥{self.sales_fen / 100:,.2f}",
            f"  points: {self.points_earned:,} earned, {self.points_redeemed:,} redeemed in "
            f"{self.redeeming_orders:,} orders ({self.settlement_entries:,} settled between stores), "
            f"{self.points_expired:,} expired",
            *([self.benefits.summary()] if self.benefits else []),
            f"  log in as HQ: admin / {ADMIN_PASSWORD};  store manager: sh01_mgr / {STORE_PASSWORD}",
        ]
        return "\n".join(lines)


# --- calendar ----------------------------------------------------------------------------------------


class Calendar:
    """The order window, one entry per local business day, with cumulative traffic for sampling."""

    def __init__(self, now: datetime, days: int, tz: ZoneInfo) -> None:
        self.now = now
        local_today = now.astimezone(tz).date()
        first = local_today - timedelta(days=days - 1) if days else local_today
        self.days = [first + timedelta(days=i) for i in range(days)]
        self.starts = [datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC) for d in self.days]
        self.tags = [f"{d:%y%m%d}" for d in self.days]
        profiles = [day_profile(d) for d in self.days]
        self.keys = [SEASON_KEYS.index(key) for _, key in profiles]
        shelves: dict[tuple[bool, bool, bool, bool], int] = {}
        self.shelf = [shelves.setdefault(availability(d), len(shelves)) for d in self.days]
        self.shelves = list(shelves)
        weights = [w for w, _ in profiles]
        if days:
            # Today counts only for the part of its opening hours already gone.
            opened = (now - self.starts[-1]).total_seconds() / 3600 - HOURS[0]
            weights[-1] *= min(max(opened / len(HOURS), 0.0), 1.0)
        self.cum = [0.0, *accumulate(weights)]
        # Traffic of an ordinary year, so a member's yearly rate means the same for any window.
        self.year_weight = sum(day_profile(local_today - timedelta(days=i))[0] for i in range(365))
        self.months = [d.year * 100 + d.month for d in self.days]
        self.month_tags = [f"{d.year:04d}-{d.month:02d}" for d in self.days]
        # When points earned on each day expire; set from the program's policy by the generator.
        self.expiry: list[datetime | None] = [None] * days
        self.hour_cum = list(accumulate(HOUR_WEIGHTS))

    def weight(self, lo: int, hi: int) -> float:
        return self.cum[hi + 1] - self.cum[lo]

    def draw_day(self, rng: random.Random, lo: int, hi: int) -> int:
        u = self.cum[lo] + rng.random() * (self.cum[hi + 1] - self.cum[lo])
        return min(max(bisect_right(self.cum, u) - 1, lo), hi)

    def draw_time(self, rng: random.Random, day: int) -> datetime | None:
        for _ in range(8):
            hour = rng.choices(HOURS, cum_weights=self.hour_cum)[0]
            at = self.starts[day] + timedelta(seconds=hour * 3600 + rng.randrange(3600))
            if at <= self.now:
                return at
        return None

    def day_of(self, at: datetime) -> int:
        return bisect_right(self.starts, at) - 1


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, sqrt(lam))))
    limit, k, p = exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# --- per-member state --------------------------------------------------------------------------------


class _Lot:
    __slots__ = (
        "amount",
        "available_at",
        "earned_at",
        "entry_id",
        "expires_at",
        "id",
        "order_id",
        "remaining",
        "store_id",
    )

    def __init__(
        self,
        lot_id: int,
        entry_id: int,
        amount: int,
        store_id: int,
        order_id: int,
        earned_at: datetime,
        available_at: datetime,
        expires_at: datetime | None,
    ) -> None:
        self.id = lot_id
        self.entry_id = entry_id
        self.amount = amount
        self.remaining = amount
        self.store_id = store_id
        self.order_id = order_id
        self.earned_at = earned_at
        self.available_at = available_at
        self.expires_at = expires_at


@dataclass
class _Member:
    id: int
    account_id: int
    registered_at: datetime
    home: StoreInfo
    visits: list[StoreInfo]
    taste: list[float]
    method: str
    redeem_chance: float
    birthday: date | None = None
    balance: int = 0
    earned: int = 0
    redeemed: int = 0
    growth: int = 0
    orders: int = 0
    earned_on: dict[int, int] = field(default_factory=dict)  # day -> points earned that local day
    months: dict[int, list[int]] = field(default_factory=dict)  # 202611 -> [orders, spend]
    updated_at: datetime | None = None
    lots: list[_Lot] = field(default_factory=list)
    head: int = 0  # lots before ``head`` are used up or expired
    cum_taste: dict[int, list[float]] = field(default_factory=dict)


class _Buffers:
    """Rows gathered for the next batch; ``take`` hands them over and starts empty lists."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.members: list[tuple[Any, ...]] = []
        self.identities: list[tuple[Any, ...]] = []
        self.accounts: list[tuple[Any, ...]] = []
        self.orders: list[tuple[Any, ...]] = []
        self.lines: list[tuple[Any, ...]] = []
        self.payments: list[tuple[Any, ...]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.lots: list[tuple[Any, ...]] = []
        self.movements: list[tuple[Any, ...]] = []
        self.growth: list[tuple[Any, ...]] = []
        self.settlement: list[tuple[Any, ...]] = []
        self.monthly: list[tuple[Any, ...]] = []
        self.stats: list[tuple[Any, ...]] = []
        self.store_stats: list[tuple[Any, ...]] = []
        self.category_stats: list[tuple[Any, ...]] = []

    def take(self) -> Batch:
        """Everything gathered so far, parents before children (PostgreSQL checks foreign keys row by row)."""
        batch: Batch = [
            (table_of(Member), MEMBER_COLS, self.members),
            (table_of(MemberIdentity), IDENTITY_COLS, self.identities),
            (table_of(PointAccount), ACCOUNT_COLS, self.accounts),
            (table_of(Order), ORDER_COLS, self.orders),
            (table_of(OrderLine), LINE_COLS, self.lines),
            (table_of(OrderPayment), PAYMENT_COLS, self.payments),
            (table_of(PointEntry), ENTRY_COLS, self.entries),
            (table_of(PointLot), LOT_COLS, self.lots),
            (table_of(PointLotMovement), MOVEMENT_COLS, self.movements),
            (table_of(GrowthEntry), GROWTH_COLS, self.growth),
            (table_of(SettlementEntry), SETTLEMENT_COLS, self.settlement),
            (table_of(MemberStats), STATS_COLS, self.stats),
            (table_of(MemberStoreStats), STORE_STATS_COLS, self.store_stats),
            (table_of(MemberCategoryStats), CATEGORY_STATS_COLS, self.category_stats),
            (table_of(MemberMonthlyStats), MONTHLY_COLS, self.monthly),
        ]
        self._reset()
        return batch


class _Ids:
    """Next free id per table, taken up front so rows can point at each other before they are written."""

    def __init__(self, writer: BulkWriter) -> None:
        self.member = writer.first_free_id(table_of(Member))
        self.identity = writer.first_free_id(table_of(MemberIdentity))
        self.account = writer.first_free_id(table_of(PointAccount))
        self.order = writer.first_free_id(table_of(Order))
        self.line = writer.first_free_id(table_of(OrderLine))
        self.payment = writer.first_free_id(table_of(OrderPayment))
        self.entry = writer.first_free_id(table_of(PointEntry))
        self.lot = writer.first_free_id(table_of(PointLot))
        self.movement = writer.first_free_id(table_of(PointLotMovement))
        self.growth = writer.first_free_id(table_of(GrowthEntry))
        self.settlement = writer.first_free_id(table_of(SettlementEntry))


# --- the simulator -----------------------------------------------------------------------------------


class _Simulator:
    def __init__(
        self,
        rng: random.Random,
        chain: Chain,
        program: PointsProgram,
        cal: Calendar,
        ids: _Ids,
        result: DemoResult,
        rules: list[earning.Rule],
        policy: settlement.PointsPolicy,
    ) -> None:
        self.rng = rng
        self.chain = chain
        self.org_id = chain.org.id
        self.program = program
        self.program_id = program.id
        self.earn_rate = program.earn_points_per_yuan
        self.redeem_rate = program.redeem_points_per_yuan
        self.redeem_unit = calc.redeem_unit(program.redeem_points_per_yuan)
        self.growth_rate = program.growth_per_yuan
        self.pending = timedelta(days=program.pending_days)
        self.rules = rules
        self.policy = policy
        self.labels = {s.id: s.code for s in chain.stores}
        self.periods: set[str] = set()
        self.cal = cal
        self.ids = ids
        self.result = result
        self.buf = _Buffers()
        self.cipher = get_cipher()
        self.boosts = [category_boosts()[key] for key in SEASON_KEYS]
        self.store_cum = list(accumulate(s.weight for s in chain.stores))
        self.surname_cum = list(accumulate(SURNAME_WEIGHTS))
        self.phones: set[str] = set()
        self.cards: set[str] = set()
        self.order_nos: set[str] = set()
        # Products on the shelf per (availability, category): lists and cumulative weights.
        products = catalogue()
        self.shelf: list[list[tuple[list[Product], list[float]]]] = []
        for avail in cal.shelves:
            per_cat = []
            for category in CATEGORIES:
                items = [p for p in products if p.category == category and on_shelf(p.season, avail)]
                per_cat.append((items, list(accumulate(p.weight for p in items))))
            self.shelf.append(per_cat)

    # --- profiles ---

    def _store(self) -> StoreInfo:
        return self.rng.choices(self.chain.stores, cum_weights=self.store_cum)[0]

    def _name(self, gender: str) -> str:
        rng = self.rng
        surname = rng.choices(SURNAMES, cum_weights=self.surname_cum)[0]
        chars = (
            FEMALE_CHARS
            if gender == "female"
            else MALE_CHARS
            if gender == "male"
            else FEMALE_CHARS + MALE_CHARS
        )
        size = 1 if rng.random() < 0.3 else 2
        return surname + "".join(rng.choice(chars) for _ in range(size))

    def _phone(self) -> str:
        rng = self.rng
        while True:
            phone = f"{rng.choice(PHONE_PREFIXES)}{rng.randrange(10**8):08d}"
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def _card(self) -> str:
        while True:
            card = f"YX{self.rng.randrange(10**10):010d}"
            if card not in self.cards:
                self.cards.add(card)
                return card

    def _identity(self, member_id: int, kind: str, value: str, at: datetime) -> None:
        self.buf.identities.append(
            (
                self.ids.identity,
                self.org_id,
                member_id,
                kind,
                self.cipher.encrypt(value),
                self.cipher.blind_index(kind, value),
                mask(kind, value),
                at,
            )
        )
        self.ids.identity += 1

    def _taste(self, gender: str, age: int, kids_store: bool) -> list[float]:
        rng = self.rng
        taste = [w * rng.lognormvariate(0, 0.5) for w in _TASTE[gender]]
        has_kids = (24 <= age <= 42 and rng.random() < 0.45) or (kids_store and rng.random() < 0.85)
        if has_kids:
            taste[_F["母婴"]] *= 12
            taste[_F["玩具"]] *= 8
        if age >= 50:
            taste[_F["数码"]] *= 0.4
            taste[_F["美妆"]] *= 0.5
            taste[_F["食品"]] *= 1.3
            taste[_F["酒饮"]] *= 1.3
        for fav in rng.choices(CAT_INDEX, weights=taste, k=rng.choice((1, 1, 2))):
            taste[fav] *= 3
        return taste

    def _visits(self, home: StoreInfo) -> list[StoreInfo]:
        """Other stores a member also shops at: mostly in the same city, sometimes where they travel."""
        rng = self.rng
        others = [s for s in self.chain.stores if s.id != home.id]
        if not others:
            return []
        roll = rng.random()
        count = 2 if roll < 0.08 else 1 if roll < 0.35 else 0
        picked: list[StoreInfo] = []
        for _ in range(count):
            near = [s for s in others if s.city == home.city and s not in picked]
            pool = near if near and rng.random() < 0.7 else [s for s in others if s not in picked]
            if pool:
                picked.append(rng.choice(pool))
        return picked

    def member(self, seq: int, registered_at: datetime) -> None:
        rng, cal, ids = self.rng, self.cal, self.ids
        member_id, account_id = ids.member, ids.account
        ids.member += 1
        ids.account += 1
        home = self._store()
        roll = rng.random()
        gender = "female" if roll < 0.6 else "male" if roll < 0.94 else "unknown"
        age = rng.choices((20, 29, 39, 51, 66), weights=(12, 35, 28, 18, 7))[0] + rng.randint(-4, 4)
        birthday: date | None = None
        if rng.random() < 0.9:
            year = cal.now.year - age
            birthday = date(year, 1, 1) + timedelta(days=rng.randrange(365))
        channel = rng.choices(("pos", "wechat", "alipay", "app"), weights=(60, 30, 5, 5))[0]
        self.buf.members.append(
            (
                member_id,
                self.org_id,
                member_no_for(seq),
                self._name(gender),
                gender,
                birthday,
                channel,
                home.id,
                str(MemberStatus.ACTIVE),
                None,
                registered_at,
                registered_at,
                None,
            )
        )
        self._identity(member_id, str(IdentityKind.PHONE), self._phone(), registered_at)
        if channel == "wechat" or rng.random() < 0.2:
            openid = "o" + "".join(
                rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", k=27)
            )
            self._identity(member_id, str(IdentityKind.WECHAT_OPENID), openid, registered_at)
        if channel == "pos" and rng.random() < 0.3:
            self._card_identity(member_id, registered_at)
        m = _Member(
            id=member_id,
            account_id=account_id,
            registered_at=registered_at,
            home=home,
            visits=self._visits(home),
            taste=self._taste(gender, age, home.brand == "kids"),
            method=rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0],
            redeem_chance=0.0 if rng.random() < 0.35 else rng.uniform(0.1, 0.5),
            birthday=birthday,
            updated_at=registered_at,
        )
        self.result.members += 1
        if cal.days:
            self._history(m)
        org = self.org_id
        self.buf.lots.extend(
            (
                lot.id,
                org,
                account_id,
                member_id,
                lot.entry_id,
                lot.amount,
                lot.remaining,
                lot.store_id,
                lot.order_id,
                lot.earned_at,
                lot.available_at,
                lot.expires_at,
            )
            for lot in m.lots
        )
        self.buf.accounts.append(
            (
                account_id,
                self.org_id,
                member_id,
                self.program_id,
                m.balance,
                0,
                m.earned,
                m.redeemed,
                m.updated_at,
                m.growth,
            )
        )

    def _card_identity(self, member_id: int, at: datetime) -> None:
        self._identity(member_id, str(IdentityKind.CARD), self._card(), at)

    # --- orders ---

    def _order_times(self, m: _Member) -> list[tuple[int, datetime]]:
        rng, cal = self.rng, self.cal
        last = len(cal.days) - 1
        new = m.registered_at >= cal.starts[0]
        lo = cal.day_of(m.registered_at) if new else 0
        hi = last
        if rng.random() < 0.07:
            return []  # joined and never bought
        if hi - lo > 60 and rng.random() < 0.18:  # drifts away: stops buying after some point
            hi = lo + int((hi - lo) * rng.uniform(0.25, 0.8))
            self.result.drifting_members += 1
        rate = min(max(rng.lognormvariate(1.7, 0.8), 0.5), 80.0)  # orders per year, median ≈ 5.5
        expected = rate * cal.weight(lo, hi) / cal.year_weight
        days: list[int] = []
        if rate >= 8 and rng.random() < 0.25:
            # A regular: restocks on a rhythm (nappies, milk), plus seasonal extras.
            step = 365 / rate
            day = lo + rng.uniform(0, step)
            while day <= hi:
                days.append(int(day))
                day += step * rng.uniform(0.75, 1.25)
            expected *= 0.2
        days.extend(cal.draw_day(rng, lo, hi) for _ in range(_poisson(rng, expected)))
        times: list[tuple[int, datetime]] = []
        if new and rng.random() < 0.85:
            times.append((lo, m.registered_at))  # most people join at the till while paying
        for day in days:
            at = cal.draw_time(rng, day)
            if at is not None and at >= m.registered_at:
                times.append((day, at))
        times.sort(key=lambda item: item[1])
        return times

    def _history(self, m: _Member) -> None:
        times = self._order_times(m)
        if not times:
            return
        stats: list[Any] = [
            None,
            None,
            None,
            None,
            0,
            0,
        ]  # first_at, first_store, last_at, last_store, n, spend
        by_store: dict[int, list[Any]] = {}
        by_cat: dict[str, list[Any]] = {}
        first = True
        for day, at in times:
            store = m.home if first or not m.visits or self.rng.random() < 0.7 else self.rng.choice(m.visits)
            first = False
            total, cats = self._member_order(m, store, day, at)
            if stats[0] is None:
                stats[0], stats[1] = at, store.id
            stats[2], stats[3] = at, store.id
            stats[4] += 1
            stats[5] += total
            s = by_store.setdefault(store.id, [0, 0, at])
            s[0] += 1
            s[1] += total
            s[2] = at
            for category, (qty, spend) in cats.items():
                c = by_cat.setdefault(category, [0, 0, 0, at])
                c[0] += 1
                c[1] += qty
                c[2] += spend
                c[3] = at
        self._expire(m, self.cal.now)
        org = self.org_id
        self.buf.stats.append(
            (m.id, org, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], 0, 0, len(by_store))
        )
        self.buf.store_stats.extend((m.id, sid, org, s[0], s[1], s[2]) for sid, s in sorted(by_store.items()))
        self.buf.category_stats.extend(
            (m.id, cat, org, c[0], c[1], c[2], c[3]) for cat, c in sorted(by_cat.items())
        )
        self.buf.monthly.extend(
            (m.id, month, org, n, spend) for month, (n, spend) in sorted(m.months.items())
        )
        self.result.members_with_orders += 1
        if len(by_store) > 1:
            self.result.multi_store_members += 1

    def _basket(self, taste_cum: list[float], day: int) -> list[tuple[Product, int]]:
        rng = self.rng
        size = 1
        while size < 8 and rng.random() < 0.5:
            size += 1
        per_cat = self.shelf[self.cal.shelf[day]]
        items: dict[str, list[Any]] = {}
        for c in rng.choices(CAT_INDEX, cum_weights=taste_cum, k=size):
            products, cum = per_cat[c]
            if not products:
                continue
            product = rng.choices(products, cum_weights=cum)[0]
            qty = (
                rng.choices((1, 2, 3, 4), weights=(60, 25, 10, 5))[0]
                if c in _BULK_CATEGORIES
                else (1 if rng.random() < 0.9 else 2)
            )
            if product.sku in items:
                items[product.sku][1] += qty
            else:
                items[product.sku] = [product, qty]
        if not items:  # every pick was off-season: take an all-year staple instead
            products, cum = per_cat[_F["食品"]]
            items[products[0].sku] = [products[0], 1]
        return [(p, q) for p, q in items.values()]

    def _order_no(self, day: int) -> str:
        while True:
            no = f"S{self.cal.tags[day]}{self.rng.randrange(10**10):010d}"
            if no not in self.order_nos:
                self.order_nos.add(no)
                return no

    def _member_order(
        self, m: _Member, store: StoreInfo, day: int, at: datetime
    ) -> tuple[int, dict[str, tuple[int, int]]]:
        rng, ids, buf, org = self.rng, self.ids, self.buf, self.org_id
        key = self.cal.keys[day]
        taste_cum = m.cum_taste.get(key)
        if taste_cum is None:
            taste_cum = list(accumulate(t * b for t, b in zip(m.taste, self.boosts[key], strict=True)))
            m.cum_taste[key] = taste_cum
        basket = self._basket(taste_cum, day)
        amounts = [p.price_fen * q for p, q in basket]
        total = sum(amounts)
        self._expire(m, at)
        redeem = 0
        if m.balance >= 1000 and m.redeem_chance and rng.random() < m.redeem_chance:
            spendable = (
                m.balance
                if not self.pending
                else sum(lot.remaining for lot in m.lots[m.head :] if lot.available_at <= at)
            )
            most = min(spendable, total * self.redeem_rate // 100) // self.redeem_unit * self.redeem_unit
            wish = spendable if rng.random() < 0.3 else rng.choice((1000, 2000, 3000, 5000, 10000))
            redeem = min(wish, most) // self.redeem_unit * self.redeem_unit
        plans = plan_lines(amounts, redeem, self.program)
        # Points as the checkout earns them: the program's rules in force (base rate unless HQ added more).
        ctx = earning.EarnContext(
            local_date=self.cal.days[day],
            store_id=store.id,
            birthday=m.birthday,
            is_first_purchase=m.orders == 0,
            earned_today=m.earned_on.get(day, 0),
        )
        outcome = earning.compute(
            [
                earning.BasketLine(i, p.sku, p.category, plan.paid_fen)
                for i, ((p, _), plan) in enumerate(zip(basket, plans, strict=True), start=1)
            ],
            self.rules,
            ctx,
        )
        for i, plan in enumerate(plans, start=1):
            plan.points_earned = outcome.per_line[i]
        growth = [plan.paid_fen * self.growth_rate // 100 for plan in plans]
        value_fen = calc.points_value_fen(redeem, self.redeem_rate)
        earned = sum(p.points_earned for p in plans)
        due = total - value_fen
        order_id = ids.order
        ids.order += 1
        order_no = self._order_no(day)
        skus = {i: p.sku for i, (p, _) in enumerate(basket, start=1)}
        paid = {i: plan.paid_fen for i, plan in enumerate(plans, start=1)}
        explanation = [
            EarnRuleOut(
                rule=a.kind,
                rule_id=a.rule_id or None,
                version=a.version or None,
                label_zh=a.label_zh,
                label_en=a.label_en,
                points=a.points,
                lines=[
                    EarnLineOut(line_no=n, sku=skus[n], eligible_fen=paid[n], points=pts)
                    for n, pts in sorted(a.lines.items())
                ],
            ).model_dump()
            for a in outcome.applications
        ]
        buf.orders.append(
            (
                order_id,
                org,
                order_no,
                store.id,
                m.id,
                None,
                "completed",
                "pos",
                total,
                redeem,
                value_fen,
                due,
                earned,
                0,
                explanation,
                store.actor,
                at,
                at,
                0,
                sum(growth),
            )
        )
        cats: dict[str, tuple[int, int]] = {}
        for i, ((p, qty), plan, g) in enumerate(zip(basket, plans, growth, strict=True), start=1):
            buf.lines.append(
                (
                    ids.line,
                    org,
                    order_id,
                    i,
                    p.sku,
                    p.name,
                    p.category,
                    qty,
                    p.price_fen,
                    plan.amount_fen,
                    plan.points_redeemed,
                    plan.points_value_fen,
                    plan.paid_fen,
                    plan.points_earned,
                    0,
                    0,
                    g,
                )
            )
            ids.line += 1
            q, s = cats.get(p.category, (0, 0))
            cats[p.category] = (q + qty, s + plan.amount_fen)
        if due:
            method = (
                m.method if rng.random() < 0.8 else rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0]
            )
            buf.payments.append((ids.payment, org, order_id, method, due))
            ids.payment += 1
        if redeem:
            self._redeem(m, redeem, store, order_id, at, day, f"订单 {order_no} 积分抵扣 {value_fen} 分")
        if earned:
            self._earn(m, earned, store, order_id, at, day, f"订单 {order_no} 消费得积分")
            m.earned_on[day] = m.earned_on.get(day, 0) + earned
        if sum(growth):
            buf.growth.append((ids.growth, org, m.account_id, m.id, "order", sum(growth), order_id, None, at))
            ids.growth += 1
            m.growth += sum(growth)
        m.orders += 1
        month = m.months.setdefault(self.cal.months[day], [0, 0])
        month[0] += 1
        month[1] += total
        self.result.member_orders += 1
        self.result.order_lines += len(basket)
        self.result.sales_fen += total
        return total, cats

    # --- ledger (mirrors points.service: one entry per change, lots soonest-expiring first) ---

    def _entry(
        self,
        m: _Member,
        kind: EntryKind,
        amount: int,
        store_id: int | None,
        order_id: int | None,
        at: datetime,
        reason: str,
        actor: str,
    ) -> int:
        entry_id = self.ids.entry
        self.ids.entry += 1
        m.balance += amount
        m.updated_at = at
        self.buf.entries.append(
            (
                entry_id,
                self.org_id,
                m.account_id,
                m.id,
                str(kind),
                amount,
                0,
                m.balance,
                0,
                store_id,
                order_id,
                None,
                None,
                None,
                reason,
                actor,
                at,
            )
        )
        return entry_id

    def _move(self, lot: _Lot, entry_id: int, amount: int, at: datetime) -> None:
        self.buf.movements.append((self.ids.movement, self.org_id, lot.id, entry_id, amount, at))
        self.ids.movement += 1

    def _earn(
        self, m: _Member, points: int, store: StoreInfo, order_id: int, at: datetime, day: int, reason: str
    ) -> None:
        entry_id = self._entry(m, EntryKind.EARN, points, store.id, order_id, at, reason, store.actor)
        m.earned += points
        m.lots.append(
            _Lot(
                self.ids.lot,
                entry_id,
                points,
                store.id,
                order_id,
                at,
                at + self.pending,
                self.cal.expiry[day],
            )
        )
        self.ids.lot += 1
        self.result.points_earned += points

    def _redeem(
        self, m: _Member, points: int, store: StoreInfo, order_id: int, at: datetime, day: int, reason: str
    ) -> None:
        entry_id = self._entry(m, EntryKind.REDEEM, -points, store.id, order_id, at, reason, store.actor)
        m.redeemed += points
        left = points
        per_issuer: dict[int, int] = {}
        while left:
            lot = m.lots[m.head]
            take = min(lot.remaining, left)
            lot.remaining -= take
            left -= take
            self._move(lot, entry_id, -take, at)
            issuer = settlement.party(lot.store_id)
            per_issuer[issuer] = per_issuer.get(issuer, 0) + take
            if lot.remaining == 0:
                m.head += 1
        self.result.points_redeemed += points
        self.result.redeeming_orders += 1
        # Points issued by another store: that store owes this one their value (the program's policy),
        # as settlement.record_points_redemption writes at a live checkout.
        for share in settlement.redemption_shares(per_issuer, store.id, self.policy):
            month = self.cal.month_tags[day]
            self.periods.add(month)
            self.buf.settlement.append(
                (
                    self.ids.settlement,
                    self.org_id,
                    month,
                    month,
                    str(settlement.Kind.POINTS_REDEEMED),
                    share.debtor,
                    store.id,
                    share.amount_fen,
                    share.points,
                    order_id,
                    None,
                    entry_id,
                    None,
                    f"pe:{entry_id}",
                    f"{store.code} 兑用 {self.labels.get(share.debtor, '总部')} 承担的积分 "
                    f"{share.points} 分，结算 {share.amount_fen} 分",
                    store.actor,
                    self.policy.details(),
                    at,
                    at,
                )
            )
            self.ids.settlement += 1
            self.result.settlement_entries += 1

    def _expire(self, m: _Member, now: datetime) -> None:
        """Lots past their expiry expire in one entry per expiry moment (lots run soonest-expiring first)."""
        lots = m.lots
        while m.head < len(lots) and (moment := lots[m.head].expires_at) is not None and moment <= now:
            group: list[_Lot] = []
            while m.head < len(lots) and lots[m.head].expires_at == moment:
                group.append(lots[m.head])
                m.head += 1
            amount = sum(lot.remaining for lot in group)
            entry_id = self._entry(
                m,
                EntryKind.EXPIRE,
                -amount,
                None,
                None,
                moment,
                "积分到期 points expired",
                "system:expiry",
            )
            for lot in group:
                if lot.remaining:
                    self._move(lot, entry_id, -lot.remaining, moment)
                    lot.remaining = 0
            self.result.points_expired += amount

    # --- walk-in customers ---

    def walk_in(self, count: int) -> None:
        rng, cal, ids, buf, org = self.rng, self.cal, self.ids, self.buf, self.org_id
        taste = [w * rng.lognormvariate(0, 0.2) for w in _TASTE["unknown"]]
        cum_by_key: dict[int, list[float]] = {}
        last = len(cal.days) - 1
        for _ in range(count):
            day = cal.draw_day(rng, 0, last)
            at = cal.draw_time(rng, day)
            if at is None:
                continue
            key = cal.keys[day]
            cum = cum_by_key.get(key)
            if cum is None:
                cum = list(accumulate(t * b for t, b in zip(taste, self.boosts[key], strict=True)))
                cum_by_key[key] = cum
            store = self._store()
            basket = self._basket(cum, day)
            amounts = [p.price_fen * q for p, q in basket]
            total = sum(amounts)
            plans = plan_lines(amounts, 0, self.program)
            order_id = ids.order
            ids.order += 1
            buf.orders.append(
                (
                    order_id,
                    org,
                    self._order_no(day),
                    store.id,
                    None,
                    None,
                    "completed",
                    "pos",
                    total,
                    0,
                    0,
                    total,
                    0,
                    0,
                    [],
                    store.actor,
                    at,
                    at,
                    0,
                    0,
                )
            )
            for i, ((p, qty), plan) in enumerate(zip(basket, plans, strict=True), start=1):
                buf.lines.append(
                    (
                        ids.line,
                        org,
                        order_id,
                        i,
                        p.sku,
                        p.name,
                        p.category,
                        qty,
                        p.price_fen,
                        plan.amount_fen,
                        0,
                        0,
                        plan.paid_fen,
                        0,
                        0,
                        0,
                        0,
                    )
                )
                ids.line += 1
            buf.payments.append(
                (ids.payment, org, order_id, rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0], total)
            )
            ids.payment += 1
            self.result.walk_in_orders += 1
            self.result.order_lines += len(basket)
            self.result.sales_fen += total


# --- entry point -------------------------------------------------------------------------------------


@contextmanager
def _progress(console: Console | None) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
    with progress:
        yield progress


def _registration_times(rng: random.Random, cal: Calendar, count: int, since: datetime) -> list[datetime]:
    """When members joined, oldest first: a growing chain before the window, busy days within it."""
    window_start = cal.starts[0] if cal.days else cal.now
    share_new = min(0.3 * len(cal.days) / 365, 0.3)
    span = (window_start - since).total_seconds()
    times: list[datetime] = []
    for _ in range(count):
        at: datetime | None = None
        if cal.days and rng.random() < share_new:
            while at is None:
                at = cal.draw_time(rng, cal.draw_day(rng, 0, len(cal.days) - 1))
        else:
            at = since + timedelta(seconds=span * sqrt(rng.random()))
        times.append(at)
    times.sort()
    return times


def generate(
    factory: sessionmaker[Session],
    *,
    org_code: str,
    members: int,
    stores: int,
    days: int,
    seed: int,
    console: Console | None = None,
    now: datetime | None = None,
) -> DemoResult:
    """Create the demo org and its history in one transaction; ``days=0`` creates members only."""
    if members < 0 or days < 0 or stores < 1:
        raise ValueError("members and days must not be negative, and a chain needs a store")
    started = time.perf_counter()
    with factory() as session, _progress(console) as progress:
        try:
            result = _generate(
                session, progress, random.Random(seed), org_code, members, stores, days, now or utcnow()
            )
            task = progress.add_task("提交 commit", total=1)
            session.commit()
            progress.advance(task)
        except BaseException:
            session.rollback()
            raise
    result.seconds = time.perf_counter() - started
    return result


def _generate(
    session: Session,
    progress: Progress,
    rng: random.Random,
    org_code: str,
    members: int,
    stores: int,
    days: int,
    now: datetime,
) -> DemoResult:
    from onemember.settings import get_settings

    tz_name = get_settings().default_timezone
    cal = Calendar(now, days, ZoneInfo(tz_name))
    history_start = (cal.starts[0] if days else now) - timedelta(days=365 * HISTORY_YEARS)

    task = progress.add_task("门店与员工 stores & staff", total=1)
    chain = build_chain(
        session,
        org_code,
        stores,
        [rng.lognormvariate(0, 0.35) for _ in range(stores)],
        history_start - timedelta(days=30),
        tz_name,
    )
    program = points_service.default_program(session, chain.org.id)
    # 积分次年年底清零: points earned in year Y expire at the end of 31 December of Y + 1.
    program.expiry_policy = "fixed_yearly"
    program.expiry_fixed_month, program.expiry_fixed_day, program.expiry_years_after = 12, 31, 1
    session.flush()
    cal.expiry = [points_service.expiry_of(program, start, tz_name) for start in cal.starts]
    rules = rules_service.rules_in_force(session, program, now)
    policy = settlement.points_policy(session, program)
    result = DemoResult(
        org_id=chain.org.id,
        org_code=org_code,
        org_name=chain.org.name,
        backend=session.get_bind().dialect.name,
        brands=len(chain.brands),
        regions=len(chain.regions),
        store_codes=[s.code for s in chain.stores],
        logins=chain.logins,
    )
    last_seq = next_value(session, chain.org.id, "member_no", members) if members else 0
    writer = BulkWriter(session)
    sim = _Simulator(rng, chain, program, cal, _Ids(writer), result, rules, policy)
    progress.advance(task)

    # The next batch is computed while a writer thread stores the previous one.
    try:
        task = progress.add_task("会员与订单 members & orders", total=members)
        registered = _registration_times(rng, cal, members, history_start)
        for start in range(0, members, CHUNK):
            end = min(start + CHUNK, members)
            for i in range(start, end):
                sim.member(last_seq - members + 1 + i, registered[i])
            writer.submit(sim.buf.take())
            progress.advance(task, end - start)

        walk_ins = round(result.member_orders * WALK_IN_SHARE) if days else 0
        task = progress.add_task("散客订单 walk-in orders", total=walk_ins)
        for start in range(0, walk_ins, CHUNK * 5):
            count = min(CHUNK * 5, walk_ins - start)
            sim.walk_in(count)
            writer.submit(sim.buf.take())
            progress.advance(task, count)
    finally:
        writer.drain()

    task = progress.add_task("索引统计 sequences & stats", total=1)
    # Settlement entries land in their business month's period, open as landing_period would leave it.
    for period in sorted(sim.periods):
        session.add(
            SettlementPeriod(
                org_id=chain.org.id,
                period=period,
                status=str(settlement.PeriodStatus.OPEN),
                closed_by="",
                entry_count=0,
                total_fen=0,
                closing_nets={},
                created_at=now,
            )
        )
    writer.finish()
    if writer.pg:
        for name in writer.counts:
            session.execute(text(f"ANALYZE {name}"))
    result.rows = dict(writer.counts)
    progress.advance(task)
    if days:  # coupons and packages through the real services, on top of the history
        benefits_rng = random.Random(rng.getrandbits(64))
        add_benefits(session, progress, benefits_rng, chain, now, members).fold_into(result)
    return result
