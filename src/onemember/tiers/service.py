"""Tier standing of members: set up tier sets, evaluate after purchases (upgrade at once), review on a
schedule (keep-level, grace, downgrade), manual tiers as floors, and each member's benefits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.errors import DomainError, Forbidden, NotFound
from onemember.events import service as events
from onemember.members.models import Member
from onemember.points.models import PointAccount, PointsProgram
from onemember.tiers import calculations as calc
from onemember.tiers.models import MemberMonthlyStats, MemberTier, TierChange, TierLevel, TierSet

BASES = ("growth", "spend_12m", "orders_12m")


class InvalidTierSet(DomainError):
    status = 422
    code = "tiers.invalid"
    zh = "等级设置无效"
    en = "The tier set is invalid"


@dataclass(frozen=True)
class LevelSpec:
    code: str
    name: str
    threshold: int
    keep_threshold: int
    points_multiplier_pct: int = 100
    discount_pct: int = 0
    birthday_gift_points: int = 0
    free_service_uses: int = 0


def create_tier_set(
    session: Session,
    principal: Principal,
    program: PointsProgram,
    code: str,
    name: str,
    basis: str,
    grace_days: int,
    levels: list[LevelSpec],
) -> TierSet:
    if principal.role != Role.HQ_ADMIN:
        raise Forbidden("只有总部可以设置会员等级", "Only HQ may set up tiers", code="auth.role")
    if basis not in BASES:
        raise InvalidTierSet(f"等级依据须为 {', '.join(BASES)}", f"basis must be one of {', '.join(BASES)}")
    if not levels or levels[0].threshold != 0:
        raise InvalidTierSet("第一个等级的门槛须为 0", "The first level's threshold must be 0")
    for lower, higher in pairwise(levels):
        if higher.threshold <= lower.threshold:
            raise InvalidTierSet("等级门槛须逐级升高", "Thresholds must rise level by level")
    for lv in levels:
        if lv.keep_threshold > lv.threshold or lv.keep_threshold < 0:
            raise InvalidTierSet(
                "保级门槛须在 0 与升级门槛之间", "keep_threshold must be between 0 and threshold"
            )
        if not 100 <= lv.points_multiplier_pct <= 1000 or not 0 <= lv.discount_pct <= 50:
            raise InvalidTierSet("等级权益超出范围", "A benefit is out of range")
    if session.scalar(select(TierSet.id).where(TierSet.program_id == program.id, TierSet.active.is_(True))):
        raise InvalidTierSet(
            "该积分计划已有启用的等级体系", "The program already has an active tier set", code="tiers.exists"
        )
    tier_set = TierSet(
        org_id=program.org_id,
        program_id=program.id,
        code=code,
        name=name,
        basis=basis,
        grace_days=grace_days,
        active=True,
    )
    session.add(tier_set)
    session.flush()
    session.info.pop("active_tier_set", None)
    for rank, lv in enumerate(levels):
        session.add(
            TierLevel(
                org_id=program.org_id,
                tier_set_id=tier_set.id,
                code=lv.code,
                name=lv.name,
                rank=rank,
                threshold=lv.threshold,
                keep_threshold=lv.keep_threshold,
                points_multiplier_pct=lv.points_multiplier_pct,
                discount_pct=lv.discount_pct,
                birthday_gift_points=lv.birthday_gift_points,
                free_service_uses=lv.free_service_uses,
            )
        )
    session.flush()
    audit.record(
        session,
        principal,
        "tiers.set_created",
        target_type="tier_set",
        target_id=code,
        details={"basis": basis, "levels": [lv.code for lv in levels]},
    )
    return tier_set


def active_set(session: Session, program_id: int) -> TierSet | None:
    """The program's active tier set, read once per session (checkout asks more than once)."""
    cache: dict[int, TierSet | None] = session.info.setdefault("active_tier_set", {})
    if program_id in cache:
        cached = cache[program_id]
        if cached is None or cached in session:
            return cached
    found = session.scalar(select(TierSet).where(TierSet.program_id == program_id, TierSet.active.is_(True)))
    cache[program_id] = found
    return found


def level_rows(session: Session, tier_set_id: int) -> list[TierLevel]:
    return list(
        session.scalars(
            select(TierLevel).where(TierLevel.tier_set_id == tier_set_id).order_by(TierLevel.rank)
        )
    )


