"""Tier maths without I/O: which level a member qualifies for, keep-level (保级) and grace periods.

A tier set ranks its levels by ``rank`` (0 = entry level). A member **upgrades at once** when the basis
value (growth value, rolling-12-month spend or order count) reaches a higher level's threshold. At a
scheduled **re-evaluation** a member keeps the current level while the basis is at least that level's
``keep_threshold``; otherwise a **grace period** starts, and only when it has run out does the member
move down to the best level the basis still keeps. A **manual tier** acts as a floor until its date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Level:
    id: int
    code: str
    rank: int
    threshold: int  # basis needed to reach the level
    keep_threshold: int  # basis needed to stay at the level at re-evaluation


@dataclass(frozen=True)
class Standing:
    level_id: int
    grace_until: datetime | None = None
    floor_level_id: int | None = None
    floor_until: datetime | None = None


@dataclass(frozen=True)
class Decision:
    level_id: int
    grace_until: datetime | None
    reason: str  # "upgrade" | "keep" | "grace" | "downgrade" | "floor" | "same"


def _by_id(levels: Sequence[Level]) -> dict[int, Level]:
    return {lv.id: lv for lv in levels}


def qualifying_level(levels: Sequence[Level], basis: int) -> Level:
    """The highest level whose threshold the basis reaches (the entry level at least)."""
    ordered = sorted(levels, key=lambda lv: lv.rank)
    best = ordered[0]
    for lv in ordered:
        if basis >= lv.threshold:
            best = lv
    return best


def _floor(levels: Sequence[Level], standing: Standing, now: datetime) -> Level | None:
    if standing.floor_level_id is None or (standing.floor_until is not None and standing.floor_until < now):
        return None
    return _by_id(levels).get(standing.floor_level_id)


def on_activity(levels: Sequence[Level], standing: Standing, basis: int, now: datetime) -> Decision:
    """After a purchase: upgrade at once if the basis reaches a higher level; never downgrade here."""
    current = _by_id(levels)[standing.level_id]
    target = qualifying_level(levels, basis)
    if target.rank > current.rank:
        return Decision(target.id, None, "upgrade")
    if standing.grace_until is not None and basis >= current.keep_threshold:
        return Decision(current.id, None, "keep")  # back on track: the grace period ends
    return Decision(current.id, standing.grace_until, "same")


def reevaluate(
    levels: Sequence[Level], standing: Standing, basis: int, now: datetime, grace_days: int
) -> Decision:
    """The scheduled review: keep, start or continue a grace period, or move down (never below a floor)."""
    by_id = _by_id(levels)
    current = by_id[standing.level_id]
    floor = _floor(levels, standing, now)
    up = qualifying_level(levels, basis)
    if up.rank > current.rank:
        return Decision(up.id, None, "upgrade")
    if basis >= current.keep_threshold:
        return Decision(current.id, None, "keep")
    if floor is not None and floor.rank >= current.rank:
        return Decision(current.id, None, "floor")
    if standing.grace_until is None and grace_days > 0:
        return Decision(current.id, now + timedelta(days=grace_days), "grace")
    if standing.grace_until is not None and standing.grace_until > now:
        return Decision(current.id, standing.grace_until, "grace")
    kept = [lv for lv in levels if lv.rank < current.rank and basis >= lv.keep_threshold]
    target = max(kept, key=lambda lv: lv.rank) if kept else min(levels, key=lambda lv: lv.rank)
    if floor is not None and floor.rank > target.rank:
        target = floor
    if target.id == current.id:
        return Decision(current.id, None, "keep")
    return Decision(target.id, None, "downgrade")


def progress(levels: Sequence[Level], current_id: int, basis: int) -> tuple[Level | None, int]:
    """The next level up and how much basis is still missing (0 when at the top)."""
    current = _by_id(levels)[current_id]
    higher = sorted((lv for lv in levels if lv.rank > current.rank), key=lambda lv: lv.rank)
    if not higher:
        return None, 0
    nxt = higher[0]
    return nxt, max(nxt.threshold - basis, 0)
