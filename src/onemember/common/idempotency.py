"""Idempotent writes: a retry with the same ``Idempotency-Key`` gets the first answer, business errors
included; the same key with a different body is refused.

The record is inserted first, inside the business transaction, so a concurrent duplicate waits on the
unique index and then replays the committed answer. A business error rolls the work back and stores
the error answer in its own short transaction. This helper owns the commit, so an answer is never sent
before its transaction is durable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common.models import IdempotencyRecord
from onemember.db import utcnow
from onemember.errors import DomainError
from onemember.settings import get_settings


class KeyReused(DomainError):
    status = 422
    code = "idempotency.key_reused"
    zh = "该幂等键已用于内容不同的请求"
    en = "This Idempotency-Key was used with a different request"


class KeyInvalid(DomainError):
    status = 422
    code = "idempotency.key_invalid"
    zh = "幂等键须为 1 到 200 个可见字符"
    en = "The Idempotency-Key must be 1 to 200 visible characters"


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def request_hash(operation: str, body: BaseModel | dict[str, Any] | None) -> str:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    canonical = json.dumps({"op": operation, "body": data}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dump(result: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def _replay(record: IdempotencyRecord, req_hash: str, operation: str) -> Outcome:
    if record.request_hash != req_hash or record.operation != operation:
        raise KeyReused()
    return Outcome(record.status_code, json.loads(record.response_body or b"{}"), True)


def _find(session: Session, org_id: int, owner: str, key: str) -> IdempotencyRecord | None:
    return session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.org_id == org_id,
            IdempotencyRecord.principal == owner,
            IdempotencyRecord.key == key,
        )
    )


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Forget answers older than the retention window (``ONEMEMBER_IDEMPOTENCY_TTL_DAYS``)."""
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < (now or utcnow()))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def run(
    session: Session,
    principal: Principal,
    key: str | None,
    operation: str,
    body: BaseModel | dict[str, Any] | None,
    work: Callable[[], BaseModel | dict[str, Any]],
    *,
    status: int = 200,
    lang: str = "zh",
    namespace: str | None = None,
    secret_fields: tuple[str, ...] = (),
) -> Outcome:
    """Run ``work`` once per key and commit.

    Keys belong to the caller (``principal.key``) unless a ``namespace`` is given. Business errors come
    back as an ``Outcome`` when there is a key (so they can be replayed) and are raised when there is
    none; a malformed or reused key raises ``KeyInvalid`` / ``KeyReused``. ``secret_fields`` (a new API
    key, a webhook secret) are answered once and never stored: a replay answers them as ``null``.
    """
    owner = namespace or principal.key
    if key is None:
        try:
            result = _dump(work())
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return Outcome(status, result, False)
    if not 0 < len(key) <= 200 or not key.isprintable():
        raise KeyInvalid()
    req_hash = request_hash(operation, body)
    existing = _find(session, principal.org_id, owner, key)
    if existing is not None:
        outcome = _replay(existing, req_hash, operation)
        session.rollback()
        return outcome
    now = utcnow()
    expires = now + timedelta(days=get_settings().idempotency_ttl_days)
    record = IdempotencyRecord(
        org_id=principal.org_id,
        principal=owner,
        key=key,
        operation=operation,
        request_hash=req_hash,
        status_code=0,
        response_body=None,
        created_at=now,
        expires_at=expires,
    )
    try:
        session.add(record)
        session.flush()
    except IntegrityError:
        # Someone else committed this key first: replay their answer.
        session.rollback()
        found = _find(session, principal.org_id, owner, key)
        assert found is not None
        outcome = _replay(found, req_hash, operation)
        session.rollback()
        return outcome
    try:
        result = _dump(work())
        record.status_code = status
        stored = {k: (None if k in secret_fields else v) for k, v in result.items()}
        record.response_body = json.dumps(stored, ensure_ascii=False).encode()
        session.commit()
        return Outcome(status, result, False)
    except DomainError as err:
        session.rollback()
        problem = err.to_problem(lang)
        session.add(
            IdempotencyRecord(
                org_id=principal.org_id,
                principal=owner,
                key=key,
                operation=operation,
                request_hash=req_hash,
                status_code=err.status,
                response_body=json.dumps(problem, ensure_ascii=False).encode(),
                created_at=now,
                expires_at=expires,
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
        return Outcome(err.status, problem, False)
    except BaseException:
        session.rollback()
        raise
