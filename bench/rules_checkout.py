"""What earn rules cost at the till: checkout throughput, latency and CPU through the real HTTP API with
the program's base rate alone, and with twenty active typed rules, in the same run.

    .venv/bin/python bench/rules_checkout.py                # about 7-9 minutes
    .venv/bin/python bench/rules_checkout.py --requests 1500 --profile

Steps: create the scratch database ``onemember_bench_rules``, migrate, seed the test factory's chain
(three stores, two till keys each), a spend-based tier set (normal/silver/gold, no built-in multiplier)
and N members with an opening balance, birthdays and tier standings (bulk COPY), start
``uvicorn onemember.app:create_app`` with W workers and drive ``POST /api/v1/orders`` with C
keep-alive clients (3-line baskets from a 60-SKU catalogue, 30 % redeeming 500 points) in phases:

1. **base rate**: one rule in force, a ``base_rate`` rule;
2. **20 rules**: the base rate plus 19 typed rules made with ``points.rules.create_rule`` (category and
   SKU multipliers, category and SKU exclusions, member days, birthday month, tier multipliers, a store
   bonus with a points budget, a first purchase bonus, order and daily caps);
3. **20 rules, no budget**: the store bonus ended and another SKU multiplier added: still twenty rules,
   but none with a budget, so no checkout locks a budget row;
4. **base rate again**: the 19 rules ended; on a shared machine this phase shows how much the numbers
   drift during the run (the comparison uses the mean of phases 1 and 4).

Each phase uses its own members (so first purchases are equally frequent), and prints checkouts/s,
p50/p99, CPU per checkout (server Python and PostgreSQL), how many sessions wait for a row lock, and
which rules fired; then the ratios to the base rate.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common import (
    CpuMeter,
    Server,
    Summary,
    add_api_keys,
    create_database,
    dbname_of,
    load_members,
    machine_note,
    make_chain,
    migrate,
    print_table,
    profiled,
    run_http,
    sa_url,
    summarize,
    summarize_profiles,
    write_json,
)

DB = "onemember_bench_rules"
TZ = "Asia/Shanghai"
CATEGORIES = ("食品", "日用", "饮料", "生鲜", "母婴", "家居")
# A small catalogue, so that SKU rules meet their SKUs: ten SKUs per category.
CATALOGUE = [(f"69{c:02d}{k:08d}", category) for c, category in enumerate(CATEGORIES) for k in range(10)]
REDEEM_POINTS = 500
TIERS = (("normal", "普通", 0, 0), ("silver", "银卡", 100_000, 60_000), ("gold", "金卡", 500_000, 300_000))


def basket(rng: random.Random, member_no: str, redeem: bool) -> dict[str, Any]:
    lines = []
    for sku, category in rng.sample(CATALOGUE, 3):
        lines.append(
            {
                "sku": sku,
                "name": f"{category}商品 {sku[-4:]}",
                "category": category,
                "quantity": rng.randint(1, 3),
                "unit_price_fen": rng.randrange(500, 5000),
            }
        )
    total = sum(line["quantity"] * line["unit_price_fen"] for line in lines)
    points = REDEEM_POINTS if redeem else 0
    return {
        "member": {"member_no": member_no},
        "lines": lines,
        "redeem_points": points,
        "payments": [{"method": "wechat_pay", "amount_fen": total - points}],
    }


# --- seeding: tier set, standings, birthdays --------------------------------------------------------


def seed_tiers_and_birthdays(url: str, org_id: int) -> None:
    """A spend-based tier set (points multiplier 100 %: the tier rules below give the multipliers),
    standings 60 % normal / 30 % silver / 10 % gold, and birthdays spread over the year."""
    import psycopg

    from onemember.auth.principal import system_principal
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.points import service as points
    from onemember.tiers import service as tiers

    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as session:
        program = points.default_program(session, org_id)
        tier_set = tiers.create_tier_set(
            session,
            system_principal(org_id, "bench"),
            program,
            "bench",
            "基准等级",
            "spend_12m",
            30,
            [tiers.LevelSpec(code, name, thr, keep) for code, name, thr, keep in TIERS],
        )
        level_ids = [lv.id for lv in tiers.level_rows(session, tier_set.id)]
        tier_set_id = tier_set.id
    engine.dispose()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO member_tiers (member_id, tier_set_id, org_id, level_id, since) "
            "SELECT id, %(ts)s, org_id, CASE WHEN id %% 10 < 6 THEN %(l0)s WHEN id %% 10 < 9 THEN %(l1)s "
            "ELSE %(l2)s END, created_at FROM members WHERE org_id = %(org)s",
            {"ts": tier_set_id, "l0": level_ids[0], "l1": level_ids[1], "l2": level_ids[2], "org": org_id},
        )
        conn.execute(
            "UPDATE members SET birthday = date '1990-01-01' + (id * 7919 %% 365)::int WHERE org_id = %s",
            (org_id,),
        )
        conn.commit()


# --- the rules --------------------------------------------------------------------------------------


def rule_specs(stores: dict[str, int], now: datetime) -> dict[str, Any]:
    """The base rate, the 19 rules of the 20-rule phase, and the rule that replaces the store bonus."""
    from onemember.points.earning import RuleKind as K
    from onemember.points.rules import RuleSpec as R

    today = now.astimezone(ZoneInfo(TZ)).date()
    sku = {category: [s for s, c in CATALOGUE if c == category] for category in CATEGORIES}
    nineteen = [
        R(K.CATEGORY_MULTIPLIER, "食品双倍", multiplier_pct=200, category="食品"),
        R(K.CATEGORY_MULTIPLIER, "日用 1.5 倍", multiplier_pct=150, category="日用"),
        R(K.CATEGORY_MULTIPLIER, "饮料三倍", multiplier_pct=300, category="饮料"),
        R(K.CATEGORY_MULTIPLIER, "母婴双倍", multiplier_pct=200, category="母婴"),
        R(K.CATEGORY_MULTIPLIER, "家居 1.5 倍", multiplier_pct=150, category="家居"),
        R(K.SKU_MULTIPLIER, "爆款三倍", multiplier_pct=300, sku=sku["食品"][0]),
        R(K.SKU_MULTIPLIER, "新品双倍", multiplier_pct=200, sku=sku["饮料"][1]),
        R(K.SKU_MULTIPLIER, "清仓双倍", multiplier_pct=200, sku=sku["家居"][2]),
        R(K.EXCLUDE_CATEGORY, "生鲜不积分", category="生鲜"),
        R(K.EXCLUDE_SKU, "特价品不积分", sku=sku["日用"][3]),
        R(K.MEMBER_DAY_MULTIPLIER, "周会员日", multiplier_pct=200, weekday=today.isoweekday()),
        R(K.MEMBER_DAY_MULTIPLIER, "月会员日", multiplier_pct=150, month_day=(today.day % 28) + 1),
        R(K.BIRTHDAY_MONTH_MULTIPLIER, "生日月双倍", multiplier_pct=200),
        R(K.TIER_MULTIPLIER, "银卡 1.5 倍", multiplier_pct=150, tier_code="silver"),
        R(K.TIER_MULTIPLIER, "金卡双倍", multiplier_pct=200, tier_code="gold"),
        R(
            K.STORE_BONUS_MULTIPLIER,
            "A 店周年庆",
            multiplier_pct=200,
            store_id=stores["A"],
            budget_points=100_000,
            valid_to=now + timedelta(days=1),
        ),
        R(K.FIRST_PURCHASE_BONUS, "首单礼", bonus_points=200),
        R(K.ORDER_CAP, "每单上限", cap_points=600),
        R(K.DAILY_CAP, "每日上限", cap_points=2000),
    ]
    return {
        "base": R(K.BASE_RATE, "基础积分", points_per_yuan=1),
        "nineteen": nineteen,
        "replacement": R(K.SKU_MULTIPLIER, "会员专享双倍", multiplier_pct=200, sku=sku["母婴"][4]),
    }


def create_rules(url: str, org_id: int, specs: list[Any]) -> list[str]:
    from onemember.auth.principal import system_principal
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.points import rules
    from onemember.points import service as points

    engine = make_engine(sa_url(url))
    keys = []
    with transaction(make_sessionmaker(engine)) as session:
        program = points.default_program(session, org_id)
        for spec in specs:
            keys.append(rules.create_rule(session, system_principal(org_id, "bench"), program, spec).rule_key)
    engine.dispose()
    return keys


def end_rules(url: str, org_id: int, keys: list[str]) -> None:
    from onemember.auth.principal import system_principal
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.points import rules
    from onemember.points import service as points

    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as session:
        program = points.default_program(session, org_id)
        for key in keys:
            rules.end_rule(session, system_principal(org_id, "bench"), program, key)
    engine.dispose()


def rules_in_force(url: str, org_id: int) -> list[tuple[str, int | None, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT kind, budget_points, budget_used FROM earn_rules WHERE org_id = %s "
            "AND valid_from <= now() AND (valid_to IS NULL OR valid_to > now()) ORDER BY id",
            (org_id,),
        ).fetchall()


def fired(url: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Which rules the phase's orders were explained by, and the points they earned."""
    import psycopg

    with psycopg.connect(url) as conn:
        orders = conn.execute(
            "SELECT count(*), coalesce(avg(points_earned), 0) FROM orders "
            "WHERE created_at >= %s AND created_at < %s",
            (since, until),
        ).fetchone()
        kinds = conn.execute(
            "SELECT e->>'rule', count(*) FROM orders o, json_array_elements(o.earn_explanation) e "
            "WHERE o.created_at >= %s AND o.created_at < %s GROUP BY 1 ORDER BY 2 DESC",
            (since, until),
        ).fetchall()
    assert orders is not None
    return {"orders": orders[0], "avg_points": float(orders[1]), "rules": dict(kinds)}


