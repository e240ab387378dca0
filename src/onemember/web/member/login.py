"""Log in with phone and a one-time code sent by text message, and log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from onemember.deps import SessionDep, client_ip
from onemember.members import privacy
from onemember.members.errors import InvalidIdentity
from onemember.messaging import service as messaging
from onemember.messaging.channels import Channel, default_sms_channel
from onemember.org.models import Org
from onemember.web.member.base import MEMBER_COOKIE, ORG_COOKIE, Csrf, _error_text, _logged_out, _t
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


def _sms_channel(request: Request) -> Channel:
    """A real vendor adapter is set on ``app.state.sms_channel``; the logging channel otherwise."""
    channel = getattr(request.app.state, "sms_channel", None)
    return channel if channel is not None else default_sms_channel()


def _login_org(session: Session, request: Request, code: str | None) -> Org | None:
    """The brand a member logs in to: named in the link, remembered, or the only one there is."""
    for candidate in (code, request.cookies.get(ORG_COOKIE)):
        if candidate:
            org = session.scalar(select(Org).where(Org.code == candidate.strip()))
            if org is not None:
                return org
    orgs = list(session.scalars(select(Org).order_by(Org.id).limit(2)))
    return orgs[0] if len(orgs) == 1 else None


def safe_next(target: str | None) -> str:
    """Only a member page may be the target after login."""
    if target and (target == "/m" or target.startswith("/m/")) and "//" not in target:
        return target
    return "/m"


def _login_page(
    request: Request,
    *,
    org: Org | None,
    step: str = "phone",
    phone: str = "",
    error: str | None = None,
    notice: str | None = None,
    next_url: str = "/m",
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "member/login.html",
        {
            "org": org,
            "step": step,
            "phone": phone,
            "error": error,
            "notice": notice,
            "next": safe_next(next_url),
            "org_code": request.query_params.get("org", "") if org is None else org.code,
        },
        status_code=status_code,
    )


@router.get("/m/login")
def member_login_form(
    request: Request, session: SessionDep, org: str | None = None, next: str | None = None
) -> Response:
    """Step one of the login: the phone number."""
    token = request.cookies.get(MEMBER_COOKIE)
    if token:
        try:
            privacy.authenticate_member(session, token)
            return RedirectResponse("/m", status_code=303)
        except privacy.MemberSessionExpired:
            pass
    notice = None
    if request.query_params.get("erased"):
        notice = _t(request, "member.login.erased")
    elif request.query_params.get("bye"):
        notice = _t(request, "member.login.logged_out")
    return _login_page(request, org=_login_org(session, request, org), notice=notice, next_url=next or "/m")


@router.post("/m/login/code", dependencies=Csrf)
def member_login_code(
    request: Request,
    session: SessionDep,
    phone: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/m",
    step: Annotated[str, Form()] = "phone",
) -> Response:
    """Send a login code (the same answer whether or not the phone is a member's)."""
    chosen = _login_org(session, request, org)
    if chosen is None:
        return _login_page(
            request,
            org=None,
            phone=phone,
            error=_t(request, "member.login.org_unknown"),
            next_url=next,
            status_code=422,
        )
    try:
        sent = privacy.request_login_code(session, chosen.id, phone, client_ip(request))
    except (privacy.LoginRateLimited, InvalidIdentity) as err:
        session.rollback()
        # "Send again" that comes too soon keeps the member on the code form, where the last code works.
        resend = step == "code" and isinstance(err, privacy.LoginRateLimited)
        return _login_page(
            request,
            org=chosen,
            step="code" if resend else "phone",
            phone=phone,
            error=_error_text(request, err),
            next_url=next,
            status_code=err.status,
        )
    session.commit()
    response = _login_page(
        request,
        org=chosen,
        step="code",
        phone=phone,
        notice=_t(request, "member.login.sent", phone=sent.phone_masked),
        next_url=next,
    )
    # Sent after the answer, so that how long the answer takes does not tell whether a member was found.
    response.background = BackgroundTask(
        messaging.deliver_pending, request.app.state.sessionmaker, _sms_channel(request)
    )
    return response


@router.post("/m/login/verify", dependencies=Csrf)
def member_login_verify(
    request: Request,
    session: SessionDep,
    phone: Annotated[str, Form()],
    code: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/m",
) -> Response:
    """Check the code and open a member session."""
    chosen = _login_org(session, request, org)
    if chosen is None:
        return _login_page(
            request,
            org=None,
            phone=phone,
            error=_t(request, "member.login.org_unknown"),
            next_url=next,
            status_code=422,
        )
    try:
        login = privacy.verify_login_code(session, chosen.id, phone, code, client_ip(request))
    except (
        privacy.LoginCodeWrong,
        privacy.LoginCodeLocked,
        privacy.LoginCodeExpired,
        InvalidIdentity,
    ) as err:
        if isinstance(err, privacy.LoginCodeWrong | privacy.LoginCodeLocked):
            session.commit()  # the wrong try must count
        else:
            session.rollback()
        return _login_page(
            request,
            org=chosen,
            step="code",
            phone=phone,
            error=_error_text(request, err),
            next_url=next,
            status_code=422,
        )
    session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        MEMBER_COOKIE, login.token, httponly=True, samesite="lax", expires=login.record.expires_at, path="/m"
    )
    response.set_cookie(ORG_COOKIE, chosen.code, max_age=365 * 86400, samesite="lax", path="/m")
    return response


@router.post("/m/logout", dependencies=Csrf)
def member_logout(request: Request, session: SessionDep) -> Response:
    """End the member session."""
    token = request.cookies.get(MEMBER_COOKIE)
    if token:
        privacy.logout_member(session, token)
        session.commit()
    return _logged_out("/m/login?bye=1")
