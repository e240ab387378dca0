"""Staff login sessions and store terminal API keys; turns a bearer credential into a ``Principal``.

Secrets are shown once and stored only as SHA-256 hashes (they are long random tokens, so a fast hash
is enough; passwords use Argon2).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.models import ApiKey, StaffSession
from onemember.auth.passwords import verify_password
from onemember.auth.principal import Principal
from onemember.common.crypto import token_hash
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.errors import Forbidden, NotFound, Unauthorized
from onemember.org.models import Org, Staff, Store
from onemember.org.service import stores_in_region
from onemember.settings import get_settings

STAFF_TOKEN_PREFIX = "oms_"
# Till keys are checked on every call; a verified key is remembered this long in the process. Revoking
# a key clears it here at once; other worker processes notice within this many seconds.
KEY_CACHE_SECONDS = 10.0
_key_cache: dict[str, tuple[Principal, float]] = {}
API_KEY_PREFIX = "omk_"


class LoginFailed(Unauthorized):
    code = "auth.login_failed"
    zh = "用户名或密码错误"
    en = "Wrong username or password"


def login(
    session: Session, org_code: str | None, username: str, password: str, ip: str = ""
) -> tuple[str, StaffSession, Staff]:
    query = select(Staff, Org).join(Org, Org.id == Staff.org_id).where(Staff.username == username)
    if org_code:
        query = query.where(Org.code == org_code)
    rows = session.execute(query).all()
    if len(rows) != 1:
        raise LoginFailed()
    staff, _org = rows[0]
    if not staff.active or not verify_password(staff.password_hash, password):
        raise LoginFailed()
    token = STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    record = StaffSession(
        org_id=staff.org_id,
        staff_id=staff.id,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + timedelta(hours=get_settings().staff_token_ttl_hours),
        ip=ip,
    )
    session.add(record)
    session.flush()
    return token, record, staff


def logout(session: Session, token: str) -> None:
    record = session.scalar(select(StaffSession).where(StaffSession.token_hash == token_hash(token)))
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()


def staff_principal(session: Session, staff: Staff, ip: str = "") -> Principal:
    role = Role(staff.role)
    store_ids: frozenset[int] | None
    if role in (Role.HQ_ADMIN, Role.CS_AGENT, Role.AUDITOR):
        store_ids = None
    elif role == Role.REGIONAL_MANAGER:
        store_ids = frozenset(stores_in_region(session, staff.region_id or 0))
    else:
        store_ids = frozenset({staff.store_id}) if staff.store_id else frozenset()
    return Principal(
        org_id=staff.org_id,
        kind="staff",
        id=staff.id,
        name=staff.username,
        role=role,
        store_id=staff.store_id,
        store_ids=store_ids,
        ip=ip,
    )


def authenticate(session: Session, credential: str, ip: str = "") -> Principal:
    now = utcnow()
    if credential.startswith(STAFF_TOKEN_PREFIX):
        record = session.scalar(select(StaffSession).where(StaffSession.token_hash == token_hash(credential)))
        if record is None or record.revoked_at is not None or record.expires_at < now:
            raise Unauthorized(
                "登录已失效，请重新登录", "The session has expired; log in again", code="auth.session_expired"
            )
        staff = session.get(Staff, record.staff_id)
        if staff is None or not staff.active:
            raise Unauthorized()
        return staff_principal(session, staff, ip)
    if credential.startswith(API_KEY_PREFIX):
        digest = token_hash(credential)
        cached = _key_cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return replace(cached[0], ip=ip)
        prefix = credential[len(API_KEY_PREFIX) : len(API_KEY_PREFIX) + 8]
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None or key.revoked_at is not None or not secrets.compare_digest(key.key_hash, digest):
            raise Unauthorized(
                "API 密钥无效或已吊销", "The API key is invalid or revoked", code="auth.invalid_api_key"
            )
        principal = Principal(
            org_id=key.org_id,
            kind="api_key",
            id=key.id,
            name=f"{prefix}",
            role=Role.CLERK,
            store_id=key.store_id,
            store_ids=frozenset({key.store_id}),
            ip=ip,
        )
        _key_cache[digest] = (principal, time.monotonic() + KEY_CACHE_SECONDS)
        return principal
    raise Unauthorized()


def create_api_key(session: Session, principal: Principal, store: Store, name: str) -> tuple[str, ApiKey]:
    """A new terminal key for ``store``; the secret is returned once and never stored."""
    if principal.role not in (Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER):
        raise Forbidden("您的角色无权创建 API 密钥", "Your role may not create API keys", code="auth.role")
    principal.require_store(store.id)
    prefix = secrets.token_hex(4)
    secret = f"{API_KEY_PREFIX}{prefix}{secrets.token_urlsafe(32)}"
    key = ApiKey(
        org_id=store.org_id,
        store_id=store.id,
        name=name,
        prefix=prefix,
        key_hash=token_hash(secret),
        created_by=principal.actor,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        principal,
        "apikey.created",
        target_type="api_key",
        target_id=prefix,
        store_id=store.id,
        details={"name": name},
    )
    return secret, key


def revoke_api_key(session: Session, principal: Principal, prefix: str) -> ApiKey:
    managers = (Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER)
    if principal.kind != "staff" or principal.role not in managers:
        raise Forbidden("您的角色无权吊销 API 密钥", "Your role may not revoke API keys", code="auth.role")
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.org_id == principal.org_id))
    if key is None:
        raise NotFound("找不到该 API 密钥", "API key not found", code="auth.api_key_not_found")
    principal.require_store(key.store_id)
    if key.revoked_at is None:
        _key_cache.clear()
        key.revoked_at = utcnow()
        audit.record(
            session,
            principal,
            "apikey.revoked",
            target_type="api_key",
            target_id=prefix,
            store_id=key.store_id,
        )
    return key
