"""Tier sets, their levels and benefits, each member's standing, and the history of changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class TierSet(Base):
    __tablename__ = "tier_sets"
    __table_args__ = (UniqueConstraint("org_id", "code"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigId, ForeignKey("points_programs.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    basis: Mapped[str] = mapped_column(String(20))  # growth | spend_12m | orders_12m
    grace_days: Mapped[int] = mapped_column(Integer, default=30)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class TierLevel(Base):
    __tablename__ = "tier_levels"
    __table_args__ = (UniqueConstraint("tier_set_id", "code"), UniqueConstraint("tier_set_id", "rank"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    tier_set_id: Mapped[int] = mapped_column(BigId, ForeignKey("tier_sets.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(60))
    rank: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[int] = mapped_column(BigInteger)
    keep_threshold: Mapped[int] = mapped_column(BigInteger)
    points_multiplier_pct: Mapped[int] = mapped_column(Integer, default=100)
    discount_pct: Mapped[int] = mapped_column(Integer, default=0)  # member price: percent off eligible lines
    birthday_gift_points: Mapped[int] = mapped_column(BigInteger, default=0)
    free_service_uses: Mapped[int] = mapped_column(Integer, default=0)


class MemberTier(Base):
    __tablename__ = "member_tiers"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    tier_set_id: Mapped[int] = mapped_column(BigId, ForeignKey("tier_sets.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    level_id: Mapped[int] = mapped_column(BigId, ForeignKey("tier_levels.id"), index=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    floor_level_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("tier_levels.id"), nullable=True)
    floor_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    tier_set_id: Mapped[int] = mapped_column(BigId, ForeignKey("tier_sets.id"))
    from_level_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("tier_levels.id"), nullable=True)
    to_level_id: Mapped[int] = mapped_column(BigId, ForeignKey("tier_levels.id"))
    reason: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(120), default="system")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberMonthlyStats(Base):
    """Spend and orders per member per local month, so rolling-12-month tier bases read 12 small rows."""

    __tablename__ = "member_monthly_stats"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), primary_key=True)
    month: Mapped[int] = mapped_column(Integer, primary_key=True)  # 202611
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    orders: Mapped[int] = mapped_column(Integer, default=0)
    spend_fen: Mapped[int] = mapped_column(BigInteger, default=0)
