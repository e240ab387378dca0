"""Pure points arithmetic: no I/O, integers only."""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd


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
