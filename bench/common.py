"""Shared machinery of the benchmarks: a scratch PostgreSQL database, a bulk member loader, the real
server as a subprocess, a light HTTP load generator, latency statistics and py-spy summaries.

Everything here talks to 127.0.0.1 only. The PII and secret keys are fixed bench keys, set in this
process's environment before any OneMember setting is read, and handed to the server subprocess, so
that the blind indexes the loader writes are the ones the server computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}

# Fixed keys: a database seeded by one run can be reused by the next (bench/lookup.py --reuse).
PII_KEY = os.environ.get("ONEMEMBER_BENCH_PII_KEY") or hashlib.sha256(b"onemember-bench-pii").hexdigest()
SECRET_KEY = os.environ.get("ONEMEMBER_BENCH_SECRET_KEY") or hashlib.sha256(b"onemember-bench").hexdigest()
VAR_DIR = Path(tempfile.gettempdir()) / "onemember-bench-var"

# FastAPI's TestClient (used to capture a request's SQL) warns about its httpx transport.
warnings.filterwarnings("ignore", message=r".*starlette\.testclient.*")

os.environ["ONEMEMBER_PII_KEY"] = PII_KEY
os.environ["ONEMEMBER_SECRET_KEY"] = SECRET_KEY
os.environ["ONEMEMBER_VAR_DIR"] = str(VAR_DIR)
os.environ["ONEMEMBER_DISPATCHER_ENABLED"] = "false"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.factories
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


# --- database ---------------------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy) to ``postgresql://`` (libpq), refusing non-local hosts."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql://" + url[len(prefix) :]
    parts = urlsplit(url)
    if parts.scheme != "postgresql":
        raise SystemExit(f"not a PostgreSQL URL: {url}")
    if (parts.hostname or "") not in LOCAL_HOSTS:
        raise SystemExit(f"benchmarks only talk to 127.0.0.1, not {parts.hostname}")
    return url


def sa_url(url: str) -> str:
    return "postgresql+psycopg://" + libpq_url(url)[len("postgresql://") :]


def database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(name: str) -> str:
    """Drop and create the scratch database ``name``; returns its libpq URL."""
    import psycopg
    from psycopg import sql

    if not name.startswith("onemember_bench"):
        raise SystemExit("scratch databases are named onemember_bench*; pass --database-url to use another")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


def migrate(url: str) -> None:
    from onemember.db import make_engine
    from onemember.migrate import upgrade

    engine = make_engine(sa_url(url))
    upgrade(engine)
    engine.dispose()


# Tables whose ids stay small: constants of a run, never substituted by the raw replay.
_SMALL_ID_TABLES = {"orgs", "points_programs", "brands", "regions", "staff"}
ID_STRIDE = 1_000_000_000


def spread_sequences(url: str) -> None:
    """Put every table's ids in its own range (k * 10^9), on a fresh database only.

    The raw replay of bench/checkout.py substitutes ids by value; disjoint ranges make an id of one
    table impossible to mistake for an id of another, or for an amount.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.relname, t.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
            "JOIN pg_class t ON t.oid = d.refobjid WHERE s.relkind = 'S' ORDER BY t.relname"
        ).fetchall()
        k = 1
        for seq, table in rows:
            if table in _SMALL_ID_TABLES:
                continue
            used = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            if used and used[0]:
                raise SystemExit(f"spread_sequences wants a fresh database; {table} has rows")
            conn.execute("SELECT setval(%s, %s, false)", (seq, k * ID_STRIDE))
            k += 1


# --- a chain and its keys ---------------------------------------------------------------------------


@dataclass
class Chain:
    org_id: int
    org_code: str
    program_id: int
    stores: dict[str, int]  # code -> id
    keys: list[tuple[str, str]] = field(default_factory=list)  # (store code, API key secret)


def make_chain(url: str, org_code: str) -> Chain:
    """The test factory's chain (three stores, staff, one till key per store)."""
    from tests.factories import make_chain as factory_chain

    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.points import service as points

    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as session:
        built = factory_chain(session, code=org_code)
        program = points.default_program(session, built.org_id)
        chain = Chain(built.org_id, built.org_code, program.id, dict(built.stores))
    engine.dispose()
    return chain


