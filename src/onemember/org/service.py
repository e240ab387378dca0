"""Orgs, brands, regions, stores and staff accounts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.passwords import hash_password
from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.errors import Conflict, Invalid, NotFound
from onemember.org.models import Brand, Org, Region, Staff, Store
from onemember.points.models import PointsProgram


class StoreNotFound(NotFound):
    code = "org.store_not_found"
    zh = "找不到该门店"
    en = "Store not found"


def create_org(
    session: Session,
    code: str,
    name: str,
    *,
    timezone: str = "Asia/Shanghai",
    earn_points_per_yuan: int = 1,
    redeem_points_per_yuan: int = 100,
) -> Org:
    if session.scalar(select(Org).where(Org.code == code)):
        raise Conflict("机构代码已存在", "An org with that code exists", code="org.exists")
    org = Org(code=code, name=name, timezone=timezone, return_shortfall_policy="debt")
    session.add(org)
    session.flush()
    session.add(
        PointsProgram(
            org_id=org.id,
            code="main",
            name=f"{name}积分",
            scope="org",
            is_default=True,
            earn_points_per_yuan=earn_points_per_yuan,
            redeem_points_per_yuan=redeem_points_per_yuan,
        )
    )
    session.flush()
    return org


def add_brand(session: Session, org: Org, code: str, name: str) -> Brand:
    brand = Brand(org_id=org.id, code=code, name=name)
    session.add(brand)
    session.flush()
    return brand


def add_region(session: Session, brand: Brand, code: str, name: str) -> Region:
    region = Region(org_id=brand.org_id, brand_id=brand.id, code=code, name=name)
    session.add(region)
    session.flush()
    return region


def add_store(
    session: Session, region: Region, code: str, name: str, city: str = "", address: str = ""
) -> Store:
    store = Store(
        org_id=region.org_id,
        brand_id=region.brand_id,
        region_id=region.id,
        code=code,
        name=name,
        city=city,
        address=address,
        active=True,
    )
    session.add(store)
    session.flush()
    return store


def add_staff(
    session: Session,
    org_id: int,
    username: str,
    password: str,
    role: Role,
    *,
    display_name: str = "",
    store_id: int | None = None,
    region_id: int | None = None,
) -> Staff:
    if role in (Role.STORE_MANAGER, Role.CLERK) and store_id is None:
        raise Invalid("门店员工必须指定门店", "Store staff need a store", code="org.staff_store_required")
    if role == Role.REGIONAL_MANAGER and region_id is None:
        raise Invalid(
            "区域经理必须指定区域", "A regional manager needs a region", code="org.staff_region_required"
        )
    if session.scalar(select(Staff).where(Staff.org_id == org_id, Staff.username == username)):
        raise Conflict("用户名已存在", "That username is taken", code="org.username_taken")
    if len(password) < 8:
        raise Invalid(
            "密码至少 8 位", "The password needs at least 8 characters", code="org.password_too_short"
        )
    staff = Staff(
        org_id=org_id,
        username=username,
        display_name=display_name or username,
        password_hash=hash_password(password),
        role=str(role),
        store_id=store_id,
        region_id=region_id,
        active=True,
    )
    session.add(staff)
    session.flush()
    return staff


def get_store(session: Session, org_id: int, store_id: int) -> Store:
    store = session.get(Store, store_id)
    if store is None or store.org_id != org_id:
        raise StoreNotFound()
    return store


def store_by_code(session: Session, org_id: int, code: str) -> Store:
    store = session.scalar(select(Store).where(Store.org_id == org_id, Store.code == code))
    if store is None:
        raise StoreNotFound(f"找不到门店 {code}", f"No store with code {code}")
    return store


def acting_store(session: Session, principal: Principal, store_code: str | None) -> Store | None:
    """The store an action happens at: the one named, else the caller's own; None when the caller has no
    store of its own (HQ, CS) and names none. A named store is checked against the caller's scope."""
    if store_code:
        store = store_by_code(session, principal.org_id, store_code)
    elif principal.store_id is not None:
        store = get_store(session, principal.org_id, principal.store_id)
    else:
        return None
    principal.require_store(store.id)
    return store


def stores_in_region(session: Session, region_id: int) -> list[int]:
    return list(session.scalars(select(Store.id).where(Store.region_id == region_id)))


def get_org(session: Session, org_id: int) -> Org:
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound()
    return org
