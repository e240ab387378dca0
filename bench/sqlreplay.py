"""Capture the SQL one real API request sends to PostgreSQL, and replay it with fresh values.

The capture runs the real app in-process (FastAPI's TestClient) on an engine whose psycopg
connections record every ``execute``/``executemany`` with its parameters and result rows, and every
``commit``/``rollback`` that ends a transaction: exactly what the server sends, pool pre-ping and
authentication included.

The replay sends the same statement texts, in the same order and transactions (so it takes the same
row locks), on plain psycopg connections. Values are made fresh for each iteration:

* seeds: the idempotency key, member number, order number, API key prefix and event UUIDs get new
  values;
* ids: every ``id``/``*_id`` column a statement returns is matched with the row the capture got, and
  the captured id is replaced by the new one in all later parameters (ids live in disjoint ranges per
  table, see ``common.spread_sequences``, so substituting by value is unambiguous);
* timestamps are shifted by the time since the capture.

Computed values (balances after, amounts) are replayed as captured: same rows, same amount of work.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Json, Jsonb

from common import ID_STRIDE

_TABLE = re.compile(r"(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Step:
    kind: str  # "exec" | "many" | "commit" | "rollback"
    sql: str = ""
    params: Any = None
    columns: list[str] | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    dynamic: list[Any] | None = None  # keys of ``params`` that a replay may change; None: all

    def label(self) -> str:
        if self.kind in ("commit", "rollback"):
            return self.kind.upper()
        text = " ".join(self.sql.split())
        match = _TABLE.search(text)
        verb = text.split(" ", 1)[0].upper()
        if match is None:
            return text[:40]
        lock = " FOR UPDATE" if "FOR UPDATE" in text.upper() else ""
        many = " (executemany)" if self.kind == "many" else ""
        conflict = " ON CONFLICT" if "ON CONFLICT" in text.upper() else ""
        return f"{verb} {match.group(1)}{lock}{conflict}{many}"


class Recorder:
    def __init__(self) -> None:
        self.on = False
        self.steps: list[Step] = []
        self.lock = threading.Lock()

    def add(self, step: Step) -> Step | None:
        if not self.on:
            return None
        with self.lock:
            self.steps.append(step)
        return step


RECORDER = Recorder()


class RecordingCursor(psycopg.Cursor[Any]):
    _om_step: Step | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self._om_step = RECORDER.add(Step("exec", str(query), params))
        result = super().execute(query, params, **kwargs)
        if self._om_step is not None and self.description is not None:
            self._om_step.columns = [d.name for d in self.description]
        return result

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:  # type: ignore[override]
        params_seq = list(params_seq)
        self._om_step = RECORDER.add(Step("many", str(query), params_seq))
        super().executemany(query, params_seq, **kwargs)

    def _keep(self, rows: list[Any]) -> None:
        if self._om_step is not None:
            self._om_step.rows.extend(tuple(r) for r in rows)

    def fetchone(self) -> Any:
        row = super().fetchone()
        if row is not None:
            self._keep([row])
        return row

    def fetchmany(self, size: int = 0) -> list[Any]:
        rows = super().fetchmany(size)
        self._keep(rows)
        return rows

    def fetchall(self) -> list[Any]:
        rows = super().fetchall()
        self._keep(rows)
        return rows


class RecordingConnection(psycopg.Connection[Any]):
    def commit(self) -> None:
        if self.info.transaction_status != TransactionStatus.IDLE:
            RECORDER.add(Step("commit"))
        super().commit()

    def rollback(self) -> None:
        if self.info.transaction_status != TransactionStatus.IDLE:
            RECORDER.add(Step("rollback"))
        super().rollback()


def recording_creator(url: str) -> Any:
    def connect() -> RecordingConnection:
        return RecordingConnection.connect(url, cursor_factory=RecordingCursor)

    return connect


@dataclass
class Template:
    steps: list[Step]
    captured_at: datetime
    seeds: dict[str, str]  # role -> captured value (member_no, idem_key, order_no, prefix)
    uuids: list[str]

    def prepare(self) -> None:
        """Find, once, the parameters a replay may have to change, so each iteration copies the rest."""
        markers = [v for v in self.seeds.values() if len(v) >= 8] + self.uuids
        for step in self.steps:
            for row in step.rows:
                markers += [str(v) for v in row if isinstance(v, int) and v >= ID_STRIDE]
        for step in self.steps:
            if step.kind == "exec" and isinstance(step.params, dict):
                step.dynamic = [k for k, v in step.params.items() if _maybe_dynamic(v, markers)]

    def statements(self) -> int:
        return sum(1 for s in self.steps if s.kind in ("exec", "many"))

    def transactions(self) -> int:
        return sum(1 for s in self.steps if s.kind in ("commit", "rollback"))

    def describe(self) -> list[str]:
        return [s.label() for s in self.steps]


def _maybe_dynamic(value: Any, markers: list[str]) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= ID_STRIDE
    if isinstance(value, datetime):
        return True
    if isinstance(value, str):
        return any(m in value for m in markers)
    if isinstance(value, bytes):
        return any(m.encode() in value for m in markers)
    if isinstance(value, dict):
        return any(_maybe_dynamic(v, markers) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_maybe_dynamic(v, markers) for v in value)
    if isinstance(value, Json | Jsonb):
        return _maybe_dynamic(value.obj, markers)
    return not isinstance(value, float | date)


def find_uuids(value: Any, found: list[str]) -> None:
    if isinstance(value, str) and _UUID.match(value):
        found.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            find_uuids(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            find_uuids(v, found)


class Mapper:
    """Old value -> new value for one replay iteration."""

    def __init__(self, strs: dict[str, str], delta: timedelta) -> None:
        self.ints: dict[int, int] = {}
        self.strs = dict(strs)
        self.delta = delta
        self.known: set[int] = set()
        self.unmapped: set[int] = set()

    def learn(
        self, columns: list[str], old_rows: list[tuple[Any, ...]], new_rows: list[tuple[Any, ...]]
    ) -> None:
        idx = [i for i, c in enumerate(columns) if c == "id" or c.endswith("_id")]
        for old, new in zip(old_rows, new_rows, strict=False):
            for i in idx:
                a, b = old[i], new[i]
                # small ids (org, program, brand, region) are constants of a run: never substituted
                if isinstance(a, int) and isinstance(b, int) and a >= ID_STRIDE:
                    self.known.add(a)
                    if a != b:
                        self.ints[a] = b
                        self.strs[str(a)] = str(b)

    def sub(self, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value in self.ints:
                return self.ints[value]
            if value >= ID_STRIDE and value not in self.known:
                self.unmapped.add(value)
            return value
        if isinstance(value, str):
            if value in self.strs:
                return self.strs[value]
            for old, new in self.strs.items():
                if len(old) >= 8 and old in value:
                    value = value.replace(old, new)
            return value
        if isinstance(value, bytes):
            for old, new in self.strs.items():
                if len(old) >= 8:
                    value = value.replace(old.encode(), new.encode())
            return value
        if isinstance(value, datetime):
            return value + self.delta
        if isinstance(value, date):
            return value
        if isinstance(value, dict):
            return {k: self.sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.sub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.sub(v) for v in value)
        if isinstance(value, Jsonb):
            return Jsonb(self.sub(value.obj))
        if isinstance(value, Json):
            return Json(self.sub(value.obj))
        return value


def fresh_seeds(template: Template, new: dict[str, str]) -> dict[str, str]:
    strs = {template.seeds[role]: value for role, value in new.items() if role in template.seeds}
    for old in template.uuids:
        strs[old] = str(uuid.uuid4())
    return strs


def replay(conn: psycopg.Connection[Any], template: Template, mapper: Mapper) -> None:
    """One iteration: every step of the template on ``conn`` (sync psycopg: a quarter of the client
    CPU per statement of the asyncio flavour, which matters on two cores)."""
    for step in template.steps:
        if step.kind == "commit":
            conn.commit()
        elif step.kind == "rollback":
            conn.rollback()
        elif step.kind == "many":
            with conn.cursor() as cur:
                cur.executemany(step.sql, [mapper.sub(p) for p in step.params])
        else:
            if step.dynamic is None:
                params = mapper.sub(step.params)
            else:
                params = dict(step.params)
                for key in step.dynamic:
                    params[key] = mapper.sub(params[key])
            cur = conn.execute(step.sql, params)
            if step.columns is not None:
                mapper.learn(step.columns, step.rows, cur.fetchall())
