"""Webhook subscriptions, their deliveries, and the pull feed of events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from onemember.common import idempotency
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, page_params, respond
from onemember.events import webhooks
from onemember.events.models import Event, WebhookDelivery, WebhookEndpoint
from onemember.events.schemas import (
    DeliveryListOut,
    DeliveryOut,
    EventFeedOut,
    EventOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookListOut,
    WebhookOut,
)

router = APIRouter(prefix="/api/v1", tags=["events"])

Page = Annotated[dict[str, Any], Depends(page_params)]


def _webhook_out(endpoint: WebhookEndpoint, store_code: str | None) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        store_code=store_code,
        active=endpoint.active,
        created_at=endpoint.created_at,
    )


def _delivery_out(delivery: WebhookDelivery, event: Event) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=event.event_id,
        event_type=event.type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
    )


@router.post("/webhooks", status_code=201, response_model=WebhookCreatedOut)
def create_webhook(
    body: WebhookIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Subscribe a URL to signed event POSTs; the signing secret is shown only in this answer."""

    def work() -> WebhookCreatedOut:
        endpoint, store_code, secret = webhooks.create_endpoint(
            session, principal, body.url, body.event_types, body.store_code
        )
        return WebhookCreatedOut(**_webhook_out(endpoint, store_code).model_dump(), secret=secret)

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "webhooks.create",
            body,
            work,
            status=201,
            lang=lang,
            secret_fields=("secret",),
        )
    )


@router.get("/webhooks", response_model=WebhookListOut)
def list_webhooks(principal: CurrentPrincipal, session: SessionDep) -> WebhookListOut:
    """Webhook endpoints in the caller's scope (store staff see their own stores' endpoints)."""
    rows = webhooks.endpoints_in_scope(session, principal)
    return WebhookListOut(webhooks=[_webhook_out(endpoint, code) for endpoint, code in rows])


@router.post("/webhooks/{endpoint_id}/disable", response_model=WebhookOut)
def disable_webhook(
    endpoint_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Stop sending events to an endpoint; deliveries still waiting are cancelled."""

    def work() -> WebhookOut:
        endpoint, code = webhooks.disable_endpoint(session, principal, endpoint_id)
        return _webhook_out(endpoint, code)

    return respond(
        idempotency.run(
            session, principal, idem, "webhooks.disable", {"endpoint_id": endpoint_id}, work, lang=lang
        )
    )


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=DeliveryListOut)
def list_webhook_deliveries(
    endpoint_id: int, principal: CurrentPrincipal, session: SessionDep, page: Page
) -> DeliveryListOut:
    """An endpoint's delivery attempts, newest first: status, attempts, next retry, last answer."""
    rows = webhooks.deliveries_of(session, principal, endpoint_id, limit=page["limit"], offset=page["offset"])
    return DeliveryListOut(deliveries=[_delivery_out(delivery, event) for delivery, event in rows])


@router.post(
    "/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=201, response_model=DeliveryOut
)
def redeliver_webhook(
    endpoint_id: int,
    delivery_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Send an earlier delivery's event again (same event id, so receivers can de-duplicate)."""

    def work() -> DeliveryOut:
        delivery, event = webhooks.redeliver(session, principal, endpoint_id, delivery_id)
        return _delivery_out(delivery, event)

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "webhooks.redeliver",
            {"endpoint_id": endpoint_id, "delivery_id": delivery_id},
            work,
            status=201,
            lang=lang,
        )
    )


@router.get("/events", response_model=EventFeedOut)
def read_event_feed(
    principal: CurrentPrincipal,
    session: SessionDep,
    after_id: Annotated[int, Query(ge=0)] = 0,
    event_type: Annotated[str | None, Query(alias="type", max_length=60)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventFeedOut:
    """Events after ``after_id`` in order, for integrators that pull instead of receiving webhooks."""
    events = webhooks.event_feed(session, principal, after_id=after_id, event_type=event_type, limit=limit)
    return EventFeedOut(
        events=[
            EventOut(
                id=e.id,
                event_id=e.event_id,
                type=e.type,
                created_at=e.created_at,
                org_id=e.org_id,
                member_id=e.member_id,
                store_ids=list(e.store_ids),
                payload=e.payload,
            )
            for e in events
        ],
        next_after_id=events[-1].id if events else after_id,
    )
