"""Manual points adjustments by staff, with a second person's approval above the program's threshold.

A request names the member, a signed number of points and a reason. Up to the program's
``adjust_approval_threshold`` points it applies at once; above it the request waits until a different
HQ admin approves (or rejects) it. Applying writes one ``adjust`` entry: a credit repays any debt and
becomes a lot that expires like earned points, a debit takes from the soonest-expiring lots and is
refused beyond the spendable balance. The entry carries the unique reference ``adjust:<id>``, so the
database itself keeps an adjustment from applying twice. Every step is audited with who and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal
from onemember.common.types import EntryKind, MemberStatus, Role
from onemember.db import utcnow
from onemember.errors import Conflict, DomainError, Forbidden, NotFound
from onemember.events import service as events
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.members.views import in_scope
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.errors import InsufficientPoints
from onemember.points.mall import current_member
from onemember.points.models import PointAccount, PointAdjustment, PointEntry, PointsProgram

ADJUST_ROLES = frozenset({Role.HQ_ADMIN, Role.CS_AGENT, Role.STORE_MANAGER})
APPROVE_ROLES = frozenset({Role.HQ_ADMIN})
REPORT_ROLES = frozenset({Role.HQ_ADMIN, Role.AUDITOR})
REASON_MAX = 200
REQUESTED = "points.adjustment_requested"  # waits for a second person
APPLIED_AT_ONCE = "points.adjustment_applied"  # within the threshold


class AdjustmentStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"


class InvalidAdjustment(DomainError):
    status = 422
    code = "points.invalid_adjustment"
    zh = "积分调整无效"
    en = "The adjustment is invalid"


class AdjustmentNotFound(NotFound):
    code = "points.adjustment_not_found"
    zh = "找不到该积分调整"
    en = "Adjustment not found"


class AdjustmentNotPending(Conflict):
    code = "points.adjustment_not_pending"
    zh = "该积分调整已处理"
    en = "This adjustment has already been decided"


class SelfApproval(Forbidden):
    code = "points.adjustment_self_approval"
    zh = "不能审批自己提交的积分调整"
    en = "An adjustment needs a second person's approval"


def _available(session: Session, account: PointAccount, now: datetime) -> int:
    return sum(lot.remaining for lot in points._spendable_lots(session, account.id, now, []))


def _insufficient(available: int, requested: int) -> InsufficientPoints:
    return InsufficientPoints(
        f"积分余额不足：可用 {available}，需要扣减 {requested}",
        f"Not enough points: {available} available, {requested} to take",
        available=available,
        requested=requested,
    )


def _apply(
    session: Session, adjustment: PointAdjustment, account: PointAccount, store_id: int | None, tz: str
) -> PointEntry:
    """Write the adjustment's one ledger entry: credit like an earning, debit soonest-expiring first."""
    now = utcnow()
    ctx = points.EntryContext(
        store_id=store_id,
        reason=f"人工调整 #{adjustment.id}：{adjustment.reason}",
        actor=adjustment.requested_by,
        ref=f"adjust:{adjustment.id}",
        at=now,
    )
    if adjustment.points > 0:
        program = session.get(PointsProgram, account.program_id)
        assert program is not None
        entry = points.earn(
            session,
            account,
            adjustment.points,
            ctx,
            kind=EntryKind.ADJUST,
            expires_at=points.expiry_of(program, now, tz),
        )
    else:
        take = -adjustment.points
        lots = points._spendable_lots(session, account.id, now, [])
        available = sum(lot.remaining for lot in lots)
        if available < take:
            raise _insufficient(available, take)
        entry = points._write_entry(session, account, EntryKind.ADJUST, adjustment.points, 0, ctx)
        left = points._consume(session, lots, take, entry)
        assert left == 0
    adjustment.entry_id = entry.id
    adjustment.status = AdjustmentStatus.APPLIED
    adjustment.decided_at = now
    return entry


def _changed(
    session: Session, member: Member, account: PointAccount, change: int, store_id: int | None
) -> None:
    events.emit(
        session,
        account.org_id,
        "points.changed",
        {
            "member_no": member.member_no,
            "earned": max(change, 0),
            "redeemed": max(-change, 0),
            "balance": account.balance,
            "debt": account.debt,
            "reason": "adjustment",
        },
        member_id=member.id,
        store_ids=[store_id] if store_id else [],
    )


