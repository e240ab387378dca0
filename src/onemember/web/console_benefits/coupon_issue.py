"""Issuing a coupon to a member (by staff or as compensation) and giving a member's coupon to another
member, with the member's coupons on the same page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.coupons import api as coupons_api
from onemember.coupons import service as coupons
from onemember.coupons.calculations import ITEM_VOUCHERS
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service import issuance
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members.models import Member
from onemember.web.common import ConsoleUser, Csrf
from onemember.web.console_benefits.base import (
    OrgNames,
    api_answer,
    base_context,
    domain_errors,
    idem_of,
    lookup_member,
    member_context,
    member_of_query,
    org_names,
    validation_errors,
)
from onemember.web.console_org import texts
from onemember.web.forms import FormErrors, PostedForm, done, label_sep, org_tz, writable_stores, yuan_to_fen
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


# --- issuing coupons -----------------------------------------------------------------------------------


@dataclass
class HeldCoupon:
    coupon: Coupon
    template: CouponTemplate
    status: str
    issuing_store: str
    redeemed_store: str
    gifted_from: str


def held_coupons(session: Session, member: Member, names: OrgNames) -> list[HeldCoupon]:
    now = utcnow()
    rows = coupons.coupons_of(session, member)
    givers = {c.gifted_from_member_id for c, _ in rows if c.gifted_from_member_id is not None}
    numbers = (
        dict(
            session.execute(select(Member.id, Member.member_no).where(Member.id.in_(sorted(givers))))
            .tuples()
            .all()
        )
        if givers
        else {}
    )
    return [
        HeldCoupon(
            coupon=c,
            template=tpl,
            status=coupons.shown_status(c, now),
            issuing_store=names.store(c.issuing_store_id),
            redeemed_store=names.store(c.redeemed_store_id),
            gifted_from=numbers.get(c.gifted_from_member_id or 0, ""),
        )
        for c, tpl in rows
    ]


def issue_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    query: str = "",
    member: Member | None = None,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    active_form: str = "issue",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    names = org_names(session, user.org_id)
    member, lookup_error, status = member_of_query(session, user, query, member, lang, status)
    can_staff = user.role in issuance.ISSUE_ROLES
    can_compensate = user.role in issuance.COMPENSATION_ROLES
    sources = [s for s, ok in (("staff", can_staff), ("compensation", can_compensate)) if ok]
    chosen = {
        "member": member.member_no if member else query.strip(),
        "source": sources[0] if sources else "",
    }
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/issue.html",
        base_context(
            user,
            "issue",
            org_tz(session, user),
            **member_context(session, user, query, member, lookup_error, names),
            held=held_coupons(session, member, names) if member else [],
            templates=coupons.templates_of(session, user.org_id, active=True),
            stores=writable_stores(session, user),
            sources=sources,
            can_issue=bool(sources),
            can_gift=user.role in issuance.GIFT_ROLES,
            values={**chosen, **(values or {})},
            errors=errors or FormErrors(),
            active_form=active_form,
            notice=notice if notice in ("issued", "gifted") else "",
            notice_code=request.query_params.get("code", ""),
            item_vouchers=sorted(ITEM_VOUCHERS),
        ),
        status_code=status,
    )


@router.get("/console/coupons/issue")
def coupon_issue_page(
    request: Request, user: ConsoleUser, session: SessionDep, q: Annotated[str, Query(max_length=40)] = ""
) -> HTMLResponse:
    """Find a member by number or phone, see their coupons, issue one or give one to another member."""
    return issue_page(request, session, user, query=q)


ISSUE_FIELDS = ("member", "template_code", "source", "store_code", "cover", "reason")


@router.post("/console/coupons/issue", dependencies=[Csrf])
def issue_coupon(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Issue a coupon to a member through the API's endpoint: by staff at a store, or as compensation."""
    lang = request.state.lang
    t = texts(lang)
    values = {n: form.get(n) for n in ISSUE_FIELDS}
    errors = FormErrors()
    cover_fen = None
    if values["cover"]:
        cover_fen = yuan_to_fen(values["cover"])
        if cover_fen is None:
            errors.add("cover", f"{t('ben.i.cover')}{label_sep(lang)}{t('ben.bad_money')}")
    if not values["member"]:
        errors.add("member", t("ben.i.lookup_empty"))
    member: Member | None = None
    status = 422
    if not errors:
        try:
            member = lookup_member(session, user.org_id, values["member"])
            body = coupons_api.IssueIn.model_validate(
                {
                    "template_code": values["template_code"],
                    "source": values["source"] or "staff",
                    "reason": values["reason"],
                    "store_code": values["store_code"] or None,
                    "cover_fen": cover_fen,
                }
            )
            answer = api_answer(
                coupons_api.issue_member_coupon(member.member_no, body, user, session, lang, idem_of(form))
            )
            query = urlencode({"q": member.member_no, "done": "issued", "code": answer["code"]})
            return done(request, f"/console/coupons/issue?{query}")
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.i", {"cover_fen": "cover"}, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, {"cover_fen": "cover"}, errors)
            status = err.status
    return issue_page(
        request,
        session,
        user,
        query=values["member"],
        member=member,
        values=values,
        errors=errors,
        status=status,
    )


@router.post("/console/coupons/gift", dependencies=[Csrf])
def gift_coupon(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Give a member's unused coupon to another member, through the API's endpoint."""
    lang = request.state.lang
    t = texts(lang)
    member_no, code = form.get("member_no"), form.get("code")
    values = {"gift_to": form.get("to"), "gift_reason": form.get("reason")}
    errors = FormErrors()
    status = 422
    if not values["gift_to"]:
        errors.add("gift_to", t("ben.i.lookup_empty"))
    else:
        try:
            receiver = lookup_member(session, user.org_id, values["gift_to"])
            body = coupons_api.GiftIn(to_member_no=receiver.member_no, reason=values["gift_reason"])
            answer = api_answer(
                coupons_api.gift_member_coupon(member_no, code, body, user, session, lang, idem_of(form))
            )
            query = urlencode({"q": member_no, "done": "gifted", "code": answer["code"]})
            return done(request, f"/console/coupons/issue?{query}")
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.i", {"reason": "gift_reason"}, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, None, errors)
            status = err.status
    return issue_page(
        request,
        session,
        user,
        query=member_no,
        values=values,
        errors=errors,
        active_form=f"gift-{code}",
        status=status,
    )
