"""The daily points expiry and tier review over 1,000,000 members on PostgreSQL, against hand-written
set-based SQL doing the same updates.

    .venv/bin/python bench/points_jobs.py             # seeds 1,000,000 members (~1 min), then 6-15 min
    .venv/bin/python bench/points_jobs.py --reuse     # keeps the seed of an earlier run of the same size
    .venv/bin/python bench/points_jobs.py --members 100000 --profile

Steps: create the scratch database ``onemember_bench_points_<members>_<basis>`` (the seed), migrate, add
the test factory's chain and a tier set (``tiers.service.create_tier_set``), bulk-load N members with
COPY (point accounts, one or two lots each with the EARN entries that made them, some partly redeemed,
~30 % of the lots due; growth values with their growth entries; monthly spend; tier standings set up
so that members upgrade, keep, enter or stay in a grace period, fall back on a manual floor or move
down), run ``points.verify``, then copy the seed twice (``CREATE DATABASE … TEMPLATE``) and run in one
copy the product, ``jobs.runner.run_daily(factory, now, only=("expire", "tiers"))`` in a child process
(stopped at ``--product-timeout``, its pace so far reported), and in the other two hand-written
set-based statements (expiry, tier review); verify both ledgers, compare their end states and print
times, rows touched, CPU and the ratio product/hand-written.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    ADMIN_URL,
    CpuMeter,
    _backends_of,
    _proc_ticks,
    create_database,
    database_exists,
    database_url,
    dbname_of,
    libpq_url,
    machine_note,
    make_chain,
    migrate,
    py_spy,
    sa_url,
    summarize_profiles,
    write_json,
)

SEED_DB = "onemember_bench_points_{members}_{basis}"  # one seed per size and basis, kept for --reuse
TZ = "Asia/Shanghai"
GRACE_DAYS = 30
# (code, name, threshold, keep_threshold) in fen of rolling-12-month spend; growth value is spend / 100
# (one growth point per yuan), so the growth-based set uses the same numbers divided by 100.
LEVELS = (
    ("normal", "普通会员", 0, 0),
    ("silver", "银卡", 100_000, 60_000),
    ("gold", "金卡", 500_000, 300_000),
    ("platinum", "白金卡", 2_000_000, 1_200_000),
)
LEVEL_SHARES = (0.55, 0.25, 0.13, 0.07)
DUE_SHARE = 0.30  # share of lots whose expiry has come
REDEEM_SHARE = 0.20  # accounts that spent part of their first lot


# --- seeding ----------------------------------------------------------------------------------------


def create_tier_set(url: str, org_id: int, basis: str) -> tuple[int, list[int]]:
    from onemember.auth.principal import system_principal
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.points import service as points
    from onemember.tiers import service as tiers

    scale = 100 if basis == "growth" else 1
    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as session:
        program = points.default_program(session, org_id)
        tier_set = tiers.create_tier_set(
            session,
            system_principal(org_id, "bench"),
            program,
            "bench",
            "基准等级",
            basis,
            GRACE_DAYS,
            [tiers.LevelSpec(code, name, thr // scale, keep // scale) for code, name, thr, keep in LEVELS],
        )
        level_ids = [lv.id for lv in tiers.level_rows(session, tier_set.id)]
        tier_set_id = tier_set.id
    engine.dispose()
    return tier_set_id, level_ids


def _reserve_ids(conn: Any, table: str, n: int) -> int:
    seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()[0]
    first = int(conn.execute(f"SELECT nextval('{seq}')").fetchone()[0])
    conn.execute("SELECT setval(%s, %s)", (seq, first + n))
    return first


COPY_TARGETS = {
    "members": "members (id, org_id, member_no, name, gender, birthday, channel, registered_store_id, "
    "status, created_at, updated_at)",
    "point_accounts": "point_accounts (id, org_id, member_id, program_id, balance, debt, lifetime_earned, "
    "lifetime_redeemed, growth_value, updated_at)",
    "point_entries": "point_entries (id, org_id, account_id, member_id, kind, amount, debt_change, "
    "balance_after, debt_after, store_id, reason, actor, created_at)",
    "point_lots": "point_lots (id, org_id, account_id, member_id, entry_id, amount, remaining, store_id, "
    "earned_at, available_at, expires_at)",
    "point_lot_movements": "point_lot_movements (id, org_id, lot_id, entry_id, amount, created_at)",
    "growth_entries": "growth_entries (id, org_id, account_id, member_id, kind, amount, created_at)",
    "member_monthly_stats": "member_monthly_stats (member_id, month, org_id, orders, spend_fen)",
    "member_tiers": "member_tiers (member_id, tier_set_id, org_id, level_id, since, grace_until, "
    "floor_level_id, floor_until, reviewed_at)",
}


def seed(url: str, count: int, basis: str, now: datetime, *, batch: int = 20_000) -> dict[str, Any]:
    """Chain, tier set and ``count`` members with their ledger, growth, monthly spend and tier standing,
    bulk-loaded with COPY (triggers off for the session: the rows are consistent by construction)."""
    import psycopg

    from onemember.common.counters import member_no_for
    from onemember.tiers.service import _months_back, month_key

    chain = make_chain(url, "bench")
    tier_set_id, level_ids = create_tier_set(url, chain.org_id, basis)
    stores = sorted(chain.stores.values())
    this_month = month_key(now, TZ)
    window = [_months_back(this_month, k) for k in range(12)]  # the 12 months the review sums
    older = [_months_back(this_month, k) for k in range(12, 24)]
    rng = random.Random(20261123)
    thresholds = [thr for _c, _n, thr, _k in LEVELS]
    keeps = [keep for _c, _n, _t, keep in LEVELS]
    plan: Tally[str] = Tally()
    rows_written: Tally[str] = Tally()
    started = time.perf_counter()
    org, program = chain.org_id, chain.program_id

    def basis_for(level: int) -> tuple[int, str, datetime | None, int | None, datetime | None]:
        """(12-month spend, expected review outcome, grace_until, floor level index, floor_until)."""
        roll = rng.random()
        top = len(LEVELS) - 1
        if level < top and roll < 0.08:
            hi = thresholds[level + 2] if level + 2 <= top else thresholds[top] * 2
            return rng.randrange(thresholds[level + 1], hi), "upgrade", None, None, None
        if level == 0 or roll < 0.70:
            hi = thresholds[level + 1] if level < top else thresholds[top] * 2
            grace = now + timedelta(days=rng.randrange(1, GRACE_DAYS)) if rng.random() < 0.05 else None
            return rng.randrange(keeps[level], hi), "keep", grace, None, None  # a grace period ends, too
        low = rng.randrange(0, keeps[level])
        past = now - timedelta(days=rng.randrange(1, 60))
        if roll < 0.82:
            return low, "grace (starts)", None, None, None
        if roll < 0.90:
            return low, "grace (continues)", now + timedelta(days=rng.randrange(1, GRACE_DAYS)), None, None
        if roll < 0.97:
            return low, "downgrade", past, None, None
        if roll < 0.98:  # a manual floor one level down: the member moves down, but not below it
            return low, "downgrade (to a floor)", past, level - 1, now + timedelta(days=90)
        if roll < 0.99:  # a manual floor that has run out no longer counts
            return low, "downgrade (floor expired)", past, level, now - timedelta(days=1)
        return low, "floor", None, level, now + timedelta(days=90)

    with psycopg.connect(url) as conn:
        seq0 = int(
            (
                conn.execute(
                    "SELECT value FROM counters WHERE org_id = %s AND name = 'member_no'", (org,)
                ).fetchone()
                or (0,)
            )[0]
        )
        m0 = _reserve_ids(conn, "members", count)
        a0 = _reserve_ids(conn, "point_accounts", count)
        e_next = _reserve_ids(conn, "point_entries", 3 * count)
        l_next = _reserve_ids(conn, "point_lots", 2 * count)
        mv_next = _reserve_ids(conn, "point_lot_movements", count)
        g_next = _reserve_ids(conn, "growth_entries", count)
        conn.execute("SET session_replication_role = replica")
        batches: queue.Queue[dict[str, list[tuple[Any, ...]]] | None] = queue.Queue(maxsize=2)
        failed: list[BaseException] = []

        def write() -> None:
            while (item := batches.get()) is not None:
                if failed:
                    continue
                try:
                    with conn.cursor() as cur:
                        for table, rows in item.items():
                            with cur.copy(f"COPY {COPY_TARGETS[table]} FROM STDIN") as copy:
                                for row in rows:
                                    copy.write_row(row)
                            rows_written[table] += len(rows)
                except BaseException as exc:
                    failed.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        done = 0
        while done < count:
            n = min(batch, count - done)
            out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COPY_TARGETS}
            for k in range(done, done + n):
                member_id, account_id = m0 + k, a0 + k
                store = stores[k % len(stores)]
                created = now - timedelta(days=400 + k % 700, seconds=k % 86400)
                out["members"].append(
                    (
                        member_id,
                        org,
                        member_no_for(seq0 + k + 1),
                        f"会员{k}",
                        "unknown",
                        None,
                        "pos",
                        store,
                        "active",
                        created,
                        created,
                    )
                )
                # the ledger: one or two earned lots, sometimes part of the first one spent
                balance = earned = redeemed = 0
                lots = []
                for j in range(1 + (rng.random() < 0.5)):
                    amount = rng.randrange(100, 5001)
                    if rng.random() < DUE_SHARE:
                        expires: datetime | None = now - timedelta(seconds=rng.randrange(1, 86_400))
                        plan["lots due"] += 1
                    elif rng.random() < 0.9:
                        expires = now + timedelta(days=rng.randrange(1, 540))
                    else:
                        expires = None  # never expires
                    at = now - timedelta(days=rng.randrange(30, 365), seconds=j)
                    balance += amount
                    earned += amount
                    entry_id, e_next = e_next, e_next + 1
                    out["point_entries"].append(
                        (
                            entry_id,
                            org,
                            account_id,
                            member_id,
                            "earn",
                            amount,
                            0,
                            balance,
                            0,
                            store,
                            "消费得积分",
                            "system:bench",
                            at,
                        )
                    )
                    lots.append([l_next, entry_id, amount, amount, at, expires])
                    l_next += 1
                if rng.random() < REDEEM_SHARE:
                    spent = rng.randrange(1, lots[0][2])
                    lots[0][3] -= spent
                    balance -= spent
                    redeemed = spent
                    entry_id, e_next = e_next, e_next + 1
                    at = now - timedelta(days=rng.randrange(1, 29))
                    out["point_entries"].append(
                        (
                            entry_id,
                            org,
                            account_id,
                            member_id,
                            "redeem",
                            -spent,
                            0,
                            balance,
                            0,
                            store,
                            "积分抵扣",
                            "system:bench",
                            at,
                        )
                    )
                    out["point_lot_movements"].append((mv_next, org, lots[0][0], entry_id, -spent, at))
                    mv_next += 1
                for lot_id, entry_id, amount, remaining, at, expires in lots:
                    out["point_lots"].append(
                        (
                            lot_id,
                            org,
                            account_id,
                            member_id,
                            entry_id,
                            amount,
                            remaining,
                            store,
                            at,
                            at,
                            expires,
                        )
                    )
                # tier standing and the basis the review will read
                level = rng.choices(range(len(LEVELS)), LEVEL_SHARES)[0]
                spend, outcome, grace, floor, floor_until = basis_for(level)
                plan[outcome] += 1
                growth = spend // 100
                out["point_accounts"].append(
                    (account_id, org, member_id, program, balance, 0, earned, redeemed, growth, created)
                )
                if growth:
                    out["growth_entries"].append(
                        (g_next, org, account_id, member_id, "order", growth, created)
                    )
                    g_next += 1
                months = rng.sample(window, rng.randint(1, 3)) if spend else []
                cuts = sorted(rng.randrange(0, spend + 1) for _ in range(len(months) - 1))
                bounds = [0, *cuts, spend] if months else [0]
                for month, lo, hi in zip(months, bounds[:-1], bounds[1:], strict=True):
                    out["member_monthly_stats"].append(
                        (member_id, month, org, 1 + (hi - lo) // 20_000, hi - lo)
                    )
                if rng.random() < 0.3:  # spend outside the 12-month window the review must not count
                    out["member_monthly_stats"].append(
                        (member_id, rng.choice(older), org, 2, rng.randrange(1_000, 3_000_000))
                    )
                out["member_tiers"].append(
                    (
                        member_id,
                        tier_set_id,
                        org,
                        level_ids[level],
                        created,
                        grace,
                        level_ids[floor] if floor is not None else None,
                        floor_until,
                        now - timedelta(days=1),
                    )
                )
            batches.put(out)
            done += n
            if done % 200_000 == 0 or done == count:
                print(
                    f"  built {done:,} / {count:,} members ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        batches.put(None)
        writer.join()
        if failed:
            raise failed[0]
        conn.execute(
            "INSERT INTO counters (org_id, name, value) VALUES (%s, 'member_no', %s) "
            "ON CONFLICT (org_id, name) DO UPDATE SET value = EXCLUDED.value",
            (org, seq0 + count),
        )
        conn.execute(
            "CREATE TABLE bench_points_meta (now timestamptz, members int, basis text, org_id bigint, "
            "program_id bigint, tier_set_id bigint, seed_seconds float8, plan jsonb, rows jsonb)"
        )
        load_s = time.perf_counter() - started
        conn.execute(
            "INSERT INTO bench_points_meta VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                now,
                count,
                basis,
                org,
                program,
                tier_set_id,
                load_s,
                json.dumps(plan),
                json.dumps(rows_written),
            ),
        )
        conn.commit()
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")  # hint bits, visibility map, statistics: neither run pays for them
    vacuum_s = time.perf_counter() - t0
    return {
        "load_seconds": load_s,
        "vacuum_seconds": vacuum_s,
        "plan": dict(plan),
        "rows": dict(rows_written),
    }


def read_meta(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT now, members, basis, org_id, program_id, tier_set_id, seed_seconds, plan, rows "
            "FROM bench_points_meta"
        ).fetchone()
    assert row is not None
    keys = ("now", "members", "basis", "org_id", "program_id", "tier_set_id", "seed_seconds", "plan", "rows")
    return dict(zip(keys, row, strict=True))


def copy_database(template: str, name: str) -> float:
    """A fresh copy of the seed: FILE_COPY (a checkpoint and a file copy) instead of PostgreSQL 15's
    default WAL_LOG, which would write the whole database to the WAL."""
    import psycopg
    from psycopg import sql

    t0 = time.perf_counter()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return time.perf_counter() - t0


def drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def checkpoint() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run_verify(url: str, org_id: int) -> dict[str, Any]:
    from onemember.db import make_engine, make_sessionmaker
    from onemember.points.verify import verify

    engine = make_engine(sa_url(url))
    t0 = time.perf_counter()
    with make_sessionmaker(engine)() as session:
        report = verify(session, org_id)
    engine.dispose()
    return {
        "ok": report.ok,
        "accounts": report.accounts,
        "entries": report.entries,
        "lots": report.lots,
        "problems": report.problems[:5],
        "seconds": time.perf_counter() - t0,
    }


def print_verify(label: str, v: dict[str, Any]) -> None:
    state = "OK" if v["ok"] else f"FAILED ({len(v['problems'])}+ problems: {v['problems'][:3]})"
    print(
        f"  verify {label}: {state} — {v['accounts']:,} accounts, {v['entries']:,} entries, "
        f"{v['lots']:,} lots ({v['seconds']:.0f} s)"
    )


# --- the product, in a child process ----------------------------------------------------------------


def db_cpu(dbname: str) -> float:
    """CPU seconds the PostgreSQL backends connected to ``dbname`` have used so far."""
    ticks = _proc_ticks()
    return sum(ticks.get(pid, 0) for pid in _backends_of(dbname)) / os.sysconf("SC_CLK_TCK")


def product_child(url: str, now: datetime, org_id: int, out: Path) -> None:
    """Runs ``run_daily(only=("expire", "tiers"))`` and writes the timings, the statements sent and the
    CPU this process used to ``out``; while it runs, ``out`` holds the progress so far (for a run the
    parent stops at its time cap)."""
    from sqlalchemy import event

    from onemember.db import make_engine, make_sessionmaker
    from onemember.jobs.runner import run_daily

    engine = make_engine(sa_url(url))
    factory = make_sessionmaker(engine)
    statements: dict[str, Tally[str]] = {}
    current = ["setup"]
    marks: list[tuple[str, float, float, float]] = []
    dbname = dbname_of(url)
    state: dict[str, Any] = {"finished": False, "tier_batches": 0}

    def dump(**extra: Any) -> None:
        state.update(extra)
        state["statements"] = {k: dict(v) for k, v in statements.items()}
        state["marks"] = [(job, at - t0, cpu - c0) for job, at, cpu, _db in marks]
        state["elapsed"], state["elapsed_cpu"] = time.perf_counter() - t0, time.process_time() - c0
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, default=str))
        tmp.replace(out)

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, executemany: bool) -> None:
        tally = statements.setdefault(current[0], Tally())
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        tally[verb] += 1
        # executemany: one parameter set per row; a multi-row INSERT … VALUES (SQLAlchemy's
        # "insertmanyvalues", its RETURNING batches) arrives as one flat parameter set
        many = executemany and isinstance(params, list | tuple) and params
        many = many and isinstance(params[0], tuple | list | dict)
        tally[f"{verb} rows"] += len(params) if many else 1
        if (
            current[0] == "tiers"
            and statement.startswith("SELECT member_tiers.")
            and "FOR UPDATE" in statement
        ):
            state["tier_batches"] += 1  # review_all's next batch of 5,000 standings
            dump()

    def progress(_org: str, job: str) -> None:
        current[0] = job
        marks.append((job, time.perf_counter(), time.process_time(), db_cpu(dbname)))
        dump()

    with engine.connect() as conn:  # the pool's first connection, outside the timing
        conn.exec_driver_sql("SELECT 1")
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_daily(factory, now, only=("expire", "tiers"), org_ids=[org_id], progress=progress)
    t1, c1, d1 = time.perf_counter(), time.process_time(), db_cpu(dbname)
    engine.dispose()
    jobs = {}
    ends = [*marks[1:], ("end", t1, c1, d1)]
    for (job, start, cpu, db), (_next, end, cpu_end, db_end) in zip(marks, ends, strict=True):
        jobs[job] = {"seconds": end - start, "python_cpu": cpu_end - cpu, "db_cpu": db_end - db}
    dump(
        finished=True,
        seconds=t1 - t0,
        python_cpu=c1 - c0,
        jobs=jobs,
        result=result,
        max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def run_product(
    url: str, now: datetime, org_id: int, members: int, timeout: float, profile: bool
) -> dict[str, Any]:
    out = Path(f"/tmp/onemember-bench-points-product-{os.getpid()}.json")
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-product",
        "--database-url",
        url,
        "--now",
        now.isoformat(),
        "--org-id",
        str(org_id),
        "--child-out",
        str(out),
    ]
    profile_path = Path(f"/tmp/onemember-bench-profile/points-product-{os.getpid()}.collapsed")
    spy: subprocess.Popen[bytes] | None = None
    child = subprocess.Popen(cmd)
    with CpuMeter(dbname_of(url), root=child.pid) as cpu:
        if profile:
            exe = py_spy()
            if exe is None:
                print("  (py-spy not found: pip install py-spy into the venv to profile)")
            else:
                profile_path.parent.mkdir(parents=True, exist_ok=True)
                # --gil: samples of the thread holding the GIL, i.e. where the job's Python CPU goes
                # (psycopg releases the GIL while it waits for PostgreSQL); 20 Hz, non-blocking: the
                # child is not stopped to be sampled.
                spy = subprocess.Popen(
                    [
                        *(exe, "record", "--pid", str(child.pid), "--rate", "20", "--nonblocking", "--gil"),
                        *("--format", "raw", "--output", str(profile_path)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()  # its open transaction rolls back with the connection
            child.wait()
        if spy is not None:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait(timeout=10)
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"finished": False}
    out.unlink(missing_ok=True)
    data["db_cpu"] = cpu.db_seconds
    if spy is not None:
        data["profile"] = summarize_profiles([profile_path], top=30)
    if data["finished"]:
        # the child's own readings, taken at the job boundaries, are more exact than the 2 Hz meter
        data["db_cpu"] = sum(j["db_cpu"] for j in data["jobs"].values())
        return data
    if child.returncode not in (0, -9):
        raise SystemExit(f"the product run failed (exit {child.returncode})")
    # Stopped at the cap: what it did until then, and the tier review's pace so far.
    data["timed_out"] = True
    data["seconds"] = data.get("elapsed", timeout)
    data["python_cpu"] = cpu.app_seconds  # the whole child, start-up included
    marks = {job: at for job, at, _cpu in data.get("marks", [])}
    if "tiers" in marks:
        data["jobs"] = {"expire": {"seconds": marks["tiers"] - marks.get("expire", 0.0)}}
        reviewed = max(0, data["tier_batches"] - 1) * 5000
        spent = data["seconds"] - marks["tiers"]
        data["tiers_reviewed"] = reviewed
        if reviewed:
            data["tiers_projected"] = spent * members / reviewed
    return data


# --- hand-written set-based SQL ---------------------------------------------------------------------

EXPIRE_SQL = """
WITH due AS MATERIALIZED (
    SELECT l.id, l.org_id, l.account_id, l.remaining
    FROM point_lots l
    WHERE l.org_id = %(org)s AND l.remaining > 0 AND l.expires_at <= %(now)s
    FOR UPDATE
), sums AS (
    SELECT account_id, sum(remaining) AS pts FROM due GROUP BY account_id
), acc AS (
    UPDATE point_accounts a SET balance = a.balance - s.pts, updated_at = %(now)s
    FROM sums s WHERE a.id = s.account_id
    RETURNING a.id, a.org_id, a.member_id, a.balance, a.debt, s.pts
), ent AS (
    INSERT INTO point_entries (org_id, account_id, member_id, kind, amount, debt_change, balance_after,
                               debt_after, reason, actor, created_at)
    SELECT org_id, id, member_id, 'expire', -pts, 0, balance, debt, %(reason)s, 'system', %(now)s FROM acc
    RETURNING id, account_id, amount
), mv AS (
    INSERT INTO point_lot_movements (org_id, lot_id, entry_id, amount, created_at)
    SELECT d.org_id, d.id, e.id, -d.remaining, %(now)s FROM due d JOIN ent e ON e.account_id = d.account_id
    RETURNING 1
), upd AS (
    UPDATE point_lots l SET remaining = 0 FROM due d WHERE l.id = d.id RETURNING 1
)
SELECT (SELECT count(*) FROM ent), (SELECT coalesce(-sum(amount), 0) FROM ent),
       (SELECT count(*) FROM mv), (SELECT count(*) FROM upd)
