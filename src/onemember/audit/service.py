"""Writes audit entries inside the caller's transaction, so an action and its record commit together."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal


def record(
    session: Session,
    principal: Principal,
    action: str,
    *,
    target_type: str = "",
    target_id: str | int = "",
    member_id: int | None = None,
    store_id: int | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditLog:
    entry = AuditLog(
        org_id=principal.org_id,
        actor=principal.actor,
        actor_role=str(principal.role),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        member_id=member_id,
        store_id=store_id,
        ip=principal.ip,
        reason=reason,
        details=details or {},
    )
    session.add(entry)
    return entry
