"""Tier decisions: upgrade at once, keep-level, grace, downgrade, manual floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onemember.tiers.calculations import Level, Standing, on_activity, progress, qualifying_level, reevaluate

LEVELS = [Level(1, "normal", 0, 0, 0), Level(2, "silver", 1, 1000, 800), Level(3, "gold", 2, 5000, 4000)]
NOW = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)


def test_qualifying_and_upgrade_at_once() -> None:
    assert qualifying_level(LEVELS, 999).code == "normal"
    assert qualifying_level(LEVELS, 5000).code == "gold"
    d = on_activity(LEVELS, Standing(1), 1200, NOW)
    assert (d.level_id, d.reason) == (2, "upgrade")
    assert on_activity(LEVELS, Standing(3), 10, NOW).reason == "same"


def test_keep_grace_then_downgrade() -> None:
    assert reevaluate(LEVELS, Standing(3), 4000, NOW, 30) == reevaluate(LEVELS, Standing(3), 4500, NOW, 30)
    keep = reevaluate(LEVELS, Standing(3), 4000, NOW, 30)
    assert (keep.level_id, keep.reason, keep.grace_until) == (3, "keep", None)
    grace = reevaluate(LEVELS, Standing(3), 3000, NOW, 30)
    assert (grace.level_id, grace.reason, grace.grace_until) == (3, "grace", NOW + timedelta(days=30))
    still = reevaluate(LEVELS, Standing(3, grace_until=NOW + timedelta(days=1)), 3000, NOW, 30)
    assert (still.level_id, still.reason) == (3, "grace")
    down = reevaluate(LEVELS, Standing(3, grace_until=NOW - timedelta(days=1)), 3000, NOW, 30)
    assert (down.level_id, down.reason) == (2, "downgrade")
    bottom = reevaluate(LEVELS, Standing(3, grace_until=NOW - timedelta(days=1)), 100, NOW, 30)
    assert (bottom.level_id, bottom.reason) == (1, "downgrade")
    no_grace = reevaluate(LEVELS, Standing(2), 100, NOW, 0)
    assert (no_grace.level_id, no_grace.reason) == (1, "downgrade")


def test_activity_during_grace_ends_it() -> None:
    d = on_activity(LEVELS, Standing(3, grace_until=NOW + timedelta(days=5)), 4100, NOW)
    assert (d.level_id, d.grace_until, d.reason) == (3, None, "keep")


def test_manual_floor_until_date() -> None:
    floored = Standing(
        3, grace_until=NOW - timedelta(days=1), floor_level_id=3, floor_until=NOW + timedelta(days=10)
    )
    assert reevaluate(LEVELS, floored, 0, NOW, 30).reason == "floor"
    half = Standing(
        3, grace_until=NOW - timedelta(days=1), floor_level_id=2, floor_until=NOW + timedelta(days=10)
    )
    d = reevaluate(LEVELS, half, 0, NOW, 30)
    assert (d.level_id, d.reason) == (2, "downgrade")
    expired = Standing(
        3, grace_until=NOW - timedelta(days=1), floor_level_id=3, floor_until=NOW - timedelta(days=1)
    )
    assert reevaluate(LEVELS, expired, 0, NOW, 30).level_id == 1


def test_progress_to_next_level() -> None:
    nxt, missing = progress(LEVELS, 2, 4680)
    assert (nxt.code if nxt else None, missing) == ("gold", 320)
    assert progress(LEVELS, 3, 9999) == (None, 0)