"""

BASIS_SQL = {
    "spend_12m": "SELECT member_id, sum(spend_fen) AS b FROM member_monthly_stats "
    "WHERE org_id = %(org)s AND month >= %(first_month)s GROUP BY member_id",
    "orders_12m": "SELECT member_id, sum(orders) AS b FROM member_monthly_stats "
    "WHERE org_id = %(org)s AND month >= %(first_month)s GROUP BY member_id",
    "growth": "SELECT member_id, growth_value AS b FROM point_accounts WHERE program_id = %(program)s",
}

# tiers.calculations.reevaluate, row by row in order:
#   upgrade   the basis reaches a higher level's threshold           → that level, no grace
#   keep      the basis is at least the level's keep threshold        → no grace
#   floor     a manual floor (still valid) at or above the level      → no grace
#   grace     no grace period yet (grace_days > 0): start one; or one still running: keep it
#   otherwise the best lower level the basis keeps (else the entry level), raised to a valid floor:
#             "downgrade", or "keep" if that is the current level
# reviewed_at becomes now except on upgrades; since becomes now when the level changes.
TIERS_SQL = """
WITH lv AS MATERIALIZED (
    SELECT id, code, rank, threshold, keep_threshold FROM tier_levels WHERE tier_set_id = %(tier_set)s
), entry AS (
    SELECT id, rank FROM lv ORDER BY rank LIMIT 1
), basis AS (
    {basis}
), cur AS (
    SELECT t.member_id, t.level_id, t.grace_until, t.since, t.reviewed_at, t.floor_level_id,
           coalesce(b.b, 0) AS b, c.rank AS c_rank, c.keep_threshold AS c_keep,
           CASE WHEN t.floor_level_id IS NOT NULL AND (t.floor_until IS NULL OR t.floor_until >= %(now)s)
                THEN f.rank END AS f_rank
    FROM member_tiers t
    JOIN lv c ON c.id = t.level_id
    LEFT JOIN lv f ON f.id = t.floor_level_id
    LEFT JOIN basis b ON b.member_id = t.member_id
    WHERE t.tier_set_id = %(tier_set)s
    FOR UPDATE OF t
), steps AS (
    SELECT cur.*, up.id AS up_id, up.rank AS up_rank,
           CASE WHEN cur.f_rank IS NOT NULL AND cur.f_rank > coalesce(kept.rank, entry.rank)
                THEN cur.floor_level_id ELSE coalesce(kept.id, entry.id) END AS down_id
    FROM cur
    CROSS JOIN entry
    CROSS JOIN LATERAL (
        SELECT id, rank FROM lv WHERE lv.threshold <= cur.b ORDER BY rank DESC LIMIT 1
    ) up
    LEFT JOIN LATERAL (
        SELECT id, rank FROM lv WHERE lv.rank < cur.c_rank AND cur.b >= lv.keep_threshold
        ORDER BY rank DESC LIMIT 1
    ) kept ON true
), decided AS (
    SELECT s.*,
           CASE WHEN s.up_rank > s.c_rank THEN 'upgrade'
                WHEN s.b >= s.c_keep THEN 'keep'
                WHEN s.f_rank IS NOT NULL AND s.f_rank >= s.c_rank THEN 'floor'
                WHEN s.grace_until IS NULL AND %(grace_days)s > 0 THEN 'grace'
                WHEN s.grace_until IS NOT NULL AND s.grace_until > %(now)s THEN 'grace'
                WHEN s.down_id = s.level_id THEN 'keep'
                ELSE 'downgrade' END AS reason
    FROM steps s
), dec AS MATERIALIZED (
    SELECT d.member_id, d.level_id, d.reason, d.since, d.reviewed_at, d.grace_until,
           CASE d.reason WHEN 'upgrade' THEN d.up_id WHEN 'downgrade' THEN d.down_id ELSE d.level_id END
               AS new_level,
           CASE WHEN d.reason = 'grace' THEN coalesce(d.grace_until, %(grace_until)s) END AS new_grace,
           CASE WHEN d.reason = 'upgrade' THEN d.reviewed_at ELSE %(now)s END AS new_reviewed
    FROM decided d
), upd AS (
    UPDATE member_tiers t
    SET level_id = d.new_level, grace_until = d.new_grace, reviewed_at = d.new_reviewed,
        since = CASE WHEN d.new_level <> d.level_id THEN %(now)s ELSE t.since END
    FROM dec d
    WHERE t.member_id = d.member_id AND t.tier_set_id = %(tier_set)s
      AND (d.new_level, d.new_grace, d.new_reviewed)
          IS DISTINCT FROM (d.level_id, d.grace_until, d.reviewed_at)
    RETURNING 1
), chg AS (
    INSERT INTO tier_changes (org_id, member_id, tier_set_id, from_level_id, to_level_id, reason, actor, at)
    SELECT %(org)s, d.member_id, %(tier_set)s, d.level_id, d.new_level, d.reason, 'system', %(now)s
    FROM dec d WHERE d.new_level <> d.level_id
    RETURNING 1
), ev AS (
    INSERT INTO events (event_id, org_id, type, member_id, store_ids, payload, created_at)
    SELECT gen_random_uuid()::text, %(org)s, 'tier.changed', d.member_id, '[]'::json,
           json_build_object('member_no', m.member_no, 'from', o.code, 'to', n.code, 'reason', d.reason),
           clock_timestamp()
    FROM dec d
    JOIN members m ON m.id = d.member_id
    JOIN lv o ON o.id = d.level_id
    JOIN lv n ON n.id = d.new_level
    WHERE d.new_level <> d.level_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM chg), (SELECT count(*) FROM ev),
       (SELECT json_object_agg(reason, n) FROM (SELECT reason, count(*) AS n FROM dec GROUP BY reason) r)
