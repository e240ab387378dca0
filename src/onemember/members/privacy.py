"""The member's own access to their data: one-time-code login, member sessions, profile, marketing
consents, and the PIPL rights to export and to erase.

Login. A member asks for a code for their phone; if the phone belongs to an active member, a 6-digit
code is queued through the message outbox (``messaging``). Only an HMAC of the code is kept, it lives
five minutes and allows five wrong tries. Codes are rate-limited per phone (one per minute, five per
hour) and per client address. A phone that is no member's gets exactly the same answer and the same
limits (a row without a message and without a matchable code), so the login form tells no one who is
a member. A right code opens a member session: a random token in an httponly cookie, stored hashed.

Erasure anonymises the profile (name, birthday, gender, identities, consents, sessions, login codes
and message recipients) and keeps orders and the points ledger whole, so the chain's books and
``verify`` still add up; the member number then answers "not found" and the old phone finds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.auth.principal import Principal
from onemember.common.crypto import get_cipher, token_hash
from onemember.common.types import Gender, IdentityKind, MemberStatus, Role
from onemember.common.upsert import upsert
from onemember.db import is_postgres, utcnow
from onemember.errors import DomainError, Invalid, Unauthorized
from onemember.events import service as events
from onemember.members import service as members
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member, MemberIdentity
from onemember.members.privacy_models import MemberConsent, MemberOtp, MemberSession, PrivacyRequest
from onemember.messaging import service as messaging
from onemember.orders.models import Order, OrderLine
from onemember.org.models import Org, Store
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.settings import get_settings

OTP_TTL = timedelta(minutes=5)
OTP_MAX_ATTEMPTS = 5
OTP_RESEND_SECONDS = 60
OTP_PER_PHONE_PER_HOUR = 5
# A shop's Wi-Fi puts many members behind one address, so this is generous; it stops scripted sweeps.
OTP_PER_IP_PER_HOUR = 30
MEMBER_SESSION_TTL = timedelta(days=7)
MEMBER_TOKEN_PREFIX = "omm_"
EXPORT_LINK_TTL = timedelta(hours=24)


class Purpose(StrEnum):
    MARKETING_SMS = "marketing_sms"
    MARKETING_WECHAT = "marketing_wechat"
    MARKETING_EMAIL = "marketing_email"
    PERSONALISED_RECOMMENDATIONS = "personalised_recommendations"


class PrivacyRequestKind(StrEnum):
    EXPORT = "export"
    ERASURE = "erasure"


# --- errors ----------------------------------------------------------------------------------------


class LoginRateLimited(DomainError):
    status = 429
    code = "members.login_rate_limited"
    zh = "获取验证码过于频繁，请稍后再试"
    en = "Too many code requests; try again later"


class LoginCodeWrong(DomainError):
    status = 422
    code = "members.login_code_wrong"
    zh = "验证码错误"
    en = "The code is not correct"


class LoginCodeExpired(DomainError):
    status = 422
    code = "members.login_code_expired"
    zh = "验证码已失效，请重新获取"
    en = "The code has expired; ask for a new one"


class LoginCodeLocked(DomainError):
    status = 429
    code = "members.login_code_locked"
    zh = "验证码错误次数过多，已失效，请重新获取"
    en = "Too many wrong tries; the code no longer works, ask for a new one"


class MemberSessionExpired(Unauthorized):
    code = "members.session_expired"
    zh = "登录已失效，请重新登录"
    en = "You have been logged out; log in again"


class ProfileInvalid(Invalid):
    code = "members.profile_invalid"


class ExportExpired(DomainError):
    status = 410
    code = "members.export_expired"
    zh = "下载链接已失效，请重新申请导出"
    en = "The download link has expired; request a new export"


def _wait_text(seconds: int) -> tuple[str, str]:
    if seconds >= 90:
        minutes = (seconds + 59) // 60
        return f"{minutes} 分钟", f"{minutes} min"
    return f"{seconds} 秒", f"{seconds} s"


def _rate_limited(seconds: int, why_zh: str, why_en: str) -> LoginRateLimited:
    zh, en = _wait_text(max(1, seconds))
    return LoginRateLimited(
        f"{why_zh}，请 {zh}后再试", f"{why_en}; try again in {en}", retry_after=max(1, seconds)
    )


# --- the member as an actor ------------------------------------------------------------------------


def member_principal(member: Member, ip: str = "") -> Principal:
    """The member acting on their own data; allowed no store, so no staff operation accepts it."""
    return Principal(
        org_id=member.org_id,
        kind="member",
        id=member.id,
        name=member.member_no,
        role=Role.MEMBER,
        store_ids=frozenset(),
        ip=ip,
    )


def _audit(
    session: Session,
    principal: Principal,
    action: str,
    member: Member,
    *,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditLog:
    entry = audit.record(
        session,
        principal,
        action,
        target_type="member",
        target_id=member.member_no,
        member_id=member.id,
        reason=reason,
        details=details,
    )
    if principal.kind == "member":
        entry.actor_role = "member"
    return entry


# --- login codes -----------------------------------------------------------------------------------


def _phone_key(phone: str) -> tuple[str, str]:
    normalized = members.normalize_identity(IdentityKind.PHONE, phone)
    return normalized, get_cipher().blind_index(IdentityKind.PHONE, normalized)


def _code_hash(phone_bidx: str, code: str) -> str:
    key = get_settings().resolved_secret_key()
    return hmac.new(key, f"member-otp:{phone_bidx}:{code}".encode(), hashlib.sha256).hexdigest()


def _serialise_phone(session: Session, phone_bidx: str) -> None:
    """Two requests for one phone at the same moment must not both pass the limit (SQLite already
    serialises writers)."""
    if is_postgres(session):
        session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": int(phone_bidx[:15], 16)},
        )


@dataclass
class CodeRequest:
    phone_masked: str
    expires_at: datetime
    otp_id: int


def request_login_code(
    session: Session, org_id: int, phone: str, ip: str = "", *, now: datetime | None = None
) -> CodeRequest:
    """Queue a login code to the phone if it is an active member's; answers alike either way."""
    now = now or utcnow()
    normalized, bidx = _phone_key(phone)
    _serialise_phone(session, bidx)
    hour_ago = now - timedelta(hours=1)
    recent = session.execute(
        select(func.count(), func.min(MemberOtp.created_at), func.max(MemberOtp.created_at)).where(
            MemberOtp.org_id == org_id, MemberOtp.phone_bidx == bidx, MemberOtp.created_at > hour_ago
        )
    ).one()
    count, oldest, newest = int(recent[0]), recent[1], recent[2]
    if newest is not None and (now - newest).total_seconds() < OTP_RESEND_SECONDS:
        wait = OTP_RESEND_SECONDS - int((now - newest).total_seconds())
        raise _rate_limited(wait, "验证码已发送", "A code was just sent")
    if count >= OTP_PER_PHONE_PER_HOUR and oldest is not None:
        wait = int((oldest + timedelta(hours=1) - now).total_seconds()) + 1
        raise _rate_limited(wait, "该手机号获取验证码次数过多", "Too many codes for this number")
    if ip:
        by_ip = session.scalar(
            select(func.count()).where(MemberOtp.ip == ip, MemberOtp.created_at > hour_ago)
        )
        if int(by_ip or 0) >= OTP_PER_IP_PER_HOUR:
            raise _rate_limited(
                3600, "当前网络请求验证码过于频繁", "Too many code requests from this network"
            )
    member = members.find_by_identity(session, org_id, IdentityKind.PHONE, normalized)
    otp = MemberOtp(
        org_id=org_id,
        phone_bidx=bidx,
        member_id=None,
        code_hash=secrets.token_hex(32),  # matches no code
        ip=ip[:64],
        attempts=0,
        created_at=now,
        expires_at=now + OTP_TTL,
    )
    if member is not None and member.status == MemberStatus.ACTIVE:
        code = f"{secrets.randbelow(10**6):06d}"
        message = messaging.queue_message(
            session,
            org_id,
            normalized,
            "member.login_code",
            {"code": code, "minutes": int(OTP_TTL.total_seconds() // 60)},
            member_id=member.id,
            now=now,
        )
        otp.member_id, otp.code_hash, otp.message_id = member.id, _code_hash(bidx, code), message.id
    session.add(otp)
    session.flush()
    return CodeRequest(f"{normalized[:3]}****{normalized[7:]}", otp.expires_at, otp.id)


@dataclass
class MemberLogin:
    token: str
    record: MemberSession
    member: Member


def verify_login_code(
    session: Session, org_id: int, phone: str, code: str, ip: str = "", *, now: datetime | None = None
) -> MemberLogin:
    """Check the newest code for the phone and open a member session.

    A wrong code counts a try before ``LoginCodeWrong`` is raised: the caller commits on that error
    too, or the limit of five tries would not hold.
    """
    now = now or utcnow()
    _, bidx = _phone_key(phone)
    otp = session.scalar(
        select(MemberOtp)
        .where(MemberOtp.org_id == org_id, MemberOtp.phone_bidx == bidx)
        .order_by(MemberOtp.created_at.desc(), MemberOtp.id.desc())
        .limit(1)
        .with_for_update()
    )
    if otp is None or otp.consumed_at is not None or otp.expires_at <= now:
        raise LoginCodeExpired()
    if otp.attempts >= OTP_MAX_ATTEMPTS:
        raise LoginCodeLocked()
    cleaned = "".join(ch for ch in code if ch.isdigit())
    if otp.member_id is None or not hmac.compare_digest(otp.code_hash, _code_hash(bidx, cleaned)):
        tries = session.execute(
            update(MemberOtp)
            .where(MemberOtp.id == otp.id)
            .values(attempts=MemberOtp.attempts + 1)
            .returning(MemberOtp.attempts)
        ).scalar_one()
        left = OTP_MAX_ATTEMPTS - int(tries)
        if left <= 0:
            raise LoginCodeLocked()
        raise LoginCodeWrong(
            f"验证码错误，还可尝试 {left} 次", f"The code is not correct; {left} tries left", tries_left=left
        )
    member = session.get(Member, otp.member_id)
    if member is None or member.status != MemberStatus.ACTIVE:
        raise LoginCodeExpired()
    otp.consumed_at = now
    token = MEMBER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = MemberSession(
        org_id=org_id,
        member_id=member.id,
        token_hash=token_hash(token),
        ip=ip[:64],
        created_at=now,
        expires_at=now + MEMBER_SESSION_TTL,
    )
    session.add(record)
    session.flush()
    return MemberLogin(token, record, member)


def authenticate_member(session: Session, token: str, *, now: datetime | None = None) -> Member:
    """The member behind a session cookie; raises ``MemberSessionExpired``."""
    now = now or utcnow()
    if not token.startswith(MEMBER_TOKEN_PREFIX):
        raise MemberSessionExpired()
    record = session.scalar(select(MemberSession).where(MemberSession.token_hash == token_hash(token)))
    if record is None or record.revoked_at is not None or record.expires_at <= now:
        raise MemberSessionExpired()
    member = session.get(Member, record.member_id)
    if member is None or member.status != MemberStatus.ACTIVE:
        raise MemberSessionExpired()
    return member


def logout_member(session: Session, token: str) -> None:
    session.execute(
        update(MemberSession)
        .where(MemberSession.token_hash == token_hash(token), MemberSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# --- profile ---------------------------------------------------------------------------------------


def _today(session: Session, org_id: int) -> date:
    org = session.get(Org, org_id)
    return datetime.now(ZoneInfo(org.timezone if org else get_settings().default_timezone)).date()


def update_profile(
    session: Session, principal: Principal, member: Member, name: str, birthday: date | None, gender: str
) -> list[str]:
    """Change name, birthday and gender; returns the fields that changed (audited by name only)."""
    name = " ".join(name.split())
    if len(name) > 60:
        raise ProfileInvalid(
            "姓名不能超过 60 个字符", "The name may have at most 60 characters", field="name"
        )
    if gender not in {g.value for g in Gender}:
        raise ProfileInvalid("性别无效", "Unknown gender", field="gender")
    if birthday is not None and not (date(1900, 1, 1) <= birthday <= _today(session, member.org_id)):
        raise ProfileInvalid("生日无效", "The birthday is not a valid date", field="birthday")
    changed = [
        field
        for field, old, new in (
            ("name", member.name, name),
            ("birthday", member.birthday, birthday),
            ("gender", member.gender, gender),
        )
        if old != new
    ]
    if changed:
        member.name, member.birthday, member.gender = name, birthday, gender
        member.updated_at = utcnow()
        _audit(session, principal, "member.profile_updated", member, details={"fields": changed})
        session.flush()
    return changed


# --- consents --------------------------------------------------------------------------------------


@dataclass
class ConsentView:
    purpose: str
    granted: bool
    source: str
    changed_at: datetime | None


def consents_of(session: Session, member_id: int) -> list[ConsentView]:
    """Every purpose, off unless the member said yes (PIPL: consent is opt-in)."""
    rows = {
        c.purpose: c
        for c in session.scalars(select(MemberConsent).where(MemberConsent.member_id == member_id))
    }
    views = []
    for purpose in Purpose:
        row = rows.get(purpose.value)
        views.append(
            ConsentView(purpose.value, row.granted, row.source, row.changed_at)
            if row
            else ConsentView(purpose.value, False, "", None)
        )
    return views


def set_consent(
    session: Session, principal: Principal, member: Member, purpose: str, granted: bool, source: str
) -> ConsentView:
    """Turn one purpose on or off; a real change is stored with its source and time, and audited."""
    try:
        wanted = Purpose(purpose)
    except ValueError as exc:
        raise Invalid(
            "未知的授权用途", "Unknown consent purpose", code="members.consent_purpose", field="purpose"
        ) from exc
    current = session.scalar(
        select(MemberConsent).where(
            MemberConsent.member_id == member.id, MemberConsent.purpose == wanted.value
        )
    )
    if current is not None and current.granted == granted:
        return ConsentView(current.purpose, current.granted, current.source, current.changed_at)
    now = utcnow()
    upsert(
        session,
        MemberConsent.__table__,  # type: ignore[arg-type]
        {
            "org_id": member.org_id,
            "member_id": member.id,
            "purpose": wanted.value,
            "granted": granted,
            "source": source,
            "changed_at": now,
        },
        ["member_id", "purpose"],
        {"granted": granted, "source": source, "changed_at": now},
    )
    _audit(
        session,
        principal,
        "member.consent_changed",
        member,
        details={"purpose": wanted.value, "granted": granted, "source": source},
    )
    session.flush()
    return ConsentView(wanted.value, granted, source, now)


# --- export ----------------------------------------------------------------------------------------


def request_export(
    session: Session, principal: Principal, member: Member, source: str = "member_page"
) -> PrivacyRequest:
    """Record the member's request for a copy of their data; the download is built on demand."""
    now = utcnow()
    req = PrivacyRequest(
        org_id=member.org_id,
        member_id=member.id,
        kind=PrivacyRequestKind.EXPORT.value,
        status="completed",
        source=source,
        ip=principal.ip[:64],
        requested_at=now,
        completed_at=now,
        details={},
    )
    session.add(req)
    session.flush()
    _audit(session, principal, "member.data_exported", member, details={"request_id": req.id})
    return req


def requests_of(session: Session, member_id: int, limit: int = 20) -> list[PrivacyRequest]:
    """The member's own privacy requests, newest first."""
    return list(
        session.scalars(
            select(PrivacyRequest)
            .where(PrivacyRequest.member_id == member_id)
            .order_by(PrivacyRequest.id.desc())
            .limit(limit)
        )
    )


def export_request(session: Session, member: Member, request_id: int) -> PrivacyRequest:
    """The member's own export request, while its download link is valid."""
    req = session.get(PrivacyRequest, request_id)
    if req is None or req.member_id != member.id or req.kind != PrivacyRequestKind.EXPORT:
        raise MemberNotFound("找不到该导出申请", "No such export request", code="members.export_not_found")
    if req.requested_at + EXPORT_LINK_TTL < utcnow():
        raise ExportExpired()
    return req


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_data(session: Session, member: Member, req: PrivacyRequest) -> dict[str, Any]:
    """Everything the chain holds about the member, identities decrypted: it is their own data."""
    cipher = get_cipher()
    stores = {s.id: s for s in session.scalars(select(Store).where(Store.org_id == member.org_id))}

    def store_code(store_id: int | None) -> str | None:
        return stores[store_id].code if store_id in stores else None

    orders = list(
        session.scalars(
            select(Order).where(Order.member_id == member.id).order_by(Order.occurred_at, Order.id)
        )
    )
    lines: dict[int, list[OrderLine]] = {}
    if orders:
        for line in session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id.in_([o.id for o in orders]))
            .order_by(OrderLine.order_id, OrderLine.line_no)
        ):
            lines.setdefault(line.order_id, []).append(line)
    order_nos = {o.id: o.order_no for o in orders}
    account = session.scalar(select(PointAccount).where(PointAccount.member_id == member.id))
    entries = list(
        session.scalars(select(PointEntry).where(PointEntry.member_id == member.id).order_by(PointEntry.id))
    )
    lots = list(
        session.scalars(
            select(PointLot)
            .where(PointLot.member_id == member.id, PointLot.remaining > 0)
            .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id)
        )
    )
    registered = stores.get(member.registered_store_id or 0)
    return {
        "format": "onemember.member-export/1",
        "request_id": req.id,
        "exported_at": utcnow().isoformat(),
        "member": {
            "member_no": member.member_no,
            "name": member.name,
            "gender": member.gender,
            "birthday": _iso(member.birthday),
            "status": member.status,
            "channel": member.channel,
            "registered_store": {"code": registered.code, "name": registered.name} if registered else None,
            "created_at": _iso(member.created_at),
        },
        "identities": [
            {"kind": i.kind, "value": cipher.decrypt(i.value_enc), "created_at": _iso(i.created_at)}
            for i in members.identities_of(session, member.id)
        ],
        "orders": [
            {
                "order_no": o.order_no,
                "store_code": store_code(o.store_id),
                "store_name": stores[o.store_id].name if o.store_id in stores else None,
                "occurred_at": _iso(o.occurred_at),
                "status": o.status,
                "total_fen": o.total_fen,
                "paid_fen": o.paid_fen,
                "points_redeemed": o.points_redeemed,
                "points_earned": o.points_earned,
                "refunded_fen": o.refunded_fen,
                "lines": [
                    {
                        "sku": li.sku,
                        "name": li.name,
                        "category": li.category,
                        "quantity": li.quantity,
                        "unit_price_fen": li.unit_price_fen,
                        "amount_fen": li.amount_fen,
                        "returned_quantity": li.returned_quantity,
                    }
                    for li in lines.get(o.id, [])
                ],
            }
            for o in orders
        ],
        "points": {
            "balance": account.balance if account else 0,
            "debt": account.debt if account else 0,
            "lifetime_earned": account.lifetime_earned if account else 0,
            "lifetime_redeemed": account.lifetime_redeemed if account else 0,
            "ledger": [
                {
                    "kind": e.kind,
                    "amount": e.amount,
                    "debt_change": e.debt_change,
                    "balance_after": e.balance_after,
                    "debt_after": e.debt_after,
                    "store_code": store_code(e.store_id),
                    "order_no": order_nos.get(e.order_id or 0),
                    "reason": e.reason,
                    "created_at": _iso(e.created_at),
                }
                for e in entries
            ],
            "open_lots": [
                {
                    "remaining": lot.remaining,
                    "store_code": store_code(lot.store_id),
                    "earned_at": _iso(lot.earned_at),
                    "expires_at": _iso(lot.expires_at),
                }
                for lot in lots
            ],
        },
        "consents": [
            {
                "purpose": c.purpose,
                "granted": c.granted,
                "source": c.source,
                "changed_at": _iso(c.changed_at),
            }
            for c in consents_of(session, member.id)
        ],
        "privacy_requests": [
            {"kind": r.kind, "status": r.status, "requested_at": _iso(r.requested_at)}
            for r in session.scalars(
                select(PrivacyRequest)
                .where(PrivacyRequest.member_id == member.id)
                .order_by(PrivacyRequest.id)
            )
        ],
    }


# --- erasure ---------------------------------------------------------------------------------------


def erase_member(
    session: Session, principal: Principal, member: Member, *, reason: str = "", source: str = "member_page"
) -> PrivacyRequest:
    """Anonymise the member (PIPL right to erasure); orders and the points ledger stay whole."""
    locked = session.scalar(
        select(Member)
        .where(Member.id == member.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if locked is None or locked.org_id != principal.org_id or locked.status != MemberStatus.ACTIVE:
        raise MemberNotFound()
    now = utcnow()
    identity_kinds = sorted(
        set(session.scalars(select(MemberIdentity.kind).where(MemberIdentity.member_id == locked.id)))
    )
    session.execute(delete(MemberIdentity).where(MemberIdentity.member_id == locked.id))
    session.execute(
        update(MemberSession)
        .where(MemberSession.member_id == locked.id, MemberSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.execute(delete(MemberOtp).where(MemberOtp.member_id == locked.id))
    session.execute(
        update(MemberConsent)
        .where(MemberConsent.member_id == locked.id, MemberConsent.granted.is_(True))
        .values(granted=False, source="erasure", changed_at=now)
    )
    messages = messaging.forget_member(session, locked.id)
    locked.name = ""
    locked.birthday = None
    locked.gender = Gender.UNKNOWN.value
    locked.status = MemberStatus.ERASED.value
    locked.erased_at = now
    locked.updated_at = now
    req = PrivacyRequest(
        org_id=locked.org_id,
        member_id=locked.id,
        kind=PrivacyRequestKind.ERASURE.value,
        status="completed",
        source=source,
        ip=principal.ip[:64],
        requested_at=now,
        completed_at=now,
        details={"identities_removed": identity_kinds, "messages_scrubbed": messages},
    )
    session.add(req)
    session.flush()
    _audit(
        session,
        principal,
        "member.erased",
        locked,
        reason=reason,
        details={"request_id": req.id, "identities_removed": identity_kinds},
    )
    events.emit(session, locked.org_id, "member.erased", {"member_no": locked.member_no}, member_id=locked.id)
    session.flush()
    return req
