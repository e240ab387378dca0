"""Member registration, lookup by any identity, dynamic member codes, identity binding and merge."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import MERGE_ROLES, Principal
from onemember.common.counters import member_no_for, next_value
from onemember.common.crypto import b32, get_cipher, mask, unb32
from onemember.common.types import IdentityKind, MemberStatus
from onemember.db import utcnow
from onemember.errors import Forbidden
from onemember.events import service as events
from onemember.members.errors import (
    IdentityTaken,
    InvalidIdentity,
    MemberCodeExpired,
    MemberCodeInvalid,
    MemberNotFound,
    MergeInvalid,
)
from onemember.members.models import Member, MemberIdentity, MemberMerge
from onemember.orders.models import Order, OrderReturn
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.models import PointAccount
from onemember.segments import stats
from onemember.segments.models import MemberTag
from onemember.settings import get_settings

_PHONE = re.compile(r"^1[3-9]\d{9}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{4,64}$")


def normalize_identity(kind: str, value: str) -> str:
    """Canonical form used for the blind index; raises ``InvalidIdentity`` with the reason."""
    raw = (value or "").strip()
    if kind == IdentityKind.PHONE:
        digits = re.sub(r"[\s\-()]", "", raw)
        if digits.startswith("+86"):
            digits = digits[3:]
        elif digits.startswith("0086"):
            digits = digits[4:]
        if not _PHONE.match(digits):
            raise InvalidIdentity(
                "手机号格式无效（需为 11 位中国大陆手机号）",
                "Not a valid mainland China mobile number (11 digits)",
                field="phone",
            )
        return digits
    if kind == IdentityKind.CARD:
        card = re.sub(r"\s", "", raw).upper()
        if not re.match(r"^[A-Z0-9\-]{4,32}$", card):
            raise InvalidIdentity("会员卡号格式无效", "Not a valid card number", field="card")
        return card
    if kind in (IdentityKind.WECHAT_OPENID, IdentityKind.WECHAT_UNIONID, IdentityKind.ALIPAY_UID):
        if not _TOKEN.match(raw):
            raise InvalidIdentity(f"{kind} 格式无效", f"Not a valid {kind}", field=kind)
        return raw
    raise InvalidIdentity(f"不支持的标识类型：{kind}", f"Unknown identifier kind: {kind}", field="kind")


def find_by_identity(session: Session, org_id: int, kind: str, value: str) -> Member | None:
    normalized = normalize_identity(kind, value)
    bidx = get_cipher().blind_index(kind, normalized)
    return session.scalar(
        select(Member)
        .join(MemberIdentity, MemberIdentity.member_id == Member.id)
        .where(
            MemberIdentity.org_id == org_id, MemberIdentity.kind == kind, MemberIdentity.value_bidx == bidx
        )
    )


def by_member_no(session: Session, org_id: int, member_no: str) -> Member:
    """The member with this number; a merged member's number resolves to the survivor."""
    member = session.scalar(select(Member).where(Member.org_id == org_id, Member.member_no == member_no))
    for _ in range(10):
        if member is None or member.merged_into_id is None:
            break
        member = session.get(Member, member.merged_into_id)
    if member is None or member.status == MemberStatus.ERASED:
        raise MemberNotFound()
    return member


def by_id(session: Session, org_id: int, member_id: int) -> Member:
    member = session.get(Member, member_id)
    if member is None or member.org_id != org_id:
        raise MemberNotFound()
    return member


@dataclass
class MemberRef:
    member_no: str | None = None
    kind: str | None = None
    value: str | None = None
    member_code: str | None = None


def resolve(session: Session, org_id: int, ref: MemberRef) -> Member:
    """One member from a member number, an identity or a dynamic member code."""
    if ref.member_code:
        return by_id(session, org_id, parse_member_code(org_id, ref.member_code))
    if ref.member_no:
        return by_member_no(session, org_id, ref.member_no)
    if ref.kind and ref.value is not None:
        member = find_by_identity(session, org_id, ref.kind, ref.value)
        if member is None:
            raise MemberNotFound()
        return member
    raise InvalidIdentity(
        "请提供会员号、会员码或标识", "Give a member number, a member code or an identifier"
    )


