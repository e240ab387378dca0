"""API shapes for webhook endpoints, their deliveries and the event feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL that receives the POSTs")
    event_types: list[str] = Field(
        default_factory=list, max_length=20, description="Event types to receive; empty means every type"
    )
    store_code: str | None = Field(
        default=None,
        max_length=40,
        description="Only events that concern this store; omit for the whole chain",
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    event_types: list[str]
    store_code: str | None
    active: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="The signing secret; shown only in this answer")


class WebhookListOut(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str
    delivered_at: datetime | None


class DeliveryListOut(BaseModel):
    deliveries: list[DeliveryOut]


class EventOut(BaseModel):
    id: int = Field(description="Feed position; pass the last one as after_id")
    event_id: str = Field(description="Unique id; receivers de-duplicate by it")
    type: str
    created_at: datetime
    org_id: int
    member_id: int | None
    store_ids: list[int]
    payload: dict[str, Any]


class EventFeedOut(BaseModel):
    events: list[EventOut]
    next_after_id: int
