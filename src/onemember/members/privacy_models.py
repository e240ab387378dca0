"""Tables of the member's own access to their data: one-time login codes, member sessions, marketing
consents and privacy requests (export, erasure) under PIPL.

Secrets are never stored: a login code is kept as an HMAC, a session token as a SHA-256 hash, and the
phone a code was asked for only as its blind index, so rate limits work for numbers that are not
members without keeping those numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow
from onemember.messaging.models import OutboxMessage


class MemberOtp(Base):
    """A one-time login code asked for a phone number (member or not: the answer looks the same)."""

    __tablename__ = "member_otps"
    __table_args__ = (
        Index("ix_member_otps_org_id_phone_bidx_created_at", "org_id", "phone_bidx", "created_at"),
        Index("ix_member_otps_ip_created_at", "ip", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    phone_bidx: Mapped[str] = mapped_column(String(64))
    # None when the phone is not a member's: no message is sent and no code can match.
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True, index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(OutboxMessage.id), nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberSession(Base):
    __tablename__ = "member_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberConsent(Base):
    """The member's current yes/no for one marketing purpose; every change is also audited."""

    __tablename__ = "member_consents"
    __table_args__ = (UniqueConstraint("member_id", "purpose"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    purpose: Mapped[str] = mapped_column(String(40))
    granted: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(30), default="")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PrivacyRequest(Base):
    """A member's request to export or erase their data, and when it was fulfilled."""

    __tablename__ = "privacy_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(12), default="completed")
    source: Mapped[str] = mapped_column(String(30), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
