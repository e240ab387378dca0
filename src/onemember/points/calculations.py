"""Pure points arithmetic: no I/O, integers only."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from math import gcd
from zoneinfo import ZoneInfo


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that add up exactly (largest remainder).

    Ties go to the earlier position, so the result is deterministic.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    weight_sum = sum(weights)
    if weight_sum <= 0:
        if total:
            raise ValueError("cannot allocate a positive total over zero weights")
        return [0 for _ in weights]
    shares = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(shares)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        shares[i] += 1
    return shares


def base_points(paid_fen: int, points_per_yuan: int) -> int:
    """Points a line earns at the base rate: whole points for the fen actually paid, rounded down."""
    return paid_fen * points_per_yuan // 100


def redeem_unit(redeem_points_per_yuan: int) -> int:
    """The smallest number of points that buys a whole number of fen."""
    return redeem_points_per_yuan // gcd(redeem_points_per_yuan, 100)


def points_value_fen(points: int, redeem_points_per_yuan: int) -> int:
    """Fen that ``points`` pay for; callers check ``points`` is a multiple of ``redeem_unit`` first."""
    return points * 100 // redeem_points_per_yuan


def points_for_fen_ceil(fen_value_points: int, redeem_points_per_yuan: int) -> int:
    """Fen needed to buy back ``fen_value_points`` points, rounded up (used when a refund pays a debt)."""
    return -(-fen_value_points * 100 // redeem_points_per_yuan)


def proportional_part(total: int, done_qty: int, this_qty: int, quantity: int) -> int:
    """The share of ``total`` that ``this_qty`` more units out of ``quantity`` carry, given ``done_qty``
    already taken: cumulative rounding, so returning every unit in any steps takes back exactly ``total``."""
    return total * (done_qty + this_qty) // quantity - total * done_qty // quantity


def add_months(day: date, months: int) -> date:
    """Same day ``months`` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def end_of_local_day(day: date, tz: str) -> datetime:
    """The instant a business day ends in the org's time zone (points expire then), in UTC."""
    nxt = day + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def expiry_for(
    earned_at: datetime,
    policy: str,
    tz: str,
    *,
    months: int = 0,
    fixed_month: int = 12,
    fixed_day: int = 31,
    years_after: int = 1,
) -> datetime | None:
    """When points earned at ``earned_at`` expire under the program's policy.

    ``never``; ``rolling``: at the end of the local day ``months`` after earning; ``fixed_yearly``: points
    earned in year Y expire at the end of ``fixed_month``/``fixed_day`` of year Y + ``years_after``.
    """
    local = earned_at.astimezone(ZoneInfo(tz)).date()
    if policy == "never":
        return None
    if policy == "rolling":
        return end_of_local_day(add_months(local, months), tz)
    if policy == "fixed_yearly":
        year = local.year + years_after
        return end_of_local_day(
            date(year, fixed_month, min(fixed_day, calendar.monthrange(year, fixed_month)[1])), tz
        )
    raise ValueError(f"unknown expiry policy {policy}")
