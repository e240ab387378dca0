"""Inter-store settlement at chain scale: the monthly statements of 200 stores over 10,000,000 settlement
entries on PostgreSQL, the drilldown, the Excel export, closing the month and ``verify_settlement``,
each against hand-written SQL doing the same reads in the same run.

    createdb -h 127.0.0.1 -U postgres om_bench_settle
    .venv/bin/python bench/settlement_statement.py                      # seeds 10 M entries, then measures
    .venv/bin/python bench/settlement_statement.py --reuse              # measures an earlier seed again
    .venv/bin/python bench/settlement_statement.py --entries 200000     # a quick run (~1 minute)

The database is ``--database-url`` (default ``$DATABASE_URL``, else ``om_bench_settle`` on 127.0.0.1).
Seeding empties it first (``DROP SCHEMA public CASCADE``) and refuses a database whose name does not
start with ``om_bench`` or ``onemember_bench``.

**Seed.** The test factory's chain grown to ``--stores`` stores in ten regions of two brands (store
sizes spread about 1:8), the default points policy (the issuing store bears redeemed points, 100 points
= 1 yuan), ``--members`` members each holding two earned point lots (home store; a store of the same
region, another store or HQ), and then, day by day through last month (``M``, with busier weekends),
in time order, the activity whose settlement it records:

* points redeemed away from where they were earned (about half the entries): an order at the
  redeeming store, the REDEEM point entry, its lot movements, and the entries
  ``settlement.redemption_shares`` gives (a second issuer's share when one lot was not enough);
* coupons (bearer HQ, the issuing store, or a 50 % split) and service packages used at another store;
* returns: plain cross-store returns (the selling store owes the refunding one), and returns of orders
  that redeemed points, at the same store or another, in full or in part (sometimes the rest later):
  the REDEEM_REFUND entry, the lots' movements back, the reversal entries ``settlement.refund_reversals``
  gives, and the cross-store cash entry; coupons given back on a return (reversal entries);
* HQ corrections, some of them of an entry of the month before (``M-1``), so they land in ``M`` with
  business month ``M-1``.

``M-1`` gets the same mix at 1 % of the density and is closed (with its frozen nets), as HQ would have
done in the first days of ``M``. Everything is written with COPY (triggers off for the loading session:
the rows are consistent by construction), the plain indexes are built after the load, then
``VACUUM (ANALYZE)``.

**Measured**, each alternated with its baseline ``--repeat`` times (median shown):

1. all statements of ``M`` (``statements.statements``) vs one ``GROUP BY debtor, creditor, kind``;
2. the busiest store's statement vs the same ``GROUP BY`` restricted to that store;
3. the drilldown page (``statements.entries``, that store and its biggest counterparty, then its
   median one; 100 rows) vs a hand-written SELECT of that pair's entries with their order and return
   numbers;
4. the Excel export of that store (statement, every entry, ``statements.workbook``) vs the two
   SELECTs that fetch the same rows;
5. ``service.close_period`` of ``M`` (rolled back, then once for real) vs the nets ``GROUP BY`` and the
   period ``UPDATE``;
6. ``verify.verify_settlement`` vs set-based SQL running the same checks (nets per kind, the closed
   periods' frozen nets, every points entry re-derived from its source's lot movements, every
   cross-store return against its return).

``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the slowest statement of each product step.
At the end ``M`` is opened again (the period row; the entries never change), so ``--reuse`` can
measure the same seed again.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import queue
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from common import libpq_url, machine_note, sa_url, write_json
from onemember.demo.generator import MOVEMENT_COLS, ORDER_COLS, SETTLEMENT_COLS

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/om_bench_settle"
TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
META_TABLE = "bench_settlement_meta"

# Share of the activity (events, not entries) by kind; tuned so that points are about half the entries.
EVENTS = (
    ("points", 0.47),
    ("coupon", 0.24),
    ("package", 0.11),
    ("cross_return", 0.09),
    ("points_return", 0.07),
    ("correction", 0.002),
)
REGIONS = (
    ("home", "优家", "east", "华东区", "上海"),
    ("home", "优家", "south", "华南区", "广州"),
    ("home", "优家", "west", "西南区", "成都"),
    ("home", "优家", "central", "华中区", "武汉"),
    ("home", "优家", "northeast", "东北区", "沈阳"),
    ("kids", "优童", "north", "华北区", "北京"),
    ("kids", "优童", "northwest", "西北区", "西安"),
    ("kids", "优童", "jiangsu", "江苏区", "南京"),
    ("kids", "优童", "zhejiang", "浙江区", "杭州"),
    ("kids", "优童", "shandong", "山东区", "济南"),
)
REDEEM_POINTS = (100, 200, 300, 500, 500, 800, 1000, 1000, 1500, 2000, 3000, 5000)


# --- database ---------------------------------------------------------------------------------------


def target_url(given: str | None) -> str:
    return libpq_url(given or os.environ.get("DATABASE_URL") or DEFAULT_URL)


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def empty_database(url: str) -> None:
    import psycopg

    name = dbname(url)
    if not name.startswith(("om_bench", "onemember_bench")):
        raise SystemExit(f"refusing to empty {name}: seeding needs a database named om_bench*")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def read_meta(url: str) -> dict[str, Any] | None:
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()
        if found is None or found[0] is None:
            return None
        row = conn.execute(f"SELECT meta FROM {META_TABLE}").fetchone()
    return dict(row[0]) if row else None


# --- the chain --------------------------------------------------------------------------------------


@dataclass
class Store:
    id: int
    code: str
    region: int
    weight: float


@dataclass
class World:
    org_id: int
    program_id: int
    hq_staff_id: int
    stores: list[Store]
    coupon_templates: list[Any] = field(default_factory=list)
    package_templates: list[Any] = field(default_factory=list)
    by_region: list[list[int]] = field(default_factory=list)  # region -> store indexes

    def label(self, party: int) -> str:
        return "总部" if party == 0 else self.code_of[party]

    def __post_init__(self) -> None:
        self.code_of = {s.id: s.code for s in self.stores}


def make_world(url: str, store_count: int, rng: random.Random) -> World:
    """The test factory's chain (stores A, B, C and their staff), grown to ``store_count`` stores."""
    from sqlalchemy import select
    from tests.factories import make_chain

    from onemember.auth.principal import system_principal
    from onemember.coupons import service as coupons
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.org import service as org_service
    from onemember.org.models import Brand, Org, Region, Staff
    from onemember.packages.models import ServicePackage
    from onemember.points import service as points

    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as s:
        chain = make_chain(s, code="settle")
        org = s.get(Org, chain.org_id)
        assert org is not None
        brands = {b.code: b for b in s.scalars(select(Brand).where(Brand.org_id == org.id))}
        regions = {r.code: r for r in s.scalars(select(Region).where(Region.org_id == org.id))}
        region_rows = []
        for brand_code, _brand_name, code, name, _city in REGIONS:
            if code not in regions:
                regions[code] = org_service.add_region(s, brands[brand_code], code, name)
            region_rows.append(regions[code])
        stores: list[Store] = []
        first = {"A": 0, "B": 0, "C": 5}  # the factory's stores: A and B in east, C in north
        for code, sid in sorted(chain.stores.items()):
            stores.append(Store(sid, code, first[code], 0.0))
        n = len(stores)
        while n < store_count:
            region = n % len(REGIONS)
            city = REGIONS[region][4]
            code = f"S{n + 1:03d}"
            row = org_service.add_store(s, region_rows[region], code, f"{city}{n + 1:03d}店", city)
            stores.append(Store(row.id, code, region, 0.0))
            n += 1
        hq = s.scalar(select(Staff).where(Staff.org_id == org.id, Staff.username == "hq"))
        assert hq is not None
        program = points.default_program(s, org.id)
        world = World(org.id, program.id, hq.id, stores)
        admin = system_principal(org.id, "bench")
        # Coupon templates: 满X减Y at five amounts for each bearer (HQ, the issuing store, a 50 % split).
        for bearer, pct in (("hq", 0), ("issuing_store", 0), ("split", 50)):
            for amount in (500, 1000, 2000, 3000, 5000):
                t = coupons.create_template(
                    s,
                    admin,
                    coupons.TemplateSpec(
                        code=f"{bearer[:5].upper()}-{amount // 100}",
                        name=f"满{amount // 10}减{amount // 100}",
                        kind="amount_off",
                        threshold_fen=amount * 10,
                        amount_fen=amount,
                        valid_days=30,
                        bearer=bearer,
                        issuer_pct=pct,
                    ),
                )
                world.coupon_templates.append(
                    SimpleNamespace(
                        id=t.id, bearer=bearer, issuer_pct=pct, amount_fen=amount, threshold_fen=amount * 10
                    )
                )
        # Service packages (次卡): sold at a store (the seller bears uses elsewhere, or splits), or granted
        # by HQ (HQ bears them).
        for code, name, service, uses, price, bearer, pct, source in (
            ("WASH10", "洗车十次卡", "carwash", 10, 30_000, "issuing_store", 100, "sale"),
            ("SPA6", "理疗六次卡", "spa", 6, 72_000, "split", 60, "sale"),
            ("CARE12", "护理十二次卡", "care", 12, 48_000, "hq", 100, "sale"),
            ("GIFT3", "会员礼遇三次卡", "care", 3, 9_000, "issuing_store", 100, "goodwill"),
        ):
            row = ServicePackage(
                org_id=org.id,
                code=code,
                name=name,
                service_code=service,
                uses=uses,
                validity_days=365,
                price_fen=price,
                refund_rule="unused_pro_rata",
                store_scope="all",
                bearer=bearer,
                issuer_pct=pct,
                created_by="system:bench",
            )
            s.add(row)
            s.flush()
            world.package_templates.append(
                SimpleNamespace(
                    id=row.id,
                    code=code,
                    name=name,
                    service_code=service,
                    uses=uses,
                    price_fen=price,
                    bearer=bearer,
                    issuer_pct=pct,
                    source=source,
                )
            )
    engine.dispose()
    for st in world.stores:  # store sizes: lognormal, about 1:8 between the small and the big ones
        st.weight = rng.lognormvariate(0, 0.55)
    world.by_region = [
        [i for i, st in enumerate(world.stores) if st.region == r] for r in range(len(REGIONS))
    ]
    return world


