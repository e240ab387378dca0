"""HQ endpoints for the points program: settings, typed earn rules (versioned), simulation, tiers,
member tier and reminders, and the points overview (liability, expiry ahead, issued vs redeemed)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from onemember.audit import service as audit
from onemember.common import idempotency
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import Forbidden
from onemember.members import service as members
from onemember.orders.checkout import explanation_of, quote
from onemember.orders.schemas import CheckoutIn, EarnRuleOut
from onemember.org import service as org_service
from onemember.points import overview, rules
from onemember.points import service as points
from onemember.points.earning import RuleKind
from onemember.points.models import EarnRule
from onemember.tiers import service as tiers

router = APIRouter(prefix="/api/v1", tags=["points"])


class ProgramIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    earn_points_per_yuan: int = Field(ge=0, le=1000)
    redeem_points_per_yuan: int = Field(ge=1, le=100000)
    growth_per_yuan: int = Field(ge=0, le=1000)
    pending_days: int = Field(ge=0, le=90)
    expiry_policy: Literal["never", "rolling", "fixed_yearly"]
    expiry_months: int = Field(ge=1, le=120)
    expiry_fixed_month: int = Field(ge=1, le=12)
    expiry_fixed_day: int = Field(ge=1, le=31)
    expiry_years_after: int = Field(ge=0, le=10)
    reminder_days: int = Field(ge=1, le=365)
    allow_store_rules: bool
    store_bonus_max_multiplier_pct: int = Field(ge=100, le=1000)
    store_bonus_max_budget: int = Field(ge=0, le=10**9)
    transfer_max_per_month: int = Field(ge=0, le=10**9)
    adjust_approval_threshold: int = Field(ge=0, le=10**9)


class ProgramOut(ProgramIn):
    code: str
    name: str
    scope: str


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RuleKind
    name: str = Field(default="", max_length=120)
    points_per_yuan: int | None = None
    multiplier_pct: int | None = None
    category: str | None = Field(default=None, max_length=60)
    sku: str | None = Field(default=None, max_length=64)
    tier_code: str | None = Field(default=None, max_length=40)
    bonus_points: int | None = None
    weekday: int | None = None
    month_day: int | None = None
    store_code: str | None = None
    cap_points: int | None = None
    budget_points: int | None = None
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None


class RuleOut(BaseModel):
    rule_key: str
    version: int
    kind: str
    name: str
    points_per_yuan: int | None
    multiplier_pct: int | None
    category: str | None
    sku: str | None
    tier_code: str | None
    bonus_points: int | None
    weekday: int | None
    month_day: int | None
    store_code: str | None
    cap_points: int | None
    budget_points: int | None
    budget_used: int
    valid_from: datetime
    valid_to: datetime | None
    created_by: str


class SimulationOut(BaseModel):
    total_fen: int
    discount_fen: int
    points_value_fen: int
    paid_fen: int
    points_earned: int
    growth_earned: int
    tier_code: str | None
    explanation: list[EarnRuleOut]


class LevelIn(BaseModel):
    code: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=60)
    threshold: int = Field(ge=0)
    keep_threshold: int = Field(ge=0)
    points_multiplier_pct: int = 100
    discount_pct: int = 0
    birthday_gift_points: int = Field(default=0, ge=0)
    free_service_uses: int = Field(default=0, ge=0)


class TierSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=120)
    basis: Literal["growth", "spend_12m", "orders_12m"]
    grace_days: int = Field(ge=0, le=365)
    levels: list[LevelIn] = Field(min_length=1, max_length=12)


class MemberTierOut(BaseModel):
    member_no: str
    tier_set: str
    basis: str
    level_code: str
    level_name: str
    basis_value: int
    next_level_code: str | None
    next_level_name: str | None
    missing: int
    grace_until: datetime | None
    floor_until: datetime | None
    points_multiplier_pct: int
    discount_pct: int


class ManualTierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level_code: str
    until: AwareDatetime
    reason: str = Field(min_length=2, max_length=300)


class ReminderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: int | None = Field(default=None, ge=1, le=10**9)


def _require_hq(role: Role) -> None:
    if role != Role.HQ_ADMIN:
        raise Forbidden("只有总部可以修改积分计划", "Only HQ may change the points program", code="auth.role")


def _program_out(p: object) -> ProgramOut:
    return ProgramOut.model_validate(p, from_attributes=True)


@router.get("/points/program", response_model=ProgramOut)
def read_program(principal: CurrentPrincipal, session: SessionDep) -> ProgramOut:
    """The org's points program: rates, pending days, expiry policy, caps and limits."""
    return _program_out(points.default_program(session, principal.org_id))


