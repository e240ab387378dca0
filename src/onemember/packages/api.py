"""Service packages: thin endpoints over ``packages.service``. Every POST takes an ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.db import utcnow
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.members import service as members
from onemember.org import service as org_service
from onemember.org.models import Brand, Region, Store
from onemember.packages import calculations
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage

router = APIRouter(prefix="/api/v1", tags=["service packages"])


# --- shapes ------------------------------------------------------------------------------------------


class TemplateIn(BaseModel):
    code: str = Field(max_length=40)
    name: str = Field(max_length=120)
    service_code: str = Field(max_length=40)
    uses: int
    price_fen: int
    validity_days: int | None = 365
    refund_rule: str = Field(default="unused_pro_rata", max_length=20)
    store_scope: str = Field(default="all", max_length=10)
    brand_code: str | None = Field(default=None, max_length=40)
    region_code: str | None = Field(default=None, max_length=40)
    store_codes: list[str] = Field(default_factory=list, max_length=500)
    bearer: str = Field(default="issuing_store", max_length=20)
    issuer_pct: int = 100


class TemplateOut(BaseModel):
    code: str
    name: str
    service_code: str
    uses: int
    price_fen: int
    per_use_fen: list[int]  # each use's value, in order; adds up to price_fen
    validity_days: int | None
    refund_rule: str
    store_scope: str
    brand_code: str | None
    region_code: str | None
    store_codes: list[str]
    bearer: str
    issuer_pct: int
    active: bool


class TemplateListOut(BaseModel):
    store_code: str | None
    packages: list[TemplateOut]


class SellIn(BaseModel):
    package_code: str = Field(max_length=40)
    store_code: str | None = Field(default=None, max_length=40)
    payment_method: str = Field(default="", max_length=30)
    amount_fen: int


class GrantIn(BaseModel):
    package_code: str = Field(max_length=40)
    source: str = Field(max_length=20)  # compensation | tier_benefit | campaign | goodwill
    reason: str = Field(max_length=300)
    store_code: str | None = Field(default=None, max_length=40)


class UseIn(BaseModel):
    uses: int = 1
    store_code: str | None = Field(default=None, max_length=40)
    member_no: str | None = Field(default=None, max_length=20)  # the member served, checked when given
    note: str = Field(default="", max_length=300)


class RefundIn(BaseModel):
    reason: str = Field(max_length=300)


class UseOut(BaseModel):
    id: int
    member_package_id: int
    store_code: str
    sold_store_code: str | None
    uses: int
    first_use_no: int
    value_fen: int
    actor: str
    note: str
    used_at: datetime


class MemberPackageOut(BaseModel):
    id: int
    member_no: str
    package_code: str
    package_name: str
    service_code: str
    uses_total: int
    uses_left: int
    price_fen: int
    value_fen: int
    payment_method: str
    source: str
    reason: str
    sold_store_code: str | None
    sold_by: str
    sold_at: datetime
    expires_at: datetime | None
    expired: bool
    status: str
    refunded_fen: int
    uses_refunded: int
    refunded_at: datetime | None
    uses: list[UseOut] | None = None


class MemberPackageListOut(BaseModel):
    member_no: str
    packages: list[MemberPackageOut]


# --- views -------------------------------------------------------------------------------------------


def _store_code(session: Session, store_id: int | None) -> str | None:
    if store_id is None:
        return None
    store = session.get(Store, store_id)
    return store.code if store else None


def template_out(session: Session, template: ServicePackage) -> TemplateOut:
    brand = session.get(Brand, template.scope_brand_id) if template.scope_brand_id else None
    region = session.get(Region, template.scope_region_id) if template.scope_region_id else None
    stores = [_store_code(session, s) or "" for s in packages.template_store_ids(session, template.id)]
    return TemplateOut(
        code=template.code,
        name=template.name,
        service_code=template.service_code,
        uses=template.uses,
        price_fen=template.price_fen,
        per_use_fen=calculations.per_use_values(template.price_fen, template.uses),
        validity_days=template.validity_days,
        refund_rule=template.refund_rule,
        store_scope=template.store_scope,
        brand_code=brand.code if brand else None,
        region_code=region.code if region else None,
        store_codes=sorted(stores),
        bearer=template.bearer,
        issuer_pct=template.issuer_pct,
        active=template.active,
    )


def use_out(session: Session, use: PackageUse) -> UseOut:
    return UseOut(
        id=use.id,
        member_package_id=use.member_package_id,
        store_code=_store_code(session, use.used_store_id) or "",
        sold_store_code=_store_code(session, use.sold_store_id),
        uses=use.uses,
        first_use_no=use.first_use_no,
        value_fen=use.value_fen,
        actor=use.actor,
        note=use.note,
        used_at=use.used_at,
    )


def package_out(session: Session, package: MemberPackage, *, with_uses: bool = False) -> MemberPackageOut:
    template = session.get(ServicePackage, package.package_id)
    assert template is not None
    now = utcnow()
    return MemberPackageOut(
        id=package.id,
        member_no=packages.holder(session, package).member_no,
        package_code=template.code,
        package_name=template.name,
        service_code=package.service_code,
        uses_total=package.uses_total,
        uses_left=package.uses_left,
        price_fen=package.price_fen,
        value_fen=package.value_fen,
        payment_method=package.payment_method,
        source=package.source,
        reason=package.reason,
        sold_store_code=_store_code(session, package.sold_store_id),
        sold_by=package.sold_by,
        sold_at=package.sold_at,
        expires_at=package.expires_at,
        expired=package.expires_at is not None and now >= package.expires_at,
        status=package.status,
        refunded_fen=package.refunded_fen,
        uses_refunded=package.uses_refunded,
        refunded_at=package.refunded_at,
        uses=[use_out(session, u) for u in packages.uses_of(session, package)] if with_uses else None,
    )


def _run(
    session: Session,
    principal: CurrentPrincipal,
    idem: str | None,
    operation: str,
    body: dict[str, Any],
    work: Callable[[], BaseModel],
    lang: str,
    status: int = 200,
) -> JSONResponse:
    return respond(idempotency.run(session, principal, idem, operation, body, work, status=status, lang=lang))


# --- templates ---------------------------------------------------------------------------------------


@router.post("/service-packages", status_code=201, response_model=TemplateOut)
def create_package_template(
    body: TemplateIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Offer a new service package (HQ): N uses of a service, a price, a validity and a refund rule."""

    def work() -> TemplateOut:
        spec = packages.PackageSpec(**body.model_dump())
        return template_out(session, packages.create_template(session, principal, spec))

    return _run(session, principal, idem, "packages.template_create", body.model_dump(), work, lang, 201)


