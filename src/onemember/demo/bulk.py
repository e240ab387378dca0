"""Bulk writes of generated rows: COPY on PostgreSQL, prepared executemany on SQLite.

Rows are plain tuples in the column order given, with Python values (aware datetimes, dates, bytes,
JSON-able lists). Ids are handed out by the caller from ``first_free_id`` so rows can reference each
other before anything is written; ``finish`` moves the PostgreSQL sequences past them. Everything goes
through the session's own connection, so it is part of the caller's transaction.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.orm import Session

from onemember.db import Base

Processor = Callable[[Any], Any] | None


def table_of(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


Batch = list[tuple[Table, Sequence[str], Sequence[Sequence[Any]]]]


class BulkWriter:
    def __init__(self, session: Session) -> None:
        session.flush()
        self.conn = session.connection()
        self.dialect = self.conn.dialect
        self.pg = self.dialect.name == "postgresql"
        self.counts: dict[str, int] = defaultdict(int)
        self._with_ids: list[Table] = []
        self._prepared: dict[tuple[str, tuple[str, ...]], tuple[str, list[Processor]]] = {}
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._pg_types: dict[str, dict[str, str]] = {}

    def first_free_id(self, table: Table) -> int:
        """An id above every row of ``table`` and, on PostgreSQL, above what its sequence handed out."""
        top = int(self.conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
        if self.pg:
            seq = self._sequence(table)
            last, called = self.conn.execute(text(f"SELECT last_value, is_called FROM {seq}")).one()
            top = max(top, int(last) if called else int(last) - 1)
        if table not in self._with_ids:
            self._with_ids.append(table)
        return top + 1

    def _sequence(self, table: Table) -> str:
        seq = self.conn.execute(text(f"SELECT pg_get_serial_sequence('{table.name}', 'id')")).scalar_one()
        return str(seq)

    def write(self, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cols = tuple(columns)
        if self.pg:
            self._copy(table, cols, rows)
        else:
            self._executemany(table, cols, rows)
        self.counts[table.name] += len(rows)

    def _copy(self, table: Table, cols: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
        """Binary COPY: no text parsing on the server; column types come from the database itself."""
        types = self._pg_types.get(table.name)
        if types is None:
            found = self.conn.execute(
                text(
                    "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                    "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
                ),
                {"t": table.name},
            )
            types = {str(name): str(typ) for name, typ in found}
            self._pg_types[table.name] = types
        raw = self.conn.connection.driver_connection
        assert raw is not None
        statement = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)"
        with raw.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types([types[c] for c in cols])
            for row in rows:
                copy.write_row(row)

    def _executemany(self, table: Table, cols: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
        key = (table.name, cols)
        if key not in self._prepared:
            sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
            procs: list[Processor] = [
                table.c[c].type.dialect_impl(self.dialect).bind_processor(self.dialect) for c in cols
            ]
            self._prepared[key] = (sql, procs)
        sql, procs = self._prepared[key]
        active = [(i, p) for i, p in enumerate(procs) if p is not None]
        params: list[tuple[Any, ...]] = []
        if active:
            for row in rows:
                values = list(row)
                for i, proc in active:
                    if values[i] is not None:
                        values[i] = proc(values[i])
                params.append(tuple(values))
        else:
            params = [tuple(row) for row in rows]
        self.conn.exec_driver_sql(sql, params)

    # --- writing in the background while the caller computes the next batch ---

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` for a writer thread; the caller must not use the session until ``drain``.

        Only PostgreSQL gains from the thread (the server works while Python computes the next batch);
        SQLite's inserts are Python-bound, so there the batch is written at once instead of fighting
        the computing thread for the GIL."""
        if self._failure is not None:
            raise self._failure
        if not self.pg:
            for table, cols, rows in batch:
                self.write(table, cols, rows)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="bulk-writer", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._failure is not None:
                continue  # keep taking batches so the producer never blocks
            try:
                for table, cols, rows in batch:
                    self.write(table, cols, rows)
            except BaseException as exc:  # handed to the producer at its next submit or drain
                self._failure = exc

    def drain(self) -> None:
        """Wait for every queued batch; raise what the writer thread hit, if anything."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Move each PostgreSQL id sequence past the ids written (SQLite needs nothing)."""
        if not self.pg:
            return
        for table in self._with_ids:
            seq = self._sequence(table)
            self.conn.execute(
                text(
                    f"SELECT setval('{seq}', GREATEST((SELECT max(id) FROM {table.name}), "
                    f"(SELECT last_value FROM {seq})))"
                )
            )
