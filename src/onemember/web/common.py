"""What every web page shares: language choice, CSRF protection, the staff session cookie."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onemember.auth import service as auth_service
from onemember.auth.principal import Principal
from onemember.deps import SessionDep, client_ip
from onemember.errors import DomainError, Forbidden, Unauthorized
from onemember.web.i18n import pick_lang

STAFF_COOKIE = "om_session"
LANG_COOKIE = "om_lang"
CSRF_COOKIE = "om_csrf"
WEB_PREFIXES = ("/console", "/pos", "/m")


class LoginRequired(Exception):
    """Raised by page dependencies; the app turns it into a redirect to the right login page."""

    def __init__(self, login_url: str) -> None:
        self.login_url = login_url


class CsrfFailed(Forbidden):
    code = "web.csrf"
    zh = "页面已过期，请刷新后重试"
    en = "The page has expired; reload it and try again"


class WebMiddleware:
    """Sets ``request.state.lang`` and ``request.state.csrf`` for pages; remembers a chosen language.

    Plain ASGI (not ``BaseHTTPMiddleware``): API calls pass straight through at no cost.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(WEB_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query_lang = request.query_params.get("lang")
        state = scope.setdefault("state", {})
        state["lang"] = pick_lang(
            query_lang, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        state["csrf"] = csrf
        cookies = Response()
        if query_lang in ("zh", "en"):
            cookies.set_cookie(LANG_COOKIE, query_lang, max_age=365 * 86400, samesite="lax")
        if CSRF_COOKIE not in request.cookies:
            cookies.set_cookie(CSRF_COOKIE, csrf, samesite="strict", httponly=False)
        extra = [(k, v) for k, v in cookies.raw_headers if k == b"set-cookie"]

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cookies)


async def check_csrf(request: Request) -> None:
    """Every state-changing page request carries the CSRF token (form field or htmx header)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get("x-csrf-token")
    if not sent:
        form = await request.form()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or not secrets.compare_digest(sent, request.cookies.get(CSRF_COOKIE, "")):
        raise CsrfFailed()


def staff_page_principal(login_url: str) -> Callable[[Request, SessionDep], Principal]:
    def dependency(request: Request, session: SessionDep) -> Principal:
        token = request.cookies.get(STAFF_COOKIE, "")
        if not token:
            raise LoginRequired(login_url)
        try:
            principal = auth_service.authenticate(session, token, client_ip(request))
        except Unauthorized as exc:
            raise LoginRequired(login_url) from exc
        session.rollback()
        return principal

    return dependency


ConsoleUser = Annotated[Principal, Depends(staff_page_principal("/console/login"))]
PosUser = Annotated[Principal, Depends(staff_page_principal("/pos/login"))]
Csrf = Depends(check_csrf)


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    if request.headers.get("hx-request"):
        response = Response(status_code=204)
        response.headers["HX-Redirect"] = exc.login_url
        return response
    return RedirectResponse(f"{exc.login_url}?next={request.url.path}", status_code=303)


def is_page_request(request: Request) -> bool:
    return request.url.path.startswith(WEB_PREFIXES)


def page_error_text(err: DomainError, lang: str) -> str:
    return err.en if lang == "en" else err.zh
