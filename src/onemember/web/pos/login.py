"""POS login and logout (the console's login form, with the till's heading)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from onemember.auth import service as auth_service
from onemember.deps import SessionDep
from onemember.web import i18n
from onemember.web.common import STAFF_COOKIE, Csrf
from onemember.web.console import do_login, login_page, safe_next
from onemember.web.pos.base import BASKET_COOKIE, COOKIE_PATH, STORE_COOKIE

router = APIRouter(include_in_schema=False)


@router.get("/pos/login")
def pos_login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(
        request,
        "/pos/login",
        safe_next(next, "/pos"),
        heading=i18n.translate("pos.login", request.state.lang),
    )


@router.post("/pos/login", dependencies=[Csrf])
def pos_login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/pos",
) -> Response:
    heading = i18n.translate("pos.login", request.state.lang)
    return do_login(request, session, org, username, password, safe_next(next, "/pos"), "/pos/login", heading)


@router.post("/pos/logout", dependencies=[Csrf])
def pos_logout(request: Request, session: SessionDep) -> Response:
    token = request.cookies.get(STAFF_COOKIE)
    if token:
        auth_service.logout(session, token)
        session.commit()
    response = RedirectResponse("/pos/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE)
    response.delete_cookie(BASKET_COOKIE, path=COOKIE_PATH)
    response.delete_cookie(STORE_COOKIE, path=COOKIE_PATH)
    return response
