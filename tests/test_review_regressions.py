"""Regressions found in review: a return sees the points it just refunded, pending and expired lots in
take-backs and spending, merges with debt and pending points, growth value and tiers across a merge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth.principal import system_principal
from onemember.db import utcnow
from onemember.members import service as members
from onemember.org.models import Org
from onemember.points import service as points
from onemember.points.errors import InsufficientPoints
from onemember.points.models import PointAccount, PointLot
from onemember.points.verify import verify
from tests.factories import Chain, make_chain
from tests.helpers import balance, checkout, line, login, register


@pytest.mark.parametrize(
    ("policy", "debt", "deducted"), [("debt", 198, 0), ("write_off", 0, 0), ("deduct_refund", 0, 198)]
)
def test_return_sees_points_it_just_refunded(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    policy: str,
    debt: int,
    deducted: int,
) -> None:
    with factory() as s:
        org = s.get(Org, chain.org_id)
        assert org is not None
        org.return_shortfall_policy = policy
        s.commit()
    m = register(app_client, chain, "A", "13600009901")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("A", 1, 10000)])  # +100
    second = checkout(
        app_client, chain, "B", {"member_no": m["member_no"]}, [line("B", 1, 29900)], redeem=100
    )
    assert second["points_earned"] == 298
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("C", 1, 298)], redeem=298)
    assert balance(app_client, chain, m["member_no"]) == (0, 0)
    r = app_client.post(
        f"/api/v1/orders/{second['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 201, r.text
    ret = r.json()
    # 100 points come back into their lot, then 298 are taken back: 100 from that lot, 198 short.
    assert (ret["points_refunded"], ret["points_reversed"], ret["points_shortfall"]) == (100, 298, 198)
    assert (ret["points_balance"], ret["points_debt"], ret["refund_deducted_fen"]) == (0, debt, deducted)
    with factory() as s:
        assert verify(s, chain.org_id).ok


def _member_account(s: Session, chain: Chain, phone: str) -> tuple[members.Member, PointAccount]:
    m = members.register(
        s, system_principal(chain.org_id), chain.stores["A"], members.Registration(phone=phone)
    )
    program = points.default_program(s, chain.org_id)
    return m, points.ensure_account(s, chain.org_id, m.id, program.id)


def test_expired_points_cannot_be_spent_before_the_sweep(session: Session) -> None:
    chain = make_chain(session)
    _, account = _member_account(session, chain, "13600009902")
    now = utcnow()
    points.earn(
        session,
        account,
        100,
        points.EntryContext(at=now - timedelta(days=400)),
        expires_at=now - timedelta(hours=1),
    )
    points.earn(session, account, 30, points.EntryContext())
    with pytest.raises(InsufficientPoints) as err:
        points.redeem(session, account, 100, points.EntryContext())
    assert err.value.extra["available"] == 30
    assert (account.balance, account.debt) == (130, 0)


def test_take_back_uses_pending_points_of_other_orders(session: Session) -> None:
    chain = make_chain(session)
    _, account = _member_account(session, chain, "13600009903")
    now = utcnow()
    spent = points.earn(session, account, 50, points.EntryContext())
    points.redeem(session, account, 50, points.EntryContext())
    points.earn(session, account, 100, points.EntryContext(), available_at=now + timedelta(days=7))
    _, shortfall = points.reverse_earn(session, account, 50, spent.id, points.EntryContext())
    assert shortfall == 0
    assert (account.balance, account.debt) == (50, 0)
    session.flush()
    assert verify(session, chain.org_id).ok


def test_merge_offsets_debt_with_pending_points_and_moves_growth(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = login(app_client, chain, "hq")
    r = app_client.post(
        "/api/v1/tiers",
        headers=hq,
        json={
            "code": "g",
            "name": "等级",
            "basis": "growth",
            "grace_days": 0,
            "levels": [
                {"code": "normal", "name": "普通", "threshold": 0, "keep_threshold": 0},
                {"code": "gold", "name": "金卡", "threshold": 150, "keep_threshold": 100},
            ],
        },
    )
    assert r.status_code == 201, r.text
    a = register(app_client, chain, "A", "13600009904")
    b = register(app_client, chain, "B", "13600009905")
    checkout(app_client, chain, "A", {"member_no": a["member_no"]}, [line("X", 1, 10000)])  # growth 100
    checkout(app_client, chain, "B", {"member_no": b["member_no"]}, [line("Y", 1, 8000)])  # growth 80
    with factory() as s:
        acc_a = s.scalars(
            select(PointAccount)
            .join(members.Member, members.Member.id == PointAccount.member_id)
            .where(members.Member.member_no == a["member_no"], members.Member.org_id == chain.org_id)
        ).one()
        # A owes 40 points; B's 80 points are still pending.
        acc_a = points.lock_account(s, acc_a.id)
        points.redeem(s, acc_a, 100, points.EntryContext())
        points.reverse_earn(s, acc_a, 40, None, points.EntryContext())
        s.execute(
            PointLot.__table__.update()
            .where(PointLot.org_id == chain.org_id, PointLot.remaining == 80)
            .values(available_at=utcnow() + timedelta(days=5))
        )
        s.commit()
    cs = login(app_client, chain, "cs")
    merged = app_client.post(
        "/api/v1/members/merge",
        headers=cs,
        json={"survivor_member_no": a["member_no"], "merged_member_no": b["member_no"], "reason": "同一人"},
    )
    assert merged.status_code == 200, merged.text
    assert balance(app_client, chain, a["member_no"]) == (40, 0)
    tier = app_client.get(f"/api/v1/members/{a['member_no']}/tier", headers=hq).json()
    assert (tier["basis_value"], tier["level_code"]) == (180, "gold")
    with factory() as s:
        assert verify(s, chain.org_id).ok
