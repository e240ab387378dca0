"""Webhook endpoints, their signatures and one delivery attempt over HTTP.

A delivery is an HTTP POST of the event as JSON, signed the way Stripe signs its webhooks::

    X-OneMember-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

A receiver recomputes the HMAC over the exact bytes it received (``verify_signature``), rejects old
timestamps to stop replays, and de-duplicates by ``X-OneMember-Event-Id``: delivery is at-least-once,
and a retry or a manual redelivery carries the same event id.

Signing secrets are shown once, when the endpoint is created, and kept encrypted at rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, Select, cast, exists, false, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import Principal
from onemember.common.crypto import get_cipher
from onemember.common.types import Role
from onemember.db import is_postgres, utcnow
from onemember.errors import Conflict, DomainError, Forbidden, NotFound
from onemember.events.models import Event, WebhookDelivery, WebhookEndpoint
from onemember.org import service as org_service
from onemember.org.models import Store

EVENT_TYPES = (
    "member.registered",
    "order.completed",
    "order.returned",
    "points.changed",
    "member.merged",
    "member.erased",
    "points.expiring",
    "points.threshold_reached",
    "tier.changed",
    "reward.redeemed",
    "reward.fulfilled",
    "reward.cancelled",
    "coupon.issued",
    "coupon.gifted",
    "coupon.redeemed",
    "coupon.restored",
    "coupon.voided",
    "package.sold",
    "package.used",
    "package.refunded",
    "settlement.period_closed",
)
MANAGE_ROLES = frozenset({Role.HQ_ADMIN, Role.STORE_MANAGER})
SIGNATURE_HEADER = "X-OneMember-Signature"
EVENT_ID_HEADER = "X-OneMember-Event-Id"
EVENT_TYPE_HEADER = "X-OneMember-Event-Type"
DELIVERY_ID_HEADER = "X-OneMember-Delivery-Id"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_URL_LENGTH = 500
MAX_ERROR_BODY = 500
_ENCRYPTED = "enc:"


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


class InvalidWebhookUrl(DomainError):
    status = 422
    code = "webhooks.invalid_url"
    zh = "回调地址必须是有效的 http 或 https 网址"
    en = "The webhook URL must be a valid http or https URL"


class UnknownEventType(DomainError):
    status = 422
    code = "webhooks.unknown_event_type"
    zh = "不支持的事件类型"
    en = "Unknown event type"


class WebhookNotFound(NotFound):
    code = "webhooks.not_found"
    zh = "找不到该回调地址"
    en = "No such webhook endpoint"


class DeliveryNotFound(NotFound):
    code = "webhooks.delivery_not_found"
    zh = "找不到该投递记录"
    en = "No such webhook delivery"


class EndpointDisabled(Conflict):
    code = "webhooks.endpoint_disabled"
    zh = "该回调地址已停用"
    en = "The webhook endpoint is disabled"


# --- signatures -----------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(16)


def seal_secret(secret: str) -> str:
    return _ENCRYPTED + base64.urlsafe_b64encode(get_cipher().encrypt(secret)).decode()


def open_secret(stored: str) -> str:
    """The signing secret; rows written without encryption (e.g. by hand) are used as they are."""
    if not stored.startswith(_ENCRYPTED):
        return stored
    try:
        return get_cipher().decrypt(base64.urlsafe_b64decode(stored[len(_ENCRYPTED) :]))
    except (ValueError, InvalidTag) as exc:
        raise ValueError("the signing secret cannot be decrypted with the current PII key") from exc


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={compute_signature(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: datetime | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within the tolerance."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = (now or utcnow()).timestamp()
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = compute_signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def event_body(event: Event) -> bytes:
    """The exact bytes that are signed and sent."""
    data: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "org_id": event.org_id,
        "member_id": event.member_id,
        "store_ids": list(event.store_ids),
        "payload": event.payload,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


# --- one delivery attempt -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """Everything one HTTP call needs, read before the claiming transaction commits."""

    delivery_id: int
    url: str
    secret: str
    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str


def send(client: httpx.Client, attempt: Attempt, at: datetime, timeout: float = 5.0) -> AttemptResult:
    """POST one signed event; any 2xx answer counts as delivered. Never raises for network errors."""
    timestamp = int(at.timestamp())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "OneMember-Webhooks/1",
        EVENT_ID_HEADER: attempt.event_id,
        EVENT_TYPE_HEADER: attempt.event_type,
        DELIVERY_ID_HEADER: str(attempt.delivery_id),
        SIGNATURE_HEADER: signature_header(attempt.secret, timestamp, attempt.body),
    }
    try:
        with client.stream(
            "POST", attempt.url, content=attempt.body, headers=headers, timeout=timeout
        ) as response:
            if 200 <= response.status_code < 300:
                return AttemptResult(True, response.status_code, "")
            # Keep the start of the answer for the console, without reading a huge body.
            start = b""
            for chunk in response.iter_bytes():
                start += chunk
                if len(start) >= MAX_ERROR_BODY:
                    break
            text = start[:MAX_ERROR_BODY].decode("utf-8", "replace")
            return AttemptResult(False, response.status_code, f"HTTP {response.status_code}: {text}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return AttemptResult(False, None, f"{type(exc).__name__}: {exc}"[:1000])


# --- endpoints ------------------------------------------------------------------------------------


def validate_url(url: str) -> str:
    url = url.strip()
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() for ch in url):
        raise InvalidWebhookUrl()
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidWebhookUrl() from exc
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidWebhookUrl()
    return url


def validate_event_types(event_types: list[str]) -> list[str]:
    unknown = sorted({t for t in event_types if t not in EVENT_TYPES})
    if unknown:
        raise UnknownEventType(
            f"不支持的事件类型：{', '.join(unknown)}",
            f"Unknown event type(s): {', '.join(unknown)}",
            unknown=unknown,
            allowed=list(EVENT_TYPES),
        )
    return sorted(set(event_types))


def _require_manager(principal: Principal) -> None:
    principal.require_role(MANAGE_ROLES, "管理回调地址", "manage webhooks")


def create_endpoint(
    session: Session, principal: Principal, url: str, event_types: list[str], store_code: str | None
) -> tuple[WebhookEndpoint, str | None, str]:
    """A new endpoint, its store's code and its signing secret (returned once, stored encrypted)."""
    _require_manager(principal)
    clean_url = validate_url(url)
    types = validate_event_types(event_types)
    store: Store | None = None
    if store_code:
        store = org_service.store_by_code(session, principal.org_id, store_code)
        principal.require_store(store.id)
    elif not principal.is_hq:
        if principal.store_id is None:
            raise Forbidden("您的角色无权管理回调地址", "Your role may not manage webhooks", code="auth.role")
        store = org_service.get_store(session, principal.org_id, principal.store_id)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        org_id=principal.org_id,
        store_id=store.id if store else None,
        url=clean_url,
        secret=seal_secret(secret),
        event_types=types,
        active=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    audit.record(
        session,
        principal,
        "webhook.created",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        store_id=endpoint.store_id,
        details={"url": clean_url, "event_types": types, "store_code": store.code if store else None},
    )
    return endpoint, store.code if store else None, secret


