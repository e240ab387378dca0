"""Pure package arithmetic: use values, refunds and expiry. Integers only, no I/O.

A package worth ``value`` fen with ``total`` uses splits its value by largest remainder: every use is
worth ``value // total`` and the first ``value % total`` uses one fen more. Uses are numbered 1..total
in the order they are taken, so any sequence of uses adds up to exactly ``value`` and the unused uses
are worth exactly what the used ones left.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from onemember.points.calculations import end_of_local_day


def uses_value(value_fen: int, uses_total: int, first_use_no: int, uses: int) -> int:
    """The fen that uses ``first_use_no`` .. ``first_use_no + uses - 1`` (1-based) of a package carry."""
    if value_fen < 0 or uses_total < 1 or uses < 0:
        raise ValueError("value must not be negative and a package has at least one use")
    if first_use_no < 1 or first_use_no + uses - 1 > uses_total:
        raise ValueError("use numbers outside the package")
    base, extra = divmod(value_fen, uses_total)
    last = first_use_no + uses - 1
    bumped = max(0, min(last, extra) - first_use_no + 1)
    return uses * base + bumped


def per_use_values(value_fen: int, uses_total: int) -> list[int]:
    """Each use's value in order (for display); sums to ``value_fen``."""
    return [uses_value(value_fen, uses_total, n, 1) for n in range(1, uses_total + 1)]


def pro_rata_refund(price_fen: int, uses_total: int, uses_left: int) -> int:
    """What the unused uses of a package bought for ``price_fen`` are worth: the last ``uses_left`` uses."""
    if uses_left == 0:
        return 0
    return uses_value(price_fen, uses_total, uses_total - uses_left + 1, uses_left)


def expiry_for(sold_at: datetime, validity_days: int | None, tz: str) -> datetime | None:
    """The end of the last valid business day: ``validity_days`` days counting the day of sale."""
    if validity_days is None:
        return None
    local = sold_at.astimezone(ZoneInfo(tz)).date()
    return end_of_local_day(local + timedelta(days=validity_days - 1), tz)
