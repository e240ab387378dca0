"""The org tree and staff accounts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from onemember.audit import service as audit
from onemember.common import idempotency
from onemember.common.types import Role
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import Forbidden
from onemember.org import service
from onemember.org.models import Brand, Org, Region, Store

router = APIRouter(prefix="/api/v1", tags=["org"])


class StoreOut(BaseModel):
    code: str
    name: str
    city: str
    active: bool


class RegionOut(BaseModel):
    code: str
    name: str
    stores: list[StoreOut]


class BrandOut(BaseModel):
    code: str
    name: str
    regions: list[RegionOut]


class OrgTreeOut(BaseModel):
    code: str
    name: str
    timezone: str
    brands: list[BrandOut]


class StaffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=2, max_length=80)
    password: str = Field(min_length=8, max_length=200)
    role: Role
    display_name: str = ""
    store_code: str | None = None
    region_code: str | None = None


class StaffOut(BaseModel):
    username: str
    role: str
    store_code: str | None
    region_code: str | None


@router.get("/org", response_model=OrgTreeOut)
def org_tree(principal: CurrentPrincipal, session: SessionDep) -> OrgTreeOut:
    """The org → brand → region → store tree, limited to the caller's stores."""
    org = session.get(Org, principal.org_id)
    assert org is not None
    stores = [
        s
        for s in session.scalars(select(Store).where(Store.org_id == org.id).order_by(Store.code))
        if principal.can_access_store(s.id)
    ]
    regions = session.scalars(select(Region).where(Region.org_id == org.id).order_by(Region.code)).all()
    brands = session.scalars(select(Brand).where(Brand.org_id == org.id).order_by(Brand.code)).all()
    tree = []
    for b in brands:
        regs = []
        for r in regions:
            if r.brand_id != b.id:
                continue
            rs = [
                StoreOut(code=s.code, name=s.name, city=s.city, active=s.active)
                for s in stores
                if s.region_id == r.id
            ]
            if rs:
                regs.append(RegionOut(code=r.code, name=r.name, stores=rs))
        if regs:
            tree.append(BrandOut(code=b.code, name=b.name, regions=regs))
    return OrgTreeOut(code=org.code, name=org.name, timezone=org.timezone, brands=tree)


@router.post("/staff", status_code=201, response_model=StaffOut)
def create_staff(
    body: StaffIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Create a staff account (HQ admins for any store; store managers for clerks of their store)."""

    def work() -> StaffOut:
        store = service.store_by_code(session, principal.org_id, body.store_code) if body.store_code else None
        region = (
            session.scalar(
                select(Region).where(Region.org_id == principal.org_id, Region.code == body.region_code)
            )
            if body.region_code
            else None
        )
        if principal.role != Role.HQ_ADMIN:
            if not (
                principal.role == Role.STORE_MANAGER
                and body.role == Role.CLERK
                and store
                and store.id == principal.store_id
            ):
                raise Forbidden(
                    "您的角色无权创建该员工账号",
                    "Your role may not create that staff account",
                    code="auth.role",
                )
        staff = service.add_staff(
            session,
            principal.org_id,
            body.username,
            body.password,
            body.role,
            display_name=body.display_name,
            store_id=store.id if store else None,
            region_id=region.id if region else None,
        )
        audit.record(
            session,
            principal,
            "staff.created",
            target_type="staff",
            target_id=staff.username,
            store_id=staff.store_id,
            details={"role": staff.role},
        )
        return StaffOut(
            username=staff.username,
            role=staff.role,
            store_code=store.code if store else None,
            region_code=region.code if region else None,
        )

    payload = body.model_dump(exclude={"password"})
    return respond(
        idempotency.run(session, principal, idem, "staff.create", payload, work, status=201, lang=lang)
    )
