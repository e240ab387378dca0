"""Member profiles and the identities (phone, card, WeChat, Alipay) that resolve to them.

Identity values are stored encrypted (``value_enc``) with a keyed blind index (``value_bidx``) for
exact lookup; ``value_masked`` is what screens show.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("org_id", "member_no"), Index("ix_members_org_name", "org_id", "name"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_no: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(120), default="")
    gender: Mapped[str] = mapped_column(String(10), default="unknown")
    birthday: Mapped[date | None] = mapped_column(Date, nullable=True)
    channel: Mapped[str] = mapped_column(String(30), default="pos")
    registered_store_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("stores.id"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(12), default="active")
    merged_into_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberIdentity(Base):
    __tablename__ = "member_identities"
    __table_args__ = (UniqueConstraint("org_id", "kind", "value_bidx"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    value_enc: Mapped[bytes] = mapped_column(LargeBinary)
    value_bidx: Mapped[str] = mapped_column(String(64))
    value_masked: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberMerge(Base):
    """An audited record of one member folded into another."""

    __tablename__ = "member_merges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    survivor_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    merged_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), unique=True)
    actor: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(String(500), default="")
    moved: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
