"""Print-friendly receipts of an order and of a return, with the coupons the order used and what each
return did to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate
from onemember.deps import SessionDep
from onemember.errors import NotFound
from onemember.members.models import Member
from onemember.orders import returns as returns_service
from onemember.orders.models import Order, OrderLine, OrderReturn, ReturnLine
from onemember.orders.views import order_out
from onemember.org.models import Store
from onemember.points import calculations as calc
from onemember.points.models import PointEntry
from onemember.web import i18n
from onemember.web.common import PosUser
from onemember.web.pos.base import MemberCard, member_card, open_till, till_page

router = APIRouter(include_in_schema=False)


# --- coupons on receipts ----------------------------------------------------------------------------

i18n.register(
    {
        "pos.coupon_on_receipt": ("优惠券", "Coupon"),
        "pos.coupon_taken_back": ("收回优惠券分摊（不退款）", "Coupon share taken back (not refunded)"),
        "pos.coupon_action.restored": ("优惠券已退回会员账户", "Coupon given back to the member"),
        "pos.coupon_action.voided": ("优惠券已按规则作废", "Coupon voided, as its rules say"),
        "pos.coupon_action.kept": ("部分退货，优惠券仍为已使用", "Partial return: the coupon stays used"),
        "pos.coupon_status.redeemed": ("已使用", "Used"),
        "pos.coupon_status.restored": ("已退回", "Given back"),
        "pos.coupon_status.voided": ("已作废", "Voided"),
        "pos.order_coupons": ("本单优惠券", "Coupons on this order"),
    }
)


@dataclass
class UsedCoupon:
    code: str
    name: str
    discount_fen: int
    price_difference_fen: int
    status: str  # redeemed | restored | voided


def _redemptions(session: Session, order_id: int) -> list[tuple[CouponRedemption, str, str]]:
    rows = session.execute(
        select(CouponRedemption, Coupon.code, CouponTemplate.name)
        .join(Coupon, Coupon.id == CouponRedemption.coupon_id)
        .join(CouponTemplate, CouponTemplate.id == CouponRedemption.template_id)
        .where(CouponRedemption.order_id == order_id)
        .order_by(CouponRedemption.coupon_id)
    ).all()
    return [(r, str(code), str(name)) for r, code, name in rows]


def order_coupons(session: Session, order_id: int) -> list[UsedCoupon]:
    """The coupons an order used, with what each took off and where each stands now."""
    return [
        UsedCoupon(code, name, r.discount_fen, r.price_difference_fen, r.status)
        for r, code, name in _redemptions(session, order_id)
    ]


@dataclass
class ReturnedCoupon:
    code: str
    name: str
    taken_back_fen: int
    action: str  # kept | restored | voided


def return_coupons(session: Session, order_id: int, return_id: int) -> list[ReturnedCoupon]:
    """Each coupon's share on the units of one return, and what that return did to the coupon.

    The share is worked out as ``coupons.on_return`` did when the return was made: each redemption
    line's discount scaled by cumulative quantity over the order's returns in order, so the shares of
    all returns add up to the coupon's discount. The return that took back a coupon's last unit is the
    one that restored or voided it.
    """
    line_nos = {
        x.id: x.line_no for x in session.scalars(select(OrderLine).where(OrderLine.order_id == order_id))
    }
    before: dict[int, int] = {}
    this: dict[int, int] = {}
    for rl in session.scalars(
        select(ReturnLine)
        .join(OrderReturn, OrderReturn.id == ReturnLine.return_id)
        .where(OrderReturn.order_id == order_id, OrderReturn.id <= return_id)
    ):
        into = this if rl.return_id == return_id else before
        no = line_nos[rl.order_line_id]
        into[no] = into.get(no, 0) + rl.quantity
    out = []
    for redemption, code, name in _redemptions(session, order_id):
        rows = list(
            session.scalars(
                select(CouponRedemptionLine).where(CouponRedemptionLine.redemption_id == redemption.id)
            )
        )
        touched = [x for x in rows if this.get(x.line_no, 0)]
        if not touched:
            continue
        share = sum(
            calc.proportional_part(x.discount_fen, before.get(x.line_no, 0), this[x.line_no], x.quantity)
            for x in touched
        )
        done_before = all(before.get(x.line_no, 0) >= x.quantity for x in rows)
        done_after = all(before.get(x.line_no, 0) + this.get(x.line_no, 0) >= x.quantity for x in rows)
        action = redemption.status if done_after and not done_before else "kept"
        out.append(ReturnedCoupon(code, name, share, action if action in ("restored", "voided") else "kept"))
    return out


# --- receipts ---------------------------------------------------------------------------------------


def _points_after(
    session: Session, order_id: int, return_id: int | None, member: MemberCard | None
) -> tuple[int, int] | None:
    """Balance and debt right after an order's (or one of its returns') last ledger entry; with no
    entry, the member's balance and debt now."""
    query = select(PointEntry.balance_after, PointEntry.debt_after).where(PointEntry.order_id == order_id)
    query = query.where(
        PointEntry.return_id.is_(None) if return_id is None else PointEntry.return_id == return_id
    )
    row = session.execute(query.order_by(PointEntry.id.desc()).limit(1)).first()
    if row:
        return (int(row[0]), int(row[1]))
    return (member.balance, member.debt) if member is not None else None


def _order_member(session: Session, order: Order) -> MemberCard | None:
    if order.member_id is None:
        return None
    member = session.get(Member, order.member_id)
    return member_card(session, order.org_id, member.member_no) if member else None


@router.get("/pos/receipt/{order_no}")
def pos_receipt(order_no: str, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A print-friendly receipt of one order."""
    till = open_till(request, session, user)
    order = returns_service.order_by_no(session, user.org_id, order_no)
    out = order_out(session, order)
    member = _order_member(session, order)
    after = _points_after(session, order.id, None, member)
    used = order_coupons(session, order.id)
    return till_page(
        request,
        till,
        "pos/receipt.html",
        "sale",
        f"/pos/receipt/{order_no}",
        {
            "order": out,
            "member": member,
            "after": after,
            "coupons": used,
            "tier_discount": order.discount_fen - sum(c.discount_fen for c in used),
        },
    )


@router.get("/pos/returns/{return_no}")
def pos_return_receipt(return_no: str, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A print-friendly receipt of one return."""
    till = open_till(request, session, user)
    ret = session.scalar(
        select(OrderReturn).where(OrderReturn.org_id == user.org_id, OrderReturn.return_no == return_no)
    )
    if ret is None:
        raise NotFound("找不到该退货单", "Return not found", code="orders.return_not_found")
    order = session.get(Order, ret.order_id)
    assert order is not None
    out = order_out(session, order)
    detail = next(r for r in out.returns if r.return_no == return_no)
    member = _order_member(session, order)
    after = _points_after(session, order.id, ret.id, member)
    stores = {s.code: s.name for s in session.scalars(select(Store).where(Store.org_id == user.org_id))}
    return till_page(
        request,
        till,
        "pos/return_receipt.html",
        "returns",
        f"/pos/returns/{return_no}",
        {
            "order": out,
            "ret": detail,
            "reason": ret.reason,
            "member": member,
            "after": after,
            "names": {line.line_no: line.name for line in out.lines},
            "store_names": stores,
            "coupons": return_coupons(session, order.id, ret.id),
        },
    )