def find_chain(url: str, org_code: str) -> Chain | None:
    import psycopg

    with psycopg.connect(url) as conn:
        org = conn.execute("SELECT id FROM orgs WHERE code = %s", (org_code,)).fetchone()
        if org is None:
            return None
        program = conn.execute(
            "SELECT id FROM points_programs WHERE org_id = %s AND is_default", (org[0],)
        ).fetchone()
        stores = conn.execute("SELECT code, id FROM stores WHERE org_id = %s", (org[0],)).fetchall()
    assert program is not None
    return Chain(org[0], org_code, program[0], {code: sid for code, sid in stores})


def add_api_keys(url: str, chain: Chain, per_store: int) -> None:
    """Fresh till keys (secrets are only shown once, so each run makes its own)."""
    from onemember.auth import service as auth_service
    from onemember.auth.principal import system_principal
    from onemember.db import make_engine, make_sessionmaker, transaction
    from onemember.org.models import Store

    engine = make_engine(sa_url(url))
    with transaction(make_sessionmaker(engine)) as session:
        admin = system_principal(chain.org_id, "bench")
        for code, store_id in sorted(chain.stores.items()):
            store = session.get(Store, store_id)
            assert store is not None
            for i in range(per_store):
                secret, _ = auth_service.create_api_key(session, admin, store, f"bench till {code}{i}")
                chain.keys.append((code, secret))
    engine.dispose()


# --- bulk member loader -----------------------------------------------------------------------------

_PHONE_PREFIXES = ("139", "138", "158", "186", "135", "177", "150", "189", "131", "199")


def phone_of(i: int) -> str:
    """The phone of bench member ``i`` (1-based): unique, valid, and computable by the client."""
    return f"{_PHONE_PREFIXES[i % len(_PHONE_PREFIXES)]}{i:08d}"


_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


@dataclass
class LoadResult:
    first_index: int
    count: int
    seconds: float
    member_nos: list[str]


