"""A year of chain activity through the services with a controllable clock — earn rules, pending points,
redemptions, returns at other stores, expiry, reminders, birthday gifts and tier reviews every day — and
then ``verify``: ledger = lots = balances, growth ledger = growth values."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth.principal import Principal, system_principal
from onemember.auth.service import authenticate
from onemember.db import set_clock
from onemember.errors import DomainError
from onemember.jobs.runner import run_daily
from onemember.members import service as members
from onemember.members.models import Member
from onemember.orders.checkout import checkout, quote
from onemember.orders.models import Order, OrderLine
from onemember.orders.returns import return_lines
from onemember.orders.schemas import CheckoutIn, ReturnIn
from onemember.points import rules as rules_service
from onemember.points import service as points
from onemember.points.earning import RuleKind
from onemember.points.models import PointAccount, PointEntry
from onemember.points.verify import verify
from onemember.tiers import service as tiers
from tests.factories import Chain

START = datetime(2025, 11, 1, 2, 0, tzinfo=UTC)
CATEGORIES = ["母婴", "美妆", "服装", "食品", "家居"]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    set_clock(c)
    yield c
    set_clock(None)


def _set_up(s: Session, chain: Chain) -> Principal:
    hq = system_principal(chain.org_id)
    program = points.default_program(s, chain.org_id)
    program.pending_days = 3
    program.expiry_policy, program.expiry_months = "rolling", 6
    for spec in [
        rules_service.RuleSpec(kind=RuleKind.BASE_RATE, points_per_yuan=1),
        rules_service.RuleSpec(kind=RuleKind.CATEGORY_MULTIPLIER, multiplier_pct=200, category="母婴"),
        rules_service.RuleSpec(kind=RuleKind.MEMBER_DAY_MULTIPLIER, multiplier_pct=150, month_day=8),
        rules_service.RuleSpec(kind=RuleKind.FIRST_PURCHASE_BONUS, bonus_points=20),
        rules_service.RuleSpec(
            kind=RuleKind.STORE_BONUS_MULTIPLIER,
            multiplier_pct=200,
            store_id=chain.stores["B"],
            budget_points=3000,
            valid_to=START + timedelta(days=90),
        ),
        rules_service.RuleSpec(kind=RuleKind.DAILY_CAP, cap_points=2000),
    ]:
        rules_service.create_rule(s, hq, program, spec)
    tiers.create_tier_set(
        s,
        hq,
        program,
        "main",
        "会员等级",
        "growth",
        30,
        [
            tiers.LevelSpec("normal", "普通", 0, 0),
            tiers.LevelSpec("silver", "银卡", 2000, 1500, points_multiplier_pct=120, birthday_gift_points=50),
            tiers.LevelSpec(
                "gold",
                "金卡",
                8000,
                6000,
                points_multiplier_pct=150,
                discount_pct=5,
                birthday_gift_points=200,
            ),
        ],
    )
    return hq


def test_a_year_of_activity_keeps_every_ledger_identity(
    chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    rng = random.Random(20261123)
    with factory() as s:
        hq = _set_up(s, chain)
        tills = {code: authenticate(s, secret) for code, secret in chain.keys.items()}
        numbers = []
        for i in range(30):
            m = members.register(
                s,
                tills["ABC"[i % 3]],
                chain.stores["ABC"[i % 3]],
                members.Registration(
                    phone=f"1520000{i:04d}", name=f"会员{i}", birthday=date(1990, 1 + i % 12, 1 + i % 27)
                ),
            )
            numbers.append(m.member_no)
        s.commit()
    counts = {"orders": 0, "refused": 0, "returns": 0}
    for day in range(365):
        clock.now = START + timedelta(days=day, hours=rng.randint(0, 10))
        with factory() as s:
            for _ in range(rng.randint(2, 6)):
                member_no = rng.choice(numbers)
                store = rng.choice("ABC")
                lines = [
                    {
                        "sku": f"SKU{rng.randint(1, 40)}",
                        "name": "商品",
                        "category": rng.choice(CATEGORIES),
                        "quantity": rng.randint(1, 3),
                        "unit_price_fen": rng.randint(100, 30000),
                    }
                    for _ in range(rng.randint(1, 4))
                ]
                quote_in = CheckoutIn.model_validate({"member": {"member_no": member_no}, "lines": lines})
                q = quote(s, tills[store], quote_in, lock=False)
                account = s.scalars(
                    select(PointAccount)
                    .join(Member, Member.id == PointAccount.member_id)
                    .where(Member.member_no == member_no, Member.org_id == chain.org_id)
                ).one()
                redeem = min(account.balance, q.due_fen) // 2 if rng.random() < 0.3 else 0
                body = CheckoutIn.model_validate(
                    {
                        "member": {"member_no": member_no},
                        "lines": lines,
                        "redeem_points": redeem,
                        "payments": [{"method": "cash", "amount_fen": q.due_fen - redeem}]
                        if q.due_fen - redeem
                        else [],
                    }
                )
                try:
                    checkout(s, tills[store], body)
                    s.commit()
                    counts["orders"] += 1
                except DomainError:
                    s.rollback()  # points still pending: refused, nothing written
                    counts["refused"] += 1
            if rng.random() < 0.3:
                candidates = s.execute(
                    select(
                        Order.order_no, OrderLine.line_no, OrderLine.quantity - OrderLine.returned_quantity
                    )
                    .join(OrderLine, OrderLine.order_id == Order.id)
                    .where(Order.org_id == chain.org_id, OrderLine.returned_quantity < OrderLine.quantity)
                    .order_by(Order.id.desc())
                    .limit(20)
                ).all()
                if candidates:
                    order_no, line_no, left = rng.choice(candidates)
                    return_lines(
                        s,
                        tills[rng.choice("ABC")],
                        order_no,
                        ReturnIn.model_validate(
                            {"lines": [{"line_no": line_no, "quantity": rng.randint(1, left)}]}
                        ),
                    )
                    s.commit()
                    counts["returns"] += 1
        run_daily(factory, clock.now + timedelta(hours=12), org_ids=[chain.org_id])
    with factory() as s:
        report = verify(s, chain.org_id)
        assert report.ok, report.problems[:10]
        kinds = dict(
            s.execute(
                select(PointEntry.kind, func.count())
                .where(PointEntry.org_id == chain.org_id)
                .group_by(PointEntry.kind)
            ).all()
        )
    assert counts["orders"] > 1000
    assert counts["returns"] > 80
    # Every kind of movement happened at least once over the year.
    for kind in ("earn", "redeem", "earn_reversal", "redeem_refund", "expire", "adjust"):
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    assert hq.org_id == chain.org_id