# --- dynamic member code ---------------------------------------------------------------------------

_CODE_PREFIX = "OM"


def _code_sig(payload: bytes) -> bytes:
    return hmac.new(get_settings().resolved_secret_key(), b"member-code" + payload, hashlib.sha256).digest()[
        :8
    ]


def issue_member_code(member: Member, now: float | None = None) -> tuple[str, datetime]:
    """A short-lived signed code the member shows as a QR; it stops working after it expires."""
    expires = int(now if now is not None else time.time()) + get_settings().member_code_ttl_seconds
    payload = struct.pack(">IQI", member.org_id, member.id, expires)
    return _CODE_PREFIX + b32(payload + _code_sig(payload)), datetime.fromtimestamp(expires, UTC)


def parse_member_code(org_id: int, code: str, now: float | None = None) -> int:
    text = code.strip().upper()
    if not text.startswith(_CODE_PREFIX):
        raise MemberCodeInvalid()
    try:
        raw = unb32(text[len(_CODE_PREFIX) :])
    except ValueError as exc:
        raise MemberCodeInvalid() from exc
    if len(raw) != 24:
        raise MemberCodeInvalid()
    payload, sig = raw[:16], raw[16:]
    if not hmac.compare_digest(sig, _code_sig(payload)):
        raise MemberCodeInvalid()
    code_org, member_id, expires = struct.unpack(">IQI", payload)
    if code_org != org_id:
        raise MemberCodeInvalid()
    if (now if now is not None else time.time()) > expires:
        raise MemberCodeExpired()
    return int(member_id)


# --- registration and identities -------------------------------------------------------------------


@dataclass
class Registration:
    phone: str
    name: str = ""
    birthday: date | None = None
    gender: str = "unknown"
    channel: str = "pos"
    identities: dict[str, str] | None = None  # kind -> value, besides the phone


def _identity_row(org_id: int, member_id: int, kind: str, normalized: str) -> MemberIdentity:
    cipher = get_cipher()
    return MemberIdentity(
        org_id=org_id,
        member_id=member_id,
        kind=kind,
        value_enc=cipher.encrypt(normalized),
        value_bidx=cipher.blind_index(kind, normalized),
        value_masked=mask(kind, normalized),
        created_at=utcnow(),
    )


def register(session: Session, principal: Principal, store_id: int | None, data: Registration) -> Member:
    wanted: dict[str, str] = {IdentityKind.PHONE: normalize_identity(IdentityKind.PHONE, data.phone)}
    for kind, value in (data.identities or {}).items():
        wanted[kind] = normalize_identity(kind, value)
    for kind, normalized in wanted.items():
        holder = find_by_identity(session, principal.org_id, kind, normalized)
        if holder is not None:
            raise IdentityTaken(
                f"该{_KIND_ZH.get(kind, kind)}已注册为会员 {holder.member_no}",
                f"That {kind} already belongs to member {holder.member_no}",
                member_no=holder.member_no,
                kind=kind,
            )
    seq = next_value(session, principal.org_id, "member_no")
    now = utcnow()
    member = Member(
        org_id=principal.org_id,
        member_no=member_no_for(seq),
        name=data.name.strip(),
        gender=data.gender,
        birthday=data.birthday,
        channel=data.channel,
        registered_store_id=store_id,
        status=MemberStatus.ACTIVE,
        created_at=now,
        updated_at=now,
    )
    session.add(member)
    session.flush()
    for kind, normalized in wanted.items():
        session.add(_identity_row(principal.org_id, member.id, kind, normalized))
    program = points.default_program(session, principal.org_id)
    points.ensure_account(session, principal.org_id, member.id, program.id)
    session.flush()
    events.emit(
        session,
        principal.org_id,
        "member.registered",
        {
            "member_no": member.member_no,
            "channel": member.channel,
            "store_code": _store_code(session, store_id),
        },
        member_id=member.id,
        store_ids=[store_id] if store_id else [],
    )
    return member


