"""Read models of orders."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.members.models import Member
from onemember.orders.checkout import line_out
from onemember.orders.models import Order, OrderLine, OrderPayment, OrderReturn, ReturnLine
from onemember.orders.returns import return_out
from onemember.orders.schemas import OrderOut, PaymentOut, ReturnLineOut, ReturnOut
from onemember.org.models import Store


def order_out(session: Session, order: Order) -> OrderOut:
    stores = {s.id: s for s in session.scalars(select(Store).where(Store.org_id == order.org_id))}
    member = session.get(Member, order.member_id) if order.member_id else None
    lines = list(
        session.scalars(select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.line_no))
    )
    by_id = {line.id: line for line in lines}
    returns: list[ReturnOut] = []
    for ret in session.scalars(
        select(OrderReturn).where(OrderReturn.order_id == order.id).order_by(OrderReturn.id)
    ):
        rlines = [
            ReturnLineOut(
                line_no=by_id[r.order_line_id].line_no,
                sku=by_id[r.order_line_id].sku,
                quantity=r.quantity,
                amount_fen=r.amount_fen,
                refund_fen=r.refund_fen,
                points_reversed=r.points_reversed,
                points_refunded=r.points_refunded,
            )
            for r in session.scalars(
                select(ReturnLine).where(ReturnLine.return_id == ret.id).order_by(ReturnLine.id)
            )
        ]
        returns.append(
            return_out(
                ret,
                order.order_no,
                stores[ret.store_id].code,
                stores[ret.original_store_id].code,
                member.member_no if member else None,
                rlines,
                None,
                None,
            )
        )
    store = stores[order.store_id]
    return OrderOut(
        order_no=order.order_no,
        store_code=store.code,
        store_name=store.name,
        member_no=member.member_no if member else None,
        status=order.status,
        source=order.source,
        client_order_id=order.client_order_id,
        occurred_at=order.occurred_at,
        total_fen=order.total_fen,
        points_redeemed=order.points_redeemed,
        points_value_fen=order.points_value_fen,
        paid_fen=order.paid_fen,
        points_earned=order.points_earned,
        refunded_fen=order.refunded_fen,
        explanation=order.earn_explanation,
        lines=[line_out(line) for line in lines],
        payments=[
            PaymentOut(method=p.method, amount_fen=p.amount_fen)
            for p in session.scalars(
                select(OrderPayment).where(OrderPayment.order_id == order.id).order_by(OrderPayment.id)
            )
        ],
        returns=returns,
    )
