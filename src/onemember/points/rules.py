"""Earn rules as data: create, version, end, and load the versions in force at a moment.

A rule is never edited in place: ``revise_rule`` closes the current version (``valid_to``) and opens the
next one, so every past order is explained by the versions that were in force when it happened.
Store managers may add limited-time store bonuses inside the caps HQ set on the program.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.errors import Conflict, DomainError, Forbidden, NotFound
from onemember.points.earning import Rule, RuleKind
from onemember.points.models import EarnRule, PointsProgram


class InvalidRule(DomainError):
    status = 422
    code = "points.invalid_rule"
    zh = "积分规则无效"
    en = "The earn rule is invalid"


class RuleNotFound(NotFound):
    code = "points.rule_not_found"
    zh = "找不到该积分规则"
    en = "Earn rule not found"


@dataclass
class RuleSpec:
    kind: RuleKind
    name: str = ""
    points_per_yuan: int | None = None
    multiplier_pct: int | None = None
    category: str | None = None
    sku: str | None = None
    tier_code: str | None = None
    bonus_points: int | None = None
    weekday: int | None = None
    month_day: int | None = None
    store_id: int | None = None
    cap_points: int | None = None
    budget_points: int | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None


# The fields each kind needs; anything else must be empty.
REQUIRED: dict[RuleKind, tuple[str, ...]] = {
    RuleKind.BASE_RATE: ("points_per_yuan",),
    RuleKind.CATEGORY_MULTIPLIER: ("multiplier_pct", "category"),
    RuleKind.SKU_MULTIPLIER: ("multiplier_pct", "sku"),
    RuleKind.EXCLUDE_CATEGORY: ("category",),
    RuleKind.EXCLUDE_SKU: ("sku",),
    RuleKind.TIER_MULTIPLIER: ("multiplier_pct", "tier_code"),
    RuleKind.BIRTHDAY_MONTH_MULTIPLIER: ("multiplier_pct",),
    RuleKind.MEMBER_DAY_MULTIPLIER: ("multiplier_pct",),
    RuleKind.STORE_BONUS_MULTIPLIER: ("multiplier_pct", "store_id", "budget_points", "valid_to"),
    RuleKind.FIRST_PURCHASE_BONUS: ("bonus_points",),
    RuleKind.REGISTRATION_BONUS: ("bonus_points",),
    RuleKind.ORDER_CAP: ("cap_points",),
    RuleKind.DAILY_CAP: ("cap_points",),
}
OPTIONAL_FIELDS = (
    "points_per_yuan",
    "multiplier_pct",
    "category",
    "sku",
    "tier_code",
    "bonus_points",
    "weekday",
    "month_day",
    "store_id",
    "cap_points",
    "budget_points",
)


def validate(spec: RuleSpec, program: PointsProgram, now: datetime) -> None:
    """Typed rules: each kind has its required fields, sane ranges, and nothing it does not use."""
    needed = REQUIRED[spec.kind]
    for name in needed:
        if getattr(spec, name) is None:
            raise InvalidRule(
                f"规则类型 {spec.kind} 需要字段 {name}", f"A {spec.kind} rule needs {name}", field=name
            )
    allowed = set(needed) | (
        {"weekday", "month_day"} if spec.kind == RuleKind.MEMBER_DAY_MULTIPLIER else set()
    )
    for name in OPTIONAL_FIELDS:
        if name not in allowed and getattr(spec, name) is not None:
            raise InvalidRule(
                f"规则类型 {spec.kind} 不使用字段 {name}",
                f"A {spec.kind} rule does not use {name}",
                field=name,
            )
    if spec.kind == RuleKind.MEMBER_DAY_MULTIPLIER and (spec.weekday is None) == (spec.month_day is None):
        raise InvalidRule(
            "会员日需指定每周几或每月几号（二选一）",
            "A member day needs a weekday or a day of month",
            field="weekday",
        )
    checks = [
        (spec.points_per_yuan, 0, 1000, "points_per_yuan"),
        (spec.multiplier_pct, 100, 1000, "multiplier_pct"),
        (spec.bonus_points, 1, 10**7, "bonus_points"),
        (spec.weekday, 1, 7, "weekday"),
        (spec.month_day, 1, 28, "month_day"),
        (spec.cap_points, 0, 10**9, "cap_points"),
        (spec.budget_points, 1, 10**9, "budget_points"),
    ]
    for value, low, high, name in checks:
        if value is not None and not low <= value <= high:
            raise InvalidRule(
                f"{name} 须在 {low} 到 {high} 之间", f"{name} must be between {low} and {high}", field=name
            )
    if spec.valid_to is not None and spec.valid_to <= (spec.valid_from or now):
        raise InvalidRule("结束时间须晚于开始时间", "valid_to must be after valid_from", field="valid_to")
    if spec.kind == RuleKind.STORE_BONUS_MULTIPLIER:
        if (spec.multiplier_pct or 0) > program.store_bonus_max_multiplier_pct:
            raise InvalidRule(
                f"门店加倍不得超过总部上限 {program.store_bonus_max_multiplier_pct}%",
                f"Store bonus above HQ's cap of {program.store_bonus_max_multiplier_pct}%",
                code="points.store_bonus_over_cap",
                field="multiplier_pct",
            )
        if (spec.budget_points or 0) > program.store_bonus_max_budget:
            raise InvalidRule(
                f"门店积分预算不得超过总部上限 {program.store_bonus_max_budget}",
                f"Store bonus budget above HQ's cap of {program.store_bonus_max_budget}",
                code="points.store_bonus_over_cap",
                field="budget_points",
            )


def _may_write(principal: Principal, spec: RuleSpec, program: PointsProgram) -> None:
    if principal.role == Role.HQ_ADMIN:
        return
    if spec.kind == RuleKind.STORE_BONUS_MULTIPLIER and principal.role == Role.STORE_MANAGER:
        if not program.allow_store_rules:
            raise Forbidden(
                "该积分计划不允许门店自设规则",
                "This program does not allow store rules",
                code="points.store_rules_disabled",
            )
        principal.require_store(spec.store_id or 0)
        return
    raise Forbidden("您的角色无权修改积分规则", "Your role may not change earn rules", code="auth.role")


def create_rule(
    session: Session,
    principal: Principal,
    program: PointsProgram,
    spec: RuleSpec,
    *,
    rule_key: str | None = None,
    version: int = 1,
) -> EarnRule:
    now = utcnow()
    validate(spec, program, now)
    _may_write(principal, spec, program)
    row = EarnRule(
        org_id=program.org_id,
        program_id=program.id,
        rule_key=rule_key or secrets.token_hex(8),
        version=version,
        kind=str(spec.kind),
        name=spec.name,
        points_per_yuan=spec.points_per_yuan,
        multiplier_pct=spec.multiplier_pct,
        category=spec.category,
        sku=spec.sku,
        tier_code=spec.tier_code,
        bonus_points=spec.bonus_points,
        weekday=spec.weekday,
        month_day=spec.month_day,
        store_id=spec.store_id,
        cap_points=spec.cap_points,
        budget_points=spec.budget_points,
        budget_used=0,
        valid_from=spec.valid_from or now,
        valid_to=spec.valid_to,
        created_by=principal.actor,
        created_at=now,
    )
    if spec.kind == RuleKind.BASE_RATE and _overlapping_base(session, program.id, row):
        raise Conflict(
            "同一时间只能有一条基础积分规则",
            "Only one base rate may be in force at a time",
            code="points.base_rate_overlap",
        )
    session.add(row)
    session.flush()
    audit.record(
        session,
        principal,
        "points.rule_created" if version == 1 else "points.rule_revised",
        target_type="earn_rule",
        target_id=f"{row.rule_key}#{row.version}",
        store_id=row.store_id,
        details={"kind": row.kind, "name": row.name},
    )
    return row


def _overlapping_base(session: Session, program_id: int, row: EarnRule) -> bool:
    q = select(EarnRule.id).where(
        EarnRule.program_id == program_id,
        EarnRule.kind == str(RuleKind.BASE_RATE),
        or_(EarnRule.valid_to.is_(None), EarnRule.valid_to > row.valid_from),
    )
    if row.valid_to is not None:
        q = q.where(EarnRule.valid_from < row.valid_to)
    if row.rule_key:
        q = q.where(EarnRule.rule_key != row.rule_key)
    return session.scalar(q.limit(1)) is not None


def current_version(session: Session, org_id: int, rule_key: str) -> EarnRule:
    row = session.scalar(
        select(EarnRule)
        .where(EarnRule.org_id == org_id, EarnRule.rule_key == rule_key)
        .order_by(EarnRule.version.desc())
        .limit(1)
        .with_for_update()
    )
    if row is None:
        raise RuleNotFound()
    return row


def revise_rule(
    session: Session, principal: Principal, program: PointsProgram, rule_key: str, spec: RuleSpec
) -> EarnRule:
    """Close the current version now and open the next one with the new terms."""
    old = current_version(session, program.org_id, rule_key)
    # The caller must be allowed to change the version it closes, not only the one it opens.
    _may_write(principal, RuleSpec(kind=RuleKind(old.kind), store_id=old.store_id), program)
    if old.kind != spec.kind:
        raise InvalidRule("修订不能改变规则类型", "A revision cannot change the rule's kind", field="kind")
    now = utcnow()
    if old.valid_to is None or old.valid_to > now:
        old.valid_to = now
    session.flush()
    spec.valid_from = spec.valid_from or now
    new = create_rule(session, principal, program, spec, rule_key=rule_key, version=old.version + 1)
    new.budget_used = old.budget_used if spec.kind == RuleKind.STORE_BONUS_MULTIPLIER else 0
    return new


def end_rule(session: Session, principal: Principal, program: PointsProgram, rule_key: str) -> EarnRule:
    row = current_version(session, program.org_id, rule_key)
    _may_write(principal, RuleSpec(kind=RuleKind(row.kind), store_id=row.store_id), program)
    now = utcnow()
    if row.valid_to is None or row.valid_to > now:
        row.valid_to = now
        audit.record(
            session,
            principal,
            "points.rule_ended",
            target_type="earn_rule",
            target_id=f"{row.rule_key}#{row.version}",
            store_id=row.store_id,
        )
    return row


def to_rule(row: EarnRule) -> Rule:
    return Rule(
        id=row.id,
        version=row.version,
        kind=RuleKind(row.kind),
        name=row.name,
        points_per_yuan=row.points_per_yuan,
        multiplier_pct=row.multiplier_pct,
        category=row.category,
        sku=row.sku,
        tier_code=row.tier_code,
        bonus_points=row.bonus_points,
        weekday=row.weekday,
        month_day=row.month_day,
        store_id=row.store_id,
        cap_points=row.cap_points,
        budget_left=(row.budget_points - row.budget_used) if row.budget_points is not None else None,
    )


def rows_in_force(
    session: Session, program_id: int, at: datetime, *, lock_budgets: bool = False
) -> list[EarnRule]:
    q = (
        select(EarnRule)
        .where(
            EarnRule.program_id == program_id,
            EarnRule.valid_from <= at,
            or_(EarnRule.valid_to.is_(None), EarnRule.valid_to > at),
        )
        .order_by(EarnRule.id)
    )
    rows = list(session.scalars(q))
    if lock_budgets and any(r.budget_points is not None for r in rows):
        # Lock the budgeted rules so two tills cannot spend the same last points of a store bonus.
        ids = [r.id for r in rows if r.budget_points is not None]
        locked = {
            r.id: r
            for r in session.scalars(
                select(EarnRule)
                .where(EarnRule.id.in_(ids))
                .order_by(EarnRule.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        rows = [locked.get(r.id, r) for r in rows]
    return rows


def rules_in_force(
    session: Session, program: PointsProgram, at: datetime, *, lock_budgets: bool = False
) -> list[Rule]:
    """The typed rules for an order at ``at``; without a base-rate rule the program's base rate applies."""
    rules = [to_rule(r) for r in rows_in_force(session, program.id, at, lock_budgets=lock_budgets)]
    if not any(r.kind == RuleKind.BASE_RATE for r in rules):
        rules.insert(
            0, Rule(id=0, version=0, kind=RuleKind.BASE_RATE, points_per_yuan=program.earn_points_per_yuan)
        )
    return rules


def spend_budgets(session: Session, used: dict[int, int]) -> None:
    """Take points from store-bonus budgets (the rows are locked by ``rules_in_force(lock_budgets=True)``)."""
    for rule_id, points in sorted(used.items()):
        if rule_id and points:
            session.execute(
                update(EarnRule)
                .where(EarnRule.id == rule_id)
                .values(budget_used=EarnRule.budget_used + points)
            )