def load_members(
    url: str,
    chain: Chain,
    count: int,
    *,
    points_each: int = 0,
    seed: int = 7,
    batch: int = 20_000,
    progress: Callable[[str], None] = print,
) -> LoadResult:
    """Bulk-load ``count`` members with COPY: the rows ``members.service.register`` writes (member,
    encrypted phone identity with blind index and mask, points account), plus an opening-balance entry
    and lot of ``points_each`` points. Member ``i`` has phone ``phone_of(i)``."""
    import psycopg

    from onemember.common.counters import member_no_for
    from onemember.common.crypto import get_cipher, mask
    from onemember.common.types import EntryKind

    cipher = get_cipher()
    rng = random.Random(seed)
    store_ids = sorted(chain.stores.values())
    now = datetime.now(UTC)
    started = time.perf_counter()
    member_nos: list[str] = []
    with psycopg.connect(url) as conn:

        def next_ids(table: str, n: int) -> int:
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()
            assert seq is not None
            first = conn.execute(f"SELECT nextval('{seq[0]}')").fetchone()
            assert first is not None
            conn.execute("SELECT setval(%s, %s)", (seq[0], first[0] + n))
            return int(first[0])

        counter = conn.execute(
            "SELECT value FROM counters WHERE org_id = %s AND name = 'member_no' FOR UPDATE", (chain.org_id,)
        ).fetchone()
        seq0 = int(counter[0]) if counter else 0
        first_index = seq0 + 1
        m0 = next_ids("members", count)
        i0 = next_ids("member_identities", count)
        a0 = next_ids("point_accounts", count)
        e0 = next_ids("point_entries", count) if points_each else 0
        l0 = next_ids("point_lots", count) if points_each else 0
        # FK and other triggers are skipped for the load (the rows are consistent by construction);
        # the COPYs run on a writer thread while the next batch is built.
        conn.execute("SET session_replication_role = replica")
        batches: queue.Queue[tuple[list[Any], ...] | None] = queue.Queue(maxsize=2)
        failed: list[BaseException] = []

        def write() -> None:
            written = 0
            while (item := batches.get()) is not None:
                if failed:
                    continue
                try:
                    _write_batch(conn, *item)
                except BaseException as exc:
                    failed.append(exc)
                    continue
                written += len(item[0])
                progress(f"  loaded {written:,} / {count:,} members ({time.perf_counter() - started:.0f} s)")

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        done = 0
        while done < count:
            n = min(batch, count - done)
            members, identities, accounts, entries, lots = [], [], [], [], []
            for k in range(done, done + n):
                idx = first_index + k
                member_no = member_no_for(seq0 + k + 1)
                member_nos.append(member_no)
                phone = phone_of(idx)
                created = now - timedelta(minutes=count - k)
                member_id = m0 + k
                members.append(
                    (
                        member_id,
                        chain.org_id,
                        member_no,
                        rng.choice(_SURNAMES) + rng.choice(_GIVEN) + rng.choice(_GIVEN),
                        rng.choice(("male", "female", "unknown")),
                        None,
                        "pos",
                        store_ids[k % len(store_ids)],
                        "active",
                        created,
                        created,
                    )
                )
                identities.append(
                    (
                        i0 + k,
                        chain.org_id,
                        member_id,
                        "phone",
                        cipher.encrypt(phone),
                        cipher.blind_index("phone", phone),
                        mask("phone", phone),
                        created,
                    )
                )
                accounts.append(
                    (
                        a0 + k,
                        chain.org_id,
                        member_id,
                        chain.program_id,
                        points_each,
                        0,
                        points_each,
                        0,
                        created,
                    )
                )
                if points_each:
                    entries.append(
                        (
                            e0 + k,
                            chain.org_id,
                            a0 + k,
                            member_id,
                            str(EntryKind.IMPORT_OPENING),
                            points_each,
                            0,
                            points_each,
                            0,
                            f"bench-opening-{member_no}",
                            "期初积分 opening balance",
                            "system:bench",
                            created,
                        )
                    )
                    lots.append(
                        (
                            l0 + k,
                            chain.org_id,
                            a0 + k,
                            member_id,
                            e0 + k,
                            points_each,
                            points_each,
                            created,
                            created,
                            None,
                        )
                    )
            batches.put((members, identities, accounts, entries, lots))
            done += n
        batches.put(None)
        writer.join()
        if failed:
            raise failed[0]
        conn.execute(
            "INSERT INTO counters (org_id, name, value) VALUES (%s, 'member_no', %s) "
            "ON CONFLICT (org_id, name) DO UPDATE SET value = EXCLUDED.value",
            (chain.org_id, seq0 + count),
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("members", "member_identities", "point_accounts", "point_entries", "point_lots"):
            conn.execute(f"ANALYZE {table}")
    return LoadResult(first_index, count, time.perf_counter() - started, member_nos)


def _write_batch(
    conn: Any,
    members: list[Any],
    identities: list[Any],
    accounts: list[Any],
    entries: list[Any],
    lots: list[Any],
) -> None:
    with conn.cursor() as cur:
        _copy(
            cur,
            "members (id, org_id, member_no, name, gender, birthday, channel, registered_store_id, "
            "status, created_at, updated_at)",
            members,
        )
        _copy(
            cur,
            "member_identities (id, org_id, member_id, kind, value_enc, value_bidx, value_masked, "
            "created_at)",
            identities,
        )
        _copy(
            cur,
            "point_accounts (id, org_id, member_id, program_id, balance, debt, lifetime_earned, "
            "lifetime_redeemed, updated_at)",
            accounts,
        )
        if entries:
            _copy(
                cur,
                "point_entries (id, org_id, account_id, member_id, kind, amount, debt_change, "
                "balance_after, debt_after, ref, reason, actor, created_at)",
                entries,
            )
            _copy(
                cur,
                "point_lots (id, org_id, account_id, member_id, entry_id, amount, remaining, "
                "earned_at, available_at, expires_at)",
                lots,
            )


def _copy(cur: Any, target: str, rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


# --- the server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``uvicorn onemember.app:create_app --factory`` as a subprocess in its own process group."""

    def __init__(self, url: str, *, workers: int, port: int | None = None) -> None:
        self.url = url
        self.workers = workers
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.gettempdir()) / f"onemember-bench-server-{self.port}.log"

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "DATABASE_URL": libpq_url(self.url)}
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "onemember.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited early; see {self.log}:\n{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        # every worker must be up: give the others a moment after the first answers
                        time.sleep(1.0 + 0.5 * self.workers)
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server did not start within {timeout:.0f} s; see {self.log}")

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (or the single process when workers == 1)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        # with --workers > 1 uvicorn's children include a resource tracker; keep the python workers
        workers = [p for p in pids if b"multiprocessing.resource_tracker" not in _cmdline(p) and _cmdline(p)]
        return workers if self.workers > 1 and workers else [self.proc.pid]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --- a light HTTP/1.1 load generator ----------------------------------------------------------------

RequestMaker = Callable[[int], tuple[str, str, dict[str, str], bytes]]  # i -> method, path, headers, body


