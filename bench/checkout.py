"""Checkout throughput and latency through the real HTTP API, against "the raw limit": the same SQL
statements one checkout sends, replayed directly through psycopg at the same concurrency.

    .venv/bin/python bench/checkout.py                      # defaults: 20,000 members, 32 clients
    .venv/bin/python bench/checkout.py --requests 2000 --profile

Steps: create the scratch database ``onemember_bench_checkout`` (or use an empty one given with
--database-url), migrate, seed a chain (three stores, two till keys each) and N members with an
opening balance, capture the SQL of one real checkout of each shape (with and without points
redemption), start ``uvicorn onemember.app:create_app`` with W workers, drive POST /api/v1/orders with
C keep-alive clients, stop the server, replay the captured SQL with C psycopg connections, and print
checkouts/s, p50 and p99 of both and the ratio API/raw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    Iteration,
    Server,
    add_api_keys,
    create_database,
    dbname_of,
    libpq_url,
    load_members,
    machine_note,
    make_chain,
    migrate,
    print_cpu,
    print_profile,
    print_table,
    profiled,
    run_db_clients,
    run_http,
    sa_url,
    spread_sequences,
    summarize,
    summarize_profiles,
    write_json,
)
from sqlreplay import RECORDER, Mapper, Template, find_uuids, fresh_seeds, recording_creator, replay

CATEGORIES = ("食品", "日用", "饮料", "生鲜", "母婴", "家居")
REDEEM_POINTS = 500  # 5 yuan at the default 100 points per yuan


def basket(rng: random.Random, member_no: str, redeem: bool) -> dict[str, Any]:
    """Three lines in three categories; with ``redeem``, 500 points pay part of it."""
    lines = []
    for category in rng.sample(CATEGORIES, 3):
        sku = f"69{rng.randrange(10**10):010d}"
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


# --- capture ----------------------------------------------------------------------------------------


def capture_templates(url: str, secret: str, member_nos: list[str]) -> dict[str, Template]:
    """Run real checkouts in-process and record the SQL of one of each shape (after a warm-up)."""
    from fastapi.testclient import TestClient

    from onemember.app import create_app
    from onemember.db import make_engine, make_sessionmaker
    from onemember.settings import get_settings

    engine = make_engine(sa_url(url), creator=recording_creator(libpq_url(url)))
    app = create_app(get_settings(), make_sessionmaker(engine), start_dispatcher=False)
    rng = random.Random(99)
    templates: dict[str, Template] = {}
    with TestClient(app) as client:
        for shape, redeem in (("plain", False), ("redeem", True)):
            for _ in range(3):  # warm-up: connections, statement caches, psycopg's prepared statements
                r = client.post(
                    "/api/v1/orders",
                    json=basket(rng, member_nos.pop(), redeem),
                    headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex},
                )
                assert r.status_code == 201, r.text
            member_no = member_nos.pop()
            key = uuid.uuid4().hex
            RECORDER.steps = []
            RECORDER.on = True
            captured_at = datetime.now(UTC)
            r = client.post(
                "/api/v1/orders",
                json=basket(rng, member_no, redeem),
                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": key},
            )
            RECORDER.on = False
            assert r.status_code == 201, r.text
            uuids: list[str] = []
            for step in RECORDER.steps:
                find_uuids(step.params, uuids)
            templates[shape] = Template(
                list(RECORDER.steps),
                captured_at,
                {
                    "member_no": member_no,
                    "idem_key": key,
                    "order_no": r.json()["order_no"],
                    "prefix": secret[4:12],
                },
                uuids,
            )
            templates[shape].prepare()
    engine.dispose()
    return templates


# --- raw replay -------------------------------------------------------------------------------------


def raw_iteration(
    templates: dict[str, Template], member_nos: list[str], prefixes: list[str], redeem_share: float
) -> Callable[[int], Iteration]:
    """Builds, in each client, one connection's replay of a checkout with fresh values."""

    def make(seed: int) -> Iteration:
        from onemember.orders.numbers import public_no

        rng = random.Random(seed)

        def iteration(conn: Any) -> Any:
            template = templates["redeem" if rng.random() < redeem_share else "plain"]
            now = datetime.now(UTC)
            seeds = {
                "member_no": rng.choice(member_nos),
                "idem_key": uuid.uuid4().hex,
                "order_no": public_no("S", now, "Asia/Shanghai"),
                "prefix": rng.choice(prefixes),
            }
            mapper = Mapper(fresh_seeds(template, seeds), now - template.captured_at)
            replay(conn, template, mapper)
            return sorted(mapper.unmapped)[:3]

        return iteration

    return make


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an empty local PostgreSQL database (default: a scratch one)")
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--points", type=int, default=100_000, help="opening balance of each member")
    parser.add_argument("--concurrency", "-c", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--raw-processes", type=int, default=2, help="processes driving the raw replay")
    parser.add_argument("--requests", "-n", type=int, default=5000, help="measured checkouts per phase")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured checkouts first")
    parser.add_argument("--seconds", type=float, default=120, help="time cap of each measured phase")
    parser.add_argument("--redeem-share", type=float, default=0.3, help="share of checkouts redeeming points")
    parser.add_argument("--keys-per-store", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="an extra API phase under py-spy")
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument("--show-sql", action="store_true", help="print the captured statements")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    started = time.perf_counter()
    quiet_before = machine_note()
    print(f"machine: {quiet_before}")

    url = libpq_url(args.database_url) if args.database_url else create_database("onemember_bench_checkout")
    print(f"database {url}")
    migrate(url)
    spread_sequences(url)
    chain = make_chain(url, "bench")
    add_api_keys(url, chain, args.keys_per_store)
    t0 = time.perf_counter()
    loaded = load_members(url, chain, args.members, points_each=args.points, progress=lambda _m: None)
    seed_s = time.perf_counter() - t0
    print(f"seeded {args.members:,} members with {args.points:,} points each in {seed_s:.1f} s")

    member_nos = list(loaded.member_nos)
    reserved = member_nos[-8:]  # the capture's own members, kept out of the measured phases
    member_nos = member_nos[:-8]
    templates = capture_templates(url, chain.keys[0][1], reserved)
    for shape, template in templates.items():
        print(
            f"captured '{shape}' checkout: {template.statements()} statements in "
            f"{template.transactions()} transactions"
        )
        if args.show_sql:
            for label in template.describe():
                print(f"    {label}")

    secrets = [secret for _code, secret in chain.keys]
    rng = random.Random(7)

    def make_request(_i: int) -> tuple[str, str, dict[str, str], bytes]:
        body = basket(rng, rng.choice(member_nos), rng.random() < args.redeem_share)
        headers = {
            "Authorization": f"Bearer {rng.choice(secrets)}",
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        }
        return "POST", "/api/v1/orders", headers, json.dumps(body).encode()

    print(f"API: {args.workers} worker(s), {args.concurrency} clients, {args.requests} checkouts")
    profile: dict[str, Any] = {}
    with Server(url, workers=args.workers) as server:
        assert server.proc is not None
        with CpuMeter(dbname_of(url), root=server.proc.pid) as api_cpu:
            api = run_http(
                server.port,
                make_request,
                concurrency=args.concurrency,
                total=args.requests,
                seconds=args.seconds,
                warmup=args.warmup,
            )
        if args.profile:
            print(f"profiling the server for {args.profile_seconds} s (not part of the numbers)")
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
            profile = summarize_profiles(paths)
    api_errors = sum(n for status, n in api.statuses.items() if status != 201)
    for err in api.errors:
        print(f"  API error {err}")

    print(f"raw: {args.raw_processes} process(es), {args.concurrency} psycopg connections")
    prefixes = [secret[4:12] for secret in secrets]
    with CpuMeter(dbname_of(url), root=os.getpid(), skip_root=True) as raw_cpu:
        raw = run_db_clients(
            url,
            raw_iteration(templates, member_nos, prefixes, args.redeem_share),
            concurrency=args.concurrency,
            processes=args.raw_processes,
            total=args.requests,
            warmup=args.warmup,
            seconds=args.seconds,
        )
    if raw.notes:
        print(f"  warning: captured ids replayed unchanged: {raw.notes[:5]}")

    api_s = summarize("API  POST /api/v1/orders", api.latencies, api.seconds, api_errors)
    raw_s = summarize("raw  same SQL, psycopg", raw.latencies, raw.seconds)
    print_table([api_s, raw_s], "checkouts/s")
    ratio = api_s.rate / raw_s.rate if raw_s.rate else 0.0
    print(f"\nratio API/raw throughput: {ratio:.2f}  (target >= 0.5)")
    print(f"API p99 {api_s.p99_ms:.1f} ms  (target < 50 ms)")
    print(
        f"client CPU: HTTP load generator {api.client_cpu:.1f} s over {api.seconds:.1f} s; "
        f"raw replay {raw.client_cpu:.1f} s over {raw.seconds:.1f} s "
        f"({1000 * raw.client_cpu / max(1, len(raw.latencies)):.2f} ms per checkout)"
    )
    cpu = print_cpu(
        "checkout",
        [
            (api_s.name, api_cpu.app_seconds, api_cpu.db_seconds, args.warmup + api_s.count),
            (raw_s.name, raw_cpu.app_seconds, raw_cpu.db_seconds, raw.warmup + raw_s.count),
        ],
    )
    quiet_after = machine_note()
    print(f"machine after the run: {quiet_after}")
    if profile:
        print_profile(profile)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(
            args.json,
            {
                "bench": "checkout",
                "date": datetime.now(UTC).isoformat(),
                "members": args.members,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "seed_seconds": seed_s,
                "statements": {k: t.describe() for k, t in templates.items()},
                "api": api_s.__dict__,
                "raw": raw_s.__dict__,
                "ratio": ratio,
                "cpu": cpu,
                "machine": [quiet_before, quiet_after],
                "profile": profile,
            },
        )


if __name__ == "__main__":
    main()
