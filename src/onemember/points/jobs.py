"""Daily points work: expire lots, remind members before their points expire, birthday gifts.

Expiry is set-based: on PostgreSQL one statement per slice of accounts locks the due lots, writes one
EXPIRE entry per account, the lot movements, and lowers the cached balances; on SQLite the same happens
in batches through the ORM-free core. Either way each account gets one entry per run, so the ledger
identities keep holding (``onemember verify``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from onemember.common.types import EntryKind
from onemember.events import service as events
from onemember.members.models import Member
from onemember.points import service as points
from onemember.points.calculations import end_of_local_day
from onemember.points.models import PointAccount, PointEntry, PointLot, PointLotMovement, PointsProgram
from onemember.tiers import service as tiers

EXPIRE_SQL = text(
    """
    WITH accs AS (
        -- Accounts first, in id order: the same lock order as checkouts and returns (no deadlocks).
        SELECT a.id FROM point_accounts a
        WHERE a.id IN (SELECT l.account_id FROM point_lots l
                       WHERE l.org_id = :org_id AND l.remaining > 0 AND l.expires_at <= :now
                         AND l.account_id >= :lo AND l.account_id < :hi)
        ORDER BY a.id
        FOR UPDATE
    ), due AS (
        SELECT l.id, l.org_id, l.account_id, l.remaining
        FROM point_lots l
        WHERE l.account_id IN (SELECT id FROM accs) AND l.remaining > 0 AND l.expires_at <= :now
        FOR UPDATE
    ), sums AS (
        SELECT account_id, sum(remaining) AS pts FROM due GROUP BY account_id
    ), acc AS (
        UPDATE point_accounts a SET balance = a.balance - s.pts, updated_at = :now
        FROM sums s WHERE a.id = s.account_id
        RETURNING a.id, a.org_id, a.member_id, a.balance, a.debt, s.pts
    ), ent AS (
        INSERT INTO point_entries (org_id, account_id, member_id, kind, amount, debt_change, balance_after,
                                   debt_after, reason, actor, created_at)
        SELECT org_id, id, member_id, 'expire', -pts, 0, balance, debt, :reason, 'system', :now FROM acc
        RETURNING id, account_id, amount
    ), mv AS (
        INSERT INTO point_lot_movements (org_id, lot_id, entry_id, amount, created_at)
        SELECT d.org_id, d.id, e.id, -d.remaining, :now FROM due d JOIN ent e ON e.account_id = d.account_id
    ), upd AS (
        UPDATE point_lots SET remaining = 0 WHERE id IN (SELECT id FROM due)
    )
    SELECT count(*), coalesce(-sum(amount), 0) FROM ent
    """
)

REASON = "积分到期 points expired"


@dataclass
class ExpiryResult:
    accounts: int = 0
    points: int = 0


def expire_due(session: Session, org_id: int, now: datetime, *, slice_size: int = 200_000) -> ExpiryResult:
    """Expire every lot of the org whose time has come, slice by slice of accounts; the caller commits
    (today once per job, so the locks are held until the whole org is done)."""
    result = ExpiryResult()
    bounds = session.execute(
        select(func.min(PointLot.account_id), func.max(PointLot.account_id)).where(
            PointLot.org_id == org_id, PointLot.remaining > 0, PointLot.expires_at <= now
        )
    ).one()
    if bounds[0] is None:
        return result
    lo, top = int(bounds[0]), int(bounds[1])
    postgres = session.get_bind().dialect.name == "postgresql"
    while lo <= top:
        hi = lo + slice_size
        if postgres:
            n, pts = session.execute(
                EXPIRE_SQL, {"org_id": org_id, "now": now, "lo": lo, "hi": hi, "reason": REASON}
            ).one()
            result.accounts += int(n)
            result.points += int(pts)
        else:
            a, p = _expire_slice_portable(session, org_id, now, lo, hi)
            result.accounts += a
            result.points += p
        lo = hi
    session.flush()
    return result


def _expire_slice_portable(session: Session, org_id: int, now: datetime, lo: int, hi: int) -> tuple[int, int]:
    lots = session.execute(
        select(PointLot.id, PointLot.account_id, PointLot.remaining)
        .where(
            PointLot.org_id == org_id,
            PointLot.remaining > 0,
            PointLot.expires_at <= now,
            PointLot.account_id >= lo,
            PointLot.account_id < hi,
        )
        .order_by(PointLot.account_id, PointLot.id)
    ).all()
    by_account: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for lot_id, account_id, remaining in lots:
        by_account[int(account_id)].append((int(lot_id), int(remaining)))
    total = 0
    for account_id, due in by_account.items():
        account = points.lock_account(session, account_id)
        pts = sum(r for _, r in due)
        entry = points.EntryContext(reason=REASON, actor="system", at=now)
        row = points._write_entry(session, account, EntryKind.EXPIRE, -pts, 0, entry)
        session.execute(
            insert(PointLotMovement),
            [
                {"org_id": org_id, "lot_id": lot_id, "entry_id": row.id, "amount": -r, "created_at": now}
                for lot_id, r in due
            ],
        )
        session.execute(
            update(PointLot).where(PointLot.id.in_([lot_id for lot_id, _ in due])).values(remaining=0)
        )
        total += pts
    return len(by_account), total


def remind_expiring(session: Session, org_id: int, program: PointsProgram, now: datetime, tz: str) -> int:
    """One ``points.expiring`` event per member whose points expire on the day ``reminder_days`` ahead."""
    local_today = now.astimezone(ZoneInfo(tz)).date()
    target = local_today + timedelta(days=program.reminder_days)
    start, end = end_of_local_day(target - timedelta(days=1), tz), end_of_local_day(target, tz)
    rows = session.execute(
        select(PointLot.member_id, func.sum(PointLot.remaining), func.min(PointLot.expires_at))
        .where(
            PointLot.org_id == org_id,
            PointLot.remaining > 0,
            PointLot.expires_at > start,
            PointLot.expires_at <= end,
        )
        .group_by(PointLot.member_id)
    ).all()
    numbers = (
        dict(
            session.execute(
                select(Member.id, Member.member_no).where(Member.id.in_([r[0] for r in rows]))
            ).all()
        )
        if rows
        else {}
    )
    for member_id, pts, expires in rows:
        events.emit(
            session,
            org_id,
            "points.expiring",
            {
                "member_no": numbers.get(member_id),
                "points": int(pts),
                "expires_at": expires.isoformat() if expires else None,
                "days_ahead": program.reminder_days,
            },
            member_id=member_id,
        )
    return len(rows)


def birthday_gifts(session: Session, org_id: int, program: PointsProgram, now: datetime, tz: str) -> int:
    """Tier birthday gifts, once a year, on the first run of the member's birthday month."""
    tier_set = tiers.active_set(session, program.id)
    if tier_set is None:
        return 0
    local = now.astimezone(ZoneInfo(tz))
    gifts = {
        lv.id: lv.birthday_gift_points
        for lv in tiers.level_rows(session, tier_set.id)
        if lv.birthday_gift_points > 0
    }
    if not gifts:
        return 0
    from onemember.tiers.models import MemberTier

    rows = session.execute(
        select(Member.id, MemberTier.level_id)
        .join(MemberTier, MemberTier.member_id == Member.id)
        .where(
            Member.org_id == org_id,
            Member.status == "active",
            MemberTier.tier_set_id == tier_set.id,
            MemberTier.level_id.in_(list(gifts)),
        )
    ).all()
    given = 0
    for member_id, level_id in rows:
        member = session.get(Member, member_id)
        if member is None or member.birthday is None or member.birthday.month != local.month:
            continue
        account = points.ensure_account(session, org_id, member_id, program.id)
        ref = f"birthday-{local.year}"
        if session.scalar(
            select(PointEntry.id).where(PointEntry.account_id == account.id, PointEntry.ref == ref)
        ):
            continue
        account = points.lock_account(session, account.id)
        points.earn(
            session,
            account,
            gifts[level_id],
            points.EntryContext(reason=f"{local.year} 生日礼 birthday gift", actor="system", ref=ref, at=now),
            kind=EntryKind.ADJUST,
            expires_at=points.expiry_of(program, now, tz),
        )
        given += 1
    return given


def pending_released(session: Session, org_id: int, now: datetime) -> int:
    """How many pending points became spendable (for reporting; availability is just a time check)."""
    total = session.scalar(
        select(func.coalesce(func.sum(PointLot.remaining), 0)).where(
            PointLot.org_id == org_id,
            PointLot.available_at <= now,
            PointLot.available_at > now - timedelta(days=1),
        )
    )
    return int(total or 0)


def accounts_balance(session: Session, org_id: int) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(PointAccount.balance), 0)).where(PointAccount.org_id == org_id)
        )
        or 0
    )