def _endpoints_in_scope_query(principal: Principal) -> Select[WebhookEndpoint, str]:
    """Endpoints with their store codes; store staff only see their own stores' endpoints."""
    query = (
        select(WebhookEndpoint, Store.code)
        .outerjoin(Store, Store.id == WebhookEndpoint.store_id)
        .where(WebhookEndpoint.org_id == principal.org_id)
    )
    if principal.store_ids is not None:
        query = query.where(WebhookEndpoint.store_id.in_(sorted(principal.store_ids)))
    return query


def endpoints_in_scope(session: Session, principal: Principal) -> list[tuple[WebhookEndpoint, str | None]]:
    """Endpoints the caller may see, with their store codes."""
    query = _endpoints_in_scope_query(principal).order_by(WebhookEndpoint.id)
    return [(endpoint, code) for endpoint, code in session.execute(query)]


def endpoint_in_scope(
    session: Session, principal: Principal, endpoint_id: int, *, lock: bool = False
) -> tuple[WebhookEndpoint, str | None]:
    query = _endpoints_in_scope_query(principal).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        query = query.with_for_update(of=WebhookEndpoint).execution_options(populate_existing=True)
    row = session.execute(query).first()
    if row is None:
        raise WebhookNotFound()
    return row[0], row[1]


def disable_endpoint(
    session: Session, principal: Principal, endpoint_id: int
) -> tuple[WebhookEndpoint, str | None]:
    """Stop sending to an endpoint; deliveries still waiting are cancelled."""
    _require_manager(principal)
    endpoint, code = endpoint_in_scope(session, principal, endpoint_id, lock=True)
    if endpoint.active:
        endpoint.active = False
        cancelled = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING
            )
            .values(status=DeliveryStatus.CANCELLED)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        audit.record(
            session,
            principal,
            "webhook.disabled",
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            store_id=endpoint.store_id,
            details={"url": endpoint.url, "cancelled_deliveries": int(cancelled or 0)},
        )
        session.flush()
    return endpoint, code


