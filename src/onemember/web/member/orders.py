"""The member's orders from every store, paged and filtered by store, with an Excel export; one order
with its items and returns.
"""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from onemember.deps import SessionDep
from onemember.members.errors import MemberNotFound
from onemember.orders.models import Order
from onemember.orders.views import order_out
from onemember.org.models import Store
from onemember.segments.models import MemberStoreStats
from onemember.web.export import xlsx_response
from onemember.web.member.base import (
    EXPORT_LIMIT,
    PAGE_SIZE,
    MemberDep,
    _org_of,
    _page_url,
    _paging,
    _store_names,
    _t,
)
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/m/orders", response_model=None)
def member_orders(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    page: int = 1,
    store: str = "",
    sort: str = "newest",
    format: str = "",
) -> Response:
    """The member's orders from every store, paged; filter by store; Excel export of the same rows."""
    org = _org_of(session, member)
    shopped = list(
        session.execute(
            select(Store.code, Store.name, Store.id)
            .join(MemberStoreStats, MemberStoreStats.store_id == Store.id)
            .where(MemberStoreStats.member_id == member.id)
            .order_by(Store.code)
        ).all()
    )
    by_code = {code: sid for code, _, sid in shopped}
    store = store if store in by_code else ""
    sort = "oldest" if sort == "oldest" else "newest"
    conditions = [Order.member_id == member.id]
    if store:
        conditions.append(Order.store_id == by_code[store])
    total = int(session.scalar(select(func.count()).select_from(Order).where(*conditions)) or 0)
    paging = _paging(total, page)
    order_by = (
        (Order.occurred_at.asc(), Order.id.asc())
        if sort == "oldest"
        else (Order.occurred_at.desc(), Order.id.desc())
    )
    query = select(Order).where(*conditions).order_by(*order_by)
    if format == "xlsx":
        orders = list(session.scalars(query.limit(EXPORT_LIMIT)))
        names = _store_names(session, member.org_id, {o.store_id for o in orders})
        return xlsx_response(
            f"orders-{member.member_no}.xlsx",
            [
                _t(request, f"member.orders.{key}")
                for key in (
                    "order_no",
                    "store",
                    "time",
                    "total",
                    "paid",
                    "points_redeemed",
                    "points_earned",
                    "refunded",
                )
            ],
            [
                (
                    o.order_no,
                    names.get(o.store_id, ""),
                    o.occurred_at.astimezone(ZoneInfo(org.timezone)),
                    Decimal(o.total_fen) / 100,
                    Decimal(o.paid_fen) / 100,
                    o.points_redeemed,
                    o.points_earned,
                    Decimal(o.refunded_fen) / 100,
                )
                for o in orders
            ],
            sheet="orders",
        )
    orders = list(session.scalars(query.limit(PAGE_SIZE).offset(paging.offset)))
    names = _store_names(session, member.org_id, {o.store_id for o in orders})
    params = {"store": store, "sort": sort if sort != "newest" else ""}
    return render(
        request,
        "member/orders.html",
        {
            "member": member,
            "section": "orders",
            "org": org,
            "orders": [(o, names.get(o.store_id, "")) for o in orders],
            "paging": paging,
            "stores": [(code, name) for code, name, _ in shopped],
            "store": store,
            "sort": sort,
            "prev_url": _page_url("/m/orders", params, page=paging.page - 1),
            "next_url": _page_url("/m/orders", params, page=paging.page + 1),
            "export_url": _page_url("/m/orders", params, format="xlsx"),
        },
    )


@router.get("/m/orders/{order_no}")
def member_order(request: Request, member: MemberDep, session: SessionDep, order_no: str) -> HTMLResponse:
    """One of the member's orders with its items and returns."""
    order = session.scalar(select(Order).where(Order.org_id == member.org_id, Order.order_no == order_no))
    if order is None or order.member_id != member.id:
        raise MemberNotFound("找不到该订单", "Order not found", code="orders.not_found")
    return render(
        request,
        "member/order.html",
        {
            "member": member,
            "section": "orders",
            "org": _org_of(session, member),
            "order": order_out(session, order),
        },
    )