"""


def run_sql(url: str, meta: dict[str, Any], timeout: float) -> dict[str, Any]:
    import psycopg

    from onemember.points.jobs import REASON
    from onemember.tiers.service import _months_back, month_key

    now: datetime = meta["now"]
    params = {
        "org": meta["org_id"],
        "program": meta["program_id"],
        "tier_set": meta["tier_set_id"],
        "now": now,
        "reason": REASON,
        "grace_days": GRACE_DAYS,
        "grace_until": now + timedelta(days=GRACE_DAYS),
        "first_month": _months_back(month_key(now, TZ), 11),
    }
    out: dict[str, Any] = {"jobs": {}}
    dbname = dbname_of(url)
    with psycopg.connect(url) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        conn.commit()
        c0, t0, d0 = time.process_time(), time.perf_counter(), db_cpu(dbname)
        accounts, pts, movements, lots = conn.execute(EXPIRE_SQL, params).fetchone()
        conn.commit()
        t1, d1 = time.perf_counter(), db_cpu(dbname)
        basis = BASIS_SQL[meta["basis"]]
        updated, changes, events, reasons = conn.execute(TIERS_SQL.format(basis=basis), params).fetchone()
        conn.commit()
        t2, d2 = time.perf_counter(), db_cpu(dbname)
        c1 = time.process_time()
    out["jobs"]["expire"] = {"seconds": t1 - t0, "db_cpu": d1 - d0}
    out["jobs"]["tiers"] = {"seconds": t2 - t1, "db_cpu": d2 - d1}
    out["seconds"] = t2 - t0
    out["python_cpu"] = c1 - c0
    out["db_cpu"] = d2 - d0
    out["result"] = {
        "expire": {"accounts": accounts, "points": int(pts), "movements": movements, "lots": lots},
        "tiers": {"rows_updated": updated, "tier_changes": changes, "events": events, **(reasons or {})},
    }
    return out


# --- end state --------------------------------------------------------------------------------------

# Order-independent digests of everything the two jobs write. Ids of new rows (entries, movements,
# tier changes, events) depend on insertion order and are left out; what they point at is kept.
DIGESTS = {
    "point_accounts": "SELECT count(*), sum(balance), sum(hashtextextended("
    "id || ':' || balance || ':' || debt || ':' || updated_at, 0)) FROM point_accounts",
    "point_lots": "SELECT count(*), sum(remaining), sum(hashtextextended("
    "id || ':' || remaining, 0)) FROM point_lots",
    "point_entries": "SELECT count(*), sum(amount), sum(hashtextextended("
    "account_id || ':' || kind || ':' || amount || ':' || balance_after || ':' || debt_after "
    "|| ':' || reason || ':' || created_at, 0)) FROM point_entries",
    "point_entries expire": "SELECT count(*), sum(amount), 0 FROM point_entries WHERE kind = 'expire'",
    "point_lot_movements": "SELECT count(*), sum(m.amount), sum(hashtextextended("
    "m.lot_id || ':' || m.amount || ':' || e.account_id || ':' || e.kind || ':' || m.created_at, 0)) "
    "FROM point_lot_movements m JOIN point_entries e ON e.id = m.entry_id",
    "member_tiers": "SELECT count(*), count(grace_until), sum(hashtextextended("
    "member_id || ':' || level_id || ':' || coalesce(grace_until::text, '-') "
    "|| ':' || coalesce(reviewed_at::text, '-') || ':' || since, 0)) FROM member_tiers",
    "tier_changes": "SELECT count(*), count(DISTINCT member_id), sum(hashtextextended("
    "member_id || ':' || from_level_id || ':' || to_level_id || ':' || reason || ':' || actor "
    "|| ':' || at, 0)) FROM tier_changes",
    "events": "SELECT count(*), count(DISTINCT event_id), sum(hashtextextended("
    "type || ':' || member_id || ':' || payload::jsonb::text || ':' || store_ids::jsonb::text, 0)) "
    "FROM events",
}


def end_state(url: str, meta: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    now = meta["now"]
    state: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name, query in DIGESTS.items():
            row = conn.execute(query).fetchone()
            state[name] = [int(x) if x is not None else None for x in row]
        state["levels"] = dict(
            conn.execute(
                "SELECT l.code, count(*) FROM member_tiers t JOIN tier_levels l ON l.id = t.level_id "
                "GROUP BY l.code, l.rank ORDER BY l.rank"
            ).fetchall()
        )
        state["touched"] = dict(
            zip(
                (
                    "accounts lowered",
                    "lots expired",
                    "EXPIRE entries",
                    "lot movements",
                    "member_tiers written",
                    "tier_changes",
                    "events",
                ),
                conn.execute(
                    "SELECT (SELECT count(*) FROM point_accounts WHERE updated_at = %(now)s), "
                    "(SELECT count(*) FROM point_lots WHERE remaining = 0), "
                    "(SELECT count(*) FROM point_entries WHERE kind = 'expire' AND created_at = %(now)s), "
                    "(SELECT count(*) FROM point_lot_movements WHERE created_at = %(now)s), "
                    "(SELECT count(*) FROM member_tiers WHERE reviewed_at = %(now)s OR since = %(now)s), "
                    "(SELECT count(*) FROM tier_changes), (SELECT count(*) FROM events)",
                    {"now": now},
                ).fetchone(),
                strict=True,
            )
        )
    return state


# --- output -----------------------------------------------------------------------------------------


def _digest(values: list[int | None]) -> str:
    count, total, digest = values
    return f"{count:,} / {total or 0:,} / #{(digest or 0) % 16**8:08x}"


def print_profile(summary: dict[str, Any]) -> None:
    if not summary.get("samples"):
        print("  (no profile samples)")
        return
    print(
        f"\nProduct profile: {summary['samples']} samples of the job process holding the GIL (py-spy --gil,"
        " 20 Hz): where its Python CPU goes"
    )
    print(
        "  by library (the innermost frame that belongs to one; psycopg: the driver's own work, not waits):"
    )
    for name, share in summary["buckets"]:
        print(f"    {share:5.1f}%  {name}")
    print("  inclusive time (a function and everything it calls):")
    for name, share in summary["inclusive"][:30]:
        print(f"    {share:5.1f}%  {name}")
    print("  self time:")
    for name, share in summary["self"][:15]:
        print(f"    {share:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--basis", choices=("spend_12m", "growth"), default="spend_12m", help="tier basis")
    parser.add_argument("--reuse", action="store_true", help="keep the seed database of an earlier run")
    parser.add_argument("--product-timeout", type=float, default=600, help="cap of the product run (s)")
    parser.add_argument("--sql-timeout", type=float, default=300, help="statement cap of the SQL run (s)")
    parser.add_argument("--profile", action="store_true", help="py-spy --gil on the product run (20 Hz)")
    parser.add_argument("--keep-copies", action="store_true", help="keep the two working copies")
    parser.add_argument("--json", type=Path, help="write the results here")
    # internal: the product run in a child process
    parser.add_argument("--child-product", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    parser.add_argument("--org-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_product:
        product_child(
            libpq_url(args.database_url), datetime.fromisoformat(args.now), args.org_id, args.child_out
        )
        return

    started = time.perf_counter()
    quiet_before = machine_note()
    print(f"machine: {quiet_before}")
    seed_db = SEED_DB.format(members=args.members, basis=args.basis)
    seed_url = database_url(seed_db)
    seed_info: dict[str, Any] = {}
    meta: dict[str, Any] | None = None
    if args.reuse and database_exists(seed_db):
        meta = read_meta(seed_url)
    if meta is None:
        create_database(seed_db)
        migrate(seed_url)
        now = datetime.now(UTC).replace(microsecond=0)
        print(f"seeding {args.members:,} members (basis {args.basis}) into {seed_db}")
        seed_info = seed(seed_url, args.members, args.basis, now)
        meta = read_meta(seed_url)
        print(
            f"seeded in {seed_info['load_seconds']:.0f} s (COPY) + {seed_info['vacuum_seconds']:.0f} s "
            f"(VACUUM ANALYZE); rows: " + ", ".join(f"{k} {v:,}" for k, v in seed_info["rows"].items())
        )
    else:
        print(f"reusing {seed_db}: {meta['members']:,} members seeded in {meta['seed_seconds']:.0f} s")
    now = meta["now"]
    plan = meta["plan"]
    print(
        "  planned outcomes: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(plan.items()) if k != "lots due")
        + f"; lots due {plan['lots due']:,} of {meta['rows']['point_lots']:,}"
    )
    verify_before = run_verify(seed_url, meta["org_id"])
    print_verify("before", verify_before)

    product_db, sql_db = f"{seed_db}_product", f"{seed_db}_sql"  # the working copies
    copies = {name: copy_database(seed_db, name) for name in (product_db, sql_db)}
    print("copies: " + ", ".join(f"{name} {s:.0f} s" for name, s in copies.items()))

    checkpoint()
    print(f"\nproduct: run_daily(only=('expire', 'tiers')) on {product_db}, now = {now.isoformat()}")
    product = run_product(
        database_url(product_db), now, meta["org_id"], meta["members"], args.product_timeout, args.profile
    )
    if product.get("timed_out"):
        print(f"  not done within {args.product_timeout:.0f} s: stopped (its open transaction rolled back)")
        if "expire" in product.get("jobs", {}):
            print(f"  expire  {product['jobs']['expire']['seconds']:7.1f} s (committed)")
        if "tiers_reviewed" in product:
            projected = product.get("tiers_projected")
            print(
                f"  tiers   {product['tiers_reviewed']:,} standings reviewed (not committed) in "
                f"{product['seconds'] - product['jobs']['expire']['seconds']:.0f} s"
                + (f"; at that pace all {meta['members']:,} take ~{projected:.0f} s" if projected else "")
            )
        print(
            f"  CPU until stopped: Python {product['python_cpu']:.0f} s, PostgreSQL {product['db_cpu']:.0f} s"
        )
    else:
        for job, j in product["jobs"].items():
            print(f"  {job:7} {j['seconds']:7.1f} s  {product['result'].get('bench:' + job)}")
        print(f"  total   {product['seconds']:7.1f} s, peak RSS {product['max_rss_mb']:.0f} MB")

    checkpoint()
    print(f"\nhand-written SQL: one statement for the expiry, one for the tier review, on {sql_db}")
    sql = run_sql(database_url(sql_db), meta, args.sql_timeout)
    for job, j in sql["jobs"].items():
        print(f"  {job:7} {j['seconds']:7.1f} s  {sql['result'][job]}")
    print(f"  total   {sql['seconds']:7.1f} s")

    print("\nverify after:")
    verify_after = {}
    states = {}
    for label, name in (("product", product_db), ("hand-written", sql_db)):
        if label == "product" and product.get("timed_out"):
            continue
        verify_after[label] = run_verify(database_url(name), meta["org_id"])
        print_verify(label, verify_after[label])
        states[label] = end_state(database_url(name), meta)

    same = None
    if len(states) == 2:
        p, s = states["product"], states["hand-written"]
        print(f"\nend state (rows / sum / digest){'':1} {'product':>34} {'hand-written':>34}")
        for key in DIGESTS:
            mark = "" if p[key] == s[key] else "   <-- differs"
            print(f"  {key:30} {_digest(p[key]):>34} {_digest(s[key]):>34}{mark}")
        print(
            f"  tier levels after: {p['levels']}"
            + ("" if p["levels"] == s["levels"] else f" vs {s['levels']}")
        )
        same = all(p[k] == s[k] for k in [*DIGESTS, "levels", "touched"])
        print(f"  identical end state: {'yes' if same else 'NO'}")
        print(f"\nrows touched{'':18} {'product':>12} {'hand-written':>14}")
        for key in p["touched"]:
            print(f"  {key:28} {p['touched'][key]:>12,} {s['touched'][key]:>14,}")

    n = meta["members"]
    print(f"\n{'':26} {'wall s':>8} {'Python CPU s':>13} {'PG CPU s':>9} {'CPU ms per 1k members':>22}")
    rows = []
    for label, r in (("product (run_daily)", product), ("hand-written SQL", sql)):
        if r.get("timed_out"):
            print(f"{label:26} {'> ' + str(int(r['seconds'])):>8}")
            continue
        parts = [(f"  {job}", j) for job, j in r["jobs"].items()] + [("  total", r)]
        print(label)
        for name, j in parts:
            py = j.get("python_cpu", 0.0)
            db = j.get("db_cpu", float("nan"))
            print(f"{name:26} {j['seconds']:>8.1f} {py:>13.1f} {db:>9.1f} {1e6 * (py + db) / n:>22.1f}")
        rows.append(
            {"name": label, "seconds": r["seconds"], "python_cpu": r["python_cpu"], "db_cpu": r["db_cpu"]}
        )
    print("  (the Python CPU of the hand-written run is this process: psycopg sending two statements)")
    ratio = None
    if not product.get("timed_out"):
        ratio = product["seconds"] / sql["seconds"]
        print(
            f"\nratio product/hand-written: {ratio:.1f}× wall time "
            f"(expire {product['jobs']['expire']['seconds'] / sql['jobs']['expire']['seconds']:.1f}×, "
            f"tiers {product['jobs']['tiers']['seconds'] / sql['jobs']['tiers']['seconds']:.1f}×); "
            f"{(product['python_cpu'] + product['db_cpu']) / (sql['python_cpu'] + sql['db_cpu']):.1f}× CPU"
        )
    elif product.get("tiers_projected") and "expire" in product.get("jobs", {}):
        projected = product["jobs"]["expire"]["seconds"] + product["tiers_projected"]
        print(
            f"\nratio product/hand-written: > {product['seconds'] / sql['seconds']:.1f}× wall time "
            f"(~{projected / sql['seconds']:.0f}× with the tier review's pace projected to all members; "
            f"expire {product['jobs']['expire']['seconds'] / sql['jobs']['expire']['seconds']:.1f}×)"
        )
    if product.get("statements"):
        print("statements the product sent (an executemany counts once; 'rows': its parameter sets):")
        for job, tally in product["statements"].items():
            print(f"  {job:7} " + ", ".join(f"{k} {v:,}" for k, v in sorted(tally.items())))
    if product.get("profile"):
        print_profile(product["profile"])
    quiet_after = machine_note()
    print(f"\nmachine after the run: {quiet_after}")
    if not args.keep_copies:
        for name in (product_db, sql_db):
            drop_database(name)
    print(f"total run time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(
            args.json,
            {
                "bench": "points_jobs",
                "date": datetime.now(UTC).isoformat(),
                "members": n,
                "basis": meta["basis"],
                "seed": seed_info or {"load_seconds": meta["seed_seconds"], "reused": True},
                "plan": plan,
                "verify": {"before": verify_before, "after": verify_after},
                "product": product,
                "sql": sql,
                "ratio": ratio,
                "identical": same,
                "end_state": states,
                "cpu": rows,
                "machine": [quiet_before, quiet_after],
            },
        )


if __name__ == "__main__":
    main()
