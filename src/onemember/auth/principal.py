"""Who is calling: a staff member (role + scope) or a store terminal's API key."""

from __future__ import annotations

from dataclasses import dataclass, field

from onemember.common.types import Role
from onemember.errors import Forbidden

# Roles that may see a member's full phone number (every reveal is audited).
REVEAL_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER, Role.CS_AGENT})
# Roles that may merge members.
MERGE_ROLES = frozenset({Role.HQ_ADMIN, Role.CS_AGENT, Role.STORE_MANAGER})
# Roles that may change money-like state at a till.
TILL_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER, Role.CLERK})


@dataclass(frozen=True)
class Principal:
    org_id: int
    kind: str  # "staff" | "api_key" | "system"
    id: int
    name: str
    role: Role
    store_id: int | None = None  # the store a clerk, store manager or terminal acts for
    store_ids: frozenset[int] | None = None  # stores in scope; None means every store of the org
    ip: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def key(self) -> str:
        """A stable identity for idempotency records."""
        return f"{self.kind}:{self.id}"

    @property
    def is_hq(self) -> bool:
        return self.store_ids is None

    def can_access_store(self, store_id: int) -> bool:
        return self.store_ids is None or store_id in self.store_ids

    def require_store(self, store_id: int) -> None:
        if not self.can_access_store(store_id):
            raise Forbidden(
                "该门店不在您的权限范围内", "That store is outside your scope", code="auth.store_scope"
            )

    def require_role(self, roles: frozenset[Role], what_zh: str, what_en: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"您的角色无权{what_zh}", f"Your role may not {what_en}", code="auth.role")

    @property
    def can_reveal_pii(self) -> bool:
        return self.kind == "staff" and self.role in REVEAL_ROLES


def system_principal(org_id: int, name: str = "system") -> Principal:
    return Principal(org_id=org_id, kind="system", id=0, name=name, role=Role.HQ_ADMIN)
