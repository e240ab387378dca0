"""Read models of a member, masked according to who is looking."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.members import service
from onemember.members.models import Member
from onemember.members.schemas import IdentityOut, MemberOut, PointsSummary, StatsOut
from onemember.org.models import Store
from onemember.points.models import PointAccount
from onemember.segments.models import MemberStats, MemberStoreStats


def in_scope(session: Session, principal: Principal, member: Member) -> bool:
    """HQ sees every member; store and regional staff see those registered or shopping in their stores."""
    if principal.store_ids is None:
        return True
    if member.registered_store_id in principal.store_ids:
        return True
    return (
        session.scalar(
            select(MemberStoreStats.store_id)
            .where(
                MemberStoreStats.member_id == member.id, MemberStoreStats.store_id.in_(principal.store_ids)
            )
            .limit(1)
        )
        is not None
    )


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def _store_code(session: Session, store_id: int | None) -> str | None:
    if store_id is None:
        return None
    store = session.get(Store, store_id)
    return store.code if store else None


def member_out(session: Session, principal: Principal, member: Member) -> MemberOut:
    full = in_scope(session, principal, member)
    account = session.scalar(select(PointAccount).where(PointAccount.member_id == member.id))
    st = session.get(MemberStats, member.id)
    return MemberOut(
        member_no=member.member_no,
        name=member.name if full else mask_name(member.name),
        gender=member.gender,
        birthday=member.birthday if full else None,
        phone_masked=service.masked_phone(session, member.id),
        channel=member.channel,
        registered_store_code=_store_code(session, member.registered_store_id),
        status=member.status,
        created_at=member.created_at,
        identities=[
            IdentityOut(kind=i.kind, masked=i.value_masked) for i in service.identities_of(session, member.id)
        ],
        points=PointsSummary(
            balance=account.balance if account else 0,
            debt=account.debt if account else 0,
            lifetime_earned=account.lifetime_earned if account else 0,
            lifetime_redeemed=account.lifetime_redeemed if account else 0,
        ),
        stats=StatsOut(
            first_purchase_at=st.first_purchase_at,
            first_store_code=_store_code(session, st.first_store_id),
            last_purchase_at=st.last_purchase_at,
            last_store_code=_store_code(session, st.last_store_id),
            order_count=st.order_count,
            total_spend_fen=st.total_spend_fen,
            return_count=st.return_count,
            returned_fen=st.returned_fen,
            store_count=st.store_count,
        )
        if st
        else None,
        full_profile=full,
    )
