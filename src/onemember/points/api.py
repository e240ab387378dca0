"""Points read endpoints: balance, ledger and open lots of a member, from any store."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from onemember.deps import CurrentPrincipal, SessionDep
from onemember.members import service as members
from onemember.orders.models import Order
from onemember.org.models import Store
from onemember.points import service
from onemember.points.models import PointEntry, PointLot
from onemember.points.schemas import EntryOut, LedgerOut, LotOut

router = APIRouter(prefix="/api/v1", tags=["points"])


@router.get("/members/{member_no}/points", response_model=LedgerOut)
def member_points(
    member_no: str, principal: CurrentPrincipal, session: SessionDep, limit: int = 50, offset: int = 0
) -> LedgerOut:
    """Balance, debt, ledger entries (newest first) and open lots with their expiry."""
    member = members.by_member_no(session, principal.org_id, member_no)
    program = service.default_program(session, principal.org_id)
    account = service.ensure_account(session, principal.org_id, member.id, program.id)
    stores = dict(session.execute(select(Store.id, Store.code).where(Store.org_id == principal.org_id)).all())
    rows = session.execute(
        select(PointEntry, Order.order_no)
        .outerjoin(Order, Order.id == PointEntry.order_id)
        .where(PointEntry.account_id == account.id)
        .order_by(PointEntry.id.desc())
        .limit(max(1, min(limit, 500)))
        .offset(max(0, offset))
    ).all()
    lots = session.scalars(
        select(PointLot)
        .where(PointLot.account_id == account.id, PointLot.remaining > 0)
        .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id)
    )
    return LedgerOut(
        member_no=member.member_no,
        balance=account.balance,
        debt=account.debt,
        lifetime_earned=account.lifetime_earned,
        lifetime_redeemed=account.lifetime_redeemed,
        entries=[
            EntryOut(
                id=e.id,
                kind=e.kind,
                amount=e.amount,
                debt_change=e.debt_change,
                balance_after=e.balance_after,
                debt_after=e.debt_after,
                store_code=stores.get(e.store_id) if e.store_id else None,
                order_no=no,
                reason=e.reason,
                created_at=e.created_at,
            )
            for e, no in rows
        ],
        open_lots=[
            LotOut(
                amount=lot.amount,
                remaining=lot.remaining,
                store_code=stores.get(lot.store_id) if lot.store_id else None,
                earned_at=lot.earned_at,
                available_at=lot.available_at,
                expires_at=lot.expires_at,
            )
            for lot in lots
        ],
    )