# --- the generator ----------------------------------------------------------------------------------

COPY_COLUMNS = {
    "members": (
        "id",
        "org_id",
        "member_no",
        "name",
        "gender",
        "channel",
        "registered_store_id",
        "status",
        "created_at",
        "updated_at",
    ),
    "point_accounts": (
        "id",
        "org_id",
        "member_id",
        "program_id",
        "balance",
        "debt",
        "lifetime_earned",
        "lifetime_redeemed",
        "growth_value",
        "updated_at",
    ),
    "point_entries": (
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
        "reason",
        "actor",
        "created_at",
    ),
    "point_lots": (
        "id",
        "org_id",
        "account_id",
        "member_id",
        "entry_id",
        "amount",
        "remaining",
        "store_id",
        "earned_at",
        "available_at",
        "expires_at",
    ),
    # the demo loader writes these tables with the same columns
    "point_lot_movements": MOVEMENT_COLS,
    "orders": ORDER_COLS,
    "order_returns": (
        "id",
        "org_id",
        "return_no",
        "order_id",
        "member_id",
        "store_id",
        "original_store_id",
        "amount_fen",
        "refund_fen",
        "refund_deducted_fen",
        "points_reversed",
        "points_refunded",
        "points_shortfall",
        "shortfall_policy",
        "reason",
        "actor",
        "occurred_at",
        "created_at",
    ),
    "coupons": (
        "id",
        "org_id",
        "code",
        "template_id",
        "member_id",
        "issued_to_member_id",
        "issuing_store_id",
        "source",
        "reason",
        "valid_from",
        "valid_to",
        "status",
        "issued_by",
        "issued_at",
        "redeemed_order_id",
        "redeemed_store_id",
        "redeemed_at",
        "discount_fen",
    ),
    "coupon_redemptions": (
        "id",
        "org_id",
        "coupon_id",
        "template_id",
        "member_id",
        "order_id",
        "issuing_store_id",
        "redeeming_store_id",
        "discount_fen",
        "price_difference_fen",
        "returned_fen",
        "bearer",
        "issuer_pct",
        "status",
        "redeemed_at",
    ),
    "member_packages": (
        "id",
        "org_id",
        "member_id",
        "package_id",
        "service_code",
        "uses_total",
        "uses_left",
        "price_fen",
        "value_fen",
        "payment_method",
        "source",
        "reason",
        "sold_store_id",
        "sold_by",
        "sold_at",
        "expires_at",
        "status",
        "refunded_fen",
        "uses_refunded",
        "refunded_by",
    ),
    "package_uses": (
        "id",
        "org_id",
        "member_id",
        "member_package_id",
        "package_id",
        "sold_store_id",
        "used_store_id",
        "uses",
        "first_use_no",
        "value_fen",
        "actor",
        "note",
        "used_at",
    ),
    "settlement_entries": SETTLEMENT_COLS,
}
LOADED = tuple(COPY_COLUMNS)


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_days(first: date) -> list[date]:
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return [first + timedelta(days=k) for k in range((nxt - first).days)]


class Ring:
    """The last ``size`` items, sampled at random in O(1): recent orders a return or a correction may
    refer to."""

    def __init__(self, size: int) -> None:
        self.items: list[Any] = []
        self.size = size
        self.next = 0

    def add(self, item: Any) -> None:
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            self.items[self.next] = item
            self.next = (self.next + 1) % self.size

    def pick(self, rng: random.Random) -> Any | None:
        return self.items[rng.randrange(len(self.items))] if self.items else None


