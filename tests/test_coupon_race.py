"""Coupon limits under real concurrency (parallel connections; PostgreSQL when DATABASE_URL is set):
twenty tills taking the last five coupons of a template, twenty tills spending a budget that pays for
five, and ten tills redeeming one coupon. Each race runs three rounds."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth.principal import Principal, system_principal
from onemember.auth.service import authenticate
from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon, CouponRedemption, CouponTemplate
from onemember.db import make_engine, make_sessionmaker
from onemember.errors import DomainError
from onemember.members import service as members
from onemember.members.models import Member
from onemember.orders.models import Order
from onemember.org.models import Store
from tests.factories import Chain, make_chain

THREADS = 20
UNITS = 5
ROUNDS = 3
LINES = [coupons.Line(1, "X", "食品", 1, 10000)]


def _setup(engine: Engine, prefix: str) -> tuple[Engine, sessionmaker[Session], Chain, list[int]]:
    url = engine.url.render_as_string(hide_password=False)
    race_engine = (
        make_engine(url, pool_size=THREADS + 5, max_overflow=0)
        if engine.dialect.name != "sqlite"
        else make_engine(url)
    )
    factory = make_sessionmaker(race_engine)
    with factory() as s:
        chain = make_chain(s)
        till = authenticate(s, chain.keys["A"])
        ids = [
            members.register(
                s, till, chain.stores["A"], members.Registration(phone=f"{prefix}{i:02d}", name="抢券")
            ).id
            for i in range(THREADS)
        ]
        s.commit()
    return race_engine, factory, chain, ids


def _run(threads: int, target: Callable[[int], str]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def body(i: int) -> None:
        barrier.wait()
        result = target(i)
        with lock:
            outcomes[result] += 1

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes


def _attempt(factory: sessionmaker[Session], work: Callable[[Session], None]) -> str:
    with factory() as s:
        try:
            work(s)
            s.commit()
            return "ok"
        except DomainError as err:
            s.rollback()
            return err.code


def test_twenty_tills_take_the_last_five_coupons(engine: Engine) -> None:
    race_engine, factory, chain, ids = _setup(engine, "181000003")
    hq = system_principal(chain.org_id)
    with factory() as s:
        t = coupons.create_template(
            s,
            hq,
            coupons.TemplateSpec(code="LAST", name="限量券", kind="amount_off", amount_fen=500, valid_days=7),
        )
        template_id = t.id
        s.commit()
    tills = {code: _principal(factory, secret) for code, secret in chain.keys.items()}
    for round_no in range(1, ROUNDS + 1):
        with factory() as s:
            s.execute(
                update(CouponTemplate)
                .where(CouponTemplate.id == template_id)
                .values(total_quantity=UNITS * round_no)
            )
            s.commit()

        def take(i: int) -> str:
            till = tills["ABC"[i % 3]]

            def work(s: Session) -> None:
                member = s.get(Member, ids[i])
                store = s.get(Store, till.store_id)
                assert member is not None
                template = coupons.template_by_code(s, chain.org_id, "LAST")
                coupons.issue_by_staff(s, till, template, member, store)

            return _attempt(factory, work)

        outcomes = _run(THREADS, take)
        assert outcomes == Counter({"ok": UNITS, "coupons.sold_out": THREADS - UNITS}), round_no
        with factory() as s:
            assert s.scalar(select(CouponTemplate.issued_count).where(CouponTemplate.id == template_id)) == (
                UNITS * round_no
            )
            assert s.scalar(select(func.count()).where(Coupon.template_id == template_id)) == UNITS * round_no
    race_engine.dispose()


def test_twenty_tills_cannot_overspend_a_budget(engine: Engine) -> None:
    race_engine, factory, chain, ids = _setup(engine, "181000004")
    hq = system_principal(chain.org_id)
    with factory() as s:
        t = coupons.create_template(
            s,
            hq,
            coupons.TemplateSpec(
                code="BUDGET",
                name="预算券",
                kind="amount_off",
                amount_fen=1000,
                budget_fen=1000 * UNITS,
                valid_days=7,
            ),
        )
        template_id = t.id
        s.commit()
    for round_no in range(1, ROUNDS + 1):
        with factory() as s:
            s.execute(
                update(CouponTemplate)
                .where(CouponTemplate.id == template_id)
                .values(budget_fen=1000 * UNITS * round_no)
            )
            template = coupons.template_by_code(s, chain.org_id, "BUDGET")
            codes = []
            for member_id in ids:
                member = s.get(Member, member_id)
                assert member is not None
                codes.append(coupons.issue_coupon(s, hq, template, member, source="staff").code)
            s.commit()

        def spend(i: int, codes: list[str] = codes, round_no: int = round_no) -> str:
            return _attempt(factory, lambda s: _checkout(s, chain, ids[i], [codes[i]], f"B{round_no}-{i}"))

        outcomes = _run(THREADS, spend)
        assert outcomes == Counter({"ok": UNITS, "coupons.budget_exhausted": THREADS - UNITS}), round_no
        with factory() as s:
            row = s.execute(
                select(CouponTemplate.redeemed_count, CouponTemplate.budget_used).where(
                    CouponTemplate.id == template_id
                )
            ).one()
            assert tuple(row) == (UNITS * round_no, 1000 * UNITS * round_no)
            assert s.scalar(select(func.count()).where(CouponRedemption.template_id == template_id)) == (
                UNITS * round_no
            )
    race_engine.dispose()


def test_ten_tills_redeem_one_coupon_once(engine: Engine) -> None:
    race_engine, factory, chain, ids = _setup(engine, "181000005")
    hq = system_principal(chain.org_id)
    with factory() as s:
        template = coupons.create_template(
            s,
            hq,
            coupons.TemplateSpec(code="ONE", name="单券", kind="amount_off", amount_fen=700, valid_days=7),
        )
        s.commit()
    for round_no in range(1, ROUNDS + 1):
        with factory() as s:
            member = s.get(Member, ids[0])
            assert member is not None
            template = coupons.template_by_code(s, chain.org_id, "ONE")
            code = coupons.issue_coupon(s, hq, template, member, source="staff").code
            s.commit()

        def use(i: int, code: str = code, round_no: int = round_no) -> str:
            return _attempt(
                factory, lambda s: _checkout(s, chain, ids[0], [code], f"O{round_no}-{i}", "ABC"[i % 3])
            )

        outcomes = _run(10, use)
        assert outcomes == Counter({"ok": 1, "coupons.already_used": 9}), round_no
        with factory() as s:
            assert (
                s.scalar(
                    select(CouponTemplate.redeemed_count).where(
                        CouponTemplate.code == "ONE", CouponTemplate.org_id == chain.org_id
                    )
                )
                == round_no
            )
    race_engine.dispose()


def _checkout(
    s: Session, chain: Chain, member_id: int, codes: list[str], order_no: str, store: str = "A"
) -> None:
    """What the checkout will do: apply with locks, write the order, redeem."""
    member = s.get(Member, member_id)
    store_row = s.get(Store, chain.stores[store])
    assert member is not None
    assert store_row is not None
    application = coupons.apply_coupons(
        s, member, store_row, LINES, codes, tier_discount_applied=False, lock=True
    )
    now = datetime.now(UTC)
    order = Order(
        org_id=chain.org_id,
        order_no=order_no,
        store_id=store_row.id,
        member_id=member.id,
        total_fen=10000,
        paid_fen=10000 - application.discount_fen,
        occurred_at=now,
        created_at=now,
        earn_explanation=[],
    )
    s.add(order)
    s.flush()
    coupons.redeem_applied(s, application, order.id, store_row.id)


def _principal(factory: sessionmaker[Session], secret: str) -> Principal:
    with factory() as s:
        return authenticate(s, secret)
