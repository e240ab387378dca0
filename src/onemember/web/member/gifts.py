"""Giving a coupon to another member by phone number: check, confirm, give (``coupons.gift_coupon``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.common.crypto import mask
from onemember.common.types import IdentityKind
from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.db import utcnow
from onemember.deps import SessionDep, client_ip
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members import service as members
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.web import i18n
from onemember.web.member.base import Csrf, MemberDep, _error_text, _org_of
from onemember.web.member.coupons import _coupon_page, _my_coupon, gift_refusal
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

GIFT_UNKNOWN_PHONE_LIMIT = 5  # numbers that match no member, per member per hour


class GiftPhoneUnknown(MemberNotFound):
    """A gift to a number no member uses (counted, so the form cannot be used to probe numbers)."""


class GiftLookupsLimited(DomainError):
    status = 429
    code = "coupons.gift_lookups_limited"
    zh = "转赠时输入的手机号多次不匹配，请 1 小时后再试"
    en = "Too many numbers that match no member; try again in an hour"


def _unknown_phones_lately(session: Session, member: Member) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                AuditLog.member_id == member.id,
                AuditLog.action == "coupons.gift_phone_unknown",
                AuditLog.at >= utcnow() - timedelta(hours=1),
            )
        )
        or 0
    )


def _note_unknown_phone(request: Request, session: Session, member: Member, code: str) -> None:
    """Record (in its own transaction, after the refusal rolled back) a gift to an unknown number."""
    audit.record(
        session,
        privacy.member_principal(member, client_ip(request)),
        "coupons.gift_phone_unknown",
        target_type="coupon",
        target_id=code,
        member_id=member.id,
    )
    session.commit()


def _receiver(
    session: Session, member: Member, coupon: Coupon, template: CouponTemplate, phone: str
) -> Member:
    """The member a coupon goes to, by phone number. The coupon's own refusals come first, so that only
    a coupon that may be given leads to a look-up of the number; the answer then says no more than the
    API's ``members.not_found`` does for a member number."""
    refusal = gift_refusal(coupon, template, utcnow())
    if refusal is not None:
        raise refusal
    if _unknown_phones_lately(session, member) >= GIFT_UNKNOWN_PHONE_LIMIT:
        raise GiftLookupsLimited()
    receiver = members.find_by_identity(session, member.org_id, IdentityKind.PHONE, phone)
    if receiver is None:
        zh, en = i18n.MESSAGES["member.cp.gift.unknown"]
        raise GiftPhoneUnknown(zh, en)
    return receiver


def _gift(request: Request, session: Session, member: Member, code: str, phone: str) -> Coupon:
    coupon, template = _my_coupon(session, member, code)
    receiver = _receiver(session, member, coupon, template, phone)
    principal = privacy.member_principal(member, client_ip(request))
    return coupons.gift_coupon(session, principal, coupon.code, member, receiver)


@router.post("/m/coupons/{code}/gift", dependencies=Csrf)
def member_coupon_gift(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    phone: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Step one of a gift: check it as the service would (and roll the check back), then ask to confirm."""
    try:
        with session.begin_nested() as trial:
            _gift(request, session, member, code, phone)
            trial.rollback()
    except DomainError as err:
        session.rollback()
        if isinstance(err, GiftPhoneUnknown):
            _note_unknown_phone(request, session, member, code)
        return _coupon_page(
            request,
            session,
            member,
            code,
            phone=phone,
            error=_error_text(request, err),
            status_code=err.status,
        )
    session.rollback()
    coupon, template = _my_coupon(session, member, code)
    normalized = members.normalize_identity(IdentityKind.PHONE, phone)
    return render(
        request,
        "member/gift_confirm.html",
        {
            "member": member,
            "section": "benefits",
            "org": _org_of(session, member),
            "code": coupon.code,
            "name": template.name,
            "phone": normalized,
            "phone_masked": mask(IdentityKind.PHONE, normalized),
        },
    )


def _already_given(session: Session, member: Member, code: str, phone: str) -> bool:
    """Whether this member's latest gift of this coupon went to this phone's member, who still holds it."""
    try:
        normalized = members.normalize_identity(IdentityKind.PHONE, phone)
    except DomainError:
        return False
    details = session.scalar(
        select(AuditLog.details)
        .where(
            AuditLog.org_id == member.org_id,
            AuditLog.member_id == member.id,
            AuditLog.action == "coupons.gifted",
            AuditLog.target_id == code.strip().upper(),
        )
        .order_by(AuditLog.id.desc())
        .limit(1)
    )
    if not details:
        return False
    receiver = members.find_by_identity(session, member.org_id, IdentityKind.PHONE, normalized)
    if receiver is None or receiver.member_no != details.get("to_member_no"):
        return False
    holder = session.scalar(
        select(Coupon.member_id).where(Coupon.org_id == member.org_id, Coupon.code == code.strip().upper())
    )
    return holder == receiver.id


@router.post("/m/coupons/{code}/gift/confirm", dependencies=Csrf)
def member_coupon_gift_confirm(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    phone: Annotated[str, Form()] = "",
) -> Response:
    """Give the coupon: the same ``coupons.gift_coupon`` call as the API, with its rules and audit. A
    second tap (or a resubmitted form) after the gift went through lands on the same result."""
    if _already_given(session, member, code, phone):
        return RedirectResponse(f"/m/coupons?{urlencode({'gifted': code.strip().upper()})}", status_code=303)
    try:
        coupon = _gift(request, session, member, code, phone)
    except DomainError as err:
        session.rollback()
        if isinstance(err, GiftPhoneUnknown):
            _note_unknown_phone(request, session, member, code)
        return _coupon_page(
            request,
            session,
            member,
            code,
            phone=phone,
            error=_error_text(request, err),
            status_code=err.status,
        )
    session.commit()
    return RedirectResponse(f"/m/coupons?{urlencode({'gifted': coupon.code})}", status_code=303)