class Generator:
    """Builds the rows, in time order, into per-table batches handed to ``sink``."""

    def __init__(
        self, world: World, members: int, rng: random.Random, ids: dict[str, int], sink: Callable[..., None]
    ) -> None:
        from onemember.settlement import service as settlement

        self.settlement = settlement
        self.policy = settlement.PointsPolicy(settlement.Bearer.ISSUING_STORE, 100, 100, 100)
        self.details = json.dumps(self.policy.details())
        self.w = world
        self.org = world.org_id
        self.n_members = members
        self.rng = rng
        self.ids = ids
        self.sink = sink
        self.rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in LOADED}
        self.count: dict[str, int] = dict.fromkeys(("entries", "coupon_return", *(k for k, _ in EVENTS)), 0)
        self.entries_by_kind: dict[str, int] = {}
        self.stores = world.stores
        self.store_weights = [st.weight for st in world.stores]
        self.cum = self._cumulative(self.store_weights)
        self.region_cum = [self._cumulative([world.stores[i].weight for i in idx]) for idx in world.by_region]
        # per member: home store index; per lot (2 per member): issuing store id or None, amount, remaining
        self.home = [0] * members
        self.lot_store: list[int | None] = [None] * (2 * members)
        self.lot_amount = [0] * (2 * members)
        self.lot_left = [0] * (2 * members)
        self.balance = [0] * members
        self.redeemed = [0] * members
        self.earned_at: list[datetime] = []
        self.points_ring = Ring(200_000)
        self.coupon_templates: list[Any] = []
        self.package_templates: list[Any] = []
        self.coupon_counts: dict[int, int] = {}
        self.member_packages: dict[int, list[Any]] = {}  # member index -> [id, template, used, sold, sold_at]
        self.pending: list[tuple[datetime, int, tuple[Any, ...]]] = []  # returns due later, by time
        self.end = datetime.max.replace(tzinfo=UTC)  # returns are scheduled before this
        self.recent = Ring(50_000)  # any entry a correction may correct
        self.previous_month_entries = Ring(20_000)
        self.order_seq = 0
        self.return_seq = 0
        self.use_seq = 0
        self.period = ""
        self.month = ""

    @staticmethod
    def _cumulative(weights: list[float]) -> list[float]:
        out, total = [], 0.0
        for x in weights:
            total += x
            out.append(total)
        return out

    def _store(self, region: int | None = None) -> int:
        """A store index, by size (within ``region`` when given)."""
        if region is None:
            cum, pool = self.cum, None
        else:
            cum, pool = self.region_cum[region], self.w.by_region[region]
        k = self.rng.choices(range(len(cum)), cum_weights=cum)[0]
        return pool[k] if pool is not None else k

    def _next(self, table: str) -> int:
        value = self.ids[table]
        self.ids[table] = value + 1
        return value

    def flush(self) -> None:
        if any(self.rows.values()):
            self.sink(self.rows)
            self.rows = {t: [] for t in LOADED}

    # members, accounts and their earned lots (before the months measured)

    def members(self, start: datetime, batch: int = 50_000) -> None:
        rng, org = self.rng, self.org
        for k in range(self.n_members):
            member_id = self.ids["members"] + k
            account_id = self.ids["point_accounts"] + k
            home = self._store()
            self.home[k] = home
            store = self.stores[home]
            created = start - timedelta(days=rng.randrange(30, 900), seconds=rng.randrange(86_400))
            self.rows["members"].append(
                (
                    member_id,
                    org,
                    f"M{k + 1:09d}",
                    f"会员{k + 1}",
                    "unknown",
                    "pos",
                    store.id,
                    "active",
                    created,
                    created,
                )
            )
            roll = rng.random()
            if roll < 0.5:
                other: int | None = self.stores[self._store(store.region)].id
            elif roll < 0.8:
                other = self.stores[self._store()].id
            else:
                other = None  # HQ's points (a campaign): HQ bears them
            for j, issuer in enumerate((store.id, other)):
                lot = 2 * k + j
                amount = rng.randrange(50, 400) * 100
                at = start - timedelta(days=rng.randrange(1, 25), seconds=rng.randrange(86_400))
                self.lot_store[lot] = issuer
                self.lot_amount[lot] = self.lot_left[lot] = amount
                self.balance[k] += amount
                self.rows["point_entries"].append(
                    (
                        self.ids["earn_entries"] + lot,
                        org,
                        account_id,
                        member_id,
                        "earn" if issuer is not None else "adjust",
                        amount,
                        0,
                        self.balance[k],
                        0,
                        issuer,
                        None,
                        None,
                        None,
                        "消费得积分" if issuer is not None else "总部活动赠送积分",
                        "system:bench",
                        at,
                    )
                )
                self.earned_at.append(at)
            if (k + 1) % batch == 0:
                self.flush()
        self.flush()

    def final_rows(self, now: datetime, batch: int = 100_000) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
        """Accounts and lots with what the month left in them."""
        org = self.org
        out: dict[str, list[tuple[Any, ...]]] = {
            "point_accounts": [],
            "point_lots": [],
            "member_packages": [],
        }
        for k in range(self.n_members):
            member_id = self.ids["members"] + k
            account_id = self.ids["point_accounts"] + k
            earned = self.lot_amount[2 * k] + self.lot_amount[2 * k + 1]
            out["point_accounts"].append(
                (
                    account_id,
                    org,
                    member_id,
                    self.w.program_id,
                    self.balance[k],
                    0,
                    earned,
                    self.redeemed[k],
                    0,
                    now,
                )
            )
            for j in (0, 1):
                lot = 2 * k + j
                at = self.earned_at[lot]
                out["point_lots"].append(
                    (
                        self.ids["point_lots"] + lot,
                        org,
                        account_id,
                        member_id,
                        self.ids["earn_entries"] + lot,
                        self.lot_amount[lot],
                        self.lot_left[lot],
                        self.lot_store[lot],
                        at,
                        at,
                        at + timedelta(days=730),
                    )
                )
            held = self.member_packages.get(k)
            if held is not None:
                mp_id, t, used, sold, sold_at = held
                out["member_packages"].append(
                    (
                        mp_id,
                        org,
                        member_id,
                        t.id,
                        t.service_code,
                        t.uses,
                        t.uses - used,
                        t.price_fen if sold is not None else 0,
                        t.price_fen,
                        "wechat" if sold is not None else "",
                        t.source,
                        "" if sold is not None else "总部赠送",
                        sold,
                        "api_key:bench" if sold is not None else "staff:hq",
                        sold_at,
                        None,
                        "active",
                        0,
                        0,
                        "",
                    )
                )
            if (k + 1) % batch == 0:
                yield out
                out = {"point_accounts": [], "point_lots": [], "member_packages": []}
        yield out

    # one day of activity

    def day(self, day: date, entries: int, *, period: str) -> None:
        """About ``entries`` settlement entries' worth of activity on local ``day``, in time order."""
        rng = self.rng
        self.period, self.month = period, month_of(day)
        start = datetime(day.year, day.month, day.day, 8, 0, tzinfo=ZONE)
        goal = self.count["entries"] + entries
        kinds = [k for k, _ in EVENTS]
        weights = [w for _, w in EVENTS]
        # Times: spread over 08:00-22:00 local; events are drawn in order, so ids follow time.
        step = 14 * 3600 / max(1, entries)
        t = 0.0
        handlers = {
            "points": self.points,
            "coupon": self.coupon,
            "package": self.package,
            "cross_return": self.cross_return,
            "points_return": self.points_return,
            "correction": self.correction,
        }
        while self.count["entries"] < goal:
            t += rng.expovariate(1 / step) if step else 0
            at = (start + timedelta(seconds=min(t, 14 * 3600 - 1))).astimezone(UTC)
            while self.pending and self.pending[0][0] <= at:
                back_at, _, payload = heapq.heappop(self.pending)
                made = self.coupon_return(back_at, payload)
                self.count["coupon_return"] += made
                self.count["entries"] += made
            kind = rng.choices(kinds, weights)[0]
            made = handlers[kind](at)
            if made:
                self.count[kind] += 1
                self.count["entries"] += made
            if len(self.rows["settlement_entries"]) >= 20_000:
                self.flush()

    def drain(self) -> None:
        """Returns still due (after the last sale of the month)."""
        while self.pending:
            back_at, _, payload = heapq.heappop(self.pending)
            made = self.coupon_return(back_at, payload)
            self.count["coupon_return"] += made
            self.count["entries"] += made

    def _order(
        self, store: Store, member_id: int | None, at: datetime, *, total: int, points: int = 0
    ) -> int:
        order_id = self._next("orders")
        self.order_seq += 1
        local = at.astimezone(ZONE)
        paid = total - points
        self.rows["orders"].append(
            (
                order_id,
                self.org,
                f"O{local:%y%m%d}{self.order_seq:010d}",
                store.id,
                member_id,
                None,  # client_order_id
                "completed",
                "pos",
                total,
                points,
                points,
                paid,
                0,
                0,
                "[]",
                f"api_key:{store.code}",
                at,
                at,
                0,
                0,
            )
        )
        return order_id

    def _entry(
        self,
        kind: str,
        debtor: int,
        creditor: int,
        amount: int,
        at: datetime,
        *,
        source_ref: str | None,
        reason: str,
        actor: str,
        details: str = "{}",
        points: int | None = None,
        order_id: int | None = None,
        return_id: int | None = None,
        point_entry_id: int | None = None,
        reverses_id: int | None = None,
        business_month: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        entry_id = self._next("settlement_entries")
        self.rows["settlement_entries"].append(
            (
                entry_id,
                self.org,
                self.period,
                business_month or self.month,
                kind,
                debtor,
                creditor,
                amount,
                points,
                order_id,
                return_id,
                point_entry_id,
                reverses_id,
                source_ref,
                reason,
                actor,
                details,
                at,
                created_at or at,
            )
        )
        self.entries_by_kind[kind] = self.entries_by_kind.get(kind, 0) + 1
        self.recent.add((entry_id, self.month, amount))
        if self.period != self.current_period:
            self.previous_month_entries.add((entry_id, self.month))
        return entry_id

    current_period = ""

    def _point_entry(
        self,
        k: int,
        kind: str,
        amount: int,
        store: Store,
        at: datetime,
        *,
        order_id: int,
        return_id: int | None = None,
        reverses: int | None = None,
        reason: str,
    ) -> int:
        entry_id = self._next("point_entries")
        self.balance[k] += amount
        self.rows["point_entries"].append(
            (
                entry_id,
                self.org,
                self.ids["point_accounts"] + k,
                self.ids["members"] + k,
                kind,
                amount,
                0,
                self.balance[k],
                0,
                store.id,
                order_id,
                return_id,
                reverses,
                reason,
                f"api_key:{store.code}",
                at,
            )
        )
        return entry_id

    def _move(self, lot: int, entry_id: int, amount: int, at: datetime) -> None:
        self.lot_left[lot] += amount
        self.rows["point_lot_movements"].append(
            (self._next("point_lot_movements"), self.org, self.ids["point_lots"] + lot, entry_id, amount, at)
        )

    def points(self, at: datetime) -> int:
        """A member redeems points at a store other than where (some of) they were earned."""
        rng, settlement = self.rng, self.settlement
        for _ in range(4):
            k = rng.randrange(self.n_members)
            left = self.lot_left[2 * k] + self.lot_left[2 * k + 1]
            if left < 100:
                continue
            want = min(rng.choice(REDEEM_POINTS), left)
            home = self.stores[self.home[k]]
            r = self._store(home.region) if rng.random() < 0.65 else self._store()
            store = self.stores[r]
            takes, per_issuer, rest = [], {}, want
            for lot in (2 * k, 2 * k + 1):
                take = min(rest, self.lot_left[lot])
                if take:
                    takes.append((lot, take))
                    issuer = settlement.party(self.lot_store[lot])
                    per_issuer[issuer] = per_issuer.get(issuer, 0) + take
                    rest -= take
                if not rest:
                    break
            shares = settlement.redemption_shares(per_issuer, store.id, self.policy)
            if not shares:
                continue  # redeemed where they were earned: nothing to settle
            order_id = self._order(
                store, self.ids["members"] + k, at, total=want + rng.randrange(10, 300) * 100, points=want
            )
            entry_id = self._point_entry(k, "redeem", -want, store, at, order_id=order_id, reason="积分抵扣")
            self.redeemed[k] += want
            for lot, take in takes:
                self._move(lot, entry_id, -take, at)
            originals = []
            for share in shares:
                sid = self._entry(
                    "points_redeemed",
                    share.debtor,
                    store.id,
                    share.amount_fen,
                    at,
                    source_ref=f"pe:{entry_id}",
                    reason=(
                        f"{store.code} 兑用 {self.w.label(share.debtor)} 承担的积分 {share.points} 分，"
                        f"结算 {share.amount_fen} 分"
                    ),
                    actor=f"api_key:{store.code}",
                    details=self.details,
                    points=share.points,
                    order_id=order_id,
                    point_entry_id=entry_id,
                )
                originals.append(
                    SimpleNamespace(
                        id=sid,
                        debtor_key=share.debtor,
                        creditor_key=store.id,
                        points=share.points,
                        amount_fen=share.amount_fen,
                        details=self.policy.details(),
                    )
                )
            self.points_ring.add(
                {
                    "k": k,
                    "store": r,
                    "order": order_id,
                    "entry": entry_id,
                    "takes": takes,
                    "left": dict(takes),
                    "originals": originals,
                    "done": {},
                    "paid": 0,
                }
            )
            return len(shares)
        return 0

    def points_return(self, at: datetime) -> int:
        """A return of an order that redeemed points: the points go back to their lots and the
        settlement is reversed in proportion; at another store the cash refund is settled too."""
        rng, settlement = self.rng, self.settlement
        item = self.points_ring.pick(rng)
        if item is None or not any(item["left"].values()):
            return 0
        k = item["k"]
        sold_at = self.stores[item["store"]]
        store = sold_at if rng.random() < 0.65 else self.stores[self._store(sold_at.region)]
        full = rng.random() < 0.6
        restore: dict[int, int] = {}
        for lot, left in item["left"].items():
            pts = left if full else left // 2
            if pts > 0:
                restore[lot] = pts
        if not restore:
            return 0
        restored_total = sum(restore.values())
        refund_fen = rng.randrange(10, 200) * 100
        return_id = self._next("order_returns")
        self.return_seq += 1
        local = at.astimezone(ZONE)
        return_no = f"R{local:%y%m%d}{self.return_seq:010d}"
        self.rows["order_returns"].append(
            (
                return_id,
                self.org,
                return_no,
                item["order"],
                self.ids["members"] + k,
                store.id,
                sold_at.id,
                refund_fen + restored_total,
                refund_fen,
                0,
                0,
                restored_total,
                0,
                "debt",
                "顾客退货",
                f"api_key:{store.code}",
                at,
                at,
            )
        )
        entry_id = self._point_entry(
            k,
            "redeem_refund",
            restored_total,
            store,
            at,
            order_id=item["order"],
            return_id=return_id,
            reverses=item["entry"],
            reason="退货退还抵扣积分",
        )
        self.redeemed[k] -= restored_total
        per_issuer: dict[int, int] = {}
        for lot, pts in restore.items():
            self._move(lot, entry_id, pts, at)
            item["left"][lot] -= pts
            issuer = settlement.party(self.lot_store[lot])
            per_issuer[issuer] = per_issuer.get(issuer, 0) + pts
        made = 0
        for original, pts, fen in settlement.refund_reversals(item["originals"], item["done"], per_issuer):
            self._entry(
                "points_redeemed",
                original.creditor_key,
                original.debtor_key,
                fen,
                at,
                source_ref=f"pe:{entry_id}",
                reason=f"退还抵扣积分 {pts} 分，冲回结算 {fen} 分",
                actor=f"api_key:{store.code}",
                details=self.details,
                points=pts,
                order_id=item["order"],
                return_id=return_id,
                point_entry_id=entry_id,
                reverses_id=original.id,
            )
            item["done"][original.id] = item["done"].get(original.id, 0) + pts
            made += 1
        if store.id != sold_at.id:
            self._entry(
                "cross_store_return",
                sold_at.id,
                store.id,
                refund_fen,
                at,
                source_ref=f"ret:{return_id}",
                reason=f"退货 {return_no}：{store.code} 代 {sold_at.code} 退款 {refund_fen} 分",
                actor=f"api_key:{store.code}",
                order_id=item["order"],
                return_id=return_id,
            )
            made += 1
        return made

    def cross_return(self, at: datetime) -> int:
        """A member returns at store C what they bought at store A (days or weeks before)."""
        rng = self.rng
        k = rng.randrange(self.n_members)
        sold_at = self.stores[self.home[k]]
        store = self.stores[self._store(sold_at.region) if rng.random() < 0.7 else self._store()]
        if store.id == sold_at.id:
            return 0
        bought = at - timedelta(days=rng.randrange(1, 30), seconds=rng.randrange(36_000))
        total = rng.randrange(20, 1500) * 100
        order_id = self._order(sold_at, self.ids["members"] + k, bought, total=total)
        refund = min(total, rng.randrange(10, 800) * 100)
        return_id = self._next("order_returns")
        self.return_seq += 1
        local = at.astimezone(ZONE)
        return_no = f"R{local:%y%m%d}{self.return_seq:010d}"
        self.rows["order_returns"].append(
            (
                return_id,
                self.org,
                return_no,
                order_id,
                self.ids["members"] + k,
                store.id,
                sold_at.id,
                refund,
                refund,
                0,
                0,
                0,
                0,
                "debt",
                "质量问题退货",
                f"api_key:{store.code}",
                at,
                at,
            )
        )
        self._entry(
            "cross_store_return",
            sold_at.id,
            store.id,
            refund,
            at,
            source_ref=f"ret:{return_id}",
            reason=f"退货 {return_no}：{store.code} 代 {sold_at.code} 退款 {refund} 分",
            actor=f"api_key:{store.code}",
            order_id=order_id,
            return_id=return_id,
        )
        return 1

    def coupon(self, at: datetime) -> int:
        """A coupon issued by HQ or by the member's home store, redeemed at another store: the coupon,
        its redemption and the entry ``record_coupon_redemption`` writes. One in twenty is returned
        (in full or in part) at that store within ten days, if still in the month: the redemption row
        says what the returns took back, and the return is emitted when its time comes."""
        rng, settlement = self.rng, self.settlement
        k = rng.randrange(self.n_members)
        home = self.stores[self.home[k]]
        store = self.stores[self._store(home.region) if rng.random() < 0.6 else self._store()]
        t = rng.choice(self.coupon_templates)
        issuer = None if t.bearer == "hq" else home.id
        bearer = settlement.Bearer(t.bearer)
        debtor = settlement.cost_debtor(bearer, settlement.party(issuer), store.id)
        amount = settlement.cost_share(bearer, t.issuer_pct, t.amount_fen)
        if debtor is None or amount <= 0:
            return 0
        member_id = self.ids["members"] + k
        order_id = self._order(store, member_id, at, total=t.threshold_fen + rng.randrange(0, 300) * 100)
        coupon_id = self._next("coupons")
        redemption_id = self._next("coupon_redemptions")
        returned = 0
        back_at = at + timedelta(days=rng.randrange(1, 10), seconds=rng.randrange(36_000))
        if rng.random() < 0.05 and back_at < self.end:
            returned = t.amount_fen if rng.random() < 0.5 else t.amount_fen // 2
        full = returned == t.amount_fen
        issued = at - timedelta(days=rng.randrange(1, 20))
        code = f"C{coupon_id:011d}"
        self.rows["coupons"].append(
            (
                coupon_id,
                self.org,
                code,
                t.id,
                member_id,
                member_id,
                issuer,
                "campaign" if issuer is None else "staff",
                "",
                issued,
                issued + timedelta(days=30),
                "available" if full else "redeemed",
                "system:bench",
                issued,
                None if full else order_id,
                None if full else store.id,
                None if full else at,
                0 if full else t.amount_fen,
            )
        )
        self.rows["coupon_redemptions"].append(
            (
                redemption_id,
                self.org,
                coupon_id,
                t.id,
                member_id,
                order_id,
                issuer,
                store.id,
                t.amount_fen,
                0,
                returned,
                t.bearer,
                t.issuer_pct,
                "restored" if full else "redeemed",
                at,
            )
        )
        self.coupon_counts[t.id] = self.coupon_counts.get(t.id, 0) + 1
        sid = self._entry(
            "coupon_redeemed",
            debtor,
            store.id,
            amount,
            at,
            source_ref=settlement.coupon_ref(redemption_id),
            reason=(
                f"优惠券 {code} 由 {self.w.label(settlement.party(issuer))} 发放，"
                f"在 {store.code} 核销，优惠 {t.amount_fen} 分"
            ),
            actor=f"api_key:{store.code}",
            details=json.dumps({"bearer": t.bearer, "issuer_pct": t.issuer_pct, "value_fen": t.amount_fen}),
            order_id=order_id,
        )
        if returned:
            still = settlement.cost_share(bearer, t.issuer_pct, t.amount_fen - returned)
            details = json.dumps({"bearer": t.bearer, "issuer_pct": t.issuer_pct, "value_fen": t.amount_fen})
            heapq.heappush(
                self.pending,
                (back_at, sid, (sid, debtor, store.id, amount - still, order_id, k, redemption_id, details)),
            )
        return 1

    def coupon_return(self, at: datetime, payload: tuple[Any, ...]) -> int:
        """The scheduled return of a coupon order: the reversal ``record_coupon_returns`` writes."""
        sid, debtor, creditor, due, order_id, k, redemption_id, details = payload
        store = self.stores[self.index_of[creditor]]
        return_id = self._next("order_returns")
        self.return_seq += 1
        local = at.astimezone(ZONE)
        refund = self.rng.randrange(10, 300) * 100
        self.rows["order_returns"].append(
            (
                return_id,
                self.org,
                f"R{local:%y%m%d}{self.return_seq:010d}",
                order_id,
                self.ids["members"] + k,
                store.id,
                store.id,
                refund,
                refund,
                0,
                0,
                0,
                0,
                "debt",
                "退货",
                f"api_key:{store.code}",
                at,
                at,
            )
        )
        if due <= 0:
            return 0
        self._entry(
            "coupon_redeemed",
            creditor,
            debtor,
            due,
            at,
            source_ref=f"coupon_return:{return_id}:{redemption_id}",
            reason=f"退货退回优惠券优惠，冲回结算 {due} 分",
            actor=f"api_key:{store.code}",
            details=details,
            order_id=order_id,
            return_id=return_id,
            reverses_id=sid,
        )
        return 1

    def package(self, at: datetime) -> int:
        """A use of a member's service package (bought at the home store, or granted by HQ) at another
        store: the use row and the entry ``owed_for`` gives."""
        from onemember.packages.calculations import uses_value

        rng, settlement = self.rng, self.settlement
        k = rng.randrange(self.n_members)
        held = self.member_packages.get(k)
        if held is None:
            t = rng.choice(self.package_templates)
            sold = None if t.source != "sale" else self.stores[self.home[k]].id
            held = [self._next("member_packages"), t, 0, sold, at - timedelta(days=rng.randrange(5, 200))]
            self.member_packages[k] = held
        mp_id, t, used, sold, _sold_at = held
        if used >= t.uses:
            return 0
        home = self.stores[self.home[k]]
        store = self.stores[self._store(home.region) if rng.random() < 0.6 else self._store()]
        bearer = settlement.Bearer(t.bearer)
        value = uses_value(t.price_fen, t.uses, used + 1, 1)
        debtor = settlement.cost_debtor(bearer, settlement.party(sold), store.id)
        amount = settlement.cost_share(bearer, t.issuer_pct, value)
        if debtor is None or amount <= 0:
            return 0
        held[2] = used + 1
        use_id = self._next("package_uses")
        self.rows["package_uses"].append(
            (
                use_id,
                self.org,
                self.ids["members"] + k,
                mp_id,
                t.id,
                sold,
                store.id,
                1,
                used + 1,
                value,
                f"api_key:{store.code}",
                "",
                at,
            )
        )
        self._entry(
            "package_used",
            debtor,
            store.id,
            amount,
            at,
            source_ref=f"package_use:{use_id}",
            reason=f"次卡 {t.name}（{t.code}）使用 1 次",
            actor=f"api_key:{store.code}",
            details=json.dumps({"bearer": t.bearer, "issuer_pct": t.issuer_pct, "value_fen": value}),
        )
        return 1

    def correction(self, at: datetime) -> int:
        """HQ corrects a store's settlement by hand (audited in the product); some correct an entry of
        last month, which is closed, so they land in this one with last month as business month."""
        rng = self.rng
        a, b = rng.sample(range(len(self.stores)), 2)
        debtor, creditor = self.stores[a].id, self.stores[b].id
        if rng.random() < 0.1:
            debtor = 0
        amount = rng.randrange(1, 500) * 100
        corrected = None
        business_month = None
        roll = rng.random()
        if roll < 0.3 and self.previous_month_entries.items and self.period == self.current_period:
            corrected = self.previous_month_entries.pick(rng)
            business_month = corrected[1]
        elif roll < 0.6:
            corrected = self.recent.pick(rng)
        details = json.dumps({"corrects_entry_id": corrected[0]}) if corrected else "{}"
        # As record_correction writes it: the event time is the business month's first instant.
        month = business_month or self.month
        occurred = datetime(int(month[:4]), int(month[5:]), 1, tzinfo=ZONE).astimezone(UTC)
        self._entry(
            "correction",
            debtor,
            creditor,
            amount,
            occurred,
            source_ref=None,
            reason="总部对账差异调整" if corrected is None else f"更正结算记录 {corrected[0]}",
            actor="staff:hq",
            details=details,
            reverses_id=corrected[0] if corrected else None,
            business_month=business_month,
            created_at=at,
        )
        return 1


# --- loading ----------------------------------------------------------------------------------------


class Loader:
    """COPY on a writer thread while the next batch is built; plain indexes and non-primary unique
    constraints are dropped for the load and built afterwards (what a bulk load does in production)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url)
        self.conn.execute(
            "SET session_replication_role = replica"
        )  # triggers and FK checks off: this session
        self.queue: queue.Queue[dict[str, list[tuple[Any, ...]]] | None] = queue.Queue(maxsize=3)
        self.failed: list[BaseException] = []
        self.rows: dict[str, int] = dict.fromkeys(LOADED, 0)
        self.dropped: list[tuple[str, str]] = []  # (table, statement that rebuilds it)
        self.thread = threading.Thread(target=self._write, daemon=True)

    def drop_indexes(self) -> None:
        for table in LOADED:
            for name, definition in self.conn.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = %s::regclass AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
                (table,),
            ).fetchall():
                self.dropped.append((table, definition))
                self.conn.execute(f'DROP INDEX "{name}"')
            for name, definition in self.conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'u'",
                (table,),
            ).fetchall():
                self.dropped.append((table, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
                self.conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        self.conn.commit()

    def start(self) -> None:
        self.thread.start()

    def put(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        if self.failed:
            raise self.failed[0]
        self.queue.put(batch)

    def _write(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.failed:
                continue
            try:
                with self.conn.cursor() as cur:
                    for table, rows in item.items():
                        if not rows:
                            continue
                        cols = ", ".join(COPY_COLUMNS[table])
                        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                        self.rows[table] += len(rows)
                self.conn.commit()
            except BaseException as exc:
                self.failed.append(exc)

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.failed:
            raise self.failed[0]

    def rebuild(self, progress: Callable[[str], None]) -> float:
        t0 = time.perf_counter()
        self.conn.execute("SET maintenance_work_mem = '512MB'")
        for table, statement in self.dropped:
            a = time.perf_counter()
            self.conn.execute(statement)
            self.conn.commit()
            progress(f"  {table}: {statement.split(' ON ')[0][:90]} ({time.perf_counter() - a:.0f} s)")
        return time.perf_counter() - t0


def seed(url: str, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    import psycopg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from onemember.db import make_engine
    from onemember.migrate import upgrade
    from onemember.settlement import service as settlement

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    empty_database(url)
    engine = make_engine(sa_url(url))
    upgrade(engine)
    engine.dispose()
    world = make_world(url, args.stores, rng)
    this_month = date(now.astimezone(ZONE).year, now.astimezone(ZONE).month, 1)
    m_first = (this_month - timedelta(days=1)).replace(day=1)
    prev_first = (m_first - timedelta(days=1)).replace(day=1)
    period, previous = month_of(m_first), month_of(prev_first)

    loader = Loader(url)
    loader.drop_indexes()
    ids: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for table in LOADED:
            ids[table] = int(conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0])
    # earned lots' entries first, the month's activity after them
    ids["earn_entries"] = ids["point_entries"]
    ids["point_entries"] += 2 * args.members
    gen = Generator(world, args.members, rng, ids, loader.put)
    gen.index_of = {st.id: i for i, st in enumerate(world.stores)}
    gen.current_period = period
    gen.coupon_templates = world.coupon_templates
    gen.package_templates = world.package_templates
    gen.end = datetime(this_month.year, this_month.month, 1, tzinfo=ZONE).astimezone(UTC)
    loader.start()
    prev_total = args.entries // 100
    total = args.entries + prev_total
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        refresh_per_second=2,
    ) as progress:
        task = progress.add_task("members and earned lots", total=args.members)
        gen.members(m_first - timedelta(days=40))
        progress.update(task, completed=args.members)
        task = progress.add_task("settlement entries", total=total)
        for first, count, label in ((prev_first, prev_total, previous), (m_first, args.entries, period)):
            days = month_days(first)
            weights = [1.35 if d.weekday() >= 5 else 1.0 for d in days]
            goal = gen.count["entries"] + count
            for i, d in enumerate(days):
                left_days = sum(weights[i:])
                share = round((goal - gen.count["entries"]) * weights[i] / left_days)
                gen.day(d, share, period=label)
                progress.update(task, completed=gen.count["entries"])
        gen.drain()  # returns due after the last sale of the month
        gen.flush()
        task = progress.add_task("accounts and lots", total=args.members)
        done = 0
        for batch in gen.final_rows(now):
            loader.put(batch)
            done += len(batch["point_accounts"])
            progress.update(task, completed=done)
        loader.finish()
    load_s = time.perf_counter() - t0
    print(
        f"loaded in {load_s:.0f} s: " + ", ".join(f"{t} {n:,}" for t, n in loader.rows.items() if n),
        flush=True,
    )
    print("building indexes:", flush=True)
    index_s = loader.rebuild(lambda line: print(line, flush=True))
    conn = loader.conn
    conn.execute("SET session_replication_role = origin")
    for table in LOADED:
        conn.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT max(id) FROM " + table + "))", (table,)
        )
    for (
        template_id,
        n,
    ) in gen.coupon_counts.items():  # the templates' counters, as issuing and redeeming keep them
        conn.execute(
            "UPDATE coupon_templates SET issued_count = %s, redeemed_count = (SELECT count(*) FROM "
            "coupon_redemptions WHERE template_id = %s AND status = 'redeemed'), budget_used = (SELECT "
            "coalesce(sum(discount_fen - returned_fen), 0) FROM coupon_redemptions WHERE template_id = %s "
            "AND status = 'redeemed') WHERE id = %s",
            (n, template_id, template_id, template_id),
        )
    conn.execute(
        "INSERT INTO counters (org_id, name, value) VALUES (%s, 'member_no', %s) "
        "ON CONFLICT (org_id, name) DO UPDATE SET value = EXCLUDED.value",
        (world.org_id, args.members),
    )
    # M-1 closed early in M, with its frozen nets (as close_period writes them); M open.
    closed_at = datetime(m_first.year, m_first.month, 3, 10, 0, tzinfo=ZONE).astimezone(UTC)
    nets: dict[int, int] = {}
    count = total_fen = 0
    for debtor, creditor, amount, n in conn.execute(
        "SELECT debtor_key, creditor_key, sum(amount_fen), count(*) FROM settlement_entries "
        "WHERE org_id = %s AND period = %s GROUP BY 1, 2",
        (world.org_id, previous),
    ).fetchall():
        nets[debtor] = nets.get(debtor, 0) - int(amount)
        nets[creditor] = nets.get(creditor, 0) + int(amount)
        count += n
        total_fen += int(amount)
    closing = {str(k): v for k, v in sorted(nets.items()) if v}
    for p, status, cnt, fen, frozen, at in (
        (previous, "closed", count, total_fen, closing, closed_at),
        (period, "open", 0, 0, {}, None),
    ):
        conn.execute(
            "INSERT INTO settlement_periods (org_id, period, status, closed_by, closed_at, entry_count, "
            "total_fen, closing_nets, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (world.org_id, p, status, "staff:hq" if at else "", at, cnt, fen, json.dumps(frozen), closed_at),
        )
    meta = {
        "org_id": world.org_id,
        "hq_staff_id": world.hq_staff_id,
        "period": period,
        "previous": previous,
        "stores": len(world.stores),
        "members": args.members,
        "entries": {period: gen.count["entries"] - prev_total, previous: prev_total},
        "entries_by_kind": gen.entries_by_kind,
        "events": {k: gen.count[k] for k, _ in EVENTS},
        "rows": loader.rows,
        "load_seconds": load_s,
        "index_seconds": index_s,
        "seeded_at": now.isoformat(),
        "policy": settlement.PointsPolicy(settlement.Bearer.ISSUING_STORE, 100, 100, 100).details(),
    }
    conn.execute(f"CREATE TABLE {META_TABLE} (meta jsonb)")
    conn.execute(f"INSERT INTO {META_TABLE} VALUES (%s)", (json.dumps(meta),))
    conn.commit()
    conn.close()
    t1 = time.perf_counter()
    import psycopg as pg

    with pg.connect(url, autocommit=True) as c:
        c.execute("VACUUM (ANALYZE)")
    meta["vacuum_seconds"] = time.perf_counter() - t1
    print(f"indexes {index_s:.0f} s, VACUUM (ANALYZE) {meta['vacuum_seconds']:.0f} s", flush=True)
    return meta


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    product: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    product_cpu: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.product) / statistics.median(self.raw)


class Recorder:
    """The statements the product sends (for --explain and the statement count)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.active = False
        self.seen: list[tuple[str, Any, float]] = []
        self._start: dict[int, float] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if self.active:
                self._start[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if self.active:
                began = self._start.pop(id(cursor), time.perf_counter())
                self.seen.append((statement, params, time.perf_counter() - began))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, Any, float]]]:
        self.seen = []
        self.active = True
        try:
            yield self.seen
        finally:
            self.active = False


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def run_pair(t: Timing, product: Callable[[], Any], raw: Callable[[], Any], repeat: int) -> tuple[Any, Any]:
    """Alternate product and baseline (the baseline first every other time), so that drift on a shared
    machine falls on both."""
    p_out = r_out = None
    for i in range(repeat):
        order = ((product, True), (raw, False)) if i % 2 else ((raw, False), (product, True))
        for fn, is_product in order:
            wall, cpu, out = timed(fn)
            if is_product:
                t.product.append(wall)
                t.product_cpu.append(cpu)
                p_out = out
            else:
                t.raw.append(wall)
                r_out = out
        print(f"    {t.name}: product {t.product[-1]:.3f} s, raw {t.raw[-1]:.3f} s", flush=True)
    return p_out, r_out