def _store_code(session: Session, store_id: int | None) -> str | None:
    store = session.get(Store, store_id) if store_id else None
    return store.code if store else None


_KIND_ZH = {
    "phone": "手机号",
    "card": "会员卡号",
    "wechat_openid": "微信 openid",
    "wechat_unionid": "微信 unionid",
    "alipay_uid": "支付宝用户号",
}


def identities_of(session: Session, member_id: int) -> list[MemberIdentity]:
    return list(
        session.scalars(
            select(MemberIdentity).where(MemberIdentity.member_id == member_id).order_by(MemberIdentity.id)
        )
    )


def masked_phone(session: Session, member_id: int) -> str:
    value = session.scalar(
        select(MemberIdentity.value_masked)
        .where(MemberIdentity.member_id == member_id, MemberIdentity.kind == IdentityKind.PHONE)
        .order_by(MemberIdentity.id)
        .limit(1)
    )
    return value or ""


def bind_identity(
    session: Session, principal: Principal, member: Member, kind: str, value: str, *, merge: bool, reason: str
) -> tuple[MemberIdentity | None, MemberMerge | None]:
    """Bind an identity; if another member holds it, that is the same person: merge on request."""
    normalized = normalize_identity(kind, value)
    holder = find_by_identity(session, principal.org_id, kind, normalized)
    if holder is not None and holder.id == member.id:
        return None, None
    if holder is not None:
        if not merge:
            raise IdentityTaken(
                f"该{_KIND_ZH.get(kind, kind)}属于会员 {holder.member_no}；确认是同一人后可合并",
                f"That {kind} belongs to member {holder.member_no}; merge them if they are one person",
                member_no=holder.member_no,
                merge_candidate=holder.member_no,
            )
        record = merge_members(session, principal, member, holder, reason or f"bind {kind}")
        return None, record
    if kind in (IdentityKind.PHONE,):
        # One phone per member: binding a new phone replaces the old one.
        session.execute(
            delete(MemberIdentity).where(MemberIdentity.member_id == member.id, MemberIdentity.kind == kind)
        )
    identity = _identity_row(principal.org_id, member.id, kind, normalized)
    session.add(identity)
    audit.record(
        session,
        principal,
        "member.identity_bound",
        target_type="member",
        target_id=member.member_no,
        member_id=member.id,
        details={"kind": kind, "masked": identity.value_masked},
    )
    session.flush()
    return identity, None


def reveal_identity(session: Session, principal: Principal, member: Member, kind: str, reason: str) -> str:
    """The full value of an identity for roles allowed to see it; every reveal is audited."""
    if not principal.can_reveal_pii:
        raise Forbidden(
            "您的角色无权查看完整个人信息", "Your role may not see full personal data", code="auth.pii_reveal"
        )
    identity = session.scalar(
        select(MemberIdentity)
        .where(MemberIdentity.member_id == member.id, MemberIdentity.kind == kind)
        .order_by(MemberIdentity.id)
        .limit(1)
    )
    if identity is None:
        raise MemberNotFound("该会员没有此类标识", "The member has no identifier of that kind")
    audit.record(
        session,
        principal,
        "member.pii_revealed",
        target_type="member",
        target_id=member.member_no,
        member_id=member.id,
        reason=reason,
        details={"kind": kind},
    )
    return get_cipher().decrypt(identity.value_enc)


# --- merge -----------------------------------------------------------------------------------------


def merge_preview(session: Session, survivor: Member, merged: Member) -> dict[str, Any]:
    """What a merge would move, for a person to confirm first."""
    _check_mergeable(survivor, merged)
    account = session.scalar(select(PointAccount).where(PointAccount.member_id == merged.id))
    return {
        "survivor_member_no": survivor.member_no,
        "merged_member_no": merged.member_no,
        "orders": session.scalar(select(func.count()).where(Order.member_id == merged.id)) or 0,
        "identities": [i.kind for i in identities_of(session, merged.id)],
        "points_balance": account.balance if account else 0,
        "points_debt": account.debt if account else 0,
        "tags": list(session.scalars(select(MemberTag.tag).where(MemberTag.member_id == merged.id))),
    }


