"""Issuing coupons (by staff, as compensation, from the points mall, by campaigns) and gifting them.

Quantity and the per-member limit hold under concurrency: the template's ``issued_count`` moves with
one conditional ``UPDATE … WHERE issued_count < total_quantity``. That statement also locks the
template row until commit, so the per-member count read after it sees every coupon of the template
committed before (READ COMMITTED takes a fresh snapshot per statement); a refusal rolls the counter
back with the transaction.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import TILL_ROLES, Principal, system_principal
from onemember.common.types import MemberStatus, Role
from onemember.coupons import calculations as calc
from onemember.coupons.errors import (
    AlreadyUsed,
    BudgetExhausted,
    CouponNotFound,
    Expired,
    InvalidTemplate,
    LimitReached,
    NotGiftable,
    SoldOut,
    TemplateInactive,
)
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service.templates import AcceptScope, template_by_code
from onemember.db import utcnow
from onemember.errors import Invalid
from onemember.events import service as events
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Store


class Source(StrEnum):
    STAFF = "staff"
    COMPENSATION = "compensation"
    MALL = "mall"
    CAMPAIGN = "campaign"


class Status(StrEnum):
    AVAILABLE = "available"
    REDEEMED = "redeemed"
    VOID = "void"
    EXPIRED = "expired"


ISSUE_ROLES = TILL_ROLES | {Role.CS_AGENT}
COMPENSATION_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER, Role.CS_AGENT})
GIFT_ROLES = TILL_ROLES | {Role.CS_AGENT, Role.MEMBER}
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud at a till


def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _take_one(session: Session, template: CouponTemplate) -> None:
    """Count one more issued coupon, atomically; the last one goes once."""
    done = _rowcount(
        session.execute(
            update(CouponTemplate)
            .where(
                CouponTemplate.id == template.id,
                (CouponTemplate.total_quantity.is_(None))
                | (CouponTemplate.issued_count < CouponTemplate.total_quantity),
            )
            .values(issued_count=CouponTemplate.issued_count + 1)
            .execution_options(synchronize_session=False)
        )
    )
    if done != 1:
        raise SoldOut(template_code=template.code)


def _issued_to(session: Session, template_id: int, member_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                Coupon.template_id == template_id, Coupon.issued_to_member_id == member_id
            )
        )
        or 0
    )


def issue_coupon(
    session: Session,
    principal: Principal,
    template: CouponTemplate,
    member: Member,
    *,
    source: str,
    issuing_store: Store | None = None,
    reason: str = "",
    source_ref: str | None = None,
    cover_fen: int | None = None,
) -> Coupon:
    """Issue one coupon of ``template`` to ``member``. With ``source_ref`` it applies once: a repeat
    returns the coupon issued the first time. A failure changes nothing (the caller rolls back)."""
    if member.status != MemberStatus.ACTIVE or member.org_id != principal.org_id:
        raise MemberNotFound()
    if template.org_id != principal.org_id:
        raise CouponNotFound()
    if source not in set(Source):
        raise Invalid(f"未知的发放来源 {source}", f"Unknown source {source}", code="coupons.invalid_source")
    if source_ref is not None:
        found = session.scalar(
            select(Coupon).where(Coupon.org_id == principal.org_id, Coupon.source_ref == source_ref)
        )
        if found is not None:
            return found
    if not template.active:
        raise TemplateInactive(template_code=template.code)
    now = utcnow()
    if template.valid_to is not None and template.valid_to <= now:
        raise Expired("该优惠券活动已结束", "This coupon's validity has ended", template_code=template.code)
    if template.accept_scope == AcceptScope.ISSUING_STORE and issuing_store is None:
        raise InvalidTemplate(
            "仅限发券门店使用的优惠券须由门店发放",
            "A coupon for the issuing store only must be issued by a store",
            field="store_code",
        )
    if cover_fen is not None and (template.kind not in calc.ITEM_VOUCHERS or not 0 < cover_fen <= 10**10):
        raise Invalid(
            "只有商品券可以指定抵扣价值（分）",
            "Only item vouchers take cover_fen, a positive number of fen",
            code="coupons.invalid_cover",
        )
    if template.budget_fen is not None and template.budget_used >= template.budget_fen:
        raise BudgetExhausted(template_code=template.code)
    _take_one(session, template)  # locks the template row until commit
    if template.per_member_limit is not None:
        used = _issued_to(session, template.id, member.id)
        if used >= template.per_member_limit:
            raise LimitReached(
                f"该优惠券每人限领 {template.per_member_limit} 张，已领 {used} 张",
                f"This coupon is limited to {template.per_member_limit} per member; {used} issued",
                limit=template.per_member_limit,
                used=used,
            )
    org = org_service.get_org(session, principal.org_id)
    valid_from, valid_to = calc.validity(
        now,
        org.timezone,
        valid_from=template.valid_from,
        valid_to=template.valid_to,
        valid_days=template.valid_days,
    )
    coupon = Coupon(
        org_id=principal.org_id,
        code=new_code(),
        template_id=template.id,
        member_id=member.id,
        issued_to_member_id=member.id,
        issuing_store_id=issuing_store.id if issuing_store else None,
        cover_fen=cover_fen if cover_fen is not None else template.face_value_fen,
        source=source,
        source_ref=source_ref,
        reason=reason[:300],
        valid_from=valid_from,
        valid_to=valid_to,
        status=Status.AVAILABLE,
        issued_by=principal.actor,
        issued_at=now,
        discount_fen=0,
    )
    session.add(coupon)
    session.flush()
    audit.record(
        session,
        principal,
        "coupons.issued",
        target_type="coupon",
        target_id=coupon.code,
        member_id=member.id,
        store_id=coupon.issuing_store_id,
        reason=reason[:300],
        details={"template_code": template.code, "source": source, "source_ref": source_ref},
    )
    events.emit(
        session,
        principal.org_id,
        "coupon.issued",
        {
            "coupon_code": coupon.code,
            "template_code": template.code,
            "member_no": member.member_no,
            "source": source,
            "store_code": issuing_store.code if issuing_store else None,
            "valid_to": valid_to.isoformat() if valid_to else None,
        },
        member_id=member.id,
        store_ids=[issuing_store.id] if issuing_store else [],
    )
    session.flush()
    return coupon


def issue_by_staff(
    session: Session,
    principal: Principal,
    template: CouponTemplate,
    member: Member,
    store: Store | None,
    *,
    reason: str = "",
    cover_fen: int | None = None,
) -> Coupon:
    """Staff hand a coupon to a member at their store (HQ may issue without a store)."""
    principal.require_role(ISSUE_ROLES, "发放优惠券", "issue coupons")
    store = _issuing_store(session, principal, store)
    return issue_coupon(
        session,
        principal,
        template,
        member,
        source=Source.STAFF,
        issuing_store=store,
        reason=reason,
        cover_fen=cover_fen,
    )


def issue_compensation(
    session: Session,
    principal: Principal,
    template: CouponTemplate,
    member: Member,
    reason: str,
    *,
    store: Store | None = None,
    source_ref: str | None = None,
) -> Coupon:
    """A coupon to make up for a complaint or a mistake; needs a reason and is audited."""
    principal.require_role(COMPENSATION_ROLES, "发放补偿券", "issue compensation coupons")
    if not reason.strip():
        raise Invalid(
            "补偿发券须填写原因", "A compensation coupon needs a reason", code="coupons.reason_required"
        )
    store = _issuing_store(session, principal, store)
    return issue_coupon(
        session,
        principal,
        template,
        member,
        source=Source.COMPENSATION,
        issuing_store=store,
        reason=reason,
        source_ref=source_ref,
    )


def mall_source_ref(redemption_id: int) -> str:
    """The ``source_ref`` of the coupon a points-mall redemption issued."""
    return f"mall:{redemption_id}"


def issue_from_mall(
    session: Session,
    principal: Principal,
    template: CouponTemplate,
    member: Member,
    redemption_id: int,
    reason: str,
) -> Coupon:
    """The points mall delivers a coupon reward, issued by HQ (no store): once per redemption (a retry
    returns the same coupon)."""
    return issue_coupon(
        session,
        principal,
        template,
        member,
        source=Source.MALL,
        reason=reason,
        source_ref=mall_source_ref(redemption_id),
    )


def issue_for_campaign(
    session: Session,
    org_id: int,
    template_code: str,
    member: Member,
    *,
    campaign_ref: str,
    store: Store | None = None,
) -> Coupon:
    """A campaign sends a coupon: once per campaign and member (``campaign_ref`` names the campaign
    step), so a re-run of the campaign does not issue twice. Raises ``SoldOut`` / ``LimitReached`` /
    ``BudgetExhausted`` like any issuance; the caller decides whether to skip the member."""
    principal = system_principal(org_id, "campaign")
    template = template_by_code(session, org_id, template_code)
    return issue_coupon(
        session,
        principal,
        template,
        member,
        source=Source.CAMPAIGN,
        issuing_store=store,
        reason=f"营销活动 {campaign_ref}"[:300],
        source_ref=f"campaign:{campaign_ref}:{member.id}"[:120],
    )


def _issuing_store(session: Session, principal: Principal, store: Store | None) -> Store | None:
    """The store named, else the caller's own; HQ and CS may issue without a store."""
    if store is None and principal.store_id is not None:
        store = org_service.get_store(session, principal.org_id, principal.store_id)
    if store is not None:
        principal.require_store(store.id)
    elif not principal.is_hq:
        raise Invalid(
            "请指定发券门店 store_code", "Name the store (store_code)", code="coupons.store_required"
        )
    return store