RAW_STATEMENTS = (
    "SELECT debtor_key, creditor_key, kind, sum(amount_fen), count(*) FROM settlement_entries "
    "WHERE org_id = %(org)s AND period = %(period)s {filter} GROUP BY debtor_key, creditor_key, kind"
)
RAW_PAIR = (
    "SELECT e.*, o.order_no, r.return_no FROM settlement_entries e "
    "LEFT JOIN orders o ON o.id = e.order_id LEFT JOIN order_returns r ON r.id = e.return_id "
    "WHERE e.org_id = %(org)s AND e.period = %(period)s "
    "AND ((e.debtor_key = %(a)s AND e.creditor_key = %(b)s) "
    "OR (e.debtor_key = %(b)s AND e.creditor_key = %(a)s)) ORDER BY e.id LIMIT 100"
)
RAW_STORE_ENTRIES = (
    "SELECT e.*, o.order_no, r.return_no FROM settlement_entries e "
    "LEFT JOIN orders o ON o.id = e.order_id LEFT JOIN order_returns r ON r.id = e.return_id "
    "WHERE e.org_id = %(org)s AND e.period = %(period)s AND (e.debtor_key = %(a)s OR e.creditor_key = %(a)s) "
    "ORDER BY e.id"
)
RAW_NETS = (
    "SELECT debtor_key, creditor_key, sum(amount_fen), count(*) FROM settlement_entries "
    "WHERE org_id = %(org)s AND period = %(period)s GROUP BY debtor_key, creditor_key"
)
RAW_CLOSE = (
    "UPDATE settlement_periods SET status = 'closed', closed_by = 'staff:hq', closed_at = now(), "
    "entry_count = %(count)s, total_fen = %(total)s, closing_nets = %(nets)s "
    "WHERE org_id = %(org)s AND period = %(period)s AND status = 'open'"
)
# verify_settlement as set-based SQL. With the seed's policy (1 point = 1 fen, the issuing store bears
# it) every points entry's fen equals its points, and the points of each (source, bearer) pair equal
# the source's lot movements from that bearer's lots, so these checks are complete for this data.
RAW_VERIFY = {
    "nets per kind": (
        "SELECT kind, sum(s) FROM (SELECT kind, sum(amount_fen) AS s FROM settlement_entries "
        "WHERE org_id = %(org)s GROUP BY kind, creditor_key UNION ALL SELECT kind, -sum(amount_fen) "
        "FROM settlement_entries WHERE org_id = %(org)s GROUP BY kind, debtor_key) x GROUP BY kind "
        "HAVING sum(s) <> 0"
    ),
    "points re-derived": (
        "WITH s AS ("
        "  SELECT point_entry_id AS src, CASE WHEN reverses_id IS NULL THEN debtor_key ELSE creditor_key END "
        "         AS bearer, "
        "         CASE WHEN reverses_id IS NULL THEN creditor_key ELSE debtor_key END AS redeemer, "
        "         sum(points) AS pts, bool_and(amount_fen = points) AS fen_ok, count(*) AS n "
        "  FROM settlement_entries WHERE org_id = %(org)s AND kind = 'points_redeemed' GROUP BY 1, 2, 3), "
        "r AS (SELECT DISTINCT src, redeemer FROM s), "
        "m AS (SELECT mv.entry_id AS src, coalesce(l.store_id, 0) AS bearer, abs(sum(mv.amount)) AS pts "
        "  FROM point_lot_movements mv JOIN point_lots l ON l.id = mv.lot_id "
        "  WHERE mv.entry_id IN (SELECT src FROM r) GROUP BY 1, 2) "
        "SELECT count(*) FILTER (WHERE s.src IS NULL OR m.src IS NULL OR s.pts <> m.pts OR NOT s.fen_ok), "
        "       (SELECT count(*) FROM r) "
        "FROM s FULL JOIN (SELECT m.* FROM m JOIN r ON r.src = m.src AND r.redeemer <> m.bearer) m "
        "  ON m.src = s.src AND m.bearer = s.bearer"
    ),
    "cross-store returns": (
        "SELECT count(*) FROM settlement_entries e LEFT JOIN order_returns r ON r.id = e.return_id "
        "WHERE e.org_id = %(org)s AND e.kind = 'cross_store_return' AND (r.id IS NULL "
        "OR (e.debtor_key, e.creditor_key, e.amount_fen) <> (r.original_store_id, r.store_id, r.refund_fen))"
    ),
}


