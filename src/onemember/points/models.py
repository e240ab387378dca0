"""The points ledger.

* ``point_accounts`` hold a member's cached ``balance`` (spendable, never negative) and ``debt``
  (points taken back by a return after they were spent; later earnings repay it).
* ``point_entries`` are append-only (a database trigger refuses updates and deletes). ``amount`` is
  the change of ``balance - debt`` and ``debt_change`` the change of ``debt``, so for every account
  ``sum(entries.amount) == balance - debt`` and ``sum(entries.debt_change) == debt``; the open lots
  change by ``amount + debt_change``.
* ``point_lots`` are the earned parcels with issuing store, availability and expiry; ``remaining`` is
  what is left of each. For every account ``sum(lots.remaining) == balance``.
* ``point_lot_movements`` record each consumption (negative) and restoration (positive) of a lot by an
  entry, so ``lot.remaining == lot.amount + sum(movements)`` and every spend is traceable to the lots
  (and stores) it came from.

``onemember verify`` checks all three identities.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class PointsProgram(Base):
    __tablename__ = "points_programs"
    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        CheckConstraint("earn_points_per_yuan >= 0", name="earn_rate_nonneg"),
        CheckConstraint("redeem_points_per_yuan > 0", name="redeem_rate_pos"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    scope: Mapped[str] = mapped_column(String(10), default="org")
    is_default: Mapped[bool] = mapped_column(Boolean, default=True)
    # Points earned per whole yuan (100 fen) paid; points needed to pay one yuan.
    earn_points_per_yuan: Mapped[int] = mapped_column(Integer, default=1)
    redeem_points_per_yuan: Mapped[int] = mapped_column(Integer, default=100)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointAccount(Base):
    __tablename__ = "point_accounts"
    __table_args__ = (
        UniqueConstraint("member_id", "program_id"),
        CheckConstraint("balance >= 0", name="balance_nonneg"),
        CheckConstraint("debt >= 0", name="debt_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    program_id: Mapped[int] = mapped_column(BigId, ForeignKey("points_programs.id"))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointEntry(Base):
    __tablename__ = "point_entries"
    __table_args__ = (UniqueConstraint("account_id", "ref"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_accounts.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    debt_change: Mapped[int] = mapped_column(BigInteger, default=0)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    debt_after: Mapped[int] = mapped_column(BigInteger)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True, index=True)
    return_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("order_returns.id"), nullable=True)
    # The entry this one reverses (a return's earn reversal or refund of redeemed points).
    reverses_entry_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("point_entries.id"), nullable=True, index=True
    )
    # A unique reference for operations that must apply once (an import's opening balance, say).
    ref: Mapped[str | None] = mapped_column(String(120), nullable=True)
    reason: Mapped[str] = mapped_column(String(300), default="")
    actor: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class PointLot(Base):
    __tablename__ = "point_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        CheckConstraint("amount > 0", name="amount_pos"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_accounts.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_entries.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True, index=True)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PointLotMovement(Base):
    __tablename__ = "point_lot_movements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    lot_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_lots.id"), index=True)
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_entries.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
