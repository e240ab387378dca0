"""Parallel redemptions of one member's points from different stores never overspend.

Real parallel connections and real commits: on PostgreSQL the account row lock serialises spenders; on
SQLite ``BEGIN IMMEDIATE`` does. Each storm is 50 threads released together by a barrier.
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth.principal import Principal
from onemember.auth.service import authenticate
from onemember.db import make_engine, make_sessionmaker
from onemember.errors import DomainError
from onemember.members import service as members
from onemember.members.models import Member
from onemember.orders.checkout import checkout
from onemember.orders.schemas import CheckoutIn
from onemember.points.models import PointAccount
from onemember.points.verify import verify
from tests.factories import make_chain

THREADS = 50
STORMS = 5
SPEND = 30


def _principal(factory: sessionmaker[Session], secret: str) -> Principal:
    with factory() as s:
        return authenticate(s, secret)


def test_fifty_parallel_redemptions_never_overspend(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    storm_engine = (
        make_engine(url, pool_size=THREADS + 5, max_overflow=0)
        if engine.dialect.name != "sqlite"
        else make_engine(url)
    )
    factory = make_sessionmaker(storm_engine)
    with factory() as s:
        chain = make_chain(s)
        member = members.register(
            s,
            _principal_from(s, chain.keys["A"]),
            chain.stores["A"],
            members.Registration(phone="13100000001", name="并发"),
        )
        member_no = member.member_no
        s.commit()
    tills = {code: _principal(factory, secret) for code, secret in chain.keys.items()}
    expected_balance = 0
    for storm in range(STORMS):
        top_up = 1000 + storm * 7  # a different remainder each storm
        with factory() as s:
            checkout(
                s,
                tills["A"],
                CheckoutIn.model_validate(
                    {
                        "member": {"member_no": member_no},
                        "lines": [
                            {
                                "sku": "TOPUP",
                                "name": "充值商品",
                                "quantity": 1,
                                "unit_price_fen": top_up * 100,
                            }
                        ],
                        "payments": [{"method": "cash", "amount_fen": top_up * 100}],
                    }
                ),
            )
            s.commit()
        expected_balance += top_up
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS)

        threads = [
            threading.Thread(
                target=_spend, args=(factory, tills["ABC"[i % 3]], member_no, i, barrier, outcomes, lock)
            )
            for i in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = min(THREADS, expected_balance // SPEND)
        assert outcomes == Counter({"ok": winners, "points.insufficient_balance": THREADS - winners}), storm
        expected_balance -= winners * SPEND
        with factory() as s:
            account = s.scalars(
                select(PointAccount)
                .join(Member, Member.id == PointAccount.member_id)
                .where(Member.member_no == member_no)
            ).one()
            assert (account.balance, account.debt) == (expected_balance, 0)
            report = verify(s, chain.org_id)
            assert report.ok, report.problems
    storm_engine.dispose()


def _spend(
    factory: sessionmaker[Session],
    till: Principal,
    member_no: str,
    i: int,
    barrier: threading.Barrier,
    outcomes: Counter[str],
    lock: threading.Lock,
) -> None:
    body = CheckoutIn.model_validate(
        {
            "member": {"member_no": member_no},
            "redeem_points": SPEND,
            "lines": [{"sku": f"S{i}", "name": "兑换", "quantity": 1, "unit_price_fen": SPEND}],
        }
    )
    barrier.wait()
    with factory() as s:
        try:
            checkout(s, till, body)
            s.commit()
            result = "ok"
        except DomainError as err:
            s.rollback()
            result = err.code
    with lock:
        outcomes[result] += 1


def _principal_from(s: Session, secret: str) -> Principal:
    return authenticate(s, secret)