@router.put("/points/program", response_model=ProgramOut)
def update_program(
    body: ProgramIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Change the program's settings (HQ); audited with the old and new values."""

    def work() -> ProgramOut:
        _require_hq(principal.role)
        program = points.default_program(session, principal.org_id)
        before = _program_out(program).model_dump()
        for key, value in body.model_dump().items():
            setattr(program, key, value)
        after = _program_out(program).model_dump()
        audit.record(
            session,
            principal,
            "points.program_changed",
            target_type="points_program",
            target_id=program.code,
            details={k: [before[k], after[k]] for k in after if before[k] != after[k]},
        )
        return _program_out(program)

    return respond(idempotency.run(session, principal, idem, "points.program", body, work, lang=lang))


def _spec(session: SessionDep, org_id: int, body: RuleIn) -> rules.RuleSpec:
    store_id = org_service.store_by_code(session, org_id, body.store_code).id if body.store_code else None
    data = body.model_dump(exclude={"store_code"})
    return rules.RuleSpec(**data, store_id=store_id)


def _rule_out(session: SessionDep, row: EarnRule) -> RuleOut:
    store = org_service.get_store(session, row.org_id, row.store_id) if row.store_id else None
    return RuleOut(
        rule_key=row.rule_key,
        version=row.version,
        kind=row.kind,
        name=row.name,
        points_per_yuan=row.points_per_yuan,
        multiplier_pct=row.multiplier_pct,
        category=row.category,
        sku=row.sku,
        tier_code=row.tier_code,
        bonus_points=row.bonus_points,
        weekday=row.weekday,
        month_day=row.month_day,
        store_code=store.code if store else None,
        cap_points=row.cap_points,
        budget_points=row.budget_points,
        budget_used=row.budget_used,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        created_by=row.created_by,
    )


@router.get("/points/rules", response_model=list[RuleOut])
def rules_at(
    principal: CurrentPrincipal, session: SessionDep, at: AwareDatetime | None = None
) -> list[RuleOut]:
    """The earn rule versions in force at a moment (now by default)."""
    program = points.default_program(session, principal.org_id)
    return [_rule_out(session, r) for r in rules.rows_in_force(session, program.id, at or utcnow())]


@router.post("/points/rules", status_code=201, response_model=RuleOut)
def create_rule(
    body: RuleIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Add a typed earn rule (HQ; store managers: store bonuses inside HQ's caps)."""

    def work() -> RuleOut:
        program = points.default_program(session, principal.org_id)
        return _rule_out(
            session, rules.create_rule(session, principal, program, _spec(session, principal.org_id, body))
        )

    return respond(
        idempotency.run(session, principal, idem, "points.rule_create", body, work, status=201, lang=lang)
    )


@router.post("/points/rules/{rule_key}/revise", status_code=201, response_model=RuleOut)
def revise_rule(
    rule_key: str,
    body: RuleIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Close the rule's current version now and open the next one with these terms."""

    def work() -> RuleOut:
        program = points.default_program(session, principal.org_id)
        spec = _spec(session, principal.org_id, body)
        return _rule_out(session, rules.revise_rule(session, principal, program, rule_key, spec))

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "points.rule_revise",
            {"rule_key": rule_key, **body.model_dump(mode="json")},
            work,
            status=201,
            lang=lang,
        )
    )


@router.post("/points/rules/{rule_key}/end", response_model=RuleOut)
def end_rule(rule_key: str, principal: CurrentPrincipal, session: SessionDep) -> RuleOut:
    """End a rule now; past orders keep being explained by it."""
    program = points.default_program(session, principal.org_id)
    row = rules.end_rule(session, principal, program, rule_key)
    out = _rule_out(session, row)
    session.commit()
    return out


@router.post("/points/simulate", response_model=SimulationOut)
def simulate(body: CheckoutIn, principal: CurrentPrincipal, session: SessionDep) -> SimulationOut:
    """What this basket would earn, and why, line by line — nothing is written."""
    q = quote(session, principal, body, lock=False)
    return SimulationOut(
        total_fen=q.total_fen,
        discount_fen=q.discount_fen,
        points_value_fen=q.value_fen,
        paid_fen=q.due_fen,
        points_earned=q.earned,
        growth_earned=sum(q.growth),
        tier_code=q.tier_code,
        explanation=explanation_of(q, [(i, line.sku) for i, line in enumerate(body.lines, 1)]),
    )


@router.post("/tiers", status_code=201)
def create_tier_set(
    body: TierSetIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Set up the program's tier set: levels with thresholds, keep-level thresholds and benefits."""

    def work() -> dict[str, object]:
        program = points.default_program(session, principal.org_id)
        tier_set = tiers.create_tier_set(
            session,
            principal,
            program,
            body.code,
            body.name,
            body.basis,
            body.grace_days,
            [tiers.LevelSpec(**lv.model_dump()) for lv in body.levels],
        )
        return {"code": tier_set.code, "basis": tier_set.basis, "levels": [lv.code for lv in body.levels]}

    return respond(
        idempotency.run(session, principal, idem, "tiers.create", body, work, status=201, lang=lang)
    )


def _member_tier_out(session: SessionDep, org_id: int, member_no: str) -> MemberTierOut:
    member = members.by_member_no(session, org_id, member_no)
    program = points.default_program(session, org_id)
    org = org_service.get_org(session, org_id)
    view = tiers.member_tier(session, program, member, org.timezone)
    if view is None:
        raise tiers.InvalidTierSet(
            "该积分计划没有会员等级", "The program has no tiers", code="tiers.none", status=404
        )
    return MemberTierOut(
        member_no=member.member_no,
        tier_set=view.set_name,
        basis=view.basis,
        level_code=view.level.code,
        level_name=view.level.name,
        basis_value=view.basis_value,
        next_level_code=view.next_level.code if view.next_level else None,
        next_level_name=view.next_level.name if view.next_level else None,
        missing=view.missing,
        grace_until=view.grace_until,
        floor_until=view.floor_until,
        points_multiplier_pct=view.level.points_multiplier_pct,
        discount_pct=view.level.discount_pct,
    )


@router.get("/members/{member_no}/tier", response_model=MemberTierOut)
def member_tier(member_no: str, principal: CurrentPrincipal, session: SessionDep) -> MemberTierOut:
    """The member's tier, its benefits, and how far the next level is."""
    return _member_tier_out(session, principal.org_id, member_no)


@router.post("/members/{member_no}/tier", response_model=MemberTierOut)
def set_member_tier(
    member_no: str,
    body: ManualTierIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Give a member a tier by hand; it acts as a floor until the date (audited)."""

    def work() -> MemberTierOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        program = points.default_program(session, principal.org_id)
        tiers.set_manual_tier(session, principal, program, member, body.level_code, body.until, body.reason)
        session.flush()
        return _member_tier_out(session, principal.org_id, member_no)

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "tiers.manual",
            {"member_no": member_no, **body.model_dump(mode="json")},
            work,
            lang=lang,
        )
    )


@router.put("/members/{member_no}/points/reminder")
def set_points_reminder(
    member_no: str, body: ReminderIn, principal: CurrentPrincipal, session: SessionDep
) -> dict[str, int | None]:
    """The member's "tell me when my balance reaches N" setting (null turns it off)."""
    member = members.by_member_no(session, principal.org_id, member_no)
    program = points.default_program(session, principal.org_id)
    account = points.ensure_account(session, principal.org_id, member.id, program.id)
    account.reminder_threshold = body.threshold
    session.commit()
    return {"threshold": body.threshold}


@router.get("/points/overview", response_model=overview.Overview)
def points_overview(
    principal: CurrentPrincipal,
    session: SessionDep,
    store: str | None = None,
    region: str | None = None,
    months: int = 12,
) -> overview.Overview:
    """Points liability, expiring points per month ahead, issued vs redeemed by store, breakage."""
    store_ids = overview.scope_store_ids(session, principal, store, region)
    return overview.compute(session, principal.org_id, store_ids, utcnow(), months=max(1, min(months, 24)))
