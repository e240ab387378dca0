"""Per-org counters (member numbers) advanced atomically, never read-then-write."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from onemember.common.models import Counter


def next_value(session: Session, org_id: int, name: str, count: int = 1) -> int:
    """Reserve ``count`` values and return the last one."""
    stmt = (
        update(Counter)
        .where(Counter.org_id == org_id, Counter.name == name)
        .values(value=Counter.value + count)
        .returning(Counter.value)
    )
    value = session.execute(stmt).scalar_one_or_none()
    if value is None:
        session.add(Counter(org_id=org_id, name=name, value=count))
        session.flush()
        return count
    return int(value)


def luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def member_no_for(seq: int) -> str:
    """Member numbers are at least 9 digits with a Luhn check digit, so a mistyped one is caught."""
    body = f"{seq:08d}"
    return body + luhn_digit(body)


def is_valid_member_no(text: str) -> bool:
    return text.isdigit() and len(text) >= 9 and luhn_digit(text[:-1]) == text[-1]
