"""The member's coupons: what each gives, where and until when, grouped by state, and one coupon with
its code as a QR for the till.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.audit.models import AuditLog
from onemember.coupons import service as coupons
from onemember.coupons.calculations import ITEM_VOUCHERS, Kind
from onemember.coupons.errors import AlreadyUsed, CouponNotFound, Expired, NotGiftable
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service.issuance import is_expired
from onemember.coupons.service.templates import AcceptScope
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members import service as members
from onemember.members.models import Member
from onemember.web.member.base import MemberDep, _org_of, _tr
from onemember.web.member.benefits import (
    LIST_LIMIT,
    Places,
    _benefit_counts,
    _day,
    _last_day,
    _names,
    _places,
)
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

GIFTED_LIMIT = 50


@dataclass
class CouponCard:
    """One coupon as the member sees it: what it gives, when and where, and its state."""

    code: str
    name: str
    kind: str
    status: str  # available | redeemed | void | expired | gifted (given away by this member)
    headline: str
    gives: str
    items: str
    validity: str
    starts: str | None  # the first day, while the coupon is not valid yet
    accepted: str
    difference: str | None  # item vouchers: whether another store charges a price difference
    note: str
    received: bool
    giftable: bool


def coupon_headline(t: CouponTemplate, lang: str) -> str:
    if t.kind == Kind.AMOUNT_OFF:
        return fen(t.amount_fen)
    if t.kind == Kind.PERCENT_OFF:
        return _discount(t.percent_off, lang)
    if t.kind == Kind.FIXED_PRICE:
        return fen(t.price_fen)
    return _tr(lang, f"member.cp.kind.{t.kind}")


def _discount(percent_off: int, lang: str) -> str:
    """20 % off is 8折 (and 15 % off 8.5折)."""
    tenths = Decimal(100 - percent_off) / 10
    return _tr(lang, "member.cp.discount", n=f"{tenths.normalize():f}", p=percent_off)


def coupon_gives(t: CouponTemplate, cover_fen: int | None, lang: str) -> str:
    """What the coupon gives, in words: 满¥300.00减¥50.00, 8折，最高减¥20.00, …"""
    threshold = _tr(lang, "member.cp.threshold", threshold=fen(t.threshold_fen)) if t.threshold_fen else ""
    if t.kind == Kind.AMOUNT_OFF:
        if t.threshold_fen:
            return _tr(lang, "member.cp.amount_off", threshold=fen(t.threshold_fen), amount=fen(t.amount_fen))
        return _tr(lang, "member.cp.amount_off_any", amount=fen(t.amount_fen))
    if t.kind == Kind.PERCENT_OFF:
        cap = _tr(lang, "member.cp.cap", cap=fen(t.cap_fen)) if t.cap_fen else ""
        return _discount(t.percent_off, lang) + cap + threshold
    if t.kind == Kind.FIXED_PRICE:
        return _tr(lang, "member.cp.fixed_price", price=fen(t.price_fen)) + threshold
    return _tr(lang, f"member.cp.{t.kind}") + threshold


def coupon_items(t: CouponTemplate, lang: str) -> str:
    parts = []
    if t.categories:
        parts.append(_tr(lang, "member.cp.categories", names=_names(list(t.categories))))
    if t.skus:
        parts.append(_tr(lang, "member.cp.skus", names=_names(list(t.skus))))
    return " · ".join(parts)


def coupon_accepted(t: CouponTemplate, c: Coupon, places: Places, lang: str) -> str:
    """Where the coupon is accepted, in the terms of ``coupons.calculations.accepted_at``."""
    only_issuer = t.accept_scope == AcceptScope.ISSUING_STORE or (
        not t.cross_store and c.issuing_store_id is not None
    )
    if only_issuer:
        return _tr(lang, "member.cp.where.issuing_store", name=places.stores.get(c.issuing_store_id or 0, ""))
    if t.accept_scope == AcceptScope.BRAND:
        return _tr(lang, "member.cp.where.brand", name=places.brands.get(t.accept_brand_id or 0, ""))
    if t.accept_scope == AcceptScope.REGION:
        return _tr(lang, "member.cp.where.region", name=places.regions.get(t.accept_region_id or 0, ""))
    if t.accept_scope == AcceptScope.STORES:
        names = [places.stores.get(i, "") for i in sorted(t.accept_store_ids or [])]
        return _tr(lang, "member.cp.where.stores", names=_names(names))
    return _tr(lang, "member.cp.where.all")


def coupon_difference(t: CouponTemplate, cover_fen: int | None, lang: str) -> str | None:
    """Item vouchers cover the item up to ``cover_fen`` when the template makes the member pay the
    difference (补差价), so a store where it costs more charges the rest; otherwise the whole item."""
    if t.kind not in ITEM_VOUCHERS:
        return None
    if t.pay_difference and cover_fen is not None:
        return _tr(lang, "member.cp.diff.pay", cover=fen(cover_fen))
    return _tr(lang, "member.cp.diff.none")


def _coupon_places(pairs: list[tuple[Coupon, CouponTemplate]], session: Session, org_id: int) -> Places:
    stores: set[int] = set()
    brands: set[int] = set()
    regions: set[int] = set()
    for c, t in pairs:
        stores.update(i for i in (c.issuing_store_id, c.redeemed_store_id) if i is not None)
        stores.update(t.accept_store_ids or [])
        if t.accept_brand_id is not None:
            brands.add(t.accept_brand_id)
        if t.accept_region_id is not None:
            regions.add(t.accept_region_id)
    return _places(session, org_id, stores, brands, regions)


def coupon_card(
    c: Coupon, t: CouponTemplate, status: str, places: Places, tz: str, lang: str, now: datetime
) -> CouponCard:
    start = _day(c.valid_from, tz)
    if c.valid_to is None:
        validity = _tr(lang, "member.cp.validity_open", start=start)
    else:
        validity = _tr(lang, "member.cp.validity", start=start, end=_last_day(c.valid_to, tz))
    note = ""
    if status == coupons.Status.REDEEMED and c.redeemed_at is not None:
        note = _tr(
            lang,
            "member.cp.note.redeemed",
            day=_day(c.redeemed_at, tz),
            store=places.stores.get(c.redeemed_store_id or 0, ""),
            amount=fen(c.discount_fen),
        )
    elif status == coupons.Status.VOID:
        note = _tr(lang, "member.cp.note.void")
    elif status == coupons.Status.EXPIRED and c.valid_to is not None:
        note = _tr(lang, "member.cp.note.expired", day=_last_day(c.valid_to, tz))
    return CouponCard(
        code=c.code,
        name=t.name,
        kind=t.kind,
        status=status,
        headline=coupon_headline(t, lang),
        gives=coupon_gives(t, c.cover_fen, lang),
        items=coupon_items(t, lang),
        validity=validity,
        starts=_tr(lang, "member.cp.starts", day=start) if c.valid_from > now else None,
        accepted=coupon_accepted(t, c, places, lang),
        difference=coupon_difference(t, c.cover_fen, lang),
        note=note,
        received=c.gifted_from_member_id is not None and c.member_id != c.gifted_from_member_id,
        giftable=status == coupons.Status.AVAILABLE and gift_refusal(c, t, now) is None,
    )


def gift_refusal(coupon: Coupon, template: CouponTemplate, now: datetime) -> DomainError | None:
    """Why ``coupons.gift_coupon`` would refuse this coupon, checked in its order, so that the page asks
    for a phone number only when the coupon itself may be given (the service decides in the end)."""
    if not template.giftable:
        return NotGiftable(template_code=template.code)
    if coupon.status != coupons.Status.AVAILABLE:
        return AlreadyUsed(coupon_status=coupon.status)
    if is_expired(coupon, now):
        return Expired()
    return None


@dataclass
class GiftedAway:
    card: CouponCard
    at: datetime
    phone: str  # the receiver's, masked


def gifted_away(session: Session, member: Member, tz: str, lang: str, now: datetime) -> list[GiftedAway]:
    """Coupons this member gave to others, newest first, from the audit of each gift (indexed by the
    giver); a coupon that came back to the member is listed among theirs instead."""
    rows = session.execute(
        select(AuditLog.target_id, AuditLog.at, AuditLog.details)
        .where(
            AuditLog.org_id == member.org_id,
            AuditLog.member_id == member.id,
            AuditLog.action == "coupons.gifted",
        )
        .order_by(AuditLog.id.desc())
        .limit(GIFTED_LIMIT)
    ).all()
    if not rows:
        return []
    codes = {str(code) for code, _, _ in rows}
    found = {
        c.code: (c, t)
        for c, t in session.execute(
            select(Coupon, CouponTemplate)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(Coupon.org_id == member.org_id, Coupon.code.in_(codes))
        ).all()
    }
    receivers = {str((details or {}).get("to_member_no", "")) for _, _, details in rows}
    phones = {
        no: members.masked_phone(session, mid)
        for no, mid in session.execute(
            select(Member.member_no, Member.id).where(
                Member.org_id == member.org_id, Member.member_no.in_(receivers)
            )
        ).all()
    }
    places = _coupon_places(list(found.values()), session, member.org_id)
    result: list[GiftedAway] = []
    seen: set[str] = set()
    for code, at, details in rows:
        if code in seen or code not in found or found[code][0].member_id == member.id:
            continue
        seen.add(code)
        c, t = found[code]
        phone = phones.get(str((details or {}).get("to_member_no", "")), "") or "—"
        card = coupon_card(c, t, "gifted", places, tz, lang, now)
        card.note = _tr(lang, "member.cp.note.gifted", day=_day(at, tz), phone=phone)
        card.received = card.giftable = False
        result.append(GiftedAway(card, at, phone))
    return result


COUPON_GROUPS = ("available", "used", "expired", "gifted")


@router.get("/m/coupons")
def member_coupons(
    request: Request, member: MemberDep, session: SessionDep, gifted: str = ""
) -> HTMLResponse:
    """My coupons: ready to use, used, expired and given away."""
    lang = request.state.lang
    org = _org_of(session, member)
    now = utcnow()
    rows = coupons.coupons_of(session, member, limit=LIST_LIMIT)
    places = _coupon_places(rows, session, member.org_id)
    groups: dict[str, list[CouponCard]] = {g: [] for g in COUPON_GROUPS}
    for c, t in rows:
        status = coupons.shown_status(c, now)
        group = "available" if status == coupons.Status.AVAILABLE else "expired"
        if status in (coupons.Status.REDEEMED, coupons.Status.VOID):
            group = "used"
        groups[group].append(coupon_card(c, t, status, places, org.timezone, lang, now))
    away = gifted_away(session, member, org.timezone, lang, now)
    groups["gifted"] = [g.card for g in away]
    notice = None
    if gifted:
        done = next((g for g in away if g.card.code == gifted.strip().upper()), None)
        if done is not None:
            notice = _tr(lang, "member.cp.gift.done", name=done.card.name, phone=done.phone)
    return render(
        request,
        "member/coupons.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "groups": groups,
            "notice": notice,
            "counts": _benefit_counts(session, member),
        },
    )


def _my_coupon(session: Session, member: Member, code: str) -> tuple[Coupon, CouponTemplate]:
    """The member's own coupon with this code; another member's looks exactly like a missing one."""
    coupon = coupons.coupon_by_code(session, member.org_id, code)
    if coupon.member_id != member.id:
        raise CouponNotFound()
    template = session.get(CouponTemplate, coupon.template_id)
    assert template is not None
    return coupon, template


def _coupon_page(
    request: Request,
    session: Session,
    member: Member,
    code: str,
    *,
    phone: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    org = _org_of(session, member)
    coupon, template = _my_coupon(session, member, code)
    now = utcnow()
    status = coupons.shown_status(coupon, now)
    card = coupon_card(
        coupon,
        template,
        status,
        _coupon_places([(coupon, template)], session, member.org_id),
        org.timezone,
        lang,
        now,
    )
    svg = None
    if status == coupons.Status.AVAILABLE:
        svg = segno.make(coupon.code, error="m").svg_inline(scale=6, dark="#111827", border=2, omitsize=True)
    return render(
        request,
        "member/coupon.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "c": card,
            "svg": svg,
            "refusal": gift_refusal(coupon, template, now) if status == coupons.Status.AVAILABLE else None,
            "phone": phone,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/coupons/{code}")
def member_coupon(request: Request, member: MemberDep, session: SessionDep, code: str) -> HTMLResponse:
    """One of my coupons: what it gives, where and until when, its code as a QR for the till, and the
    form to give it to another member when its template allows."""
    return _coupon_page(request, session, member, code)