@router.get("/service-packages", response_model=TemplateListOut)
def list_package_templates(
    principal: CurrentPrincipal,
    session: SessionDep,
    store_code: str | None = None,
    include_inactive: bool = False,
) -> TemplateListOut:
    """The packages on sale; with ``store_code``, only those whose service that store performs."""
    store = org_service.acting_store(session, principal, store_code) if store_code else None
    found = packages.templates(session, principal.org_id, store=store, active_only=not include_inactive)
    return TemplateListOut(
        store_code=store.code if store else None, packages=[template_out(session, t) for t in found]
    )


# --- member packages ---------------------------------------------------------------------------------


@router.post("/members/{member_no}/packages", status_code=201, response_model=MemberPackageOut)
def sell_package(
    member_no: str,
    body: SellIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Sell a package to a member at a store; ``amount_fen`` must be the package price."""

    def work() -> MemberPackageOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        template = packages.template_by_code(session, principal.org_id, body.package_code)
        store = org_service.acting_store(session, principal, body.store_code)
        package = packages.sell_package(
            session,
            principal,
            member,
            template,
            store,
            payment_method=body.payment_method,
            amount_fen=body.amount_fen,
        )
        return package_out(session, package)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "packages.sell", payload, work, lang, 201)


@router.post("/members/{member_no}/package-grants", status_code=201, response_model=MemberPackageOut)
def grant_package(
    member_no: str,
    body: GrantIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Give a member a package free (compensation, tier benefit, campaign, goodwill), with a reason."""

    def work() -> MemberPackageOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        template = packages.template_by_code(session, principal.org_id, body.package_code)
        store = org_service.acting_store(session, principal, body.store_code)
        package = packages.grant_package(
            session, principal, member, template, store, source=body.source, reason=body.reason
        )
        return package_out(session, package)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "packages.grant", payload, work, lang, 201)


@router.get("/members/{member_no}/packages", response_model=MemberPackageListOut)
def list_member_packages(
    member_no: str, principal: CurrentPrincipal, session: SessionDep, include_closed: bool = False
) -> MemberPackageListOut:
    """A member's packages, newest first, with uses left and expiry; refunded ones on request."""
    member = members.by_member_no(session, principal.org_id, member_no)
    found = packages.packages_of(session, member, include_closed=include_closed)
    return MemberPackageListOut(member_no=member.member_no, packages=[package_out(session, p) for p in found])


@router.get("/member-packages/{package_id}", response_model=MemberPackageOut)
def show_member_package(
    package_id: int, principal: CurrentPrincipal, session: SessionDep
) -> MemberPackageOut:
    """One member package with every use: where, by whom and its value."""
    package = packages.member_package(session, principal.org_id, package_id)
    return package_out(session, package, with_uses=True)


@router.post("/member-packages/{package_id}/uses", status_code=201, response_model=UseOut)
def use_package(
    package_id: int,
    body: UseIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Use one (or ``uses``) of a member's package at a store that offers the service."""

    def work() -> UseOut:
        member = members.by_member_no(session, principal.org_id, body.member_no) if body.member_no else None
        store = org_service.acting_store(session, principal, body.store_code)
        use = packages.use_package(
            session, principal, package_id, store, uses=body.uses, note=body.note, member=member
        )
        return use_out(session, use)

    payload = {"package_id": package_id, **body.model_dump()}
    return _run(session, principal, idem, "packages.use", payload, work, lang, 201)


@router.post("/member-packages/{package_id}/refund", response_model=MemberPackageOut)
def refund_package(
    package_id: int,
    body: RefundIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Refund a package's unused uses by its refund rule and close it."""

    def work() -> MemberPackageOut:
        return package_out(
            session, packages.refund_package(session, principal, package_id, reason=body.reason)
        )

    payload = {"package_id": package_id, **body.model_dump()}
    return _run(session, principal, idem, "packages.refund", payload, work, lang)
