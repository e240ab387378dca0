"""Request dependencies shared by every router: the session, the caller, the language, idempotency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from onemember.auth import service as auth_service
from onemember.auth.principal import Principal
from onemember.common.idempotency import Outcome
from onemember.errors import Unauthorized


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        # Writers commit through ``idempotency.run``; anything left uncommitted is rolled back here.
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def get_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    credential = (
        header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    )
    if not credential:
        raise Unauthorized()
    return auth_service.authenticate(session, credential, client_ip(request))


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def lang_of(request: Request) -> str:
    accept = request.headers.get("accept-language", "zh").lower()
    return "en" if accept.startswith("en") else "zh"


async def get_lang(request: Request) -> str:
    """A dependency that needs no thread: the caller's language (zh unless it asks for en)."""
    return lang_of(request)


Lang = Annotated[str, Depends(get_lang)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def respond(outcome: Outcome) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    media = "application/problem+json" if outcome.status >= 400 else "application/json"
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers, media_type=media)


def page_params(limit: int = 50, offset: int = 0) -> dict[str, Any]:
    return {"limit": max(1, min(limit, 500)), "offset": max(0, offset)}
