"""Member lookup by phone at 1,000,000 members: the HTTP API against its baseline, the one indexed
SELECT on member_identities by blind index, sent directly through psycopg.

    .venv/bin/python bench/lookup.py                 # seeds 1,000,000 members (a few minutes), then runs
    .venv/bin/python bench/lookup.py --reuse         # keeps the seeded database of an earlier run

Steps: create ``onemember_bench_lookup`` (or use --database-url), migrate, bulk-load the members
(``onemember.demo.generate`` with ``days=0`` when --seeder demo, else the COPY loader of
bench/common.py), start the server, drive POST /api/v1/members/lookup {"kind": "phone", "value": ...}
with C keep-alive clients, stop it, run the SELECT with C psycopg connections, print both.
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
    database_exists,
    database_url,
    dbname_of,
    find_chain,
    libpq_url,
    load_members,
    machine_note,
    make_chain,
    migrate,
    phone_of,
    print_cpu,
    print_profile,
    print_table,
    profiled,
    run_db_clients,
    run_http,
    sa_url,
    summarize,
    summarize_profiles,
    write_json,
)
from sqlreplay import RECORDER, recording_creator

DB_NAME = "onemember_bench_lookup"
ORG = "bench"

# What members.service.find_by_identity sends, with the columns of Member.
LOOKUP_SQL = (
    "SELECT members.id, members.org_id, members.member_no, members.name, members.gender, members.birthday, "
    "members.channel, members.registered_store_id, members.status, members.merged_into_id, "
    "members.created_at, members.updated_at, members.erased_at "
    "FROM members JOIN member_identities ON member_identities.member_id = members.id "
    "WHERE member_identities.org_id = %s AND member_identities.kind = %s "
    "AND member_identities.value_bidx = %s"
)


def member_count(url: str, org_id: int) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM members WHERE org_id = %s", (org_id,)).fetchone()
    return int(row[0]) if row else 0


def seed(url: str, members: int, seeder: str) -> tuple[float, str]:
    """Load the members; returns seconds and which loader did it."""
    started = time.perf_counter()
    if seeder == "demo":
        from onemember.db import make_engine, make_sessionmaker
        from onemember.demo import generate

        engine = make_engine(sa_url(url))
        generate(make_sessionmaker(engine), org_code=ORG, members=members, stores=12, days=0, seed=7)
        engine.dispose()
    else:
        chain = make_chain(url, ORG)
        load_members(url, chain, members, progress=lambda line: print(line, flush=True))
    return time.perf_counter() - started, seeder


def sample_phones(url: str, org_id: int, count: int, seeded_by_bench: bool, n_members: int) -> list[str]:
    """Phones to look up: computed for the bench loader, decrypted from a random sample otherwise."""
    if seeded_by_bench:
        rng = random.Random(11)
        first = 1  # the bench loader numbers members from the org's member_no counter, from 1
        return [phone_of(first + rng.randrange(n_members)) for _ in range(count)]
    import psycopg

    from onemember.common.crypto import get_cipher

    cipher = get_cipher()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT value_enc FROM member_identities WHERE org_id = %s AND kind = 'phone' "
            "ORDER BY random() LIMIT %s",
            (org_id, count),
        ).fetchall()
    return [cipher.decrypt(bytes(r[0])) for r in rows]


def explain(url: str, org_id: int, phone: str) -> list[str]:
    import psycopg

    from onemember.common.crypto import get_cipher

    bidx = get_cipher().blind_index("phone", phone)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + LOOKUP_SQL, (org_id, "phone", bidx)
        ).fetchall()
    return [r[0] for r in rows]


def statements_of_one_lookup(url: str, secret: str, phone: str) -> list[str]:
    """The SQL one API lookup sends, recorded in-process (after one warm-up request)."""
    from fastapi.testclient import TestClient

    from onemember.app import create_app
    from onemember.db import make_engine, make_sessionmaker
    from onemember.settings import get_settings

    engine = make_engine(sa_url(url), creator=recording_creator(libpq_url(url)))
    app = create_app(get_settings(), make_sessionmaker(engine), start_dispatcher=False)
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(app) as client:
        client.post("/api/v1/members/lookup", json={"kind": "phone", "value": phone}, headers=headers)
        RECORDER.steps = []
        RECORDER.on = True
        r = client.post("/api/v1/members/lookup", json={"kind": "phone", "value": phone}, headers=headers)
        RECORDER.on = False
    engine.dispose()
    assert r.status_code == 200, r.text
    return [s.label() for s in RECORDER.steps]


def raw_iteration(org_id: int, phones: list[str]) -> Callable[[int], Iteration]:
    def make(seed: int) -> Iteration:
        from onemember.common.crypto import get_cipher

        cipher = get_cipher()
        rng = random.Random(seed)

        def iteration(conn: Any) -> Any:
            bidx = cipher.blind_index("phone", rng.choice(phones))
            rows = conn.execute(LOOKUP_SQL, (org_id, "phone", bidx)).fetchall()
            conn.rollback()
            return None if len(rows) == 1 else f"{len(rows)} rows"

        return iteration

    return make


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a local PostgreSQL database (default: a scratch one)")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    parser.add_argument("--seeder", choices=("bench", "demo"), default="bench")
    parser.add_argument("--concurrency", "-c", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--raw-processes", type=int, default=2)
    parser.add_argument("--requests", "-n", type=int, default=10_000, help="measured lookups per phase")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60, help="time cap of each measured phase")
    parser.add_argument("--profile", action="store_true", help="an extra API phase under py-spy")
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    started = time.perf_counter()
    quiet_before = machine_note()
    print(f"machine: {quiet_before}")

    url = libpq_url(args.database_url) if args.database_url else database_url(DB_NAME)
    chain = find_chain(url, ORG) if args.reuse and (args.database_url or database_exists(DB_NAME)) else None
    seed_s: float | None = None
    seeder = "reused"
    if chain is None or member_count(url, chain.org_id) < args.members:
        if not args.database_url:
            create_database(DB_NAME)
        migrate(url)
        print(f"seeding {args.members:,} members into {url} ({args.seeder} loader)")
        seed_s, seeder = seed(url, args.members, args.seeder)
        chain = find_chain(url, ORG)
        assert chain is not None
        print(f"seeded {args.members:,} members in {seed_s:.1f} s ({args.members / seed_s:,.0f}/s)")
    else:
        print(f"reusing {url}")
    n_members = member_count(url, chain.org_id)
    # three stores' tills; a lookup from any store finds a member of any store
    chain.stores = dict(sorted(chain.stores.items())[:3])
    add_api_keys(url, chain, 1)
    bench_seeded = seeder == "bench" or (seeder == "reused" and args.seeder == "bench")
    phones = sample_phones(url, chain.org_id, 20_000, bench_seeded, n_members)
    print(f"{n_members:,} members; {len(phones):,} phones to look up")
    plan = explain(url, chain.org_id, phones[0])
    print("  plan of the raw SELECT: " + " / ".join(line.strip() for line in plan[:3]))
    labels = statements_of_one_lookup(url, chain.keys[0][1], phones[0])
    print(f"  one API lookup sends {sum(1 for x in labels if x not in ('COMMIT', 'ROLLBACK'))} statements: ")
    print("    " + ", ".join(labels))

    secrets = [secret for _code, secret in chain.keys]
    rng = random.Random(5)

    def make_request(_i: int) -> tuple[str, str, dict[str, str], bytes]:
        body = json.dumps({"kind": "phone", "value": rng.choice(phones)}).encode()
        headers = {"Authorization": f"Bearer {rng.choice(secrets)}", "Content-Type": "application/json"}
        return "POST", "/api/v1/members/lookup", headers, body

    print(f"API: {args.workers} worker(s), {args.concurrency} clients, {args.requests} lookups")
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
            with profiled(
                server.worker_pids(), args.profile_seconds, Path("/tmp/onemember-bench-profile")
            ) as p:
                run_http(
                    server.port,
                    make_request,
                    concurrency=args.concurrency,
                    total=10**9,
                    seconds=args.profile_seconds,
                    warmup=0,
                )
            profile = summarize_profiles(p)
    api_errors = sum(n for status, n in api.statuses.items() if status != 200)
    for err in api.errors:
        print(f"  API error {err}")

    print(f"raw: {args.raw_processes} process(es), {args.concurrency} psycopg connections")
    with CpuMeter(dbname_of(url), root=os.getpid(), skip_root=True) as raw_cpu:
        raw = run_db_clients(
            url,
            raw_iteration(chain.org_id, phones),
            concurrency=args.concurrency,
            processes=args.raw_processes,
            total=args.requests,
            warmup=args.warmup,
            seconds=args.seconds,
        )
    if raw.notes:
        print(f"  warning: lookups without exactly one member: {raw.notes[:5]}")

    api_s = summarize("API  lookup by phone", api.latencies, api.seconds, api_errors)
    raw_s = summarize("raw  SELECT by bidx", raw.latencies, raw.seconds, len(raw.notes))
    print_table([api_s, raw_s], "lookups/s")
    ratio = api_s.rate / raw_s.rate if raw_s.rate else 0.0
    print(f"\nmembers {n_members:,}; ratio API/raw throughput: {ratio:.2f}; p99 API {api_s.p99_ms:.1f} ms")
    print(
        f"client CPU: HTTP load generator {api.client_cpu:.1f} s over {api.seconds:.1f} s; "
        f"raw {raw.client_cpu:.1f} s over {raw.seconds:.1f} s"
    )
    cpu = print_cpu(
        "lookup",
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
                "bench": "lookup",
                "date": datetime.now(UTC).isoformat(),
                "run": uuid.uuid4().hex[:8],
                "members": n_members,
                "seed_seconds": seed_s,
                "seeder": seeder,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "plan": plan,
                "statements": labels,
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
