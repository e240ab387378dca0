"""Running member statistics, updated inside the checkout and return transactions, and member tags.

Analytics read these instead of rescanning every order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class MemberStats(Base):
    __tablename__ = "member_stats"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    last_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    total_spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    return_count: Mapped[int] = mapped_column(Integer, default=0)
    returned_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    store_count: Mapped[int] = mapped_column(Integer, default=0)


class MemberStoreStats(Base):
    __tablename__ = "member_store_stats"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberCategoryStats(Base):
    __tablename__ = "member_category_stats"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    category: Mapped[str] = mapped_column(String(60), primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberTag(Base):
    __tablename__ = "member_tags"
    __table_args__ = (UniqueConstraint("member_id", "tag"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    tag: Mapped[str] = mapped_column(String(60))
    source: Mapped[str] = mapped_column(String(30), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