class LockSampler:
    """Twice a second: how many sessions of the bench database are running a statement, and how many
    of those wait for a lock (a checkout waiting for another one's row lock, e.g. on a budget)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.5):
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state = 'active'), "
                    "count(*) FILTER (WHERE wait_event_type = 'Lock') "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                assert row is not None
                self.samples.append((int(row[0]), int(row[1])))

    def __enter__(self) -> LockSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def active(self) -> float:
        return sum(a for a, _ in self.samples) / max(1, len(self.samples))

    @property
    def waiting(self) -> float:
        return sum(w for _, w in self.samples) / max(1, len(self.samples))


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=40_000, help="split evenly between the phases")
    parser.add_argument("--points", type=int, default=100_000, help="opening balance of each member")
    parser.add_argument("--concurrency", "-c", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--requests", "-n", type=int, default=3000, help="measured checkouts per phase")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured checkouts first, per phase")
    parser.add_argument("--seconds", type=float, default=90, help="time cap of each measured phase")
    parser.add_argument("--redeem-share", type=float, default=0.3, help="share of checkouts redeeming points")
    parser.add_argument("--keys-per-store", type=int, default=2)
    parser.add_argument("--no-budget-phase", action="store_true", help="skip phase 3")
    parser.add_argument("--no-repeat", action="store_true", help="skip the closing base-rate phase")
    parser.add_argument("--profile", action="store_true", help="an extra py-spy phase per rule set")
    parser.add_argument("--profile-seconds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    started = time.perf_counter()
    quiet_before = machine_note()
    print(f"machine: {quiet_before}")

    url = create_database(DB)
    print(f"database {url}")
    migrate(url)
    chain = make_chain(url, "bench")
    add_api_keys(url, chain, args.keys_per_store)
    t0 = time.perf_counter()
    loaded = load_members(url, chain, args.members, points_each=args.points, progress=lambda _m: None)
    seed_tiers_and_birthdays(url, chain.org_id)
    print(f"seeded {args.members:,} members in {time.perf_counter() - t0:.1f} s")

    now = datetime.now(UTC)
    specs = rule_specs(chain.stores, now)
    create_rules(url, chain.org_id, [specs["base"]])
    phases = ["base rate (1 rule)", "20 rules"]
    phases += [] if args.no_budget_phase else ["20 rules, no budget"]
    phases += [] if args.no_repeat else ["base rate again"]
    pools = [loaded.member_nos[k :: len(phases)] for k in range(len(phases))]
    secrets = [secret for _code, secret in chain.keys]

    results: list[dict[str, Any]] = []
    summaries: list[Summary] = []
    profiles: dict[str, Any] = {}
    print(f"API: {args.workers} worker(s), {args.concurrency} clients, {args.requests} checkouts per phase")
    with Server(url, workers=args.workers) as server:
        assert server.proc is not None
        added: list[str] = []  # rule keys in force besides the base rate
        for index, phase in enumerate(phases):
            if phase == "20 rules":
                added = create_rules(url, chain.org_id, specs["nineteen"])
            elif phase == "20 rules, no budget":
                end_rules(url, chain.org_id, [added.pop(15)])  # the store bonus
                added += create_rules(url, chain.org_id, [specs["replacement"]])
            elif phase == "base rate again":
                end_rules(url, chain.org_id, added)
            in_force = rules_in_force(url, chain.org_id)
            budgets = [r for r in in_force if r[1] is not None]
            print(
                f"\nphase {index + 1}: {phase}: {len(in_force)} rule(s) in force"
                + (f", {len(budgets)} with a budget" if budgets else "")
            )
            rng = random.Random(100 + index)
            pool = pools[index]

            def make_request(_i: int, rng: random.Random = rng, pool: list[str] = pool) -> Any:
                body = basket(rng, rng.choice(pool), rng.random() < args.redeem_share)
                headers = {
                    "Authorization": f"Bearer {rng.choice(secrets)}",
                    "Idempotency-Key": uuid.uuid4().hex,
                    "Content-Type": "application/json",
                }
                return "POST", "/api/v1/orders", headers, json.dumps(body).encode()

            since = datetime.now(UTC)
            with LockSampler(url) as locks, CpuMeter(dbname_of(url), root=server.proc.pid) as cpu:
                run = run_http(
                    server.port,
                    make_request,
                    concurrency=args.concurrency,
                    total=args.requests,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
            until = datetime.now(UTC)
            errors = sum(n for status, n in run.statuses.items() if status != 201)
            for err in run.errors:
                print(f"  API error {err}")
            summary = summarize(phase, run.latencies, run.seconds, errors)
            summaries.append(summary)
            done = args.warmup + summary.count
            facts = fired(url, since, until)
            budgets = [r for r in rules_in_force(url, chain.org_id) if r[1] is not None]
            budget_note = ", ".join(f"budget {used:,}/{total:,} used" for _k, total, used in budgets)
            print(
                f"  {summary.rate:.1f} checkouts/s, p50 {summary.p50_ms:.0f} ms, "
                f"p99 {summary.p99_ms:.0f} ms; avg points earned {facts['avg_points']:.0f}"
                + (f"; {budget_note}" if budget_note else "")
            )
            print(
                "  rules in the explanations: " + ", ".join(f"{k} {v:,}" for k, v in facts["rules"].items())
            )
            results.append(
                {
                    "phase": phase,
                    "rules": len(in_force),
                    "summary": summary.__dict__,
                    "python_ms": 1000 * cpu.app_seconds / done,
                    "postgres_ms": 1000 * cpu.db_seconds / done,
                    "client_cpu": run.client_cpu,
                    "active_sessions": locks.active,
                    "lock_waits": locks.waiting,
                    "fired": facts,
                }
            )
            print(
                f"  PostgreSQL sessions (mean of 2 samples/s): {locks.active:.1f} active, "
                f"{locks.waiting:.1f} of them waiting for a row lock"
            )
            if args.profile and index < 2:
                print(f"  profiling the server for {args.profile_seconds} s (not part of the numbers)")
                out_dir = Path("/tmp/onemember-bench-profile")
                with profiled(server.worker_pids(), args.profile_seconds, out_dir) as paths:
                    run_http(
                        server.port,
                        make_request,
                        concurrency=args.concurrency,
                        total=10**9,
                        seconds=args.profile_seconds,
                        warmup=0,
                    )
                profiles[phase] = summarize_profiles(paths, top=100_000)

    print_table(summaries, "checkouts/s")
    print("\nCPU per checkout (independent of what else runs on the machine):")
    print(f"{'':24} {'Python ms':>10} {'PostgreSQL ms':>14} {'total ms':>9} {'2 cores/total':>14}")
    for r in results:
        total = r["python_ms"] + r["postgres_ms"]
        print(
            f"{r['phase']:24} {r['python_ms']:>10.2f} {r['postgres_ms']:>14.2f} {total:>9.2f} "
            f"{2000 / total:>12.0f}/s"
        )
    bases = [r for r in results if r["phase"].startswith("base rate")]
    base = {
        "rate": sum(r["summary"]["rate"] for r in bases) / len(bases),
        "p99": sum(r["summary"]["p99_ms"] for r in bases) / len(bases),
        "python_ms": sum(r["python_ms"] for r in bases) / len(bases),
        "postgres_ms": sum(r["postgres_ms"] for r in bases) / len(bases),
    }
    base_total = base["python_ms"] + base["postgres_ms"]
    which = "the mean of the two base-rate phases" if len(bases) > 1 else "the base-rate phase"
    print(f"\nagainst {which}:")
    for r in results:
        if r in bases:
            continue
        total = r["python_ms"] + r["postgres_ms"]
        rate = r["summary"]["rate"] / base["rate"] if base["rate"] else float("nan")
        p99 = r["summary"]["p99_ms"] / base["p99"]
        py, pg = r["python_ms"] - base["python_ms"], r["postgres_ms"] - base["postgres_ms"]
        print(
            f"  {r['phase']:22} throughput {rate:.2f}×, p99 {p99:.2f}×, CPU per checkout "
            f"{total / base_total:.2f}× ({total - base_total:+.1f} ms: Python {py:+.1f}, "
            f"PostgreSQL {pg:+.1f})"
        )
    if profiles:
        print("\nServer profile (py-spy --gil): share of the server's Python CPU in the rule code")
        needles = (
            "quote (onemember/orders/checkout.py)",
            "rules_in_force (onemember/points/rules.py)",
            "rows_in_force (onemember/points/rules.py)",
            "compute (onemember/points/earning.py)",
            "spend_budgets (onemember/points/rules.py)",
            "explanation_of (onemember/orders/checkout.py)",
            "_earned_today (onemember/orders/checkout.py)",
        )
        print(f"  {'':48}" + "".join(f"{p[:20]:>22}" for p in profiles))
        for needle in needles:
            shares = [dict(s.get("inclusive", [])).get(needle, 0.0) for s in profiles.values()]
            print(f"  {needle:48}" + "".join(f"{v:>21.1f}%" for v in shares))
    quiet_after = machine_note()
    print(f"\nmachine after the run: {quiet_after}")
    print(f"total run time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(
            args.json,
            {
                "bench": "rules_checkout",
                "date": datetime.now(UTC).isoformat(),
                "members": args.members,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "phases": results,
                "profiles": profiles,
                "machine": [quiet_before, quiet_after],
            },
        )


if __name__ == "__main__":
    main()