def coupon_by_code(session: Session, org_id: int, code: str, *, lock: bool = False) -> Coupon:
    query = select(Coupon).where(Coupon.org_id == org_id, Coupon.code == code.strip().upper())
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    coupon = session.scalar(query)
    if coupon is None:
        raise CouponNotFound()
    return coupon


def is_expired(coupon: Coupon, now: datetime) -> bool:
    return coupon.valid_to is not None and coupon.valid_to <= now


def gift_coupon(
    session: Session, principal: Principal, code: str, sender: Member, receiver: Member, reason: str = ""
) -> Coupon:
    """Give an unused coupon to another member when the template allows; audited, with an event."""
    principal.require_role(GIFT_ROLES, "转赠优惠券", "gift coupons")
    if receiver.status != MemberStatus.ACTIVE or receiver.org_id != principal.org_id:
        raise MemberNotFound()
    if sender.id == receiver.id:
        raise Invalid("不能转赠给自己", "A coupon cannot be given to its holder", code="coupons.gift_to_self")
    coupon = coupon_by_code(session, principal.org_id, code, lock=True)
    if coupon.member_id != sender.id:
        raise CouponNotFound()
    template = session.get(CouponTemplate, coupon.template_id)
    assert template is not None
    if not template.giftable:
        raise NotGiftable(template_code=template.code)
    if coupon.status != Status.AVAILABLE:
        raise AlreadyUsed(coupon_status=coupon.status)
    if is_expired(coupon, utcnow()):
        raise Expired()
    coupon.member_id = receiver.id
    coupon.gifted_from_member_id = sender.id
    audit.record(
        session,
        principal,
        "coupons.gifted",
        target_type="coupon",
        target_id=coupon.code,
        member_id=sender.id,
        reason=reason[:300],
        details={
            "template_code": template.code,
            "from_member_no": sender.member_no,
            "to_member_no": receiver.member_no,
        },
    )
    events.emit(
        session,
        principal.org_id,
        "coupon.gifted",
        {
            "coupon_code": coupon.code,
            "template_code": template.code,
            "from_member_no": sender.member_no,
            "to_member_no": receiver.member_no,
        },
        member_id=receiver.id,
    )
    session.flush()
    return coupon


