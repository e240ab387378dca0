"""Coupon endpoints: templates (HQ), issuing to a member (staff, compensation), a member's coupons,
the usable coupons and best combination for a basket at a store, and gifting. Every POST that changes
something takes an ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common import idempotency
from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.db import utcnow
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import Invalid
from onemember.members import service as members
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Brand, Region, Store

router = APIRouter(prefix="/api/v1", tags=["coupons"])

Fen = Annotated[int, Field(ge=0, le=10**10)]


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=40)
    name: str = Field(max_length=120)
    kind: str = Field(max_length=20)
    threshold_fen: Fen = 0
    amount_fen: Fen = 0
    percent_off: int = Field(default=0, ge=0, le=100)
    cap_fen: Fen | None = None
    price_fen: Fen = 0
    face_value_fen: Fen | None = None
    pay_difference: bool = True
    skus: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=500)
    categories: list[Annotated[str, Field(max_length=60)]] = Field(default_factory=list, max_length=100)
    accept_scope: str = Field(default="all", max_length=20)
    accept_brand_code: str | None = Field(default=None, max_length=40)
    accept_region_code: str | None = Field(default=None, max_length=40)
    accept_store_codes: list[Annotated[str, Field(max_length=40)]] = Field(
        default_factory=list, max_length=500
    )
    cross_store: bool = True
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    valid_days: int | None = Field(default=None, ge=1, le=3650)
    exclusive: bool = False
    stack_group: str | None = Field(default=None, max_length=40)
    combines_with_tier_discount: bool = True
    per_order_limit: int = Field(default=1, ge=1, le=50)
    per_member_limit: int | None = Field(default=None, ge=1)
    total_quantity: int | None = Field(default=None, ge=1, le=10**9)
    budget_fen: Fen | None = None
    return_policy: str = Field(default="restore", max_length=10)
    giftable: bool = False
    bearer: str = Field(default="hq", max_length=20)
    issuer_pct: int = Field(default=0, ge=0, le=100)


class TemplateOut(BaseModel):
    code: str
    name: str
    kind: str
    threshold_fen: int
    amount_fen: int
    percent_off: int
    cap_fen: int | None
    price_fen: int
    face_value_fen: int | None
    pay_difference: bool
    skus: list[str]
    categories: list[str]
    accept_scope: str
    accept_brand_code: str | None
    accept_region_code: str | None
    accept_store_codes: list[str]
    cross_store: bool
    valid_from: datetime | None
    valid_to: datetime | None
    valid_days: int | None
    exclusive: bool
    stack_group: str | None
    combines_with_tier_discount: bool
    per_order_limit: int
    per_member_limit: int | None
    total_quantity: int | None
    budget_fen: int | None
    issued_count: int
    redeemed_count: int
    budget_used: int
    return_policy: str
    giftable: bool
    bearer: str
    issuer_pct: int
    active: bool


class TemplateListOut(BaseModel):
    templates: list[TemplateOut]


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_code: str = Field(max_length=40)
    source: str = Field(default="staff", pattern="^(staff|compensation)$")
    reason: str = Field(default="", max_length=300)
    store_code: str | None = Field(default=None, max_length=40)
    cover_fen: Fen | None = None  # item vouchers: the item's price at the issuing store


class CouponOut(BaseModel):
    code: str
    template_code: str
    name: str
    kind: str
    member_no: str
    status: str
    source: str
    issuing_store_code: str | None
    cover_fen: int | None
    valid_from: datetime
    valid_to: datetime | None
    issued_at: datetime
    giftable: bool
    redeemed_store_code: str | None
    redeemed_at: datetime | None
    discount_fen: int


class CouponListOut(BaseModel):
    member_no: str
    coupons: list[CouponOut]


class BasketLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    category: str = Field(default="", max_length=60)
    quantity: int = Field(ge=1, le=100000)
    unit_price_fen: Fen
    discount_fen: Fen = 0  # the member price already taken off this line


class BasketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_code: str | None = Field(default=None, max_length=40)
    lines: list[BasketLineIn] = Field(min_length=1, max_length=500)
    tier_discount_applied: bool = False
    coupon_codes: list[Annotated[str, Field(max_length=24)]] | None = Field(default=None, max_length=20)


class UsableOut(BaseModel):
    coupon: CouponOut
    discount_fen: int
    price_difference_fen: int


class UnusableOut(BaseModel):
    coupon: CouponOut
    reason: str


class AppliedOut(BaseModel):
    code: str
    template_code: str
    discount_fen: int
    price_difference_fen: int
    lines: dict[int, int]


class BasketOut(BaseModel):
    member_no: str
    store_code: str
    usable: list[UsableOut]
    unusable: list[UnusableOut]
    best_codes: list[str]
    best_discount_fen: int
    best_price_difference_fen: int
    best_line_discounts: list[int]
    best_coupons: list[AppliedOut]
    exact: bool


class GiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_member_no: str = Field(max_length=20)
    reason: str = Field(default="", max_length=300)


# --- views -------------------------------------------------------------------------------------------


def _codes(session: Session, model: Any, ids: list[int]) -> list[str]:
    if not ids:
        return []
    return sorted(session.scalars(select(model.code).where(model.id.in_(ids))))


def _one(session: Session, model: Any, id_: int | None) -> str | None:
    codes = _codes(session, model, [id_]) if id_ is not None else []
    return codes[0] if codes else None


def template_out(session: Session, t: CouponTemplate) -> TemplateOut:
    return TemplateOut(
        code=t.code,
        name=t.name,
        kind=t.kind,
        threshold_fen=t.threshold_fen,
        amount_fen=t.amount_fen,
        percent_off=t.percent_off,
        cap_fen=t.cap_fen,
        price_fen=t.price_fen,
        face_value_fen=t.face_value_fen,
        pay_difference=t.pay_difference,
        skus=list(t.skus or []),
        categories=list(t.categories or []),
        accept_scope=t.accept_scope,
        accept_brand_code=_one(session, Brand, t.accept_brand_id),
        accept_region_code=_one(session, Region, t.accept_region_id),
        accept_store_codes=_codes(session, Store, list(t.accept_store_ids or [])),
        cross_store=t.cross_store,
        valid_from=t.valid_from,
        valid_to=t.valid_to,
        valid_days=t.valid_days,
        exclusive=t.exclusive,
        stack_group=t.stack_group,
        combines_with_tier_discount=t.combines_with_tier_discount,
        per_order_limit=t.per_order_limit,
        per_member_limit=t.per_member_limit,
        total_quantity=t.total_quantity,
        budget_fen=t.budget_fen,
        issued_count=t.issued_count,
        redeemed_count=t.redeemed_count,
        budget_used=t.budget_used,
        return_policy=t.return_policy,
        giftable=t.giftable,
        bearer=t.bearer,
        issuer_pct=t.issuer_pct,
        active=t.active,
    )


def _store_code(session: Session, store_id: int | None) -> str | None:
    if store_id is None:
        return None
    store = session.get(Store, store_id)
    return store.code if store else None


def coupon_out(session: Session, c: Coupon, t: CouponTemplate, member: Member | None = None) -> CouponOut:
    holder = member if member is not None and member.id == c.member_id else session.get(Member, c.member_id)
    assert holder is not None
    return CouponOut(
        code=c.code,
        template_code=t.code,
        name=t.name,
        kind=t.kind,
        member_no=holder.member_no,
        status=coupons.shown_status(c, utcnow()),
        source=c.source,
        issuing_store_code=_store_code(session, c.issuing_store_id),
        cover_fen=c.cover_fen,
        valid_from=c.valid_from,
        valid_to=c.valid_to,
        issued_at=c.issued_at,
        giftable=t.giftable,
        redeemed_store_code=_store_code(session, c.redeemed_store_id),
        redeemed_at=c.redeemed_at,
        discount_fen=c.discount_fen,
    )


def _run(
    session: Session,
    principal: Principal,
    idem: str | None,
    operation: str,
    body: dict[str, Any],
    work: Callable[[], BaseModel],
    lang: str,
    status: int = 200,
) -> JSONResponse:
    return respond(idempotency.run(session, principal, idem, operation, body, work, status=status, lang=lang))


def _store(session: Session, principal: Principal, code: str | None) -> Store | None:
    if code:
        store = org_service.store_by_code(session, principal.org_id, code)
        principal.require_store(store.id)
        return store
    return None


# --- templates ---------------------------------------------------------------------------------------


@router.post("/coupon-templates", status_code=201, response_model=TemplateOut)
def create_coupon_template(
    body: TemplateIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Create a coupon template (HQ): kind and amounts, products, stores, validity, stacking, limits."""

    def work() -> TemplateOut:
        spec = coupons.TemplateSpec(**body.model_dump())
        return template_out(session, coupons.create_template(session, principal, spec))

    return _run(
        session, principal, idem, "coupons.template_create", body.model_dump(mode="json"), work, lang, 201
    )


