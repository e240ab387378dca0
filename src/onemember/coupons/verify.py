"""Checks that coupons, their templates' counters and their redemptions agree, for ``onemember verify``.

Per template: ``issued_count`` is the number of its coupons; ``redeemed_count`` and ``budget_used`` are
the number and the discounts of its redemptions still standing (status ``redeemed``). Per coupon: it is
``redeemed`` exactly when one standing redemption holds it, on the order the coupon names. Per
redemption: its discount and what returns took back are the sums of its lines.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate

STANDING = "redeemed"


def verify_coupons(session: Session, org_id: int) -> list[str]:
    """Problems found in the org's coupons; an empty list when all agree. The database compares the
    coupons and redemptions (only mismatches come back), so no org's history is held in memory."""
    problems: list[str] = []
    standing = (CouponRedemption.org_id == org_id, CouponRedemption.status == STANDING)
    issued = (
        select(Coupon.template_id, func.count().label("n"))
        .where(Coupon.org_id == org_id)
        .group_by(Coupon.template_id)
        .subquery()
    )
    redeemed = (
        select(
            CouponRedemption.template_id,
            func.count().label("n"),
            func.sum(CouponRedemption.discount_fen).label("fen"),
        )
        .where(*standing)
        .group_by(CouponRedemption.template_id)
        .subquery()
    )
    for code, *got_want in session.execute(
        select(
            CouponTemplate.code,
            CouponTemplate.issued_count,
            CouponTemplate.redeemed_count,
            CouponTemplate.budget_used,
            func.coalesce(issued.c.n, 0),
            func.coalesce(redeemed.c.n, 0),
            func.coalesce(redeemed.c.fen, 0),
        )
        .outerjoin(issued, issued.c.template_id == CouponTemplate.id)
        .outerjoin(redeemed, redeemed.c.template_id == CouponTemplate.id)
        .where(CouponTemplate.org_id == org_id)
        .order_by(CouponTemplate.id)
    ):
        got, want = tuple(got_want[:3]), tuple(int(v) for v in got_want[3:])
        if got != want:
            problems.append(f"coupon template {code}: issued, redeemed, budget used {got}, expected {want}")

    # A coupon is redeemed exactly when one standing redemption holds it, on the order the coupon names.
    held = (
        select(
            CouponRedemption.coupon_id,
            func.count().label("n"),
            func.min(CouponRedemption.order_id).label("order_id"),
        )
        .where(*standing)
        .group_by(CouponRedemption.coupon_id)
        .subquery()
    )
    holder = aliased(CouponRedemption)
    wrong: dict[int, tuple[str, str, int | None, list[int]]] = {}
    for coupon_id, code, status, order_id, held_on in session.execute(
        select(Coupon.id, Coupon.code, Coupon.status, Coupon.redeemed_order_id, holder.order_id)
        .outerjoin(held, held.c.coupon_id == Coupon.id)
        .outerjoin(holder, (holder.coupon_id == Coupon.id) & (holder.status == STANDING))
        .where(
            Coupon.org_id == org_id,
            or_(Coupon.status == STANDING, held.c.n.is_not(None)),
            or_(
                Coupon.status != STANDING,
                func.coalesce(held.c.n, 0) != 1,
                Coupon.redeemed_order_id.is_(None),
                held.c.order_id != Coupon.redeemed_order_id,
            ),
        )
        .order_by(Coupon.id, holder.id)
    ):
        orders = wrong.setdefault(coupon_id, (code, status, order_id, []))[3]
        if held_on is not None:
            orders.append(held_on)
    for code, status, order_id, orders in wrong.values():
        problems.append(
            f"coupon {code}: status {status} on order {order_id}, standing redemptions on orders {orders}"
        )

    lines = (
        select(
            CouponRedemptionLine.redemption_id,
            func.sum(CouponRedemptionLine.discount_fen).label("fen"),
            func.sum(CouponRedemptionLine.returned_fen).label("returned"),
        )
        .where(CouponRedemptionLine.org_id == org_id)
        .group_by(CouponRedemptionLine.redemption_id)
        .subquery()
    )
    line_fen, line_returned = func.coalesce(lines.c.fen, 0), func.coalesce(lines.c.returned, 0)
    for rid, fen, returned, sum_fen, sum_returned in session.execute(
        select(
            CouponRedemption.id,
            CouponRedemption.discount_fen,
            CouponRedemption.returned_fen,
            line_fen,
            line_returned,
        )
        .outerjoin(lines, lines.c.redemption_id == CouponRedemption.id)
        .where(
            CouponRedemption.org_id == org_id,
            or_(line_fen != CouponRedemption.discount_fen, line_returned != CouponRedemption.returned_fen),
        )
        .order_by(CouponRedemption.id)
    ):
        problems.append(
            f"coupon redemption {rid}: discount, returned {(fen, returned)}, "
            f"lines add up to {(int(sum_fen), int(sum_returned))}"
        )
    return problems