def request_adjustment(
    session: Session,
    principal: Principal,
    member: Member,
    amount: int,
    reason: str,
    *,
    store: Store | None = None,
) -> PointAdjustment:
    """Ask for ``amount`` points (negative takes points away); applied now up to the threshold."""
    principal.require_role(ADJUST_ROLES, "调整积分", "adjust points")
    if member.status != MemberStatus.ACTIVE or member.org_id != principal.org_id:
        raise MemberNotFound()
    if not in_scope(session, principal, member):
        raise Forbidden(
            "该会员不在您的门店范围内", "That member is outside your stores", code="auth.member_scope"
        )
    reason = reason.strip()
    if not reason:
        raise InvalidAdjustment(
            "请填写调整原因",
            "Give a reason for the adjustment",
            code="points.reason_required",
            field="reason",
        )
    if len(reason) > REASON_MAX:
        raise InvalidAdjustment(
            f"原因最多 {REASON_MAX} 个字符", f"The reason is at most {REASON_MAX} characters", field="reason"
        )
    if amount == 0 or abs(amount) > 10**9:
        raise InvalidAdjustment(
            "调整积分须为非零整数", "Adjust by a non-zero number of points", field="points"
        )
    if store is None and principal.store_id is not None:
        store = org_service.get_store(session, principal.org_id, principal.store_id)
    if store is not None:
        principal.require_store(store.id)
    store_id = store.id if store else None
    program = points.default_program(session, principal.org_id)
    account = points.ensure_account(session, principal.org_id, member.id, program.id)
    account = points.lock_account(session, account.id)
    now = utcnow()
    if amount < 0 and (available := _available(session, account, now)) < -amount:
        raise _insufficient(available, -amount)
    adjustment = PointAdjustment(
        org_id=principal.org_id,
        member_id=member.id,
        points=amount,
        reason=reason,
        status=AdjustmentStatus.PENDING,
        requested_by=principal.actor,
        decided_by="",
        created_at=now,
    )
    session.add(adjustment)
    session.flush()
    needs_approval = abs(amount) > program.adjust_approval_threshold
    audit.record(
        session,
        principal,
        REQUESTED if needs_approval else APPLIED_AT_ONCE,
        target_type="point_adjustment",
        target_id=adjustment.id,
        member_id=member.id,
        store_id=store_id,
        reason=reason,
        details={"points": amount, "threshold": program.adjust_approval_threshold},
    )
    if not needs_approval:
        tz = org_service.get_org(session, principal.org_id).timezone
        _apply(session, adjustment, account, store_id, tz)
        _changed(session, member, account, amount, store_id)
    session.flush()
    return adjustment


def _adjustment(session: Session, principal: Principal, adjustment_id: int, *, lock: bool) -> PointAdjustment:
    q = select(PointAdjustment).where(
        PointAdjustment.id == adjustment_id, PointAdjustment.org_id == principal.org_id
    )
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    adjustment = session.scalar(q)
    if adjustment is None:
        raise AdjustmentNotFound()
    return adjustment


def _decidable(session: Session, principal: Principal, adjustment_id: int) -> PointAdjustment:
    """Lock a pending adjustment for a decision by an HQ admin who did not ask for it."""
    principal.require_role(APPROVE_ROLES, "审批积分调整", "decide on adjustments")
    adjustment = _adjustment(session, principal, adjustment_id, lock=True)
    if adjustment.status != AdjustmentStatus.PENDING:
        raise AdjustmentNotPending(current_status=adjustment.status)
    if adjustment.requested_by == principal.actor:
        raise SelfApproval()
    return adjustment


def requested_store(session: Session, adjustment: PointAdjustment) -> int | None:
    """The store an adjustment was asked for at, as its request's audit record holds it."""
    return session.scalar(
        select(AuditLog.store_id).where(
            AuditLog.org_id == adjustment.org_id,
            AuditLog.action.in_([REQUESTED, APPLIED_AT_ONCE]),
            AuditLog.target_type == "point_adjustment",
            AuditLog.target_id == str(adjustment.id),
        )
    )


