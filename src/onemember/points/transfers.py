"""Points transfers between members of one org (family sharing).

The sender's points leave soonest-expiring first and arrive as new lots that keep each source lot's
expiry and issuing store, so a transfer never extends a point's life and every received point still
traces back to the store that issued it. Two entries carry it: ``transfer_out`` on the sender consumes
the lots (with lot movements), ``transfer_in`` on the receiver first repays any debt (as an earning
would) and then opens the lots. Both accounts are locked in id order, so two transfers between the same
pair in opposite directions cannot deadlock. A member sends at most the program's monthly allowance,
counted per calendar month in the org's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common.types import EntryKind, MemberStatus, Role
from onemember.db import utcnow
from onemember.errors import Conflict, DomainError
from onemember.events import service as events
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.errors import InsufficientPoints
from onemember.points.models import PointAccount, PointLot, PointTransfer

# Ledger kinds of the two sides. Plain strings until ``EntryKind`` carries them.
TRANSFER_OUT = EntryKind.TRANSFER_OUT
TRANSFER_IN = EntryKind.TRANSFER_IN
TRANSFER_ROLES = TILL_ROLES | {Role.CS_AGENT}


class InvalidTransfer(DomainError):
    status = 422
    code = "points.invalid_transfer"
    zh = "积分转赠无效"
    en = "The transfer is invalid"


class TransferLimitReached(Conflict):
    code = "points.transfer_limit_reached"
    zh = "已超过本月积分转赠上限"
    en = "The monthly transfer allowance is used up"


def month_bounds(at: datetime, tz: str) -> tuple[datetime, datetime]:
    """The calendar month around ``at`` in the org's time zone, as a UTC ``[start, end)``."""
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    start = datetime(local.year, local.month, 1, tzinfo=zone)
    end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def after_debt(parts: list[int], debt: int) -> list[int]:
    """What is left of each part once the first ``debt`` points (the soonest-expiring) repaid a debt."""
    left = []
    for amount in parts:
        repay = min(amount, debt)
        debt -= repay
        left.append(amount - repay)
    return left


def sent_in_month(session: Session, member_id: int, at: datetime, tz: str) -> int:
    start, end = month_bounds(at, tz)
    total = session.scalar(
        select(func.coalesce(func.sum(PointTransfer.points), 0)).where(
            PointTransfer.from_member_id == member_id,
            PointTransfer.created_at >= start,
            PointTransfer.created_at < end,
        )
    )
    return int(total or 0)


def transfer_points(
    session: Session,
    principal: Principal,
    sender: Member,
    receiver: Member,
    amount: int,
    reason: str = "",
    *,
    store: Store | None = None,
) -> PointTransfer:
    """Move ``amount`` points from ``sender`` to ``receiver``; a refusal changes nothing."""
    principal.require_role(TRANSFER_ROLES, "办理积分转赠", "transfer points")
    if store is None and principal.store_id is not None:
        store = org_service.get_store(session, principal.org_id, principal.store_id)
    if store is not None:
        principal.require_store(store.id)
    for member in (sender, receiver):
        if member.status != MemberStatus.ACTIVE or member.org_id != principal.org_id:
            raise MemberNotFound()
    if amount <= 0:
        raise InvalidTransfer("转赠积分须为正整数", "Transfer a positive number of points", field="points")
    if sender.id == receiver.id:
        raise InvalidTransfer(
            "不能把积分转赠给自己",
            "A member cannot transfer points to themselves",
            code="points.transfer_to_self",
        )
    if len(reason) > 200:
        raise InvalidTransfer("备注最多 200 个字符", "The reason is at most 200 characters", field="reason")
    program = points.default_program(session, principal.org_id)
    org = org_service.get_org(session, principal.org_id)
    accounts = {
        m.id: points.ensure_account(session, principal.org_id, m.id, program.id) for m in (sender, receiver)
    }
    locked: dict[int, PointAccount] = {}
    for account in sorted(accounts.values(), key=lambda a: a.id):
        locked[account.member_id] = points.lock_account(session, account.id)
    source, target = locked[sender.id], locked[receiver.id]
    now = utcnow()
    limit = program.transfer_max_per_month
    sent = sent_in_month(session, sender.id, now, org.timezone)
    if sent + amount > limit:
        raise TransferLimitReached(
            f"每月最多转出 {limit} 积分，本月已转出 {sent}",
            f"At most {limit} points may be sent a month; {sent} sent this month",
            limit=limit,
            sent=sent,
            remaining=max(limit - sent, 0),
        )
    lots = points._spendable_lots(session, source.id, now, [])
    available = sum(lot.remaining for lot in lots)
    if available < amount:
        raise InsufficientPoints(
            f"积分余额不足：可用 {available}，需要 {amount}",
            f"Not enough points: {available} available, {amount} needed",
            available=available,
            requested=amount,
        )
    transfer = PointTransfer(
        org_id=principal.org_id,
        from_member_id=sender.id,
        to_member_id=receiver.id,
        points=amount,
        reason=reason,
        actor=principal.actor,
        created_at=now,
    )
    session.add(transfer)
    session.flush()
    note = f"：{reason}" if reason else ""
    store_id = store.id if store else None
    out = points._write_entry(
        session,
        source,
        TRANSFER_OUT,
        -amount,
        0,
        points.EntryContext(
            store_id=store_id,
            reason=f"转赠给会员 {receiver.member_no}{note}",
            actor=principal.actor,
            ref=f"transfer:{transfer.id}",
            at=now,
        ),
    )
    before = {lot.id: lot.remaining for lot in lots}
    left = points._consume(session, lots, amount, out)
    assert left == 0
    taken = [(lot, before[lot.id] - lot.remaining) for lot in lots if lot.remaining != before[lot.id]]
    repay = min(target.debt, amount)
    received = points._write_entry(
        session,
        target,
        TRANSFER_IN,
        amount,
        -repay,
        points.EntryContext(
            store_id=store_id,
            reason=f"会员 {sender.member_no} 转赠{note}",
            actor=principal.actor,
            ref=f"transfer:{transfer.id}",
            at=now,
        ),
    )
    for (lot, _), keep in zip(taken, after_debt([t for _, t in taken], repay), strict=True):
        if keep:
            session.add(
                PointLot(
                    org_id=target.org_id,
                    account_id=target.id,
                    member_id=target.member_id,
                    entry_id=received.id,
                    amount=keep,
                    remaining=keep,
                    store_id=lot.store_id,
                    order_id=None,
                    earned_at=now,
                    available_at=now,
                    expires_at=lot.expires_at,
                )
            )
    audit.record(
        session,
        principal,
        "points.transferred",
        target_type="point_transfer",
        target_id=transfer.id,
        member_id=sender.id,
        store_id=store_id,
        reason=reason,
        details={
            "from_member_no": sender.member_no,
            "to_member_no": receiver.member_no,
            "points": amount,
            "debt_repaid": repay,
        },
    )
    for member, account, change in ((sender, source, -amount), (receiver, target, amount)):
        events.emit(
            session,
            principal.org_id,
            "points.changed",
            {
                "member_no": member.member_no,
                "earned": max(change, 0),
                "redeemed": max(-change, 0),
                "balance": account.balance,
                "debt": account.debt,
                "reason": "transfer",
            },
            member_id=member.id,
            store_ids=[store_id] if store_id else [],
        )
    session.flush()
    return transfer
