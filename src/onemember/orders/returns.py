"""Returns at any store: reverse exactly what the returned units brought.

For each returned line the refund, the earned points to take back and the redeemed points to give
back are the line's totals scaled by cumulative quantity (``calculations.proportional_part``), so a
line returned in several steps gives back exactly its totals. Redeemed points are refunded first
(into the lots they came from), then earned points are reversed; what the member already spent
becomes a shortfall handled by the org's policy (debt, deduct from the cash refund, or write-off).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common.types import EntryKind, ShortfallPolicy
from onemember.coupons import service as coupon_service
from onemember.db import utcnow
from onemember.errors import Conflict
from onemember.events import service as events
from onemember.members.models import Member
from onemember.orders.checkout import acting_store
from onemember.orders.errors import InvalidOrder, OrderNotFound, ReturnExceedsQuantity
from onemember.orders.models import Order, OrderLine, OrderReturn, ReturnLine
from onemember.orders.numbers import public_no
from onemember.orders.schemas import ReturnCouponOut, ReturnIn, ReturnLineOut, ReturnOut
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import calculations as calc
from onemember.points import service as points
from onemember.points.models import PointAccount, PointEntry
from onemember.segments import stats
from onemember.settlement import service as settlement
from onemember.tiers.service import month_key


def order_by_no(session: Session, org_id: int, order_no: str, *, lock: bool = False) -> Order:
    query = select(Order).where(Order.org_id == org_id, Order.order_no == order_no)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = session.scalar(query)
    if order is None:
        raise OrderNotFound()
    return order


def return_lines(session: Session, principal: Principal, order_no: str, data: ReturnIn) -> ReturnOut:
    principal.require_role(TILL_ROLES, "办理退货", "process returns")
    store = acting_store(session, principal, data.store_code)
    org = org_service.get_org(session, principal.org_id)
    order, member, account = _lock_order_and_account(session, principal.org_id, order_no)
    if data.client_return_id:
        existing = session.scalar(
            select(OrderReturn).where(
                OrderReturn.org_id == principal.org_id,
                OrderReturn.store_id == store.id,
                OrderReturn.client_return_id == data.client_return_id,
            )
        )
        if existing is not None:
            raise Conflict(
                "该门店已有相同客户端退货单号",
                "A return with that client return id exists",
                code="orders.duplicate_client_return_id",
                return_no=existing.return_no,
            )
    lines = {
        line.line_no: line
        for line in session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id == order.id)
            .order_by(OrderLine.line_no)
            .with_for_update()
        )
    }
    wanted: dict[int, int] = {}
    for item in data.lines:
        wanted[item.line_no] = wanted.get(item.line_no, 0) + item.quantity
    for line_no, qty in wanted.items():
        line = lines.get(line_no)
        if line is None:
            raise InvalidOrder(
                f"订单没有第 {line_no} 行",
                f"The order has no line {line_no}",
                code="orders.no_such_line",
                line_no=line_no,
            )
        if line.returned_quantity + qty > line.quantity:
            raise ReturnExceedsQuantity(
                f"第 {line_no} 行最多还可退 {line.quantity - line.returned_quantity} 件",
                f"Line {line_no} has {line.quantity - line.returned_quantity} unit(s) left to return",
                line_no=line_no,
                returnable=line.quantity - line.returned_quantity,
            )

    program = points.default_program(session, principal.org_id)

    now = utcnow()
    # Coupons used on the order: take back the returned units' share; restore or void per template.
    coupon_returns = coupon_service.on_return(session, order.id, sorted(wanted.items()), at=now)
    coupons_out = [
        ReturnCouponOut(code=c.code, returned_fen=c.returned_fen, action=c.action) for c in coupon_returns
    ]
    parts = []
    for line_no, qty in sorted(wanted.items()):
        line = lines[line_no]
        done = line.returned_quantity
        parts.append(
            (
                line,
                qty,
                calc.proportional_part(line.amount_fen, done, qty, line.quantity),
                calc.proportional_part(line.paid_fen, done, qty, line.quantity),
                calc.proportional_part(line.points_earned, done, qty, line.quantity),
                calc.proportional_part(line.points_redeemed, done, qty, line.quantity),
            )
        )
    amount = sum(p[2] for p in parts)
    refund = sum(p[3] for p in parts)
    reversed_pts = sum(p[4] for p in parts)
    refunded_pts = sum(p[5] for p in parts)
    policy = ShortfallPolicy(org.return_shortfall_policy)

    ret = OrderReturn(
        org_id=principal.org_id,
        return_no=public_no("R", now, org.timezone),
        order_id=order.id,
        member_id=order.member_id,
        store_id=store.id,
        original_store_id=order.store_id,
        client_return_id=data.client_return_id,
        amount_fen=amount,
        refund_fen=refund,
        refund_deducted_fen=0,
        points_reversed=reversed_pts,
        points_refunded=refunded_pts,
        points_shortfall=0,
        shortfall_policy=str(policy),
        reason=data.reason,
        actor=principal.actor,
        occurred_at=data.occurred_at or now,
        created_at=now,
    )
    session.add(ret)
    session.flush()
    out_lines = []
    for line, qty, l_amount, l_refund, l_rev, l_ref in parts:
        line.returned_quantity += qty
        session.add(
            ReturnLine(
                org_id=principal.org_id,
                return_id=ret.id,
                order_line_id=line.id,
                quantity=qty,
                amount_fen=l_amount,
                refund_fen=l_refund,
                points_reversed=l_rev,
                points_refunded=l_ref,
            )
        )
        out_lines.append(
            ReturnLineOut(
                line_no=line.line_no,
                sku=line.sku,
                quantity=qty,
                amount_fen=l_amount,
                refund_fen=l_refund,
                points_reversed=l_rev,
                points_refunded=l_ref,
            )
        )

    shortfall = 0
    if account is not None and member is not None:
        ctx = points.EntryContext(
            store_id=store.id, order_id=order.id, return_id=ret.id, actor=principal.actor, at=now
        )
        if refunded_pts:
            redeem_entry = _entry_of(session, order.id, EntryKind.REDEEM)
            ctx.reason = f"退货 {ret.return_no} 退还抵扣积分"
            refund_entry = points.refund_redeemed(session, account, refunded_pts, redeem_entry, ctx)
            settlement.record_points_refund(session, principal.org_id, refund_entry.id, at=ret.occurred_at)
        if reversed_pts:
            earn_entry = _entry_of(session, order.id, EntryKind.EARN)
            ctx.reason = f"退货 {ret.return_no} 扣回消费积分"
            _, shortfall = points.reverse_earn(session, account, reversed_pts, earn_entry, ctx)
        if shortfall:
            ret.points_shortfall = shortfall
            if policy == ShortfallPolicy.WRITE_OFF:
                ctx.reason = f"退货 {ret.return_no} 积分不足，核销欠款"
                points.settle_debt(session, account, shortfall, EntryKind.WRITE_OFF, ctx)
            elif policy == ShortfallPolicy.DEDUCT_REFUND:
                # Fen that buy the missing points back, never more than the cash refund.
                owed_fen = calc.points_for_fen_ceil(shortfall, program.redeem_points_per_yuan)
                deduct = min(owed_fen, ret.refund_fen)
                covered = min(shortfall, deduct * program.redeem_points_per_yuan // 100)
                if deduct and covered:
                    ret.refund_deducted_fen = deduct
                    ret.refund_fen -= deduct
                    ctx.reason = f"退货 {ret.return_no} 积分不足，从退款中扣除 {deduct} 分"
                    points.settle_debt(session, account, covered, EntryKind.DEBT_CASH_SETTLE, ctx)
        stats.apply_return(
            session,
            member_id=member.id,
            original_store_id=order.store_id,
            amount_fen=amount,
            lines=[stats.LineFact(p[0].category, p[1], p[2]) for p in parts],
            month=month_key(order.occurred_at, org.timezone),
        )
        growth_back = sum(
            calc.proportional_part(p[0].growth_earned, p[0].returned_quantity - p[1], p[1], p[0].quantity)
            for p in parts
        )
        if growth_back:
            points.add_growth(
                session, account, -growth_back, "return", order_id=order.id, return_id=ret.id, at=now
            )

    order.refunded_fen += ret.refund_fen
    fully = all(line.returned_quantity == line.quantity for line in lines.values())
    order.status = "returned" if fully else "partially_returned"
    original_store = session.get(Store, order.store_id)
    assert original_store is not None
    # The original store sold it, this store pays the refund: the original store owes it.
    settlement.record_cross_store_return(session, ret.id)
    settlement.record_coupon_returns(
        session, [c.redemption for c in coupon_returns], ret.id, at=ret.occurred_at, actor=principal.actor
    )
    audit.record(
        session,
        principal,
        "order.returned",
        target_type="order",
        target_id=order.order_no,
        member_id=order.member_id,
        store_id=store.id,
        reason=data.reason,
        details={
            "return_no": ret.return_no,
            "refund_fen": ret.refund_fen,
            "original_store": original_store.code,
        },
    )
    session.flush()
    payload = {
        "return_no": ret.return_no,
        "order_no": order.order_no,
        "store_code": store.code,
        "original_store_code": original_store.code,
        "member_no": member.member_no if member else None,
        "amount_fen": amount,
        "refund_fen": ret.refund_fen,
        "points_reversed": reversed_pts,
        "points_refunded": refunded_pts,
        "points_shortfall": shortfall,
        "coupons": [c.model_dump() for c in coupons_out],
    }
    events.emit(
        session,
        principal.org_id,
        "order.returned",
        payload,
        member_id=order.member_id,
        store_ids=[store.id, order.store_id],
    )
    if account is not None and (reversed_pts or refunded_pts):
        events.emit(
            session,
            principal.org_id,
            "points.changed",
            {
                "member_no": member.member_no if member else None,
                "return_no": ret.return_no,
                "reversed": reversed_pts,
                "refunded": refunded_pts,
                "balance": account.balance,
                "debt": account.debt,
                "reason": "return",
            },
            member_id=account.member_id,
            store_ids=[store.id, order.store_id],
        )
    return return_out(
        ret,
        order.order_no,
        store.code,
        original_store.code,
        member.member_no if member else None,
        out_lines,
        account.balance if account else None,
        account.debt if account else None,
        coupons_out,
    )


def _lock_order_and_account(
    session: Session, org_id: int, order_no: str
) -> tuple[Order, Member | None, PointAccount | None]:
    """Lock the member's account before the order row (the order every writer follows, merges too,
    so a return and a merge of the same member cannot deadlock)."""
    for _ in range(3):
        order = order_by_no(session, org_id, order_no)
        member = session.get(Member, order.member_id) if order.member_id else None
        account = None
        if member is not None:
            program = points.default_program(session, org_id)
            account = points.ensure_account(session, org_id, member.id, program.id)
            account = points.lock_account(session, account.id)
        order = order_by_no(session, org_id, order_no, lock=True)
        if order.member_id == (member.id if member else None):
            return order, member, account
        # A merge moved the order to another member while we waited: lock that one instead.
    raise Conflict("订单正在被修改，请重试", "The order is being changed; try again", code="orders.busy")


def _entry_of(session: Session, order_id: int, kind: EntryKind) -> int:
    entry_id = session.scalar(
        select(PointEntry.id)
        .where(PointEntry.order_id == order_id, PointEntry.kind == str(kind), PointEntry.return_id.is_(None))
        .order_by(PointEntry.id)
        .limit(1)
    )
    if entry_id is None:
        raise LookupError(f"order {order_id} has no {kind} entry")
    return int(entry_id)


def return_out(
    ret: OrderReturn,
    order_no: str,
    store_code: str,
    original_store_code: str,
    member_no: str | None,
    lines: list[ReturnLineOut],
    balance: int | None,
    debt: int | None,
    coupons: list[ReturnCouponOut] | None = None,
) -> ReturnOut:
    return ReturnOut(
        return_no=ret.return_no,
        order_no=order_no,
        store_code=store_code,
        original_store_code=original_store_code,
        member_no=member_no,
        amount_fen=ret.amount_fen,
        refund_fen=ret.refund_fen,
        refund_deducted_fen=ret.refund_deducted_fen,
        points_reversed=ret.points_reversed,
        points_refunded=ret.points_refunded,
        points_shortfall=ret.points_shortfall,
        shortfall_policy=ret.shortfall_policy,
        points_balance=balance,
        points_debt=debt,
        lines=lines,
        created_at=ret.created_at,
        coupons=coupons or [],
    )