@dataclass
class RunResult:
    latencies: list[float]  # seconds, measured requests only
    seconds: float  # wall time of the measured part
    statuses: Tally[int]
    errors: list[str]
    client_cpu: float  # CPU seconds the load generator itself used during the measured part

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def _http_run(
    port: int, make: RequestMaker, concurrency: int, total: int, seconds: float, warmup: int
) -> RunResult:
    """``concurrency`` keep-alive connections, each sending one request at a time (a till waits for its
    answer). A plain asyncio client: on a 2-core machine a heavier client would steal the server's CPU."""
    counter = iter(range(10**12))
    latencies: list[float] = []
    statuses: Tally[int] = Tally()
    errors: list[str] = []
    measure_from: list[float] = []
    stop_at = [float("inf")]
    done = [0]
    cpu0 = [0.0]

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                i = next(counter)
                if i >= warmup + total or time.perf_counter() > stop_at[0]:
                    return
                if i == warmup:
                    measure_from.append(time.perf_counter())
                    stop_at[0] = measure_from[0] + seconds
                    cpu0[0] = time.process_time()
                method, path, headers, body = make(i)
                head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                t0 = time.perf_counter()
                writer.write(head.encode() + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                payload = await reader.readexactly(length) if length else b""
                elapsed = time.perf_counter() - t0
                status = int(status_line.split()[1]) if status_line else 0
                if i >= warmup:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    done[0] += 1
                if status >= 300 and len(errors) < 5:
                    errors.append(f"{status}: {payload[:300].decode(errors='replace')}")
        finally:
            writer.close()

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    end = time.perf_counter()
    start = measure_from[0] if measure_from else end
    return RunResult(latencies, end - start, statuses, errors, time.process_time() - cpu0[0])


def run_http(
    port: int, make: RequestMaker, *, concurrency: int, total: int, seconds: float, warmup: int
) -> RunResult:
    return asyncio.run(_http_run(port, make, concurrency, total, seconds, warmup))


# --- statistics and tables --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass
class Summary:
    name: str
    count: int
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def summarize(name: str, latencies: list[float], seconds: float, errors: int = 0) -> Summary:
    values = sorted(latencies)
    return Summary(
        name,
        len(values),
        len(values) / seconds if seconds else 0.0,
        percentile(values, 50) * 1000,
        percentile(values, 90) * 1000,
        percentile(values, 99) * 1000,
        (values[-1] if values else float("nan")) * 1000,
        errors,
    )


def print_table(rows: list[Summary], unit: str) -> None:
    print(f"\n{'':24} {'n':>7} {unit:>12} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'err':>5}")
    for r in rows:
        print(
            f"{r.name:24} {r.count:>7} {r.rate:>12.1f} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {r.max_ms:>8.2f} {r.errors:>5}"
        )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --- profiling (py-spy, optional) -------------------------------------------------------------------


def py_spy() -> str | None:
    for candidate in (VENV_BIN / "py-spy", Path("/usr/local/bin/py-spy"), Path("/usr/bin/py-spy")):
        if candidate.exists():
            return str(candidate)
    return None


@contextlib.contextmanager
def profiled(pids: list[int], seconds: int, out_dir: Path) -> Iterator[list[Path]]:
    """py-spy record on each pid while the block runs: collapsed stacks, 100 Hz, non-blocking, only the
    thread holding the GIL, so the samples show where the server's Python CPU goes (waits on
    PostgreSQL or on the network do not hold the GIL)."""
    exe = py_spy()
    outputs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    if exe is None:
        print("  (py-spy not found: pip install py-spy into the venv to profile)")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = out_dir / f"server-{pid}.collapsed"
            outputs.append(out)
            procs.append(
                subprocess.Popen(
                    [
                        exe,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "100",
                        "--nonblocking",
                        "--gil",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield outputs
    finally:
        for p in procs:
            try:
                p.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(timeout=10)


# Buckets a sample's stack falls into, first match from the leaf up wins.
_BUCKETS = (
    ("psycopg (driver, waiting on PostgreSQL)", ("psycopg/", "psycopg_binary")),
    ("SQLAlchemy ORM (flush, unit of work, loading)", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core (compile, execute, pool)", ("sqlalchemy/",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("json", ("json/",)),
    ("uvicorn / h11 (HTTP)", ("uvicorn/", "h11/")),
    ("starlette / fastapi / anyio (routing, threads)", ("starlette/", "fastapi/", "anyio/")),
    ("onemember (application code)", ("onemember/",)),
    ("asyncio / threading", ("asyncio/", "threading.py", "concurrent/")),
)


def summarize_profiles(paths: list[Path], top: int = 25) -> dict[str, Any]:
    """Inclusive and self time per function and per library from py-spy's collapsed stacks."""
    inclusive: Tally[str] = Tally()
    self_time: Tally[str] = Tally()
    buckets: Tally[str] = Tally()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = [
                f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")
            ]
            names = [_frame_name(f) for f in frames]
            for name in set(names):
                inclusive[name] += count
            if names:
                self_time[names[-1]] += count
            buckets[_bucket(frames)] += count
    if not total:
        return {"samples": 0}

    def pct(t: Tally[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in t.most_common(top)]

    return {"samples": total, "buckets": pct(buckets), "inclusive": pct(inclusive), "self": pct(self_time)}


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    func, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in _BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def print_profile(summary: dict[str, Any]) -> None:
    if not summary.get("samples"):
        print("  (no profile samples)")
        return
    print(f"\nServer profile: {summary['samples']} samples of the GIL-holding thread (py-spy --gil, 100 Hz)")
    print("  by library (the innermost frame that belongs to one):")
    for name, share in summary["buckets"]:
        print(f"    {share:5.1f}%  {name}")
    print("  inclusive time (a function and everything it calls):")
    for name, share in summary["inclusive"][:20]:
        print(f"    {share:5.1f}%  {name}")
    print("  self time:")
    for name, share in summary["self"][:15]:
        print(f"    {share:5.1f}%  {name}")


# --- the machine ------------------------------------------------------------------------------------


def _proc_ticks() -> dict[int, int]:
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks


NUL = bytes(1)


def machine_note(seconds: float = 2.0) -> str:
    """Cores, and what else keeps them busy right now: on a shared 2-core machine the numbers of a run
    are only as good as the quiet around it."""
    before = _proc_ticks()
    time.sleep(seconds)
    after = _proc_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = sorted(
        ((after[p] - before.get(p, after[p])) / hz / seconds, p) for p in after if p != os.getpid()
    )[::-1]
    total = sum(share for share, _ in busy)
    others = [
        f"{share:.0%} {_cmdline(pid).replace(NUL, b' ').decode(errors='replace')[:60].strip()}"
        for share, pid in busy[:3]
        if share >= 0.1
    ]
    note = f"{os.cpu_count()} cores; other processes busy {total:.0%} of one core"
    return note + (f" ({'; '.join(others)})" if others else "")


# --- direct database clients (the baselines) --------------------------------------------------------

Iteration = Callable[[Any], Any]  # one unit of work on a psycopg connection; may return a note


def _db_worker(
    url: str,
    make_iteration: Callable[[int], Iteration],
    connections: int,
    total: int,
    warmup: int,
    seconds: float,
    seed: int,
    barrier: Any,
    out: Any,
) -> None:
    """One process: ``connections`` threads, each with its own sync psycopg connection (the asyncio
    flavour costs about four times the client CPU per statement, which matters on two cores)."""
    import threading
    import traceback

    import psycopg

    lock = threading.Lock()
    state: dict[str, Any] = {"next": 0, "limit": warmup, "stop_at": float("inf")}
    latencies: list[float] = []
    notes: list[Any] = []
    failures: list[str] = []

    def client(conn: Any, iteration: Iteration) -> None:
        try:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= state["limit"] or time.perf_counter() > state["stop_at"]:
                    return
                t0 = time.perf_counter()
                note = iteration(conn)
                elapsed = time.perf_counter() - t0
                with lock:
                    if i >= warmup:
                        latencies.append(elapsed)
                    if note:
                        notes.append(note)
        except Exception:
            failures.append(traceback.format_exc())

    def run_all(conns: list[Any], iterations: list[Iteration]) -> None:
        threads = [threading.Thread(target=client, args=pair) for pair in zip(conns, iterations, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        conns = [psycopg.connect(url) for _ in range(connections)]
        iterations = [make_iteration(seed * 1000 + k) for k in range(connections)]
        run_all(conns, iterations)  # warm-up: connections, prepared statements, caches
        latencies.clear()
        barrier.wait()
        start = time.perf_counter()
        cpu0 = time.process_time()
        state.update(next=warmup, limit=warmup + total, stop_at=start + seconds)
        run_all(conns, iterations)
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
        for c in conns:
            c.close()
        if failures:
            raise RuntimeError(failures[0])
        out.put(
            {
                "warmup": warmup,
                "latencies": latencies,
                "start": time.time() - (end - start),
                "end": time.time(),
                "cpu": cpu,
                "notes": notes[:20],
            }
        )
    except BaseException:
        out.put({"error": traceback_text()})
        raise


def traceback_text() -> str:
    import traceback

    return traceback.format_exc()


@dataclass
class DbRunResult:
    latencies: list[float]
    seconds: float
    client_cpu: float
    notes: list[Any]
    warmup: int = 0


def run_db_clients(
    url: str,
    make_iteration: Callable[[int], Iteration],
    *,
    concurrency: int,
    processes: int,
    total: int,
    warmup: int,
    seconds: float,
) -> DbRunResult:
    """``concurrency`` psycopg connections spread over ``processes`` forked processes (one Python process
    cannot drive as many statements as PostgreSQL answers), ``total`` measured iterations after
    ``warmup``, at most ``seconds``. ``make_iteration(seed)`` runs in the child and builds one
    connection's iteration function."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    processes = max(1, min(processes, concurrency))
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = []
    for p in range(processes):
        conns = concurrency // processes + (1 if p < concurrency % processes else 0)
        n = total // processes + (1 if p < total % processes else 0)
        args = (url, make_iteration, conns, n, max(conns, warmup // processes), seconds, p + 1, barrier, out)
        procs.append(ctx.Process(target=_db_worker, args=args))
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=seconds + 600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    for r in results:
        if "error" in r:
            raise SystemExit(f"database client failed:\n{r['error']}")
    return DbRunResult(
        [x for r in results for x in r["latencies"]],
        max(r["end"] for r in results) - min(r["start"] for r in results),
        sum(r["cpu"] for r in results),
        [x for r in results for x in r["notes"]],
        sum(r["warmup"] for r in results),
    )


# --- CPU per request (robust on a shared machine) ---------------------------------------------------


def _children_of(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _backends_of(dbname: str) -> list[int]:
    needle = f" {dbname} ".encode()
    return [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if (cmd := _cmdline(int(p.parent.name))).startswith(b"postgres: ") and needle in cmd
    ]


class CpuMeter:
    """CPU seconds used by a process tree (the server, or this process and its children) and by the
    PostgreSQL backends of one database, sampled twice a second so that processes which exit
    before the end still count.

    Throughput on a 2-core machine that others share says little by itself; CPU per request does not
    depend on who else is running, and tells what one dedicated machine could do."""

    def __init__(self, dbname: str, root: int | None = None, *, skip_root: bool = False) -> None:
        self.dbname = dbname
        self.root = root
        self.skip_root = skip_root
        self.hz = os.sysconf("SC_CLK_TCK")
        self.first: dict[int, int] = {}
        self.last: dict[int, tuple[str, int]] = {}
        self.app_seconds = 0.0
        self.db_seconds = 0.0
        self._stop = threading.Event()

    def _sample(self, initial: bool = False) -> None:
        ticks = _proc_ticks()
        tree = _children_of(self.root) if self.root else []
        if self.skip_root:
            tree = tree[1:]
        groups = [("app", tree), ("db", _backends_of(self.dbname))]
        for group, pids in groups:
            for pid in pids:
                if pid not in ticks:
                    continue
                if initial:
                    self.first[pid] = ticks[pid]
                self.last[pid] = (group, ticks[pid])

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        used = {"app": 0, "db": 0}
        for pid, (group, ticks) in self.last.items():
            used[group] += ticks - self.first.get(pid, 0)
        self.app_seconds = used["app"] / self.hz
        self.db_seconds = used["db"] / self.hz


def dbname_of(url: str) -> str:
    return urlsplit(libpq_url(url)).path.lstrip("/")


def print_cpu(unit: str, rows: list[tuple[str, float, float, int]]) -> list[dict[str, float]]:
    """rows: (name, app or client CPU seconds, PostgreSQL CPU seconds, requests)."""
    print(f"\nCPU per {unit} (independent of what else runs on the machine):")
    print(f"{'':24} {'Python ms':>10} {'PostgreSQL ms':>14} {'total ms':>9} {'2 cores/total':>14}")
    out = []
    for name, app, db, n in rows:
        a, d = 1000 * app / max(1, n), 1000 * db / max(1, n)
        cap = 2000 / (a + d) if a + d else float("nan")
        shown = f"{cap:>12.0f}/s" if a + d else f"{'(too short)':>14}"
        print(f"{name:24} {a:>10.2f} {d:>14.2f} {a + d:>9.2f} {shown}")
        out.append({"name": name, "python_ms": a, "postgres_ms": d, "capacity_2_cores": cap})
    return out
