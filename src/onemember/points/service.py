"""The points ledger: every balance change is an append-only entry, spendable points live in lots.

Callers lock the account first (``lock_account``) and then call one operation; each operation writes
exactly one entry, moves lots and updates the cached balance and debt so that the identities in
``points/models.py`` keep holding. ``verify`` checks them for a whole org.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from onemember.common.types import EntryKind
from onemember.db import utcnow
from onemember.events import service as events
from onemember.points.calculations import expiry_for
from onemember.points.errors import InsufficientPoints
from onemember.points.models import (
    GrowthEntry,
    PointAccount,
    PointEntry,
    PointLot,
    PointLotMovement,
    PointsProgram,
)


def default_program(session: Session, org_id: int) -> PointsProgram:
    """The org's default program, read once per session (a checkout asks several times)."""
    cache: dict[int, PointsProgram] = session.info.setdefault("default_program", {})
    cached = cache.get(org_id)
    if cached is not None and cached in session:
        return cached
    program = session.scalar(
        select(PointsProgram).where(PointsProgram.org_id == org_id, PointsProgram.is_default.is_(True))
    )
    if program is None:
        raise LookupError(f"org {org_id} has no default points program")
    cache[org_id] = program
    return program


def ensure_account(
    session: Session, org_id: int, member_id: int, program_id: int, *, lock: bool = False
) -> PointAccount:
    """The member's account in the program, created on first use; with ``lock`` read under a row lock
    in the same statement (one round trip on the checkout path)."""
    query = select(PointAccount).where(
        PointAccount.member_id == member_id, PointAccount.program_id == program_id
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    account = session.scalar(query)
    if account is None:
        account = PointAccount(
            org_id=org_id,
            member_id=member_id,
            program_id=program_id,
            balance=0,
            debt=0,
            lifetime_earned=0,
            lifetime_redeemed=0,
        )
        session.add(account)
        session.flush()
        if lock:
            account = lock_account(session, account.id)
    return account


def lock_account(session: Session, account_id: int) -> PointAccount:
    """Re-read the account under a row lock (PostgreSQL); SQLite already holds the database write lock."""
    account = session.scalar(
        select(PointAccount)
        .where(PointAccount.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert account is not None
    return account


@dataclass
class EntryContext:
    store_id: int | None = None
    order_id: int | None = None
    return_id: int | None = None
    reason: str = ""
    actor: str = ""
    ref: str | None = None
    reverses_entry_id: int | None = None
    at: datetime | None = None


def _write_entry(
    session: Session, account: PointAccount, kind: EntryKind, amount: int, debt_change: int, ctx: EntryContext
) -> PointEntry:
    account.balance += amount + debt_change
    account.debt += debt_change
    account.updated_at = utcnow()
    entry = PointEntry(
        org_id=account.org_id,
        account_id=account.id,
        member_id=account.member_id,
        kind=str(kind),
        amount=amount,
        debt_change=debt_change,
        balance_after=account.balance,
        debt_after=account.debt,
        store_id=ctx.store_id,
        order_id=ctx.order_id,
        return_id=ctx.return_id,
        reverses_entry_id=ctx.reverses_entry_id,
        ref=ctx.ref,
        reason=ctx.reason,
        actor=ctx.actor,
        created_at=ctx.at or utcnow(),
    )
    session.add(entry)
    session.flush()
    return entry


def _spendable_lots(
    session: Session,
    account_id: int,
    now: datetime,
    first_lot_ids: list[int],
    *,
    taking_back: bool = False,
) -> list[PointLot]:
    """Open lots in spending order: the given lots first, then soonest-expiring (never-expiring last).

    A member spends only available, unexpired points. Taking points back (a return, a debt offset)
    may use every open lot: expired ones the sweep has not reached yet first, pending ones last.
    """
    # Lots restored earlier in this transaction must be seen (the session does not autoflush).
    session.flush()
    query = select(PointLot).where(PointLot.account_id == account_id, PointLot.remaining > 0)
    if not taking_back:
        query = query.where(
            PointLot.available_at <= now, or_(PointLot.expires_at.is_(None), PointLot.expires_at > now)
        )
    lots = list(
        session.scalars(
            query.order_by(
                PointLot.expires_at.asc().nulls_last(), PointLot.earned_at, PointLot.id
            ).with_for_update()
        )
    )
    if taking_back:
        lots.sort(key=lambda lot: 1 if lot.available_at > now else 0)
    if first_lot_ids:
        lots.sort(key=lambda lot: 0 if lot.id in first_lot_ids else 1)
    return lots


def _consume(session: Session, lots: list[PointLot], amount: int, entry: PointEntry) -> int:
    """Take up to ``amount`` from ``lots`` in order; returns what could not be taken."""
    left = amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take == 0:
            continue
        lot.remaining -= take
        left -= take
        session.add(
            PointLotMovement(
                org_id=lot.org_id, lot_id=lot.id, entry_id=entry.id, amount=-take, created_at=entry.created_at
            )
        )
    return left


def earn(
    session: Session,
    account: PointAccount,
    points: int,
    ctx: EntryContext,
    *,
    kind: EntryKind = EntryKind.EARN,
    expires_at: datetime | None = None,
    available_at: datetime | None = None,
) -> PointEntry:
    """Credit points: an outstanding debt is repaid first, the rest becomes a new lot."""
    if points <= 0:
        raise ValueError("earn needs a positive amount")
    repay = min(account.debt, points)
    entry = _write_entry(session, account, kind, points, -repay, ctx)
    account.lifetime_earned += points if kind == EntryKind.EARN else 0
    if points - repay:
        at = entry.created_at
        session.add(
            PointLot(
                org_id=account.org_id,
                account_id=account.id,
                member_id=account.member_id,
                entry_id=entry.id,
                amount=points - repay,
                remaining=points - repay,
                store_id=ctx.store_id,
                order_id=ctx.order_id,
                earned_at=at,
                available_at=available_at or at,
                expires_at=expires_at,
            )
        )
    return entry


def redeem(session: Session, account: PointAccount, points: int, ctx: EntryContext) -> PointEntry:
    """Spend points, soonest-expiring lots first. Raises ``InsufficientPoints`` and changes nothing."""
    if points <= 0:
        raise ValueError("redeem needs a positive amount")
    now = ctx.at or utcnow()
    lots = _spendable_lots(session, account.id, now, [])
    available = sum(lot.remaining for lot in lots)
    if available < points:
        raise InsufficientPoints(
            f"积分余额不足：可用 {available}，需要 {points}",
            f"Not enough points: {available} available, {points} needed",
            available=available,
            requested=points,
        )
    entry = _write_entry(session, account, EntryKind.REDEEM, -points, 0, ctx)
    account.lifetime_redeemed += points
    left = _consume(session, lots, points, entry)
    assert left == 0
    return entry


def reverse_earn(
    session: Session, account: PointAccount, points: int, earn_entry_id: int | None, ctx: EntryContext
) -> tuple[PointEntry, int]:
    """Take back earned points: from the order's own lot first, then any open lot; what is missing
    becomes debt. Returns the entry and the shortfall (the part that became debt)."""
    if points <= 0:
        raise ValueError("reverse_earn needs a positive amount")
    now = ctx.at or utcnow()
    own = (
        list(session.scalars(select(PointLot.id).where(PointLot.entry_id == earn_entry_id)))
        if earn_entry_id
        else []
    )
    # The order's own lot first (pending or not), then every other open lot.
    lots = _spendable_lots(session, account.id, now, own, taking_back=True)
    taken = min(points, sum(lot.remaining for lot in lots))
    shortfall = points - taken
    ctx = replace(ctx, reverses_entry_id=earn_entry_id)
    entry = _write_entry(session, account, EntryKind.EARN_REVERSAL, -points, shortfall, ctx)
    account.lifetime_earned -= points
    _consume(session, lots, taken, entry)
    return entry, shortfall


def refund_redeemed(
    session: Session, account: PointAccount, points: int, redeem_entry_id: int, ctx: EntryContext
) -> PointEntry:
    """Give back redeemed points into the lots they came from (keeping their expiry); debt first."""
    if points <= 0:
        raise ValueError("refund_redeemed needs a positive amount")
    repay = min(account.debt, points)
    ctx = replace(ctx, reverses_entry_id=redeem_entry_id)
    entry = _write_entry(session, account, EntryKind.REDEEM_REFUND, points, -repay, ctx)
    account.lifetime_redeemed -= points
    to_restore = points - repay
    if to_restore == 0:
        return entry
    consumed = dict(
        session.execute(
            select(PointLotMovement.lot_id, -func.sum(PointLotMovement.amount))
            .where(PointLotMovement.entry_id == redeem_entry_id)
            .group_by(PointLotMovement.lot_id)
        ).all()
    )
    restored = dict(
        session.execute(
            select(PointLotMovement.lot_id, func.sum(PointLotMovement.amount))
            .join(PointEntry, PointEntry.id == PointLotMovement.entry_id)
            .where(PointEntry.reverses_entry_id == redeem_entry_id, PointLotMovement.entry_id != entry.id)
            .group_by(PointLotMovement.lot_id)
        ).all()
    )
    lots = session.scalars(
        select(PointLot)
        .where(PointLot.id.in_(list(consumed)))
        .order_by(PointLot.expires_at.desc().nulls_first(), PointLot.id.desc())
        .with_for_update()
    )
    for lot in lots:
        room = min(int(consumed[lot.id]) - int(restored.get(lot.id, 0)), lot.amount - lot.remaining)
        give = min(room, to_restore)
        if give <= 0:
            continue
        # The lot may have moved to another account by a merge; it follows the member.
        lot.account_id = account.id
        lot.member_id = account.member_id
        lot.remaining += give
        to_restore -= give
        session.add(
            PointLotMovement(
                org_id=lot.org_id, lot_id=lot.id, entry_id=entry.id, amount=give, created_at=entry.created_at
            )
        )
    if to_restore:
        # Defensive: never lose points; what cannot go back to its lot becomes a fresh lot.
        session.add(
            PointLot(
                org_id=account.org_id,
                account_id=account.id,
                member_id=account.member_id,
                entry_id=entry.id,
                amount=to_restore,
                remaining=to_restore,
                store_id=ctx.store_id,
                order_id=ctx.order_id,
                earned_at=entry.created_at,
                available_at=entry.created_at,
                expires_at=None,
            )
        )
    return entry


def settle_debt(
    session: Session, account: PointAccount, points: int, kind: EntryKind, ctx: EntryContext
) -> PointEntry:
    """Cancel ``points`` of debt without new points: forgiven (write-off) or paid in cash."""
    if not 0 < points <= account.debt:
        raise ValueError("settle_debt needs 0 < points <= debt")
    return _write_entry(session, account, kind, points, -points, ctx)


def offset_debt(session: Session, account: PointAccount, ctx: EntryContext) -> PointEntry | None:
    """Use the account's open points (pending ones last) to cancel debt, after a merge brings both into
    one account."""
    if min(account.balance, account.debt) <= 0:
        return None
    lots = _spendable_lots(session, account.id, ctx.at or utcnow(), [], taking_back=True)
    amount = min(account.debt, sum(lot.remaining for lot in lots))
    if amount <= 0:
        return None
    entry = _write_entry(session, account, EntryKind.DEBT_OFFSET, 0, -amount, ctx)
    left = _consume(session, lots, amount, entry)
    if left:
        raise RuntimeError("debt offset could not consume the lots it counted")
    return entry


def move_account(session: Session, source: PointAccount, target: PointAccount, ctx: EntryContext) -> int:
    """Move everything of ``source`` into ``target`` (a member merge); returns the net points moved."""
    if source.growth_value:
        growth = source.growth_value
        add_growth(session, source, -growth, "merge_out", at=ctx.at)
        add_growth(session, target, growth, "merge_in", at=ctx.at)
    net, debt = source.balance - source.debt, source.debt
    if source.balance == 0 and debt == 0:
        target.lifetime_earned += source.lifetime_earned
        target.lifetime_redeemed += source.lifetime_redeemed
        return 0
    _write_entry(session, source, EntryKind.MERGE_OUT, -net, -debt, ctx)
    session.execute(
        update(PointLot)
        .where(PointLot.account_id == source.id)
        .values(account_id=target.id, member_id=target.member_id)
    )
    _write_entry(session, target, EntryKind.MERGE_IN, net, debt, ctx)
    target.lifetime_earned += source.lifetime_earned
    target.lifetime_redeemed += source.lifetime_redeemed

    offset_debt(session, target, ctx)
    return net


def expiry_of(program: PointsProgram, earned_at: datetime, tz: str) -> datetime | None:
    """When points earned now expire under the program's policy."""
    return expiry_for(
        earned_at,
        program.expiry_policy,
        tz,
        months=program.expiry_months,
        fixed_month=program.expiry_fixed_month,
        fixed_day=program.expiry_fixed_day,
        years_after=program.expiry_years_after,
    )


def add_growth(
    session: Session,
    account: PointAccount,
    amount: int,
    kind: str,
    *,
    order_id: int | None = None,
    return_id: int | None = None,
    at: datetime | None = None,
) -> GrowthEntry:
    """Growth value moves only through this append-only ledger (never below zero)."""
    amount = max(amount, -account.growth_value)
    account.growth_value += amount
    entry = GrowthEntry(
        org_id=account.org_id,
        account_id=account.id,
        member_id=account.member_id,
        kind=kind,
        amount=amount,
        order_id=order_id,
        return_id=return_id,
        created_at=at or utcnow(),
    )
    session.add(entry)
    return entry


def notify_threshold(session: Session, account: PointAccount, before: int, member_no: str) -> None:
    """The member asked to hear when the balance reaches their threshold: tell them once it crosses it."""
    threshold = account.reminder_threshold
    if threshold is not None and before < threshold <= account.balance:
        events.emit(
            session,
            account.org_id,
            "points.threshold_reached",
            {"member_no": member_no, "threshold": threshold, "balance": account.balance},
            member_id=account.member_id,
        )
