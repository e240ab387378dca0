"""INSERT ... ON CONFLICT DO UPDATE for both SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def upsert(
    session: Session,
    table: Table,
    values: dict[str, Any] | list[dict[str, Any]],
    keys: list[str],
    set_: dict[str, Any],
) -> None:
    """One statement for one row or many; ``set_`` values may reference the proposed row via the
    callable form ``lambda excluded: ...``."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(values) if isinstance(values, list) else insert(table).values(**values)
    resolved = {k: (v(stmt.excluded) if callable(v) else v) for k, v in set_.items()}
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=resolved))
