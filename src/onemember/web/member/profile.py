"""Profile (name, birthday, gender; phone masked) and marketing consents."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from onemember.common.types import Gender
from onemember.deps import SessionDep, client_ip
from onemember.members import privacy
from onemember.members import service as members
from onemember.members.models import Member
from onemember.web.member.base import Csrf, MemberDep, _error_text, _org_of, _t
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


def _profile_page(
    request: Request,
    session: Session,
    member: Member,
    *,
    saved: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "member/profile.html",
        {
            "member": member,
            "section": "me",
            "org": _org_of(session, member),
            "phone_masked": members.masked_phone(session, member.id),
            "genders": [g.value for g in Gender],
            "consents": privacy.consents_of(session, member.id),
            "saved": saved,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/profile")
def member_profile(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """Profile (name, birthday, gender; phone masked) and marketing consents."""
    saved = request.query_params.get("saved")
    message = None
    if saved == "1":
        message = _t(request, "member.profile.saved")
    elif saved == "0":
        message = _t(request, "member.profile.unchanged")
    return _profile_page(request, session, member, saved=message)


@router.post("/m/profile", dependencies=Csrf)
def member_profile_save(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
    birthday: Annotated[str, Form()] = "",
    gender: Annotated[str, Form()] = "unknown",
) -> Response:
    """Save the profile."""
    try:
        try:
            born = date.fromisoformat(birthday) if birthday.strip() else None
        except ValueError as exc:
            raise privacy.ProfileInvalid(
                "生日无效", "The birthday is not a valid date", field="birthday"
            ) from exc
        changed = privacy.update_profile(
            session, privacy.member_principal(member, client_ip(request)), member, name, born, gender
        )
    except privacy.ProfileInvalid as err:
        session.rollback()
        return _profile_page(request, session, member, error=_error_text(request, err), status_code=422)
    session.commit()
    return RedirectResponse(f"/m/profile?saved={1 if changed else 0}", status_code=303)


@router.post("/m/consents/{purpose}", dependencies=Csrf)
def member_consent(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    purpose: str,
    granted: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Turn one marketing purpose on or off (htmx swaps the row)."""
    view = privacy.set_consent(
        session,
        privacy.member_principal(member, client_ip(request)),
        member,
        purpose,
        granted in ("on", "1", "true"),
        "member_page",
    )
    session.commit()
    return render(request, "member/_consent.html", {"c": view, "org": _org_of(session, member)})