def coupons_of(
    session: Session, member: Member, *, status: str | None = None, limit: int | None = None
) -> list[tuple[Coupon, CouponTemplate]]:
    """A member's coupons: those still usable first, soonest-expiring first, then the rest by their end.
    An available coupon past its end shows (and filters) as expired. ``limit`` caps the rows in SQL, so a
    member with years of used coupons still sees the usable ones."""
    now = utcnow()
    live = and_(Coupon.status == Status.AVAILABLE, or_(Coupon.valid_to.is_(None), Coupon.valid_to > now))
    query = (
        select(Coupon, CouponTemplate)
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.member_id == member.id)
    )
    if status == Status.AVAILABLE:
        query = query.where(live)
    elif status == Status.EXPIRED:
        query = query.where(
            or_(
                Coupon.status == Status.EXPIRED,
                and_(Coupon.status == Status.AVAILABLE, Coupon.valid_to.is_not(None), Coupon.valid_to <= now),
            )
        )
    elif status is not None:
        query = query.where(Coupon.status == status)
    query = query.order_by(case((live, 0), else_=1), Coupon.valid_to.is_(None), Coupon.valid_to, Coupon.id)
    if limit is not None:
        query = query.limit(limit)
    return [(c, t) for c, t in session.execute(query).all()]


def shown_status(coupon: Coupon, now: datetime) -> str:
    if coupon.status == Status.AVAILABLE and is_expired(coupon, now):
        return str(Status.EXPIRED)
    return coupon.status


def expire_coupons(session: Session, org_id: int, now: datetime | None = None) -> int:
    """Mark available coupons past their end as expired (a scheduled job); returns how many."""
    now = now or utcnow()
    return _rowcount(
        session.execute(
            update(Coupon)
            .where(Coupon.org_id == org_id, Coupon.status == Status.AVAILABLE, Coupon.valid_to <= now)
            .values(status=Status.EXPIRED)
            .execution_options(synchronize_session=False)
        )
    )


def move_on_merge(session: Session, merged_id: int, survivor_id: int) -> int:
    """A merge hands the merged member's coupons to the survivor (members.merge_members calls this)."""
    return _rowcount(
        session.execute(
            update(Coupon)
            .where(Coupon.member_id == merged_id)
            .values(member_id=survivor_id)
            .execution_options(synchronize_session=False)
        )
    )
