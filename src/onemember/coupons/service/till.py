"""Coupons at the till: which of a member's coupons this basket can use, the best combination,
validating a chosen set (``apply_coupons``), redeeming it inside checkout and undoing it on a return.

The checkout calls ``apply_coupons(..., lock=True)`` while it prices the basket (the member's coupon
rows are locked in id order), then ``redeem_applied`` once the order has its id. ``redeem_applied``
moves each coupon ``available → redeemed`` with a conditional ``UPDATE`` and spends the template's
budget with ``UPDATE … WHERE budget_used + discount <= budget_fen``, so two tills can neither use one
coupon twice nor overspend a budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from onemember.coupons import calculations as calc
from onemember.coupons.errors import (
    AlreadyUsed,
    BudgetExhausted,
    CouponNotFound,
    Expired,
    NotApplicable,
    NotStackable,
    NotUsableHere,
    NotYetValid,
    ThresholdNotMet,
)
from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate
from onemember.coupons.service.issuance import Status, _rowcount, is_expired
from onemember.coupons.service.templates import ReturnPolicy
from onemember.db import utcnow
from onemember.errors import DomainError, Invalid
from onemember.events import service as events
from onemember.members.models import Member
from onemember.orders.models import Order
from onemember.org.models import Store
from onemember.points.calculations import proportional_part

Line = calc.Line


@dataclass
class AppliedCoupon:
    coupon_id: int
    code: str
    template_id: int
    template_code: str
    name: str
    kind: str
    discount_fen: int
    price_difference_fen: int
    lines: dict[int, int]  # line_no -> fen this coupon takes off that line
    issuing_store_id: int | None
    bearer: str
    issuer_pct: int


@dataclass
class Application:
    """What a set of coupons does to a basket, and what ``redeem_applied`` will write."""

    org_id: int
    member_id: int
    store_id: int
    tier_discount_applied: bool
    coupons: list[AppliedCoupon]
    line_discounts: list[int]  # per input line, in the order the lines were given
    line_quantities: dict[int, int]
    at: datetime

    @property
    def discount_fen(self) -> int:
        return sum(c.discount_fen for c in self.coupons)

    @property
    def price_difference_fen(self) -> int:
        """What the member pays on item vouchers over the value they cover (补差价); already part of
        what the line still costs, shown so the till can say it."""
        return sum(c.price_difference_fen for c in self.coupons)

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.coupons]


@dataclass
class UsableCoupon:
    coupon: Coupon
    template: CouponTemplate
    discount_fen: int  # what it takes off this basket on its own
    price_difference_fen: int


@dataclass
class UnusableCoupon:
    coupon: Coupon
    template: CouponTemplate
    reason: str  # an error code: coupons.not_usable_here, coupons.threshold_not_met, ...


@dataclass
class Usability:
    usable: list[UsableCoupon] = field(default_factory=list)
    unusable: list[UnusableCoupon] = field(default_factory=list)


def _store_ref(store: Store) -> calc.StoreRef:
    return calc.StoreRef(store.id, store.brand_id, store.region_id)


def candidate(coupon: Coupon, template: CouponTemplate, rank: int = 0) -> calc.Candidate:
    budget_left = None if template.budget_fen is None else template.budget_fen - template.budget_used
    return calc.Candidate(
        coupon_id=coupon.id,
        code=coupon.code,
        template_id=template.id,
        kind=template.kind,
        threshold_fen=template.threshold_fen,
        amount_fen=template.amount_fen,
        percent_off=template.percent_off,
        cap_fen=template.cap_fen,
        price_fen=template.price_fen,
        cover_fen=coupon.cover_fen,
        pay_difference=template.pay_difference,
        skus=frozenset(template.skus or []),
        categories=frozenset(template.categories or []),
        exclusive=template.exclusive,
        stack_group=template.stack_group,
        per_order_limit=template.per_order_limit,
        budget_left=budget_left,
        rank=rank,
    )


def _check(
    coupon: Coupon, template: CouponTemplate, store: Store, now: datetime, tier_discount_applied: bool
) -> DomainError | None:
    """Why this coupon cannot be used at this store now, before looking at the basket."""
    if coupon.status in (Status.REDEEMED, Status.VOID):
        return AlreadyUsed(coupon_code=coupon.code, coupon_status=coupon.status)
    if coupon.status == Status.EXPIRED or is_expired(coupon, now):
        return Expired(coupon_code=coupon.code)
    if coupon.valid_from > now:
        return NotYetValid(coupon_code=coupon.code, valid_from=coupon.valid_from.isoformat())
    accepted = calc.accepted_at(
        _store_ref(store),
        scope=template.accept_scope,
        brand_id=template.accept_brand_id,
        region_id=template.accept_region_id,
        store_ids=template.accept_store_ids or [],
        cross_store=template.cross_store,
        issuing_store_id=coupon.issuing_store_id,
    )
    if not accepted:
        return NotUsableHere(coupon_code=coupon.code)
    if tier_discount_applied and not template.combines_with_tier_discount:
        return NotStackable(
            "该优惠券不能与会员折扣同时使用",
            "This coupon does not combine with the member discount",
            coupon_code=coupon.code,
        )
    return None


_PROBLEMS: dict[str, type[DomainError]] = {
    "coupons.threshold_not_met": ThresholdNotMet,
    "coupons.not_applicable": NotApplicable,
    "coupons.budget_exhausted": BudgetExhausted,
}


def _rows(session: Session, query: object) -> list[tuple[Coupon, CouponTemplate]]:
    return [(c, t) for c, t in session.execute(query).all()]  # type: ignore[call-overload]


def usable_coupons(
    session: Session,
    member: Member,
    store: Store,
    lines: Sequence[Line],
    *,
    tier_discount_applied: bool = False,
) -> Usability:
    """The member's available coupons, split into those this basket can use here (with what each
    takes off alone) and those it cannot (with the reason code), soonest-expiring first."""
    now = utcnow()
    rows = _rows(
        session,
        select(Coupon, CouponTemplate)
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.member_id == member.id, Coupon.status == Status.AVAILABLE)
        .order_by(Coupon.valid_to.is_(None), Coupon.valid_to, Coupon.id),
    )
    out = Usability()
    for rank, (coupon, template) in enumerate(rows):
        problem = _check(coupon, template, store, now, tier_discount_applied)
        if problem is not None:
            out.unusable.append(UnusableCoupon(coupon, template, problem.code))
            continue
        ev = calc.evaluate([candidate(coupon, template, rank)], lines)
        if ev.problem is not None:
            out.unusable.append(UnusableCoupon(coupon, template, ev.problem))
            continue
        out.usable.append(UsableCoupon(coupon, template, ev.discount_fen, ev.price_difference_fen))
    return out


@dataclass
class Suggestion:
    usability: Usability
    best: calc.Best
    codes: list[str]


def best_for_basket(
    session: Session,
    member: Member,
    store: Store,
    lines: Sequence[Line],
    *,
    tier_discount_applied: bool = False,
) -> Suggestion:
    """The usable coupons and the combination that takes the most off this basket."""
    usability = usable_coupons(session, member, store, lines, tier_discount_applied=tier_discount_applied)
    candidates = [candidate(u.coupon, u.template, rank) for rank, u in enumerate(usability.usable)]
    best = calc.best_combination(candidates, lines)
    codes = [r.code for r in best.evaluation.results]
    return Suggestion(usability, best, codes)


def apply_coupons(
    session: Session,
    member: Member,
    store: Store,
    lines: Sequence[Line],
    coupon_codes: Sequence[str],
    *,
    tier_discount_applied: bool,
    lock: bool,
) -> Application:
    """Validate the chosen coupons for this member, store and basket and work out their discounts.

    ``lines`` carry what each line costs after the member price. With ``lock`` the coupon rows are
    locked (in id order) for the checkout that follows. Raises the first reason a coupon cannot be
    used; nothing is written.
    """
    now = utcnow()
    wanted = [c.strip().upper() for c in coupon_codes]
    if len(set(wanted)) != len(wanted):
        raise Invalid("同一张优惠券不能重复使用", "A coupon is listed twice", code="coupons.duplicate")
    if len(wanted) > 20:
        raise Invalid("一单最多使用 20 张优惠券", "At most 20 coupons per order", code="coupons.too_many")
    rows: list[tuple[Coupon, CouponTemplate]] = []
    if wanted:
        query = (
            select(Coupon, CouponTemplate)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(Coupon.org_id == member.org_id, Coupon.code.in_(wanted))
            .order_by(Coupon.id)
        )
        if lock:
            query = query.with_for_update(of=Coupon).execution_options(populate_existing=True)
        rows = _rows(session, query)
    by_code = {c.code: (c, t) for c, t in rows}
    chosen: list[calc.Candidate] = []
    templates: dict[int, tuple[Coupon, CouponTemplate]] = {}
    for code in wanted:
        found = by_code.get(code)
        if found is None or found[0].member_id != member.id:
            raise CouponNotFound(coupon_code=code)
        coupon, template = found
        problem = _check(coupon, template, store, now, tier_discount_applied)
        if problem is not None:
            raise problem
        chosen.append(candidate(coupon, template, len(chosen)))
        templates[coupon.id] = (coupon, template)
    stacking = calc.stacking_problem(chosen)
    if stacking is not None:
        raise NotStackable(reason=stacking, coupon_codes=wanted)
    ev = calc.evaluate(chosen, lines)
    if ev.problem is not None:
        raise _PROBLEMS[ev.problem](coupon_code=ev.problem_code)
    applied = []
    for r in ev.results:
        coupon, template = templates[r.coupon_id]
        applied.append(
            AppliedCoupon(
                coupon_id=coupon.id,
                code=coupon.code,
                template_id=template.id,
                template_code=template.code,
                name=template.name,
                kind=template.kind,
                discount_fen=r.discount_fen,
                price_difference_fen=r.price_difference_fen,
                lines=dict(r.lines),
                issuing_store_id=coupon.issuing_store_id,
                bearer=template.bearer,
                issuer_pct=template.issuer_pct,
            )
        )
    applied.sort(key=lambda a: a.coupon_id)
    return Application(
        org_id=member.org_id,
        member_id=member.id,
        store_id=store.id,
        tier_discount_applied=tier_discount_applied,
        coupons=applied,
        line_discounts=[ev.line_discounts.get(ln.line_no, 0) for ln in lines],
        line_quantities={ln.line_no: ln.quantity for ln in lines},
        at=now,
    )


def redeem_applied(
    session: Session, application: Application, order_id: int, store_id: int, at: datetime | None = None
) -> list[CouponRedemption]:
    """Mark the applied coupons redeemed on ``order_id`` and count them against their templates,
    atomically; raises ``AlreadyUsed`` / ``BudgetExhausted`` when another till got there first."""
    at = at or utcnow()
    out = []
    order = session.get(Order, order_id)
    order_no = order.order_no if order is not None else None
    for a in sorted(application.coupons, key=lambda a: a.coupon_id):
        used = _rowcount(
            session.execute(
                update(Coupon)
                .where(
                    Coupon.id == a.coupon_id,
                    Coupon.member_id == application.member_id,
                    Coupon.status == Status.AVAILABLE,
                )
                .values(
                    status=Status.REDEEMED,
                    redeemed_order_id=order_id,
                    redeemed_store_id=store_id,
                    redeemed_at=at,
                    discount_fen=a.discount_fen,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if used != 1:
            raise AlreadyUsed(coupon_code=a.code)
        spent = _rowcount(
            session.execute(
                update(CouponTemplate)
                .where(
                    CouponTemplate.id == a.template_id,
                    CouponTemplate.budget_fen.is_(None)
                    | (CouponTemplate.budget_used + a.discount_fen <= CouponTemplate.budget_fen),
                )
                .values(
                    redeemed_count=CouponTemplate.redeemed_count + 1,
                    budget_used=CouponTemplate.budget_used + a.discount_fen,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if spent != 1:
            raise BudgetExhausted(coupon_code=a.code, template_code=a.template_code)
        redemption = CouponRedemption(
            org_id=application.org_id,
            coupon_id=a.coupon_id,
            template_id=a.template_id,
            member_id=application.member_id,
            order_id=order_id,
            issuing_store_id=a.issuing_store_id,
            redeeming_store_id=store_id,
            discount_fen=a.discount_fen,
            price_difference_fen=a.price_difference_fen,
            returned_fen=0,
            bearer=a.bearer,
            issuer_pct=a.issuer_pct,
            status="redeemed",
            redeemed_at=at,
        )
        session.add(redemption)
        session.flush()
        session.add_all(
            CouponRedemptionLine(
                org_id=application.org_id,
                redemption_id=redemption.id,
                order_id=order_id,
                line_no=line_no,
                quantity=application.line_quantities[line_no],
                discount_fen=fen,
                returned_quantity=0,
                returned_fen=0,
            )
            for line_no, fen in sorted(a.lines.items())
        )
        events.emit(
            session,
            application.org_id,
            "coupon.redeemed",
            {
                "coupon_code": a.code,
                "template_code": a.template_code,
                "order_no": order_no,
                "discount_fen": a.discount_fen,
                "price_difference_fen": a.price_difference_fen,
            },
            member_id=application.member_id,
            store_ids=[store_id] + ([a.issuing_store_id] if a.issuing_store_id else []),
        )
        out.append(redemption)
    for a in application.coupons:  # the ORM copies predate the UPDATEs above
        for obj in (session.get(Coupon, a.coupon_id), session.get(CouponTemplate, a.template_id)):
            if obj is not None:
                session.expire(obj)
    session.flush()
    return out


@dataclass
class CouponReturn:
    code: str
    returned_fen: int  # the coupon discount the returned units carried (already out of the refund)
    lines: dict[int, int]
    action: str  # kept | restored | voided
    redemption: CouponRedemption  # its ``returned_fen`` now includes this return's share


def on_return(
    session: Session, order_id: int, returned_lines: Sequence[tuple[int, int]], *, at: datetime | None = None
) -> list[CouponReturn]:
    """A return of ``(line_no, quantity)`` from ``order_id``: each coupon's share on those units is
    marked returned (cumulative rounding: returning every unit in any steps takes back exactly the
    coupon's discount). A coupon whose discounted lines are all returned is given back to the member
    (``restore``; expired if its time has passed) or voided (``void``), and its template's counters and
    budget are given back."""
    at = at or utcnow()
    redemptions = list(
        session.scalars(
            select(CouponRedemption)
            .where(CouponRedemption.order_id == order_id, CouponRedemption.status == "redeemed")
            .order_by(CouponRedemption.coupon_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    wanted: dict[int, int] = {}
    for line_no, qty in returned_lines:
        if qty <= 0:
            raise Invalid(
                "退货数量须为正数", "Returned quantities must be positive", code="coupons.bad_return"
            )
        wanted[line_no] = wanted.get(line_no, 0) + qty
    out = []
    for redemption in redemptions:
        rows = list(
            session.scalars(
                select(CouponRedemptionLine)
                .where(CouponRedemptionLine.redemption_id == redemption.id)
                .order_by(CouponRedemptionLine.line_no)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        shares: dict[int, int] = {}
        for row in rows:
            qty = wanted.get(row.line_no, 0)
            if not qty:
                continue
            if row.returned_quantity + qty > row.quantity:
                raise Invalid(
                    f"第 {row.line_no} 行退货数量超过购买数量",
                    f"Line {row.line_no} returns more than was bought",
                    code="coupons.bad_return",
                )
            part = proportional_part(row.discount_fen, row.returned_quantity, qty, row.quantity)
            row.returned_quantity += qty
            row.returned_fen += part
            shares[row.line_no] = part
        if not shares:
            continue
        redemption.returned_fen += sum(shares.values())
        coupon = session.get(Coupon, redemption.coupon_id, with_for_update=True, populate_existing=True)
        template = session.get(CouponTemplate, redemption.template_id)
        assert coupon is not None
        assert template is not None
        action = "kept"
        if all(row.returned_quantity == row.quantity for row in rows):
            action = _undo(session, redemption, coupon, template, at)
        out.append(CouponReturn(coupon.code, sum(shares.values()), shares, action, redemption))
    session.flush()
    return out


def _undo(
    session: Session, redemption: CouponRedemption, coupon: Coupon, template: CouponTemplate, at: datetime
) -> str:
    restore = template.return_policy == ReturnPolicy.RESTORE
    redemption.status = "restored" if restore else "voided"
    if restore:
        coupon.status = Status.EXPIRED if is_expired(coupon, at) else Status.AVAILABLE
        coupon.redeemed_order_id = None
        coupon.redeemed_store_id = None
        coupon.redeemed_at = None
        coupon.discount_fen = 0
    else:
        coupon.status = Status.VOID
    session.execute(
        update(CouponTemplate)
        .where(CouponTemplate.id == template.id)
        .values(
            redeemed_count=CouponTemplate.redeemed_count - 1,
            budget_used=CouponTemplate.budget_used - redemption.discount_fen,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(template)
    events.emit(
        session,
        redemption.org_id,
        "coupon.restored" if restore else "coupon.voided",
        {
            "coupon_code": coupon.code,
            "template_code": template.code,
            "order_no": order.order_no if (order := session.get(Order, redemption.order_id)) else None,
        },
        member_id=coupon.member_id,
        store_ids=[redemption.redeeming_store_id],
    )
    return redemption.status
