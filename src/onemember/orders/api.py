"""Till endpoints: checkout, returns at any store, offline batches, order lookup."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select

from onemember.common import idempotency
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import DomainError
from onemember.members import service as members
from onemember.orders import checkout as checkout_service
from onemember.orders import returns as returns_service
from onemember.orders.models import Order
from onemember.orders.schemas import (
    BatchIn,
    BatchItemOut,
    BatchOut,
    CheckoutIn,
    CheckoutOut,
    OrderOut,
    ReturnIn,
    ReturnOut,
)
from onemember.orders.views import order_out

router = APIRouter(prefix="/api/v1", tags=["orders"])


@router.post("/orders", status_code=201, response_model=CheckoutOut)
def check_out(
    body: CheckoutIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Check out a basket: redeem points as payment, earn points, and say which rule gave what."""
    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "orders.checkout",
            body,
            lambda: checkout_service.checkout(session, principal, body),
            status=201,
            lang=lang,
        )
    )


@router.post("/orders/offline-batch", response_model=BatchOut)
def apply_offline_batch(
    body: BatchIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang
) -> BatchOut:
    """Apply orders a till captured offline, in order, each exactly once (keyed by its client_order_id)."""
    results: list[BatchItemOut] = []
    # Keyed by store, not by API key, so a till whose key was rotated can still re-send its batch.
    namespace = f"store:{principal.store_id}/offline" if principal.store_id else f"{principal.key}/offline"
    for item in body.orders:
        try:
            outcome = idempotency.run(
                session,
                principal,
                item.client_order_id,
                "orders.checkout",
                item,
                lambda item=item: checkout_service.checkout(session, principal, item, source="offline"),  # type: ignore[misc]
                status=201,
                lang=lang,
                namespace=namespace,
            )
        except DomainError as err:  # a reused or malformed client id fails this item only
            session.rollback()
            outcome = idempotency.Outcome(err.status, err.to_problem(lang), False)
        results.append(
            BatchItemOut(
                client_order_id=item.client_order_id,
                status=outcome.status,
                replayed=outcome.replayed,
                result=outcome.body,
            )
        )
    return BatchOut(
        applied=sum(1 for r in results if r.status < 400 and not r.replayed),
        replayed=sum(1 for r in results if r.replayed),
        failed=sum(1 for r in results if r.status >= 400),
        results=results,
    )


@router.get("/orders/{order_no}", response_model=OrderOut)
def read_order(order_no: str, principal: CurrentPrincipal, session: SessionDep) -> OrderOut:
    """Any order of the chain by its number (a till needs it to take a return)."""
    return order_out(session, returns_service.order_by_no(session, principal.org_id, order_no))


@router.post("/orders/{order_no}/returns", status_code=201, response_model=ReturnOut)
def return_order_lines(
    order_no: str,
    body: ReturnIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Return some units of an order at this store; points are reversed exactly, redeemed points refunded."""
    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "orders.return",
            {"order_no": order_no, **body.model_dump(mode="json")},
            lambda: returns_service.return_lines(session, principal, order_no, body),
            status=201,
            lang=lang,
        )
    )


@router.get("/members/{member_no}/orders", response_model=list[OrderOut])
def member_orders(
    member_no: str, principal: CurrentPrincipal, session: SessionDep, limit: int = 20, offset: int = 0
) -> list[OrderOut]:
    """A member's orders from every store, newest first."""
    member = members.by_member_no(session, principal.org_id, member_no)
    orders = session.scalars(
        select(Order)
        .where(Order.member_id == member.id)
        .order_by(Order.occurred_at.desc(), Order.id.desc())
        .limit(max(1, min(limit, 200)))
        .offset(max(0, offset))
    )
    return [order_out(session, o) for o in orders]