def as_levels(rows: list[TierLevel]) -> list[calc.Level]:
    return [calc.Level(r.id, r.code, r.rank, r.threshold, r.keep_threshold) for r in rows]


def month_key(at: datetime, tz: str) -> int:
    local = at.astimezone(ZoneInfo(tz))
    return local.year * 100 + local.month


def _months_back(month: int, n: int) -> int:
    year, m = divmod(month, 100)
    index = year * 12 + (m - 1) - n
    return (index // 12) * 100 + index % 12 + 1


def basis_value(session: Session, tier_set: TierSet, member_id: int, now: datetime, tz: str) -> int:
    if tier_set.basis == "growth":
        value = session.scalar(
            select(PointAccount.growth_value).where(
                PointAccount.member_id == member_id, PointAccount.program_id == tier_set.program_id
            )
        )
        return int(value or 0)
    first = _months_back(month_key(now, tz), 11)
    column = MemberMonthlyStats.spend_fen if tier_set.basis == "spend_12m" else MemberMonthlyStats.orders
    value = session.scalar(
        select(func.coalesce(func.sum(column), 0)).where(
            MemberMonthlyStats.member_id == member_id, MemberMonthlyStats.month >= first
        )
    )
    return int(value or 0)


def standing_of(session: Session, tier_set: TierSet, member: Member, *, lock: bool = False) -> MemberTier:
    q = select(MemberTier).where(MemberTier.member_id == member.id, MemberTier.tier_set_id == tier_set.id)
    if lock:
        q = q.with_for_update()
    row = session.scalar(q)
    if row is None:
        entry = level_rows(session, tier_set.id)[0]
        row = MemberTier(
            member_id=member.id,
            tier_set_id=tier_set.id,
            org_id=member.org_id,
            level_id=entry.id,
            since=utcnow(),
            grace_until=None,
        )
        session.add(row)
        session.flush()
    return row


def _apply(
    session: Session,
    row: MemberTier,
    decision: calc.Decision,
    member: Member,
    levels: list[TierLevel],
    now: datetime,
    actor: str,
) -> bool:
    by_id = {lv.id: lv for lv in levels}
    changed = decision.level_id != row.level_id
    row.grace_until = decision.grace_until
    row.reviewed_at = now if decision.reason not in ("same", "upgrade") else row.reviewed_at
    if not changed:
        return False
    old = by_id[row.level_id]
    new = by_id[decision.level_id]
    session.add(
        TierChange(
            org_id=member.org_id,
            member_id=member.id,
            tier_set_id=row.tier_set_id,
            from_level_id=old.id,
            to_level_id=new.id,
            reason=decision.reason,
            actor=actor,
            at=now,
        )
    )
    row.level_id, row.since = new.id, now
    events.emit(
        session,
        member.org_id,
        "tier.changed",
        {"member_no": member.member_no, "from": old.code, "to": new.code, "reason": decision.reason},
        member_id=member.id,
    )
    return True


def after_activity(session: Session, program: PointsProgram, member: Member, now: datetime, tz: str) -> None:
    """Upgrade at once when a purchase lifts the basis over a higher threshold."""
    tier_set = active_set(session, program.id)
    if tier_set is None:
        return
    row = standing_of(session, tier_set, member, lock=True)
    levels = level_rows(session, tier_set.id)
    standing = calc.Standing(row.level_id, row.grace_until, row.floor_level_id, row.floor_until)
    decision = calc.on_activity(
        as_levels(levels), standing, basis_value(session, tier_set, member.id, now, tz), now
    )
    _apply(session, row, decision, member, levels, now, "system")


def review_all(
    session: Session, tier_set: TierSet, now: datetime, tz: str, *, batch: int = 5000
) -> dict[str, int]:
    """The scheduled review of every member in the set, in member-id batches (callers commit)."""
    levels = level_rows(session, tier_set.id)
    lv = as_levels(levels)
    counts: dict[str, int] = {}
    last = 0
    first_month = _months_back(month_key(now, tz), 11)
    while True:
        rows = list(
            session.scalars(
                select(MemberTier)
                .where(MemberTier.tier_set_id == tier_set.id, MemberTier.member_id > last)
                .order_by(MemberTier.member_id)
                .limit(batch)
                .with_for_update()
            )
        )
        if not rows:
            break
        ids = [r.member_id for r in rows]
        last = ids[-1]
        if tier_set.basis == "growth":
            basis = dict(
                session.execute(
                    select(PointAccount.member_id, PointAccount.growth_value).where(
                        PointAccount.member_id.in_(ids), PointAccount.program_id == tier_set.program_id
                    )
                ).all()
            )
        else:
            column = (
                MemberMonthlyStats.spend_fen if tier_set.basis == "spend_12m" else MemberMonthlyStats.orders
            )
            basis = dict(
                session.execute(
                    select(MemberMonthlyStats.member_id, func.sum(column))
                    .where(MemberMonthlyStats.member_id.in_(ids), MemberMonthlyStats.month >= first_month)
                    .group_by(MemberMonthlyStats.member_id)
                ).all()
            )
        members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(ids)))}
        for row in rows:
            decision = calc.reevaluate(
                lv,
                calc.Standing(row.level_id, row.grace_until, row.floor_level_id, row.floor_until),
                int(basis.get(row.member_id) or 0),
                now,
                tier_set.grace_days,
            )
            counts[decision.reason] = counts.get(decision.reason, 0) + 1
            _apply(session, row, decision, members[row.member_id], levels, now, "system")
        session.flush()
    return counts


