"""Checks that coupons, their templates' counters and their redemptions agree, for ``onemember verify``.

Per template: ``issued_count`` is the number of its coupons; ``redeemed_count`` and ``budget_used`` are
the number and the discounts of its redemptions still standing (status ``redeemed``). Per coupon: it is
``redeemed`` exactly when one standing redemption holds it, on the order the coupon names. Per
redemption: its discount and what returns took back are the sums of its lines.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate


def verify_coupons(session: Session, org_id: int) -> list[str]:
    """Problems found in the org's coupons; an empty list when all agree."""
    problems: list[str] = []
    issued = dict(
        session.execute(
            select(Coupon.template_id, func.count())
            .where(Coupon.org_id == org_id)
            .group_by(Coupon.template_id)
        ).all()
    )
    standing: dict[int, list[CouponRedemption]] = defaultdict(list)
    by_coupon: dict[int, list[CouponRedemption]] = defaultdict(list)
    redemptions = session.scalars(
        select(CouponRedemption).where(CouponRedemption.org_id == org_id).order_by(CouponRedemption.id)
    ).all()
    for r in redemptions:
        if r.status == "redeemed":
            standing[r.template_id].append(r)
            by_coupon[r.coupon_id].append(r)
    for t in session.scalars(
        select(CouponTemplate).where(CouponTemplate.org_id == org_id).order_by(CouponTemplate.id)
    ):
        got = (t.issued_count, t.redeemed_count, t.budget_used)
        want = (
            int(issued.get(t.id, 0)),
            len(standing[t.id]),
            sum(r.discount_fen for r in standing[t.id]),
        )
        if got != want:
            problems.append(f"coupon template {t.code}: issued, redeemed, budget used {got}, expected {want}")
    for c in session.scalars(
        select(Coupon).where(
            Coupon.org_id == org_id, (Coupon.status == "redeemed") | Coupon.id.in_(list(by_coupon) or [0])
        )
    ):
        held = by_coupon.get(c.id, [])
        if c.status != "redeemed" or len(held) != 1 or held[0].order_id != c.redeemed_order_id:
            problems.append(
                f"coupon {c.code}: status {c.status} on order {c.redeemed_order_id}, "
                f"standing redemptions on orders {[r.order_id for r in held]}"
            )
    sums = {
        int(rid): (int(d or 0), int(ret or 0))
        for rid, d, ret in session.execute(
            select(
                CouponRedemptionLine.redemption_id,
                func.sum(CouponRedemptionLine.discount_fen),
                func.sum(CouponRedemptionLine.returned_fen),
            )
            .where(CouponRedemptionLine.org_id == org_id)
            .group_by(CouponRedemptionLine.redemption_id)
        ).all()
    }
    for r in redemptions:
        if sums.get(r.id, (0, 0)) != (r.discount_fen, r.returned_fen):
            problems.append(
                f"coupon redemption {r.id}: discount, returned {(r.discount_fen, r.returned_fen)}, "
                f"lines add up to {sums.get(r.id, (0, 0))}"
            )
    return problems
