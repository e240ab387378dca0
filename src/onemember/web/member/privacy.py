"""The PIPL requests: export one's data as JSON, delete one's account."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from onemember.deps import SessionDep, client_ip
from onemember.members import privacy
from onemember.web.member.base import Csrf, MemberDep, _logged_out, _org_of, _t
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/m/privacy")
def member_privacy(
    request: Request, member: MemberDep, session: SessionDep, export: int | None = None
) -> HTMLResponse:
    """Export my data; delete my account."""
    ready = privacy.export_request(session, member, export) if export else None
    return render(
        request,
        "member/privacy.html",
        {
            "member": member,
            "section": "me",
            "org": _org_of(session, member),
            "ready": ready,
            "requests": privacy.requests_of(session, member.id),
        },
    )


@router.post("/m/privacy/export", dependencies=Csrf)
def member_privacy_export(request: Request, member: MemberDep, session: SessionDep) -> Response:
    """Record an export request and offer its download."""
    req = privacy.request_export(session, privacy.member_principal(member, client_ip(request)), member)
    session.commit()
    return RedirectResponse(f"/m/privacy?export={req.id}", status_code=303)


@router.get("/m/privacy/exports/{request_id}")
def member_privacy_download(member: MemberDep, session: SessionDep, request_id: int) -> Response:
    """The JSON file of one export request: profile, identities, orders, ledger, consents."""
    req = privacy.export_request(session, member, request_id)
    body = json.dumps(privacy.export_data(session, member, req), ensure_ascii=False, indent=2)
    return Response(
        body.encode(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="onemember-{member.member_no}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/m/privacy/erase")
def member_erase_form(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The confirm step before an account is deleted."""
    return render(
        request,
        "member/erase.html",
        {"member": member, "section": "me", "org": _org_of(session, member), "error": None},
    )


@router.post("/m/privacy/erase", dependencies=Csrf)
def member_erase(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Delete the account: the profile is anonymised, orders and the points ledger stay whole."""
    org = _org_of(session, member)
    if confirm != "yes":
        return render(
            request,
            "member/erase.html",
            {
                "member": member,
                "section": "me",
                "org": org,
                "error": _t(request, "member.privacy.delete_need_check"),
            },
            status_code=422,
        )
    privacy.erase_member(
        session,
        privacy.member_principal(member, client_ip(request)),
        member,
        reason="member asked to delete the account",
    )
    session.commit()
    return _logged_out(f"/m/login?{urlencode({'org': org.code, 'erased': '1'})}")