@router.get("/coupon-templates", response_model=TemplateListOut)
def list_coupon_templates(
    principal: CurrentPrincipal, session: SessionDep, active: bool | None = None
) -> TemplateListOut:
    """Coupon templates with their issued, redeemed and budget counters."""
    rows = coupons.templates_of(session, principal.org_id, active=active)
    return TemplateListOut(templates=[template_out(session, t) for t in rows])


# --- a member's coupons ------------------------------------------------------------------------------


@router.post("/members/{member_no}/coupons", status_code=201, response_model=CouponOut)
def issue_member_coupon(
    member_no: str,
    body: IssueIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Issue a coupon to a member: by staff at a store, or as compensation (with a reason; audited)."""

    def work() -> CouponOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        template = coupons.template_by_code(session, principal.org_id, body.template_code)
        store = _store(session, principal, body.store_code)
        if body.source == coupons.Source.COMPENSATION:
            if body.cover_fen is not None:
                raise Invalid("补偿券不能指定抵扣价值", "A compensation coupon takes no cover_fen")
            coupon = coupons.issue_compensation(
                session, principal, template, member, body.reason, store=store
            )
        else:
            coupon = coupons.issue_by_staff(
                session, principal, template, member, store, reason=body.reason, cover_fen=body.cover_fen
            )
        return coupon_out(session, coupon, template, member)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "coupons.issue", payload, work, lang, 201)


@router.get("/members/{member_no}/coupons", response_model=CouponListOut)
def list_member_coupons(
    member_no: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=12)] = None,
) -> CouponListOut:
    """A member's coupons, soonest-expiring first; ``?status=available`` for those left to use."""
    member = members.by_member_no(session, principal.org_id, member_no)
    rows = coupons.coupons_of(session, member, status=status)
    return CouponListOut(
        member_no=member.member_no, coupons=[coupon_out(session, c, t, member) for c, t in rows]
    )


@router.post("/members/{member_no}/coupons/usable", response_model=BasketOut)
def usable_member_coupons(
    member_no: str, body: BasketIn, principal: CurrentPrincipal, session: SessionDep
) -> BasketOut:
    """For a basket at a store: the member's usable coupons, why the others are not, and the best
    combination (or, with ``coupon_codes``, what exactly those coupons do). Changes nothing."""
    member = members.by_member_no(session, principal.org_id, member_no)
    store = _store(session, principal, body.store_code)
    if store is None:
        if principal.store_id is None:
            raise Invalid(
                "请指定门店 store_code", "Name the store (store_code)", code="coupons.store_required"
            )
        store = org_service.get_store(session, principal.org_id, principal.store_id)
    lines = [
        coupons.Line(
            i, ln.sku, ln.category, ln.quantity, max(0, ln.quantity * ln.unit_price_fen - ln.discount_fen)
        )
        for i, ln in enumerate(body.lines, start=1)
    ]
    suggestion = coupons.best_for_basket(
        session, member, store, lines, tier_discount_applied=body.tier_discount_applied
    )
    if body.coupon_codes is not None:
        application = coupons.apply_coupons(
            session,
            member,
            store,
            lines,
            body.coupon_codes,
            tier_discount_applied=body.tier_discount_applied,
            lock=False,
        )
        applied = [
            AppliedOut(
                code=a.code,
                template_code=a.template_code,
                discount_fen=a.discount_fen,
                price_difference_fen=a.price_difference_fen,
                lines=a.lines,
            )
            for a in application.coupons
        ]
        discount, difference, per_line = (
            application.discount_fen,
            application.price_difference_fen,
            application.line_discounts,
        )
        codes = application.codes
    else:
        ev = suggestion.best.evaluation
        by_id = {u.coupon.id: u.template.code for u in suggestion.usability.usable}
        applied = [
            AppliedOut(
                code=r.code,
                template_code=by_id[r.coupon_id],
                discount_fen=r.discount_fen,
                price_difference_fen=r.price_difference_fen,
                lines=r.lines,
            )
            for r in ev.results
        ]
        discount, difference = ev.discount_fen, ev.price_difference_fen
        per_line = [ev.line_discounts.get(ln.line_no, 0) for ln in lines]
        codes = suggestion.codes
    return BasketOut(
        member_no=member.member_no,
        store_code=store.code,
        usable=[
            UsableOut(
                coupon=coupon_out(session, u.coupon, u.template, member),
                discount_fen=u.discount_fen,
                price_difference_fen=u.price_difference_fen,
            )
            for u in suggestion.usability.usable
        ],
        unusable=[
            UnusableOut(coupon=coupon_out(session, u.coupon, u.template, member), reason=u.reason)
            for u in suggestion.usability.unusable
        ],
        best_codes=codes,
        best_discount_fen=discount,
        best_price_difference_fen=difference,
        best_line_discounts=per_line,
        best_coupons=applied,
        exact=suggestion.best.exact,
    )


@router.post("/members/{member_no}/coupons/{code}/gift", response_model=CouponOut)
def gift_member_coupon(
    member_no: str,
    code: str,
    body: GiftIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Give a member's unused coupon to another member, when its template allows gifting."""

    def work() -> CouponOut:
        sender = members.by_member_no(session, principal.org_id, member_no)
        receiver = members.by_member_no(session, principal.org_id, body.to_member_no)
        coupon = coupons.gift_coupon(session, principal, code, sender, receiver, body.reason)
        template = session.get(CouponTemplate, coupon.template_id)
        assert template is not None
        return coupon_out(session, coupon, template, receiver)

    payload = {"member_no": member_no, "code": code, **body.model_dump()}
    return _run(session, principal, idem, "coupons.gift", payload, work, lang)
