"""/pos/orders: look up any order of the chain and return lines of it at this store (once per form)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.orders import returns as returns_service
from onemember.orders.schemas import OrderOut, ReturnIn
from onemember.orders.views import order_out
from onemember.web.common import Csrf, PosUser
from onemember.web.pos.base import (
    MemberCard,
    PageError,
    PosInvalid,
    Till,
    _message,
    _see_other,
    _settled,
    _write_once,
    new_idempotency_key,
    open_till,
    parse_count,
    till_page,
)
from onemember.web.pos.receipts import _order_member, order_coupons

router = APIRouter(include_in_schema=False)


def orders_page(
    request: Request,
    session: Session,
    till: Till,
    order_no: str,
    *,
    error: PageError | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    order: OrderOut | None = None
    member: MemberCard | None = None
    if order_no and (error is None or error.where != "lookup"):
        try:
            found = returns_service.order_by_no(session, till.org.id, order_no)
            order = order_out(session, found)
            member = _order_member(session, found)
        except DomainError as err:
            error, status = PageError("lookup", _message(err, request.state.lang)), err.status
    here = f"/pos/orders?no={order_no}" if order_no else "/pos/orders"
    response = till_page(
        request,
        till,
        "pos/orders.html",
        "returns",
        here,
        {
            "no": order_no,
            "order": order,
            "member": member,
            "returnable": any(x.quantity > x.returned_quantity for x in order.lines) if order else False,
            "coupons": order_coupons(session, found.id) if order else [],
            "idem": new_idempotency_key(),
            "error": error,
            "form": form or {},
        },
        status=status,
    )
    return _settled(request, till, response, here)


@router.get("/pos/orders")
def pos_orders(
    request: Request, session: SessionDep, user: PosUser, no: str = "", store: str | None = None
) -> HTMLResponse:
    """Look up any order of the chain by its number."""
    till = open_till(request, session, user, store)
    return orders_page(request, session, till, no.strip())


@router.post("/pos/orders/{order_no}/returns", dependencies=[Csrf])
def pos_return(
    order_no: str,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    line: Annotated[list[int] | None, Form()] = None,
    qty: Annotated[list[str] | None, Form()] = None,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Return the chosen quantities at this store, once per rendered form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    line_nos, quantities = line or [], qty or []
    form: dict[str, Any] = {"qty": dict(zip(line_nos, quantities, strict=False)), "reason": reason}

    def attempt() -> idempotency.Outcome:
        till.require_store()
        if not idem or len(line_nos) != len(quantities):
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        wanted = [
            (
                n,
                parse_count(
                    q or "0", low=0, high=100000, key="pos.err.return_qty", code="pos.bad_return_qty"
                ),
            )
            for n, q in zip(line_nos, quantities, strict=True)
        ]
        chosen = [{"line_no": n, "quantity": q} for n, q in wanted if q > 0]
        if not chosen:
            raise PosInvalid("pos.err.return_empty", "pos.return_empty")
        body = ReturnIn.model_validate(
            {"lines": chosen, "store_code": till.store_code_for_api, "reason": reason.strip()[:300]}
        )
        return idempotency.run(
            session,
            user,
            idem,
            "pos.return",
            {"order_no": order_no, **body.model_dump(mode="json")},
            lambda: returns_service.return_lines(session, user, order_no, body),
            status=201,
            lang=lang,
        )

    def checked() -> idempotency.Outcome:
        try:
            return attempt()
        except ValidationError as exc:  # a return the API's schema refuses
            raise PosInvalid("pos.err.return_qty", "pos.bad_return_qty") from exc

    def refuse(text: str, status: int) -> Response:
        error = PageError("return", text)
        return orders_page(request, session, till, order_no, error=error, form=form, status=status)

    return _write_once(
        session, lang, checked, refuse, lambda done: _see_other(f"/pos/returns/{done['return_no']}")
    )