def explain(url: str, recorded: list[tuple[str, Any, float]], title: str) -> None:
    import psycopg

    if not recorded:
        return
    statement, params, seconds = max(recorded, key=lambda r: r[2])
    if statement.lstrip().upper().startswith(("UPDATE", "INSERT")):
        return
    with psycopg.connect(url) as conn:
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
        conn.rollback()
    print(f"\n  EXPLAIN ANALYZE, {title}: the slowest of {len(recorded)} statements ({seconds * 1e3:.0f} ms)")
    print("    " + " ".join(statement.split())[:400])
    for (row,) in plan:
        print("    " + row)


def measure(url: str, meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from onemember.auth.service import staff_principal
    from onemember.db import make_engine, make_sessionmaker
    from onemember.org.models import Staff
    from onemember.settlement import service as settlement
    from onemember.settlement import statements as st
    from onemember.settlement.verify import verify_settlement

    org, period = meta["org_id"], meta["period"]
    engine = make_engine(sa_url(url), pool_size=2)
    factory = make_sessionmaker(engine)
    recorder = Recorder(engine)
    raw = psycopg.connect(url)
    results: list[Timing] = []
    statements_sent: dict[str, int] = {}
    with psycopg.connect(url) as c:
        total = c.execute(
            "SELECT count(*) FROM settlement_entries WHERE org_id = %s AND period = %s", (org, period)
        ).fetchone()[0]
        # the busiest store and its biggest counterparty
        busiest, busy_n = c.execute(
            "SELECT party, count(*) FROM (SELECT debtor_key AS party FROM settlement_entries "
            "WHERE org_id = %(o)s AND period = %(p)s UNION ALL SELECT creditor_key FROM settlement_entries "
            "WHERE org_id = %(o)s AND period = %(p)s) x WHERE party <> 0 "
            "GROUP BY party ORDER BY 2 DESC LIMIT 1",
            {"o": org, "p": period},
        ).fetchone()
        # its counterparties, biggest first: the drilldown is measured for the biggest and a typical one
        counterparties = c.execute(
            "SELECT CASE WHEN debtor_key = %(a)s THEN creditor_key ELSE debtor_key END, count(*) "
            "FROM settlement_entries WHERE org_id = %(o)s AND period = %(p)s "
            "AND (debtor_key = %(a)s OR creditor_key = %(a)s) GROUP BY 1 ORDER BY 2 DESC, 1",
            {"o": org, "p": period, "a": busiest},
        ).fetchall()
        other, pair_n = counterparties[0]
        typical, typical_n = counterparties[len(counterparties) // 2]
        codes = dict(c.execute("SELECT id, code FROM stores WHERE org_id = %s", (org,)).fetchall())
    codes[0] = "HQ"
    print(
        f"\nperiod {period}: {total:,} entries; busiest store {codes[busiest]} in {busy_n:,} of them, "
        f"its biggest counterparty {codes[other]} in {pair_n:,}, its median one {codes[typical]} "
        f"in {typical_n:,}",
        flush=True,
    )
    params = {"org": org, "period": period, "a": busiest, "b": other}

    def raw_rows(sql: str, p: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows = raw.execute(sql, p).fetchall()
        raw.rollback()
        return rows

    def product(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with factory() as s:
                out = fn(s)
                s.rollback()
            return out

        return run

    def step(
        name: str, p_fn: Callable[[], Any], r_fn: Callable[[], Any], repeat: int
    ) -> tuple[Timing, Any, Any]:
        print(f"  {name}", flush=True)
        t = Timing(name)
        with recorder.recording() as seen:
            wall, _cpu, _ = timed(p_fn)  # warm: caches, the ORM's compiled statements
        statements_sent[name] = len(seen)
        print(f"    warm-up: product {wall:.3f} s ({len(seen)} statements)", flush=True)
        if args.explain:
            explain(url, seen, name)
        p_out, r_out = run_pair(t, p_fn, r_fn, repeat)
        results.append(t)
        return t, p_out, r_out

    # 1. all statements
    t, p_out, r_out = step(
        "all statements (201 parties)",
        product(lambda s: st.statements(s, org, period)),
        lambda: raw_rows(RAW_STATEMENTS.format(filter=""), params),
        args.repeat,
    )
    p_entries = sum(x.entries for x in p_out) // 2
    r_entries = sum(int(row[4]) for row in r_out)
    t.note = f"{len(p_out)} statements, {len(r_out):,} groups; entries {p_entries:,} = {r_entries:,}"
    assert p_entries == r_entries == total, (p_entries, r_entries, total)

    # 2. one store
    t, p_out, r_out = step(
        f"one store's statement ({codes[busiest]})",
        product(lambda s: st.statements(s, org, period, {busiest})),
        lambda: raw_rows(
            RAW_STATEMENTS.format(filter="AND (debtor_key = %(a)s OR creditor_key = %(a)s)"), params
        ),
        args.repeat,
    )
    assert p_out[0].entries == sum(int(row[4]) for row in r_out) == busy_n
    t.note = f"{len(p_out[0].lines)} counterparties, {p_out[0].entries:,} entries"

    # 3. drilldown: the first page of one counterparty pair
    t, p_out, r_out = step(
        f"drilldown {codes[busiest]}↔{codes[other]}, 100 rows",
        product(lambda s: st.entries(s, org, period, party_key=busiest, counterparty_key=other, limit=100)),
        lambda: raw_rows(RAW_PAIR, params),
        args.repeat,
    )
    assert [e.id for e in p_out] == [row[0] for row in r_out]
    t.note = f"{len(p_out)} rows of {pair_n:,}"
    typical_params = {**params, "b": typical}
    t, p_out, r_out = step(
        f"drilldown {codes[busiest]}↔{codes[typical]}, 100 rows",
        product(lambda s: st.entries(s, org, period, party_key=busiest, counterparty_key=typical, limit=100)),
        lambda: raw_rows(RAW_PAIR, typical_params),
        args.repeat,
    )
    assert [e.id for e in p_out] == [row[0] for row in r_out]
    t.note = f"{len(p_out)} rows of {typical_n:,} (the median counterparty)"

    # 4. Excel export of one store
    def export(s: Any) -> bytes:
        found = st.statements(s, org, period, {busiest})
        rows = st.entries(s, org, period, party_key=busiest, limit=None)
        return st.workbook(found, rows)

    def raw_export() -> int:
        a = raw_rows(RAW_STATEMENTS.format(filter="AND (debtor_key = %(a)s OR creditor_key = %(a)s)"), params)
        b = raw_rows(RAW_STORE_ENTRIES, params)
        return len(a) + len(b)

    t, p_out, r_out = step(
        f"Excel export of {codes[busiest]}", product(export), raw_export, max(1, args.repeat // 2)
    )
    t.note = f"{len(p_out) / 1e6:.1f} MB workbook, {busy_n:,} entry rows"

    # 5. close the period
    with factory() as s:
        staff = s.get(Staff, meta["hq_staff_id"])
        assert staff is not None
        hq = staff_principal(s, staff)

    def close(s: Any) -> Any:
        row = settlement.close_period(s, hq, period, "月结 bench")
        return (row.entry_count, row.total_fen)

    def raw_close() -> Any:
        nets: dict[int, int] = {}
        count = fen = 0
        early = raw.execute(
            "SELECT p.period FROM settlement_periods p WHERE p.org_id = %(org)s AND p.period < %(period)s "
            "AND p.status = 'open' AND EXISTS (SELECT 1 FROM settlement_entries e WHERE e.org_id = p.org_id "
            "AND e.period = p.period) ORDER BY p.period LIMIT 1",
            params,
        ).fetchone()
        assert early is None
        for debtor, creditor, amount, n in raw.execute(RAW_NETS, params).fetchall():
            nets[debtor] = nets.get(debtor, 0) - int(amount)
            nets[creditor] = nets.get(creditor, 0) + int(amount)
            count += n
            fen += int(amount)
        frozen = json.dumps({str(k): v for k, v in sorted(nets.items()) if v})
        raw.execute(RAW_CLOSE, {**params, "count": count, "total": fen, "nets": frozen})
        raw.rollback()
        return (count, fen)

    t, p_out, r_out = step("close_period (rolled back)", product(close), raw_close, max(1, args.repeat // 2))
    assert p_out == r_out, (p_out, r_out)
    t.note = f"{p_out[0]:,} entries, {p_out[1] / 100:,.2f} yuan"
    with factory() as s:  # close it for real, so verify checks the frozen nets of both months
        close(s)
        s.commit()

    # 6. verify_settlement
    def raw_verify() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sql in RAW_VERIFY.items():
            out[name] = raw.execute(sql, params).fetchall()
        out["closed periods"] = []
        for p, count, fen, frozen, closed_at in raw.execute(
            "SELECT period, entry_count, total_fen, closing_nets::text, closed_at FROM settlement_periods "
            "WHERE org_id = %(org)s AND status = 'closed' ORDER BY period",
            params,
        ).fetchall():
            nets: dict[str, int] = {}
            n = total = 0
            for debtor, creditor, amount, k in raw.execute(RAW_NETS, {**params, "period": p}).fetchall():
                nets[str(debtor)] = nets.get(str(debtor), 0) - int(amount)
                nets[str(creditor)] = nets.get(str(creditor), 0) + int(amount)
                n += k
                total += int(amount)
            late = raw.execute(
                "SELECT count(*) FROM settlement_entries WHERE org_id = %(org)s AND period = %(p)s "
                "AND created_at > %(at)s",
                {**params, "p": p, "at": closed_at},
            ).fetchone()[0]
            now_nets = {k: v for k, v in nets.items() if v}
            ok = (n, total, now_nets, late) == (count, fen, json.loads(frozen), 0)
            out["closed periods"].append((p, ok))
        raw.rollback()
        return out

    def product_verify(s: Any) -> Any:
        return verify_settlement(s, org)

    t, p_out, r_out = step("verify_settlement", product(product_verify), raw_verify, args.verify_repeat)
    bad = r_out["points re-derived"][0][0] + r_out["cross-store returns"][0][0] + len(r_out["nets per kind"])
    bad += sum(1 for _p, ok in r_out["closed periods"] if not ok)
    t.note = (
        f"product: {p_out.entries:,} entries, {p_out.sources:,} points sources, "
        f"{p_out.closed_periods} closed periods, {len(p_out.problems)} problems; "
        f"SQL: {r_out['points re-derived'][0][1]:,} sources, {bad} problems"
    )
    if p_out.problems:
        print("    product problems: " + "; ".join(p_out.problems[:5]))
    with psycopg.connect(url) as c:  # open M again: a --reuse run measures the same state
        c.execute(
            "UPDATE settlement_periods SET status = 'open', closed_by = '', closed_at = NULL, "
            "entry_count = 0, "
            "total_fen = 0, closing_nets = '{}' WHERE org_id = %s AND period = %s",
            (org, period),
        )
    raw.close()
    engine.dispose()
    return {"timings": results, "statements": statements_sent, "entries": total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help=f"default: $DATABASE_URL, else {DEFAULT_URL}")
    parser.add_argument("--entries", type=int, default=10_000_000, help="settlement entries in the month")
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--members", type=int, help="default: entries / 10")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--reuse", action="store_true", help="measure the seed already in the database")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each step (export and close: half)")
    parser.add_argument("--verify-repeat", type=int, default=1)
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE each step's slowest statement"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.members = args.members or max(1_000, args.entries // 10)
    url = target_url(args.database_url)

    started = time.perf_counter()
    before = machine_note()
    print(f"machine: {before}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    now = datetime.now(UTC)
    meta = read_meta(url) if args.reuse else None
    if meta is None:
        print(
            f"seeding {args.entries:,} entries ({args.stores} stores, {args.members:,} members) "
            f"into {dbname(url)}",
            flush=True,
        )
        meta = seed(url, args, now)
    else:
        print(f"reusing the seed in {dbname(url)} (seeded {meta['seeded_at']})")
    print(
        f"seed: {meta['stores']} stores, {meta['members']:,} members; entries "
        + ", ".join(f"{p}: {n:,}" for p, n in meta["entries"].items())
        + "; by kind "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(meta["entries_by_kind"].items()))
        + f"; load {meta['load_seconds']:.0f} s, indexes {meta['index_seconds']:.0f} s",
        flush=True,
    )
    out = measure(url, meta, args)
    after = machine_note()
    print(f"\n{'':42} {'product s':>10} {'raw SQL s':>10} {'ratio':>7} {'Python CPU s':>13} {'stmts':>6}")
    rows = []
    for t in out["timings"]:
        p, r = statistics.median(t.product), statistics.median(t.raw)
        cpu = statistics.median(t.product_cpu)
        print(
            f"{t.name:42} {p:>10.3f} {r:>10.3f} {t.ratio:>6.1f}× {cpu:>13.2f} {out['statements'][t.name]:>6}"
        )
        print(f"{'':44}{t.note}")
        rows.append(
            {
                "name": t.name,
                "product_s": t.product,
                "raw_s": t.raw,
                "product_cpu_s": t.product_cpu,
                "median_product_s": p,
                "median_raw_s": r,
                "ratio": t.ratio,
                "statements": out["statements"][t.name],
                "note": t.note,
            }
        )
    print(f"\nmachine after the run: {after}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total run time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(
            args.json,
            {
                "bench": "settlement_statement",
                "date": datetime.now(UTC).isoformat(),
                "seed": meta,
                "results": rows,
                "machine": [before, after],
            },
        )


if __name__ == "__main__":
    main()