def _check_mergeable(survivor: Member, merged: Member) -> None:
    if survivor.id == merged.id:
        raise MergeInvalid("不能与自己合并", "A member cannot be merged with itself")
    if survivor.org_id != merged.org_id:
        raise MemberNotFound()
    if survivor.status != MemberStatus.ACTIVE or merged.status != MemberStatus.ACTIVE:
        raise MergeInvalid("只能合并有效会员", "Only active members can be merged")


def merge_members(
    session: Session, principal: Principal, survivor: Member, merged: Member, reason: str
) -> MemberMerge:
    """Fold ``merged`` into ``survivor`` in one transaction: orders, returns, points, identities, tags, stats.

    The merged member number keeps resolving to the survivor. Locks both member rows, then both
    accounts, each pair in id order, and checks again under the locks (two opposite merges at once
    cannot both succeed).
    """
    principal.require_role(MERGE_ROLES, "合并会员", "merge members")
    _check_mergeable(survivor, merged)
    for member_id in sorted([survivor.id, merged.id]):
        session.scalar(
            select(Member)
            .where(Member.id == member_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    _check_mergeable(survivor, merged)
    preview = merge_preview(session, survivor, merged)
    program = points.default_program(session, principal.org_id)
    acc_s = points.ensure_account(session, principal.org_id, survivor.id, program.id)
    acc_m = points.ensure_account(session, principal.org_id, merged.id, program.id)
    first, second = sorted([acc_s.id, acc_m.id])
    locked = {first: points.lock_account(session, first), second: points.lock_account(session, second)}
    ctx = points.EntryContext(
        reason=f"会员合并 merge {merged.member_no} → {survivor.member_no}", actor=principal.actor
    )
    moved_points = points.move_account(session, locked[acc_m.id], locked[acc_s.id], ctx)
    session.execute(update(Order).where(Order.member_id == merged.id).values(member_id=survivor.id))
    session.execute(
        update(OrderReturn).where(OrderReturn.member_id == merged.id).values(member_id=survivor.id)
    )
    # Every identity moves, so each of the merged member's phones, cards and openids finds the survivor.
    session.execute(
        update(MemberIdentity).where(MemberIdentity.member_id == merged.id).values(member_id=survivor.id)
    )
    own_tags = set(session.scalars(select(MemberTag.tag).where(MemberTag.member_id == survivor.id)))
    for tag in session.scalars(select(MemberTag).where(MemberTag.member_id == merged.id)):
        if tag.tag in own_tags:
            session.delete(tag)
        else:
            tag.member_id = survivor.id
    stats.merge_into(session, survivor_id=survivor.id, merged_id=merged.id)
    from onemember.coupons.service import move_on_merge

    move_on_merge(session, merged.id, survivor.id)
    merged.status = MemberStatus.MERGED
    merged.merged_into_id = survivor.id
    merged.updated_at = survivor.updated_at = utcnow()
    record = MemberMerge(
        org_id=principal.org_id,
        survivor_id=survivor.id,
        merged_id=merged.id,
        actor=principal.actor,
        reason=reason,
        moved={**preview, "points_moved": moved_points},
        created_at=utcnow(),
    )
    session.add(record)
    audit.record(
        session,
        principal,
        "member.merged",
        target_type="member",
        target_id=survivor.member_no,
        member_id=survivor.id,
        reason=reason,
        details=record.moved,
    )
    # The survivor may now qualify for a higher tier (growth or spend of both).
    from onemember.org.service import get_org
    from onemember.tiers.service import after_activity

    after_activity(session, program, survivor, utcnow(), get_org(session, principal.org_id).timezone)
    events.emit(
        session,
        principal.org_id,
        "member.merged",
        {
            "survivor_member_no": survivor.member_no,
            "merged_member_no": merged.member_no,
            "points_moved": moved_points,
        },
        member_id=survivor.id,
    )
    session.flush()
    return record
