"""Staff login and store terminal API keys."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from onemember.auth import service
from onemember.auth.models import ApiKey
from onemember.common import idempotency
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, client_ip, respond
from onemember.org import service as org_service

router = APIRouter(prefix="/api/v1", tags=["auth"])


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org: str | None = Field(default=None, description="Org code; may be left out when there is one org")
    username: str = Field(min_length=1, max_length=80)
    password: str = Field(min_length=1, max_length=200)


class LoginOut(BaseModel):
    token: str
    expires_at: datetime
    username: str
    role: str
    store_code: str | None


class MeOut(BaseModel):
    actor: str
    kind: str
    role: str
    store_code: str | None
    store_codes: list[str] | None


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=120)


class ApiKeyOut(BaseModel):
    prefix: str
    name: str
    store_code: str
    created_at: datetime
    revoked_at: datetime | None
    secret: str | None = Field(default=None, description="Shown once, at creation")


@router.post("/auth/login", response_model=LoginOut)
def log_in(body: LoginIn, request: Request, session: SessionDep) -> LoginOut:
    """Exchange a staff username and password for a bearer token."""
    token, record, staff = service.login(session, body.org, body.username, body.password, client_ip(request))
    store = org_service.get_store(session, staff.org_id, staff.store_id) if staff.store_id else None
    session.commit()
    return LoginOut(
        token=token,
        expires_at=record.expires_at,
        username=staff.username,
        role=staff.role,
        store_code=store.code if store else None,
    )


@router.post("/auth/logout", status_code=204)
def log_out(request: Request, session: SessionDep) -> None:
    """End the staff session of the bearer token."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        service.logout(session, header[7:].strip())
        session.commit()


@router.get("/auth/me", response_model=MeOut)
def who_am_i(principal: CurrentPrincipal, session: SessionDep) -> MeOut:
    """The caller's role and store scope."""
    from onemember.org.models import Store

    codes = dict(session.execute(select(Store.id, Store.code).where(Store.org_id == principal.org_id)).all())
    return MeOut(
        actor=principal.actor,
        kind=principal.kind,
        role=str(principal.role),
        store_code=codes.get(principal.store_id) if principal.store_id else None,
        store_codes=None if principal.store_ids is None else sorted(codes[i] for i in principal.store_ids),
    )


def _key_out(key: ApiKey, store_code: str, secret: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        prefix=key.prefix,
        name=key.name,
        store_code=store_code,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        secret=secret,
    )


@router.post("/stores/{store_code}/api-keys", status_code=201, response_model=ApiKeyOut)
def create_api_key(
    store_code: str,
    body: ApiKeyIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Create a till API key for a store; the secret is in this answer only."""

    def work() -> ApiKeyOut:
        store = org_service.store_by_code(session, principal.org_id, store_code)
        secret, key = service.create_api_key(session, principal, store, body.name)
        return _key_out(key, store.code, secret)

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "apikeys.create",
            {"store": store_code, **body.model_dump()},
            work,
            status=201,
            lang=lang,
            secret_fields=("secret",),
        )
    )


@router.get("/stores/{store_code}/api-keys", response_model=list[ApiKeyOut])
def store_api_keys(store_code: str, principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyOut]:
    """A store's API keys (never their secrets)."""
    store = org_service.store_by_code(session, principal.org_id, store_code)
    principal.require_store(store.id)
    keys = session.scalars(select(ApiKey).where(ApiKey.store_id == store.id).order_by(ApiKey.id))
    return [_key_out(k, store.code) for k in keys]


@router.post("/api-keys/{prefix}/revoke", response_model=ApiKeyOut)
def revoke_api_key(prefix: str, principal: CurrentPrincipal, session: SessionDep) -> ApiKeyOut:
    """Revoke an API key at once."""
    key = service.revoke_api_key(session, principal, prefix)
    store = org_service.get_store(session, principal.org_id, key.store_id)
    session.commit()
    return _key_out(key, store.code)