def set_manual_tier(
    session: Session,
    principal: Principal,
    program: PointsProgram,
    member: Member,
    level_code: str,
    until: datetime,
    reason: str,
) -> MemberTier:
    """A manually given tier: the member is at least this level until ``until``."""
    if principal.role not in (Role.HQ_ADMIN, Role.CS_AGENT):
        raise Forbidden("您的角色无权手动调整等级", "Your role may not set tiers by hand", code="auth.role")
    tier_set = active_set(session, program.id)
    if tier_set is None:
        raise NotFound("该积分计划没有会员等级", "The program has no tiers", code="tiers.none")
    levels = level_rows(session, tier_set.id)
    target = next((lv for lv in levels if lv.code == level_code), None)
    if target is None:
        raise NotFound("找不到该等级", "No such level", code="tiers.level_not_found")
    row = standing_of(session, tier_set, member, lock=True)
    row.floor_level_id, row.floor_until = target.id, until
    current = next(lv for lv in levels if lv.id == row.level_id)
    now = utcnow()
    if target.rank > current.rank:
        _apply(session, row, calc.Decision(target.id, None, "manual"), member, levels, now, principal.actor)
    audit.record(
        session,
        principal,
        "tiers.manual_set",
        target_type="member",
        target_id=member.member_no,
        member_id=member.id,
        reason=reason,
        details={"level": level_code, "until": until.isoformat()},
    )
    return row


@dataclass(frozen=True)
class TierView:
    set_name: str
    basis: str
    level: TierLevel
    next_level: TierLevel | None
    missing: int
    basis_value: int
    grace_until: datetime | None
    floor_until: datetime | None


def member_tier(session: Session, program: PointsProgram, member: Member, tz: str) -> TierView | None:
    tier_set = active_set(session, program.id)
    if tier_set is None:
        return None
    row = session.scalar(
        select(MemberTier).where(MemberTier.member_id == member.id, MemberTier.tier_set_id == tier_set.id)
    )
    levels = level_rows(session, tier_set.id)
    level_id = row.level_id if row else levels[0].id
    value = basis_value(session, tier_set, member.id, utcnow(), tz)
    nxt, missing = calc.progress(as_levels(levels), level_id, value)
    by_id = {lv.id: lv for lv in levels}
    return TierView(
        tier_set.name,
        tier_set.basis,
        by_id[level_id],
        by_id[nxt.id] if nxt else None,
        missing,
        value,
        row.grace_until if row else None,
        row.floor_until if row else None,
    )


def current_level(session: Session, program: PointsProgram, member: Member) -> TierLevel | None:
    """The member's level in the program's active tier set (the entry level before any purchase)."""
    tier_set = active_set(session, program.id)
    if tier_set is None:
        return None
    level_id = session.scalar(
        select(MemberTier.level_id).where(
            MemberTier.member_id == member.id, MemberTier.tier_set_id == tier_set.id
        )
    )
    if level_id is None:
        return level_rows(session, tier_set.id)[0]
    return session.get(TierLevel, level_id)