def deliveries_of(
    session: Session, principal: Principal, endpoint_id: int, *, limit: int, offset: int
) -> list[tuple[WebhookDelivery, Event]]:
    """An endpoint's deliveries, newest first."""
    endpoint, _ = endpoint_in_scope(session, principal, endpoint_id)
    query = (
        select(WebhookDelivery, Event)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [(delivery, event) for delivery, event in session.execute(query)]


def redeliver(
    session: Session, principal: Principal, endpoint_id: int, delivery_id: int
) -> tuple[WebhookDelivery, Event]:
    """Queue the event of an earlier delivery again, as a new delivery with the same event id."""
    _require_manager(principal)
    endpoint, _ = endpoint_in_scope(session, principal, endpoint_id)
    found = session.execute(
        select(WebhookDelivery, Event)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id)
    ).first()
    if found is None:
        raise DeliveryNotFound()
    if not endpoint.active:
        raise EndpointDisabled()
    original, event = found
    delivery = WebhookDelivery(
        org_id=endpoint.org_id,
        endpoint_id=endpoint.id,
        event_id=event.id,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
        last_error="",
    )
    session.add(delivery)
    session.flush()
    audit.record(
        session,
        principal,
        "webhook.redelivered",
        target_type="webhook_delivery",
        target_id=delivery.id,
        store_id=endpoint.store_id,
        member_id=event.member_id,
        details={"endpoint_id": endpoint.id, "event_id": event.event_id, "original_delivery_id": original.id},
    )
    return delivery, event


def endpoint_matches(endpoint: WebhookEndpoint, event: Event) -> bool:
    if endpoint.org_id != event.org_id or not endpoint.active:
        return False
    if endpoint.event_types and event.type not in endpoint.event_types:
        return False
    return endpoint.store_id is None or endpoint.store_id in event.store_ids


# --- the pull feed --------------------------------------------------------------------------------


def _concerns_any_store(session: Session, store_ids: list[int]) -> ColumnElement[bool]:
    """SQL for "the event's store_ids (a JSON array) shares a store with ``store_ids``"."""
    if not store_ids:
        return false()
    if is_postgres(session):
        as_jsonb = cast(Event.store_ids, JSONB)
        return or_(*(as_jsonb.contains([store_id]) for store_id in store_ids))
    items = func.json_each(Event.store_ids).table_valued("value")
    return exists().select_from(items).where(items.c.value.in_(store_ids))


def event_feed(
    session: Session, principal: Principal, *, after_id: int, event_type: str | None, limit: int
) -> list[Event]:
    """Events after ``after_id`` in id order; store staff see only events that concern their stores."""
    query = select(Event).where(Event.org_id == principal.org_id, Event.id > after_id)
    if event_type:
        query = query.where(Event.type == event_type)
    if principal.store_ids is not None:
        query = query.where(_concerns_any_store(session, sorted(principal.store_ids)))
    return list(session.scalars(query.order_by(Event.id).limit(limit)))
