"""The demo chain's structure: org, brands, regions, stores and staff, written through the org service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from onemember.auth.passwords import hash_password
from onemember.common.types import Role
from onemember.demo.data import AREAS, CITIES, KIDS, LIFE, ORG_NAME, BrandSpec, CitySpec
from onemember.org import service as org_service
from onemember.org.models import Brand, Org, Region, Staff

ADMIN_PASSWORD = "onemember-admin"
STORE_PASSWORD = "onemember-store"


@dataclass
class StoreInfo:
    id: int
    code: str
    name: str
    city: str
    area: str
    brand: str
    region_id: int
    weight: float
    actor: str  # who rings up its orders, as checkout records it


@dataclass
class Chain:
    org: Org
    stores: list[StoreInfo] = field(default_factory=list)
    regions: dict[str, Region] = field(default_factory=dict)
    brands: dict[str, Brand] = field(default_factory=dict)
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # username, role, password


def _sites(count: int) -> list[tuple[CitySpec, int, str, str]]:
    """Store sites in opening order: every city's first store, then every city's second, and so on."""
    sites: list[tuple[CitySpec, int, str, str]] = []
    round_no = 0
    while len(sites) < count:
        for city in CITIES:
            if len(sites) == count:
                break
            if round_no < len(city.sites):
                district, address = city.sites[round_no]
            else:  # more stores than named sites: number them
                district, address = f"{round_no + 1}号", f"{city.name}市人民路 {100 + round_no * 10} 号"
            sites.append((city, round_no + 1, district, address))
        round_no += 1
    return sites


def build_chain(
    session: Session,
    org_code: str,
    store_count: int,
    weights: list[float],
    opened_at: datetime,
    timezone: str,
) -> Chain:
    """Org (with its default points program), two brands, regions per brand and area, stores, staff."""
    org = org_service.create_org(session, org_code, ORG_NAME, timezone=timezone)
    org.created_at = opened_at
    chain = Chain(org=org)
    for spec in (LIFE, KIDS):
        chain.brands[spec.code] = org_service.add_brand(session, org, spec.code, spec.name)
    for index, ((city, number, district, address), weight) in enumerate(
        zip(_sites(store_count), weights, strict=True)
    ):
        brand: BrandSpec = KIDS if index % 4 == 3 else LIFE
        area = AREAS[city.area]
        region_code = f"{brand.code}-{area.code}"
        region = chain.regions.get(region_code)
        if region is None:
            region_name = area.name if brand is LIFE else f"童趣{area.name}"
            region = org_service.add_region(session, chain.brands[brand.code], region_code, region_name)
            chain.regions[region_code] = region
        code = f"{city.code}{number:02d}"
        name = f"{city.name}{district}{'童趣' if brand is KIDS else ''}店"
        store = org_service.add_store(session, region, code, name, city.name, address)
        store.created_at = opened_at
        chain.stores.append(
            StoreInfo(
                id=store.id,
                code=code,
                name=name,
                city=city.name,
                area=city.area,
                brand=brand.code,
                region_id=region.id,
                weight=weight * city.weight,
                actor=f"staff:{code.lower()}_clerk",
            )
        )
    _add_staff(session, chain)
    session.flush()
    return chain


def _add_staff(session: Session, chain: Chain) -> None:
    """Argon2 is slow on purpose: each distinct password is hashed once and the hash reused."""
    hashes = {pw: hash_password(pw) for pw in (ADMIN_PASSWORD, STORE_PASSWORD)}
    people: list[tuple[str, str, Role, str, int | None, int | None]] = [
        ("admin", "总部管理员", Role.HQ_ADMIN, ADMIN_PASSWORD, None, None),
        ("cs", "客服专员", Role.CS_AGENT, ADMIN_PASSWORD, None, None),
        ("auditor", "审计专员", Role.AUDITOR, ADMIN_PASSWORD, None, None),
    ]
    for code, region in chain.regions.items():
        people.append(
            (
                f"{code.replace('-', '_')}_mgr",
                f"{region.name}经理",
                Role.REGIONAL_MANAGER,
                STORE_PASSWORD,
                None,
                region.id,
            )
        )
    for store in chain.stores:
        low = store.code.lower()
        people.append((f"{low}_mgr", f"{store.name}店长", Role.STORE_MANAGER, STORE_PASSWORD, store.id, None))
        people.append((f"{low}_clerk", f"{store.name}店员", Role.CLERK, STORE_PASSWORD, store.id, None))
    for username, display, role, password, store_id, region_id in people:
        session.add(
            Staff(
                org_id=chain.org.id,
                username=username,
                display_name=display,
                password_hash=hashes[password],
                role=str(role),
                store_id=store_id,
                region_id=region_id,
                active=True,
                created_at=chain.org.created_at,
            )
        )
        chain.logins.append((username, str(role), password))
