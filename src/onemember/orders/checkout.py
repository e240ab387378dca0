"""Checkout: one transaction across members, points, orders and running stats.

Load first (store, member, account under lock), calculate in pure code, then write: the order, its
lines and payments, the points redemption (soonest-expiring lots first), the earned points, the
member's running stats and the outbox events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common.types import MemberStatus
from onemember.coupons import calculations as coupon_calc
from onemember.coupons import service as coupon_service
from onemember.db import utcnow
from onemember.events import service as events
from onemember.members import service as members
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.orders.errors import DuplicateClientOrder, InvalidOrder, PaymentMismatch
from onemember.orders.models import Order, OrderLine, OrderPayment
from onemember.orders.numbers import public_no
from onemember.orders.schemas import (
    CheckoutIn,
    CheckoutOut,
    EarnLineOut,
    EarnRuleOut,
    MemberRefIn,
    OrderLineOut,
)
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import calculations as calc
from onemember.points import earning
from onemember.points import rules as rules_service
from onemember.points import service as points
from onemember.points.errors import InvalidRedeemAmount
from onemember.points.models import PointAccount, PointEntry, PointsProgram
from onemember.segments import stats
from onemember.segments.models import MemberStats
from onemember.settlement import service as settlement
from onemember.tiers import service as tiers


def acting_store(session: Session, principal: Principal, store_code: str | None) -> Store:
    """The store a till call acts for: the terminal's or clerk's own, or one named by HQ/regional staff."""
    store = org_service.acting_store(session, principal, store_code)
    if store is None:
        raise InvalidOrder(
            "请指定门店 store_code", "Name the store (store_code)", code="orders.store_required"
        )
    return store


@dataclass
class LinePlan:
    amount_fen: int
    points_value_fen: int
    points_redeemed: int
    paid_fen: int
    points_earned: int


def plan_lines(amounts: list[int], redeem_points: int, program: PointsProgram) -> list[LinePlan]:
    """Spread the points payment over the lines by amount, then earn on what each line really paid."""
    value_fen = calc.points_value_fen(redeem_points, program.redeem_points_per_yuan)
    fen_parts = calc.allocate(value_fen, amounts)
    point_parts = calc.allocate(redeem_points, fen_parts) if redeem_points else [0] * len(amounts)
    plans = []
    for amount, fen, pts in zip(amounts, fen_parts, point_parts, strict=True):
        paid = amount - fen
        plans.append(LinePlan(amount, fen, pts, paid, calc.base_points(paid, program.earn_points_per_yuan)))
    return plans


@dataclass
class Quote:
    """Everything a basket comes to before anything is written: prices, points, growth and why."""

    store: Store
    member: Member | None
    occurred: datetime
    total_fen: int
    discount_fen: int
    value_fen: int
    due_fen: int
    line_discounts: list[int]
    plans: list[LinePlan]
    growth: list[int]
    earn: earning.EarnResult | None
    tier_code: str | None
    account: PointAccount | None = None
    coupon_app: coupon_service.Application | None = None

    @property
    def coupon_discount_fen(self) -> int:
        return sum(self.coupon_app.line_discounts) if self.coupon_app is not None else 0

    @property
    def earned(self) -> int:
        return self.earn.total if self.earn is not None else 0


def _earned_today(session: Session, account_id: int, now: datetime, tz: str) -> int:
    local = now.astimezone(ZoneInfo(tz))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    total = session.scalar(
        select(func.coalesce(func.sum(PointEntry.amount), 0)).where(
            PointEntry.account_id == account_id, PointEntry.kind == "earn", PointEntry.created_at >= start
        )
    )
    return int(total or 0)


def quote(session: Session, principal: Principal, data: CheckoutIn, *, lock: bool, _depth: int = 0) -> Quote:
    """Price a basket for a member at a store: member price, points payment, points and growth earned.

    With ``lock`` the member's account and the store-bonus budgets are locked for the checkout that follows.
    """
    store = acting_store(session, principal, data.store_code)
    org = org_service.get_org(session, principal.org_id)
    program = points.default_program(session, principal.org_id)
    now = utcnow()
    occurred = (data.occurred_at or now).astimezone(UTC)
    if (occurred - now).total_seconds() > 300:  # a till's clock may run a little fast
        raise InvalidOrder(
            "下单时间不能晚于当前时间", "occurred_at is in the future", code="orders.future_time"
        )
    member: Member | None = None
    if data.member is not None:
        member = members.resolve(session, principal.org_id, members.MemberRef(**data.member.model_dump()))
        if member.status != MemberStatus.ACTIVE:
            raise MemberNotFound()
    if data.redeem_points and member is None:
        raise InvalidRedeemAmount(
            "非会员订单不能使用积分", "Points need a member", code="points.member_required"
        )
    account = None
    if member is not None:
        account = points.ensure_account(session, principal.org_id, member.id, program.id, lock=lock)
        if lock:
            # A merge may have folded this member into another while we waited for the lock.
            member = session.scalar(
                select(Member).where(Member.id == member.id).execution_options(populate_existing=True)
            )
            assert member is not None
            if member.status == MemberStatus.MERGED and _depth < 3:
                survivor = members.by_member_no(session, principal.org_id, member.member_no)
                again = data.model_copy(update={"member": MemberRefIn(member_no=survivor.member_no)})
                return quote(session, principal, again, lock=lock, _depth=_depth + 1)
            if member.status != MemberStatus.ACTIVE:
                raise MemberNotFound()
    level = tiers.current_level(session, program, member) if member is not None else None
    amounts = [line.quantity * line.unit_price_fen for line in data.lines]
    discount_pct = level.discount_pct if level is not None else 0
    line_discounts = [a * discount_pct // 100 for a in amounts]
    total = sum(amounts)
    net = [a - d for a, d in zip(amounts, line_discounts, strict=True)]
    application: coupon_service.Application | None = None
    if data.coupon_codes:
        if member is None:
            raise InvalidOrder("优惠券需要会员", "Coupons need a member", code="coupons.member_required")
        # After the account lock: returns take the account before the coupon rows too (no deadlock).
        coupon_lines = [
            coupon_calc.Line(i, line.sku, line.category, line.quantity, n)
            for i, (line, n) in enumerate(zip(data.lines, net, strict=True), start=1)
        ]
        application = coupon_service.apply_coupons(
            session,
            member,
            store,
            coupon_lines,
            data.coupon_codes,
            tier_discount_applied=discount_pct > 0,
            lock=lock,
        )
        line_discounts = [d + c for d, c in zip(line_discounts, application.line_discounts, strict=True)]
        net = [n - c for n, c in zip(net, application.line_discounts, strict=True)]
    unit = calc.redeem_unit(program.redeem_points_per_yuan)
    if data.redeem_points % unit:
        raise InvalidRedeemAmount(
            f"抵扣积分须为 {unit} 的整数倍", f"Points to redeem must be a multiple of {unit}", unit=unit
        )
    value_fen = calc.points_value_fen(data.redeem_points, program.redeem_points_per_yuan)
    if value_fen > sum(net):
        raise InvalidRedeemAmount(
            "抵扣金额超过订单金额",
            "Points would pay more than the order total",
            max_points=sum(net) * program.redeem_points_per_yuan // 100 // unit * unit,
        )
    plans = plan_lines(net, data.redeem_points, program)
    growth = [p.paid_fen * program.growth_per_yuan // 100 for p in plans] if member else [0] * len(plans)
    result: earning.EarnResult | None = None
    if member is not None and account is not None:
        rules = rules_service.rules_in_force(session, program, occurred, lock_budgets=lock)
        if level is not None and level.points_multiplier_pct > 100:
            rules.append(
                earning.Rule(
                    0,
                    0,
                    earning.RuleKind.TIER_MULTIPLIER,
                    name=level.name,
                    multiplier_pct=level.points_multiplier_pct,
                    tier_code=level.code,
                )
            )
        kinds = {r.kind for r in rules}
        # Only rules that need them pay for these two reads.
        stat = session.get(MemberStats, member.id) if earning.RuleKind.FIRST_PURCHASE_BONUS in kinds else None
        ctx = earning.EarnContext(
            local_date=occurred.astimezone(ZoneInfo(org.timezone)).date(),
            store_id=store.id,
            tier_code=level.code if level else None,
            birthday=member.birthday,
            is_first_purchase=stat is None or stat.order_count == 0,
            earned_today=_earned_today(session, account.id, now, org.timezone)
            if earning.RuleKind.DAILY_CAP in kinds
            else 0,
        )
        basket = [
            earning.BasketLine(i, line.sku, line.category, plan.paid_fen)
            for i, (line, plan) in enumerate(zip(data.lines, plans, strict=True), start=1)
        ]
        result = earning.compute(basket, rules, ctx)
        for i, plan in enumerate(plans, start=1):
            plan.points_earned = result.per_line[i]
    else:
        for plan in plans:
            plan.points_earned = 0
    return Quote(
        store,
        member,
        occurred,
        total,
        sum(line_discounts),
        value_fen,
        sum(net) - value_fen,
        line_discounts,
        plans,
        growth,
        result,
        level.code if level else None,
        account,
        application,
    )


def explanation_of(q: Quote, lines: list[tuple[int, str]]) -> list[EarnRuleOut]:
    if q.earn is None:
        return []
    paid = {i: plan.paid_fen for i, plan in enumerate(q.plans, start=1)}
    return [
        EarnRuleOut(
            rule=a.kind,
            rule_id=a.rule_id or None,
            version=a.version or None,
            label_zh=a.label_zh,
            label_en=a.label_en,
            points=a.points,
            lines=[
                EarnLineOut(line_no=n, sku=sku, eligible_fen=paid[n], points=a.lines[n])
                for n, sku in lines
                if n in a.lines
            ],
        )
        for a in q.earn.applications
    ]


def checkout(session: Session, principal: Principal, data: CheckoutIn, *, source: str = "pos") -> CheckoutOut:
    principal.require_role(TILL_ROLES, "收银结账", "check out orders")
    q = quote(session, principal, data, lock=True)
    store, member, occurred = q.store, q.member, q.occurred
    org = org_service.get_org(session, principal.org_id)
    program = points.default_program(session, principal.org_id)
    now = utcnow()
    paid_sum = sum(p.amount_fen for p in data.payments)
    if paid_sum != q.due_fen:
        raise PaymentMismatch(
            f"应付 {q.due_fen} 分，支付合计 {paid_sum} 分",
            f"Due {q.due_fen} fen, payments add up to {paid_sum} fen",
            due_fen=q.due_fen,
            paid_fen=paid_sum,
        )
    if data.client_order_id:
        existing = session.scalar(
            select(Order.order_no).where(
                Order.org_id == principal.org_id,
                Order.store_id == store.id,
                Order.client_order_id == data.client_order_id,
            )
        )
        if existing:
            raise DuplicateClientOrder(order_no=existing)
    account = q.account
    earned = q.earned
    growth = sum(q.growth)
    order = Order(
        org_id=principal.org_id,
        order_no=public_no("S", occurred, org.timezone),
        store_id=store.id,
        member_id=member.id if member else None,
        client_order_id=data.client_order_id,
        status="completed",
        source=source,
        total_fen=q.total_fen,
        discount_fen=q.discount_fen,
        points_redeemed=data.redeem_points,
        points_value_fen=q.value_fen,
        paid_fen=q.due_fen,
        points_earned=earned,
        growth_earned=growth,
        refunded_fen=0,
        actor=principal.actor,
        occurred_at=occurred,
        created_at=now,
        earn_explanation=[],
    )
    for attempt in range(5):
        # Order numbers are random per business day; on the rare clash draw another one.
        try:
            with session.begin_nested():
                session.add(order)
                session.flush()
            break
        except IntegrityError:
            if attempt == 4:
                raise
            order.order_no = public_no("S", occurred, org.timezone)
    if q.coupon_app is not None:
        codes = {c.coupon_id: c.code for c in q.coupon_app.coupons}
        for redemption in coupon_service.redeem_applied(session, q.coupon_app, order.id, store.id, now):
            # A coupon funded by another store or HQ: its funder repays this store (the sale's month).
            settlement.record_coupon_redemption(
                session, redemption, code=codes[redemption.coupon_id], at=occurred, actor=principal.actor
            )
    line_rows = [
        OrderLine(
            org_id=principal.org_id,
            order_id=order.id,
            line_no=i,
            sku=line.sku,
            name=line.name,
            category=line.category,
            quantity=line.quantity,
            unit_price_fen=line.unit_price_fen,
            amount_fen=plan.amount_fen + disc,
            discount_fen=disc,
            points_redeemed=plan.points_redeemed,
            points_value_fen=plan.points_value_fen,
            paid_fen=plan.paid_fen,
            points_earned=plan.points_earned,
            growth_earned=g,
            returned_quantity=0,
        )
        for i, (line, plan, disc, g) in enumerate(
            zip(data.lines, q.plans, q.line_discounts, q.growth, strict=True), start=1
        )
    ]
    session.add_all(line_rows)
    session.add_all(
        OrderPayment(org_id=principal.org_id, order_id=order.id, method=p.method, amount_fen=p.amount_fen)
        for p in data.payments
    )
    explanation = explanation_of(q, [(r.line_no, r.sku) for r in line_rows])
    debt_repaid = 0
    if member is not None and account is not None:
        ctx = points.EntryContext(store_id=store.id, order_id=order.id, actor=principal.actor, at=now)
        balance_before = account.balance
        if data.redeem_points:
            ctx.reason = f"订单 {order.order_no} 积分抵扣 {q.value_fen} 分"
            redeem_entry = points.redeem(session, account, data.redeem_points, ctx)
            # Points issued by other stores were spent here: record who owes whom (in the sale's month).
            settlement.record_points_redemption(
                session, principal.org_id, redeem_entry.id, store.id, at=occurred
            )
        if earned:
            debt_before = account.debt
            ctx.reason = f"订单 {order.order_no} 消费得积分"
            points.earn(
                session,
                account,
                earned,
                ctx,
                expires_at=points.expiry_of(program, now, org.timezone),
                available_at=now + timedelta(days=program.pending_days),
            )
            debt_repaid = debt_before - account.debt
        if q.earn is not None:
            rules_service.spend_budgets(session, q.earn.budget_used)
        if growth:
            points.add_growth(session, account, growth, "order", order_id=order.id, at=now)
        order.earn_explanation = [e.model_dump() for e in explanation]
        stats.apply_order(
            session,
            org_id=principal.org_id,
            member_id=member.id,
            store_id=store.id,
            at=occurred,
            spend_fen=q.total_fen,
            lines=[stats.LineFact(r.category, r.quantity, r.amount_fen) for r in line_rows],
            month=tiers.month_key(occurred, org.timezone),
        )
        tiers.after_activity(session, program, member, now, org.timezone)
        points.notify_threshold(session, account, balance_before, member.member_no)
    session.flush()
    events.emit(
        session,
        principal.org_id,
        "order.completed",
        {
            "order_no": order.order_no,
            "store_code": store.code,
            "member_no": member.member_no if member else None,
            "total_fen": q.total_fen,
            "discount_fen": q.discount_fen,
            "paid_fen": q.due_fen,
            "points_redeemed": data.redeem_points,
            "points_earned": earned,
            "occurred_at": occurred.isoformat(),
        },
        member_id=member.id if member else None,
        store_ids=[store.id],
    )
    if account is not None and (earned or data.redeem_points):
        events.emit(
            session,
            principal.org_id,
            "points.changed",
            {
                "member_no": member.member_no if member else None,
                "order_no": order.order_no,
                "earned": earned,
                "redeemed": data.redeem_points,
                "balance": account.balance,
                "debt": account.debt,
                "reason": "checkout",
            },
            member_id=account.member_id,
            store_ids=[store.id],
        )
    return CheckoutOut(
        order_no=order.order_no,
        store_code=store.code,
        member_no=member.member_no if member else None,
        occurred_at=occurred,
        total_fen=q.total_fen,
        discount_fen=q.discount_fen,
        coupon_discount_fen=q.coupon_discount_fen,
        tier_code=q.tier_code,
        points_redeemed=data.redeem_points,
        points_value_fen=q.value_fen,
        paid_fen=q.due_fen,
        points_earned=earned,
        growth_earned=growth,
        debt_repaid=debt_repaid,
        points_balance=account.balance if account else None,
        points_debt=account.debt if account else None,
        explanation=explanation,
        lines=[line_out(r) for r in line_rows],
    )


def line_out(r: OrderLine) -> OrderLineOut:
    return OrderLineOut(
        line_no=r.line_no,
        sku=r.sku,
        name=r.name,
        category=r.category,
        quantity=r.quantity,
        unit_price_fen=r.unit_price_fen,
        amount_fen=r.amount_fen,
        discount_fen=r.discount_fen,
        points_redeemed=r.points_redeemed,
        points_value_fen=r.points_value_fen,
        paid_fen=r.paid_fen,
        points_earned=r.points_earned,
        returned_quantity=r.returned_quantity,
    )
