"""Chunks of an import, each committed on its own, retried when a concurrent writer got there first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

T = TypeVar("T")
RETRIES = 3


def commit_chunk(session: Session, work: Callable[[], T]) -> T:
    """Run ``work`` and commit. A unique violation (say, a till registered the same phone a moment ago)
    rolls the chunk back and runs it again: it checks what exists first, so the retry skips that row."""
    for attempt in range(RETRIES):
        try:
            out = work()
            session.commit()
            return out
        except IntegrityError:
            session.rollback()
            if attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")
