"""Domain events go into the outbox inside the business transaction; the dispatcher delivers them after
commit (at-least-once, each with a unique ``event_id`` so receivers can de-duplicate)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from onemember.db import utcnow
from onemember.events.models import Event


def emit(
    session: Session,
    org_id: int,
    event_type: str,
    payload: dict[str, Any],
    *,
    member_id: int | None = None,
    store_ids: list[int] | None = None,
) -> Event:
    event = Event(
        event_id=str(uuid.uuid4()),
        org_id=org_id,
        type=event_type,
        member_id=member_id,
        store_ids=sorted(set(store_ids or [])),
        payload=payload,
        created_at=utcnow(),
    )
    session.add(event)
    return event
