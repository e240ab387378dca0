"""The ledger's arithmetic and its guards: pure maths, the append-only trigger, and ``verify``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from onemember.auth.principal import system_principal
from onemember.common.counters import is_valid_member_no, luhn_digit, member_no_for
from onemember.common.crypto import mask
from onemember.db import utcnow
from onemember.members import service as members
from onemember.points import calculations as calc
from onemember.points import service as points
from onemember.points.errors import InsufficientPoints
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.points.verify import verify
from tests.factories import make_chain


def test_allocate_is_exact_and_deterministic() -> None:
    assert calc.allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert calc.allocate(10, [3000, 1000]) == [8, 2]
    assert calc.allocate(7, [0, 5, 5]) == [0, 4, 3]
    assert calc.allocate(0, [0, 0]) == [0, 0]
    assert sum(calc.allocate(999_999, [17, 23, 31, 1])) == 999_999
    with pytest.raises(ValueError, match="zero weights"):
        calc.allocate(5, [0, 0])


def test_proportional_parts_add_up_in_any_steps() -> None:
    total, qty = 100, 3
    assert [calc.proportional_part(total, done, 1, qty) for done in range(3)] == [33, 33, 34]
    assert calc.proportional_part(total, 0, 3, qty) == 100
    assert calc.proportional_part(70, 0, 2, 7) + calc.proportional_part(70, 2, 5, 7) == 70


def test_rates() -> None:
    assert calc.base_points(9999, 1) == 99
    assert calc.base_points(9999, 3) == 299
    assert calc.redeem_unit(100) == 1
    assert calc.redeem_unit(150) == 3
    assert calc.points_value_fen(300, 150) == 200
    assert calc.points_for_fen_ceil(1, 150) == 1


def test_member_numbers_and_masks() -> None:
    assert member_no_for(1) == "00000001" + luhn_digit("00000001")
    assert is_valid_member_no(member_no_for(123456))
    wrong = member_no_for(123456)[:-1] + str((int(member_no_for(123456)[-1]) + 1) % 10)
    assert not is_valid_member_no(wrong)
    assert mask("phone", "13812345678") == "138****5678"
    assert mask("card", "1234") == "****"


def _account(session: Session) -> tuple[int, PointAccount]:
    chain = make_chain(session)
    member = members.register(
        session, system_principal(chain.org_id), chain.stores["A"], members.Registration(phone="13000000001")
    )
    program = points.default_program(session, chain.org_id)
    return chain.org_id, points.ensure_account(session, chain.org_id, member.id, program.id)


def test_soonest_expiring_lots_are_spent_first(session: Session) -> None:
    org_id, account = _account(session)
    now = utcnow()
    ctx = points.EntryContext(reason="test")
    late = points.earn(session, account, 100, ctx, expires_at=now + timedelta(days=300))
    never = points.earn(session, account, 100, ctx)
    soon = points.earn(session, account, 100, ctx, expires_at=now + timedelta(days=3))
    session.flush()
    points.redeem(session, account, 150, ctx)
    session.flush()
    remaining = {
        lot.entry_id: lot.remaining for lot in session.query(PointLot).filter_by(account_id=account.id)
    }
    assert remaining == {soon.id: 0, late.id: 50, never.id: 100}
    with pytest.raises(InsufficientPoints):
        points.redeem(session, account, 151, ctx)
    assert (account.balance, account.debt) == (150, 0)
    assert verify(session, org_id).ok


def test_ledger_is_append_only(session: Session) -> None:
    _, account = _account(session)
    entry = points.earn(session, account, 10, points.EntryContext())
    session.flush()
    with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
        session.execute(update(PointEntry).where(PointEntry.id == entry.id).values(amount=1000))
    with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
        session.execute(text("DELETE FROM point_entries WHERE id = :id"), {"id": entry.id})


def test_verify_reports_a_tampered_balance(session: Session) -> None:
    org_id, account = _account(session)
    points.earn(session, account, 40, points.EntryContext())
    session.flush()
    assert verify(session, org_id).ok
    session.execute(update(PointAccount).where(PointAccount.id == account.id).values(balance=41))
    report = verify(session, org_id)
    assert report.problems == [
        f"account {account.id}: entries sum 40 != balance 41 - debt 0",
        f"account {account.id}: open lots 40 != balance 41",
    ]


def test_expiry_policies() -> None:
    from datetime import UTC, date, datetime

    earned = datetime(2026, 1, 31, 20, 30, tzinfo=UTC)  # 1 Feb 04:30 in Shanghai
    assert calc.expiry_for(earned, "never", "Asia/Shanghai") is None
    assert calc.expiry_for(earned, "rolling", "Asia/Shanghai", months=12) == datetime(
        2027, 2, 1, 16, 0, tzinfo=UTC
    )
    assert calc.expiry_for(
        datetime(2026, 1, 31, 1, tzinfo=UTC), "rolling", "Asia/Shanghai", months=1
    ) == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    assert calc.expiry_for(earned, "fixed_yearly", "Asia/Shanghai") == datetime(
        2027, 12, 31, 16, 0, tzinfo=UTC
    )
    assert calc.add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    with pytest.raises(ValueError, match="unknown expiry policy"):
        calc.expiry_for(earned, "sometimes", "Asia/Shanghai")
