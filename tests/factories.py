"""Small typed builders for test data: a chain with two brands, three stores, staff and till keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy.orm import Session

from onemember.auth import service as auth_service
from onemember.auth.principal import Principal, system_principal
from onemember.common.types import Role
from onemember.org import service as org_service
from onemember.org.models import Org, Staff, Store

PASSWORD = "correct-horse-9"


@lru_cache
def _password_hash() -> str:
    from onemember.auth.passwords import hash_password

    return hash_password(PASSWORD)


@dataclass
class Chain:
    org_id: int
    org_code: str
    stores: dict[str, int] = field(default_factory=dict)  # code -> id
    keys: dict[str, str] = field(default_factory=dict)  # store code -> API key secret
    staff: dict[str, str] = field(default_factory=dict)  # username -> role

    def key(self, store_code: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[store_code]}"}


def make_chain(
    session: Session,
    *,
    code: str | None = None,
    earn_rate: int = 1,
    redeem_rate: int = 100,
    shortfall_policy: str = "debt",
) -> Chain:
    """Org → brands 'home' and 'kids' → regions → stores A (Shanghai), B (Hangzhou), C (Beijing, kids)."""
    code = code or f"t{secrets.token_hex(4)}"
    org: Org = org_service.create_org(
        session, code, "测试连锁", earn_points_per_yuan=earn_rate, redeem_points_per_yuan=redeem_rate
    )
    org.return_shortfall_policy = shortfall_policy
    home = org_service.add_brand(session, org, "home", "优家")
    kids = org_service.add_brand(session, org, "kids", "优童")
    east = org_service.add_region(session, home, "east", "华东区")
    north = org_service.add_region(session, kids, "north", "华北区")
    stores = {
        "A": org_service.add_store(session, east, "A", "上海徐汇店", "上海"),
        "B": org_service.add_store(session, east, "B", "杭州西湖店", "杭州"),
        "C": org_service.add_store(session, north, "C", "北京朝阳店", "北京"),
    }
    chain = Chain(org_id=org.id, org_code=code, stores={k: s.id for k, s in stores.items()})
    people = [
        ("hq", Role.HQ_ADMIN, None, None),
        ("east_mgr", Role.REGIONAL_MANAGER, None, east.id),
        ("a_mgr", Role.STORE_MANAGER, stores["A"].id, None),
        ("a_clerk", Role.CLERK, stores["A"].id, None),
        ("b_mgr", Role.STORE_MANAGER, stores["B"].id, None),
        ("c_clerk", Role.CLERK, stores["C"].id, None),
        ("cs", Role.CS_AGENT, None, None),
        ("auditor", Role.AUDITOR, None, None),
    ]
    for username, role, store_id, region_id in people:
        session.add(
            Staff(
                org_id=org.id,
                username=username,
                display_name=username,
                password_hash=_password_hash(),
                role=str(role),
                store_id=store_id,
                region_id=region_id,
                active=True,
            )
        )
        chain.staff[username] = str(role)
    admin: Principal = system_principal(org.id)
    for store_code, store in stores.items():
        secret, _ = auth_service.create_api_key(session, admin, store, f"till {store_code}")
        chain.keys[store_code] = secret
    session.flush()
    return chain


def store(session: Session, chain: Chain, code: str) -> Store:
    found = session.get(Store, chain.stores[code])
    assert found is not None
    return found
