"""Coupons at the till: what it costs to find a member's usable coupons and the best combination for a
basket, against the one indexed SELECT that fetches the member's available coupons.

    .venv/bin/python bench/coupons.py                                   # SQLite in a temporary folder
    DATABASE_URL=postgresql://postgres@127.0.0.1/om_bench_coupons .venv/bin/python bench/coupons.py

Set-up: migrate the database (SQLite: a fresh file; PostgreSQL: the one DATABASE_URL names, upgraded
in place), make the test factory's chain under a new org code, a member holding 20 coupons of mixed
kinds and scopes (amount off, percent off with caps, fixed price, free item with a price difference,
exchange and service vouchers; whole chain, region, brand, named stores and issuing store only;
stacking groups, an exclusive coupon, a template with a budget, one not yet valid), and other
members holding ``--background`` coupons between them so that the member's rows are found through
the index, as in production. The basket has 15 lines in six categories, at store A.

Measured, interleaved in ``--rounds`` rounds so that drift on a shared machine hits every phase alike:

* **raw SQL**: the baseline, the one SELECT ``usable_coupons`` sends (coupons joined to their
  templates by ``member_id``/``status``, soonest-expiring first), through the bare DB-API connection;
* **best_combination**: the pure maths on the usable candidates (``coupons.calculations``), no I/O;
* **usable_coupons** and **best_for_basket**: the service calls, each in a fresh ORM session;
* **HTTP**: ``POST /api/v1/members/{no}/coupons/usable`` through the ASGI app (httpx's
  ``ASGITransport``, no network), authenticated with store A's till key.

Printed per phase: p50/p90/p99/max in ms, the ratio of p50 and p99 to the raw SQL's, and the
statements each call sends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import machine_note, percentile, write_json

CATEGORIES = ("生鲜", "食品", "个护", "酒饮", "家居", "母婴")

# (code, TemplateSpec fields, issuing store code or None, cover_fen): 20 coupons for the member.
COUPONS: list[tuple[str, dict[str, Any], str | None, int | None]] = [
    (
        "M100-10",
        {"kind": "amount_off", "threshold_fen": 10_000, "amount_fen": 1_000, "stack_group": "满减"},
        None,
        None,
    ),
    ("M100-10", {}, None, None),  # a second coupon of the same template (per_order_limit 1)
    (
        "M200-30",
        {"kind": "amount_off", "threshold_fen": 20_000, "amount_fen": 3_000, "stack_group": "满减"},
        None,
        None,
    ),
    (
        "M300-50",
        {"kind": "amount_off", "threshold_fen": 30_000, "amount_fen": 5_000, "stack_group": "满减"},
        None,
        None,
    ),
    (
        "FRESH50-8",
        {"kind": "amount_off", "threshold_fen": 5_000, "amount_fen": 800, "categories": ["生鲜"]},
        "A",
        None,
    ),
    (
        "CARE90",
        {"kind": "percent_off", "percent_off": 10, "cap_fen": 2_000, "categories": ["个护"]},
        None,
        None,
    ),
    (
        "DRINK85",
        {
            "kind": "percent_off",
            "percent_off": 15,
            "cap_fen": 3_000,
            "categories": ["酒饮"],
            "stack_group": "折扣",
        },
        None,
        None,
    ),
    (
        "ALL95",
        {"kind": "percent_off", "percent_off": 5, "cap_fen": 5_000, "stack_group": "折扣"},
        None,
        None,
    ),
    ("OIL990", {"kind": "fixed_price", "price_fen": 990, "skus": ["SKU-OIL-5L"]}, None, None),
    ("FREE-YOG", {"kind": "free_item", "skus": ["SKU-YOGURT"], "pay_difference": True}, "A", 450),
    ("SNACK-EX", {"kind": "exchange", "categories": ["食品"], "face_value_fen": 800}, None, None),
    ("WASH-SVC", {"kind": "service", "skus": ["SVC-CARWASH"], "face_value_fen": 3_000}, None, None),
    (
        "BIG500-120",
        {"kind": "amount_off", "threshold_fen": 50_000, "amount_fen": 12_000, "exclusive": True},
        None,
        None,
    ),
    (
        "EAST-M150-20",
        {
            "kind": "amount_off",
            "threshold_fen": 15_000,
            "amount_fen": 2_000,
            "accept_scope": "region",
            "accept_region_code": "east",
            "stack_group": "满减",
        },
        None,
        None,
    ),
    (
        "STORE-B-M80-15",
        {
            "kind": "amount_off",
            "threshold_fen": 8_000,
            "amount_fen": 1_500,
            "accept_scope": "stores",
            "accept_store_codes": ["B"],
        },
        None,
        None,
    ),
    (
        "KIDS-M99-20",
        {
            "kind": "amount_off",
            "threshold_fen": 9_900,
            "amount_fen": 2_000,
            "accept_scope": "brand",
            "accept_brand_code": "kids",
        },
        None,
        None,
    ),
    (
        "BABY-M60-10",
        {"kind": "amount_off", "threshold_fen": 6_000, "amount_fen": 1_000, "categories": ["母婴"]},
        None,
        None,
    ),
    (
        "HOME-M120-18",
        {
            "kind": "amount_off",
            "threshold_fen": 12_000,
            "amount_fen": 1_800,
            "accept_scope": "issuing_store",
            "stack_group": "满减",
        },
        "A",
        None,
    ),
    (
        "BUDGET-M88-12",
        {
            "kind": "amount_off",
            "threshold_fen": 8_800,
            "amount_fen": 1_200,
            "budget_fen": 1_000_000,
            "combines_with_tier_discount": False,
            "stack_group": "满减",
        },
        None,
        None,
    ),
    ("LATER-M50-10", {"kind": "amount_off", "threshold_fen": 5_000, "amount_fen": 1_000}, None, None),
]

# A 15-line basket at store A: (sku, category, quantity, unit price in fen).
BASKET = [
    ("SKU-APPLE", "生鲜", 2, 1_290),
    ("SKU-PORK", "生鲜", 1, 3_580),
    ("SKU-MILK", "生鲜", 3, 1_150),
    ("SKU-YOGURT", "生鲜", 4, 520),
    ("SKU-OIL-5L", "食品", 1, 6_990),
    ("SKU-RICE", "食品", 1, 5_990),
    ("SKU-CHIPS", "食品", 3, 790),
    ("SKU-NUTS", "食品", 2, 2_990),
    ("SKU-SHAMPOO", "个护", 1, 4_590),
    ("SKU-TOOTH", "个护", 2, 1_290),
    ("SKU-MASK", "个护", 1, 8_900),
    ("SKU-BEER", "酒饮", 6, 650),
    ("SKU-WINE", "酒饮", 1, 12_800),
    ("SKU-TOWEL", "家居", 2, 1_990),
    ("SKU-CUP", "家居", 1, 2_490),
]


def database_url(given: str | None, tmp: Path) -> str:
    url = given or os.environ.get("DATABASE_URL") or ""
    if not url:
        return f"sqlite:///{tmp / 'bench_coupons.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def seed(factory: Any, background: int, rng: random.Random) -> dict[str, Any]:
    """The chain, the member's 20 coupons, and ``background`` coupons of other members."""
    from sqlalchemy import insert
    from tests.factories import make_chain

    from onemember.auth.principal import system_principal
    from onemember.coupons import service as coupons
    from onemember.coupons.models import Coupon
    from onemember.db import transaction, utcnow
    from onemember.members import service as members
    from onemember.members.models import Member
    from onemember.org.models import Store

    now = utcnow()
    with transaction(factory) as s:
        chain = make_chain(s, code=f"bc{secrets.token_hex(4)}")
        hq = system_principal(chain.org_id, "bench")
        member = members.register(
            s, hq, chain.stores["A"], members.Registration(phone="13900000001", name="基准会员")
        )
        templates: dict[str, Any] = {}
        for i, (code, fields, store_code, cover) in enumerate(COUPONS):
            if code not in templates:
                spec: dict[str, Any] = {"valid_days": 10 + 3 * i, **fields}
                if code == "LATER-M50-10":  # not valid yet
                    spec.pop("valid_days")
                    spec |= {"valid_from": now + timedelta(days=5), "valid_to": now + timedelta(days=40)}
                templates[code] = coupons.create_template(
                    s, hq, coupons.TemplateSpec(code=code, name=code, **spec)
                )
            store = s.get(Store, chain.stores[store_code]) if store_code else None
            coupons.issue_coupon(
                s, hq, templates[code], member, source="staff", issuing_store=store, cover_fen=cover
            )
        # Other members' coupons: the member's 20 rows are found through the index among these.
        holders = max(1, background // 20)
        rows = [
            {
                "org_id": chain.org_id,
                "member_no": f"B{chain.org_id:04d}{k:09d}"[:20],
                "name": f"背景{k}",
                "created_at": now,
                "updated_at": now,
            }
            for k in range(holders)
        ]
        holder_ids = list(s.scalars(insert(Member).returning(Member.id), rows)) if rows else []
        template_list = list(templates.values())
        batch: list[dict[str, Any]] = []
        for k in range(background):
            t = rng.choice(template_list)
            owner = holder_ids[k % len(holder_ids)]
            batch.append(
                {
                    "org_id": chain.org_id,
                    "code": f"Z{chain.org_id:03d}{k:011d}"[:24],
                    "template_id": t.id,
                    "member_id": owner,
                    "issued_to_member_id": owner,
                    "source": "campaign",
                    "reason": "",
                    "valid_from": now - timedelta(days=1),
                    "valid_to": now + timedelta(days=rng.randrange(1, 60)),
                    "status": rng.choice(("available", "available", "available", "redeemed", "expired")),
                    "issued_by": "bench",
                    "issued_at": now,
                    "discount_fen": 0,
                }
            )
            if len(batch) == 5_000:
                s.execute(insert(Coupon), batch)
                batch = []
        if batch:
            s.execute(insert(Coupon), batch)
        return {
            "org_id": chain.org_id,
            "store_id": chain.stores["A"],
            "member_id": member.id,
            "member_no": member.member_no,
            "key": chain.keys["A"],
        }


RAW_SQL = (
    "SELECT c.id, c.org_id, c.code, c.template_id, c.member_id, c.issued_to_member_id, c.issuing_store_id, "
    "c.cover_fen, c.source, c.source_ref, c.reason, c.valid_from, c.valid_to, c.status, c.issued_by, "
    "c.issued_at, c.gifted_from_member_id, c.redeemed_order_id, c.redeemed_store_id, c.redeemed_at, "
    "c.discount_fen, t.* FROM coupons c JOIN coupon_templates t ON t.id = c.template_id "
    "WHERE c.member_id = {p} AND c.status = {p} "
    "ORDER BY c.valid_to IS NULL, c.valid_to, c.id"
)


class Counter:
    """Statements sent through the engine while ``active``."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        self.active = False

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_args: Any) -> None:
            if self.active:
                self.count += 1

    @contextmanager
    def measuring(self) -> Iterator[None]:
        self.count, self.active = 0, True
        try:
            yield
        finally:
            self.active = False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="default: $DATABASE_URL, else SQLite in a temporary folder")
    parser.add_argument("--background", type=int, default=100_000, help="other members' coupons")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200, help="calls of each phase per round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="onemember-bench-coupons-"))
    url = database_url(args.database_url, tmp)
    os.environ["ONEMEMBER_DATABASE_URL"] = url
    import httpx
    from sqlalchemy import text

    from onemember.app import create_app
    from onemember.coupons import calculations as calc
    from onemember.coupons import service as coupons
    from onemember.db import make_engine, make_sessionmaker
    from onemember.members.models import Member
    from onemember.migrate import upgrade
    from onemember.org.models import Store
    from onemember.settings import get_settings

    before = machine_note()
    print(f"machine: {before}")
    engine = make_engine(url)
    backend = engine.dialect.name
    print(f"database: {backend} ({engine.url.render_as_string(hide_password=True)})")
    started = time.perf_counter()
    upgrade(engine)
    factory = make_sessionmaker(engine)
    rng = random.Random(20261123)
    meta = seed(factory, args.background, rng)
    if backend == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE coupons"))
            conn.execute(text("ANALYZE coupon_templates"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    print(
        f"seeded in {time.perf_counter() - started:.1f} s: a member with {len(COUPONS)} coupons, "
        f"{args.background:,} coupons of {max(1, args.background // 20):,} other members"
    )

    lines = [
        calc.Line(i, sku, cat, qty, qty * price) for i, (sku, cat, qty, price) in enumerate(BASKET, start=1)
    ]
    basket_fen = sum(ln.amount_fen for ln in lines)
    body = {
        "store_code": "A",
        "lines": [
            {"sku": sku, "category": cat, "quantity": qty, "unit_price_fen": price}
            for sku, cat, qty, price in BASKET
        ],
    }
    counter = Counter(engine)

    with factory() as s:
        member = s.get(Member, meta["member_id"])
        store = s.get(Store, meta["store_id"])
        assert member is not None
        assert store is not None
        suggestion = coupons.best_for_basket(s, member, store, lines)
        candidates = [
            coupons.till.candidate(u.coupon, u.template, rank)
            for rank, u in enumerate(suggestion.usability.usable)
        ]
        s.rollback()
    usable = suggestion.usability.usable
    print(
        f"basket: {len(lines)} lines, {basket_fen / 100:.2f} yuan; usable {len(usable)}, "
        f"unusable {len(suggestion.usability.unusable)} ("
        + ", ".join(sorted({u.reason.split(".")[-1] for u in suggestion.usability.unusable}))
        + f"); best: {', '.join(suggestion.codes)} = {suggestion.best.discount_fen / 100:.2f} yuan off "
        f"({suggestion.best.nodes} search nodes, exact {suggestion.best.exact})"
    )

    raw_conn = engine.raw_connection()
    placeholder = "%s" if backend == "postgresql" else "?"
    raw_sql = RAW_SQL.format(p=placeholder)
    if backend == "postgresql":
        cur = raw_conn.cursor()
        cur.execute("EXPLAIN " + raw_sql, (meta["member_id"], "available"))
        print("plan of the raw SELECT:\n  " + "\n  ".join(r[0] for r in cur.fetchall()))
        cur.close()
    raw_conn.commit()

    def raw_once() -> None:
        cur = raw_conn.cursor()
        cur.execute(raw_sql, (meta["member_id"], "available"))
        rows = cur.fetchall()
        cur.close()
        raw_conn.commit()
        assert len(rows) == len(COUPONS)

    def calc_once() -> None:
        calc.best_combination(candidates, lines)

    def service_once(fn: Callable[..., Any]) -> Callable[[], None]:
        def once() -> None:
            with factory() as s:
                m = s.get(Member, meta["member_id"])
                st = s.get(Store, meta["store_id"])
                fn(s, m, st, lines)
                s.rollback()

        return once

    app = create_app(get_settings(), factory, start_dispatcher=False)
    headers = {"Authorization": f"Bearer {meta['key']}"}
    path = f"/api/v1/members/{meta['member_no']}/coupons/usable"
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def http_once() -> None:
        response = loop.run_until_complete(client.post(path, json=body, headers=headers))
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code}: {response.text}")

    first = loop.run_until_complete(client.post(path, json=body, headers=headers)).json()
    assert first["best_codes"] == suggestion.codes, (first["best_codes"], suggestion.codes)

    phases: dict[str, Callable[[], None]] = {
        "raw SQL (baseline)": raw_once,
        "best_combination (pure)": calc_once,
        "usable_coupons": service_once(coupons.usable_coupons),
        "best_for_basket": service_once(coupons.best_for_basket),
        "HTTP POST …/usable": http_once,
    }
    statements: dict[str, int] = {}
    for name, once in phases.items():
        for _ in range(20):  # warm-up: caches, prepared statements, the key cache
            once()
        with counter.measuring():
            once()
        statements[name] = counter.count
    statements["raw SQL (baseline)"] = 1  # the bare DB-API cursor bypasses the engine's events

    latencies: dict[str, list[float]] = {name: [] for name in phases}
    order = list(phases)
    t0 = time.perf_counter()
    for r in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            once = phases[name]
            bucket = latencies[name]
            for _ in range(args.per_round):
                a = time.perf_counter()
                once()
                bucket.append(time.perf_counter() - a)
        print(f"  round {r + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    loop.run_until_complete(client.aclose())
    loop.close()
    raw_conn.close()

    base = sorted(latencies["raw SQL (baseline)"])
    base50, base99 = percentile(base, 50), percentile(base, 99)
    print(
        f"\n{args.rounds} rounds × {args.per_round} calls per phase, interleaved; {backend}; "
        f"{len(COUPONS)} coupons held, {len(suggestion.usability.usable)} usable"
    )
    print(
        f"{'':26} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p50 / raw':>10} {'p99 / raw':>10} {'statements':>11}"
    )
    results = []
    for name, values in latencies.items():
        v = sorted(values)
        p50, p90, p99 = percentile(v, 50), percentile(v, 90), percentile(v, 99)
        print(
            f"{name:26} {len(v):>6} {p50 * 1e3:>8.3f} {p90 * 1e3:>8.3f} {p99 * 1e3:>8.3f} "
            f"{v[-1] * 1e3:>8.3f} {p50 / base50:>9.1f}× {p99 / base99:>9.1f}× {statements[name]:>11}"
        )
        results.append(
            {
                "name": name,
                "n": len(v),
                "p50_ms": p50 * 1e3,
                "p90_ms": p90 * 1e3,
                "p99_ms": p99 * 1e3,
                "max_ms": v[-1] * 1e3,
                "p50_ratio": p50 / base50,
                "p99_ratio": p99 / base99,
                "statements": statements[name],
            }
        )
    after = machine_note()
    print(f"\nmachine after the run: {after}; load average {os.getloadavg()[0]:.2f}")
    if args.json:
        write_json(
            args.json,
            {
                "bench": "coupons",
                "date": datetime.now(UTC).isoformat(),
                "backend": backend,
                "background": args.background,
                "usable": len(suggestion.usability.usable),
                "best_codes": suggestion.codes,
                "results": results,
                "machine": [before, after],
            },
        )


if __name__ == "__main__":
    main()