def approve_adjustment(
    session: Session, principal: Principal, adjustment_id: int, note: str = ""
) -> PointAdjustment:
    """A second person approves a large adjustment; it applies now (a debit still needs the points)."""
    principal.require_role(APPROVE_ROLES, "审批积分调整", "decide on adjustments")
    found = _adjustment(session, principal, adjustment_id, lock=False)
    member = current_member(session, found.member_id)
    program = points.default_program(session, principal.org_id)
    # The account first, then the adjustment: every writer of this member's points locks in that order.
    account = points.ensure_account(session, principal.org_id, member.id, program.id)
    account = points.lock_account(session, account.id)
    adjustment = _decidable(session, principal, adjustment_id)
    store_id = requested_store(session, adjustment)
    tz = org_service.get_org(session, principal.org_id).timezone
    _apply(session, adjustment, account, store_id, tz)
    adjustment.decided_by = principal.actor
    audit.record(
        session,
        principal,
        "points.adjustment_approved",
        target_type="point_adjustment",
        target_id=adjustment.id,
        member_id=adjustment.member_id,
        store_id=store_id,
        reason=note,
        details={"points": adjustment.points, "requested_by": adjustment.requested_by},
    )
    _changed(session, member, account, adjustment.points, store_id)
    session.flush()
    return adjustment


def reject_adjustment(
    session: Session, principal: Principal, adjustment_id: int, note: str = ""
) -> PointAdjustment:
    """A second person turns a large adjustment down; no points move."""
    adjustment = _decidable(session, principal, adjustment_id)
    adjustment.status = AdjustmentStatus.REJECTED
    adjustment.decided_by = principal.actor
    adjustment.decided_at = utcnow()
    audit.record(
        session,
        principal,
        "points.adjustment_rejected",
        target_type="point_adjustment",
        target_id=adjustment.id,
        member_id=adjustment.member_id,
        store_id=requested_store(session, adjustment),
        reason=note,
        details={"points": adjustment.points, "requested_by": adjustment.requested_by},
    )
    session.flush()
    return adjustment


def adjustments(
    session: Session, principal: Principal, status: str | None = None, *, limit: int = 50, offset: int = 0
) -> list[PointAdjustment]:
    """Adjustments newest first; store staff see the ones they asked for, HQ roles every one."""
    q = select(PointAdjustment).where(PointAdjustment.org_id == principal.org_id)
    if status:
        q = q.where(PointAdjustment.status == status)
    if not principal.is_hq:
        q = q.where(PointAdjustment.requested_by == principal.actor)
    return list(session.scalars(q.order_by(PointAdjustment.id.desc()).limit(limit).offset(offset)))


@dataclass
class LargeAdjustment:
    adjustment: PointAdjustment
    store_id: int | None


def largest_adjustments(
    session: Session,
    principal: Principal,
    start: datetime,
    end: datetime,
    *,
    store_id: int | None = None,
    limit: int = 20,
) -> list[LargeAdjustment]:
    """HQ's watch list: the applied adjustments with the most points either way in ``[start, end)``,
    optionally only those made at one store."""
    principal.require_role(REPORT_ROLES, "查看积分调整报表", "see the adjustments report")
    if not principal.is_hq:
        raise Forbidden("仅总部可查看", "Only HQ may see this", code="auth.store_scope")
    q = (
        select(PointAdjustment, PointEntry.store_id)
        .join(PointEntry, PointEntry.id == PointAdjustment.entry_id)
        .where(
            PointAdjustment.org_id == principal.org_id,
            PointAdjustment.status == AdjustmentStatus.APPLIED,
            PointAdjustment.decided_at >= start,
            PointAdjustment.decided_at < end,
        )
    )
    if store_id is not None:
        q = q.where(PointEntry.store_id == store_id)
    rows = session.execute(
        q.order_by(func.abs(PointAdjustment.points).desc(), PointAdjustment.id).limit(limit)
    ).all()
    return [LargeAdjustment(a, s) for a, s in rows]
