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
    brand_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("brands.id"), nullable=True)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    # Hybrid mode: stores may add limited-time bonus rules inside HQ's caps.
    allow_store_rules: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    store_bonus_max_multiplier_pct: Mapped[int] = mapped_column(Integer, default=300, server_default="300")
    store_bonus_max_budget: Mapped[int] = mapped_column(BigInteger, default=100000, server_default="100000")
    # Points earned per whole yuan (100 fen) paid; points needed to pay one yuan.
    earn_points_per_yuan: Mapped[int] = mapped_column(Integer, default=1)
    redeem_points_per_yuan: Mapped[int] = mapped_column(Integer, default=100)
    growth_per_yuan: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Earned points wait this many days (the return window) before they can be spent.
    pending_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    expiry_policy: Mapped[str] = mapped_column(String(20), default="never", server_default="never")
    expiry_months: Mapped[int] = mapped_column(Integer, default=12, server_default="12")
    expiry_fixed_month: Mapped[int] = mapped_column(Integer, default=12, server_default="12")
    expiry_fixed_day: Mapped[int] = mapped_column(Integer, default=31, server_default="31")
    expiry_years_after: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    reminder_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    transfer_max_per_month: Mapped[int] = mapped_column(BigInteger, default=5000, server_default="5000")
    adjust_approval_threshold: Mapped[int] = mapped_column(BigInteger, default=1000, server_default="1000")
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
    # Growth value (成长值): earned with spend, never spent, drives tiers; its own append-only ledger.
    growth_value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The member's own "tell me when my balance reaches N" setting.
    reminder_threshold: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
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


class GrowthEntry(Base):
    """Append-only growth value ledger; ``sum(amount) == account.growth_value``."""

    __tablename__ = "growth_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("point_accounts.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True)
    return_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("order_returns.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EarnRule(Base):
    """One version of a typed earn rule. Editing a rule closes this version and opens the next one, so an
    order is always explained by the versions in force at its time."""

    __tablename__ = "earn_rules"
    __table_args__ = (
        UniqueConstraint("rule_key", "version"),
        CheckConstraint("multiplier_pct IS NULL OR multiplier_pct >= 100", name="multiplier_at_least_1x"),
        CheckConstraint("budget_used <= budget_points OR budget_points IS NULL", name="budget_not_exceeded"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigId, ForeignKey("points_programs.id"), index=True)
    rule_key: Mapped[str] = mapped_column(String(40), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120), default="")
    points_per_yuan: Mapped[int | None] = mapped_column(Integer, nullable=True)
    multiplier_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    category: Mapped[str | None] = mapped_column(String(60), nullable=True)
    sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tier_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    bonus_points: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    weekday: Mapped[int | None] = mapped_column(Integer, nullable=True)
    month_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    cap_points: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_points: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_used: Mapped[int] = mapped_column(BigInteger, default=0)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Reward(Base):
    """A points-mall reward: a gift (stock per store or central), a coupon, a service, or points + cash."""

    __tablename__ = "rewards"
    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        CheckConstraint("points_cost >= 0 AND cash_fen >= 0", name="costs_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigId, ForeignKey("points_programs.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(20))
    points_cost: Mapped[int] = mapped_column(BigInteger)
    cash_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stock_mode: Mapped[str] = mapped_column(String(10), default="central")  # central | store | none
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A coupon reward: the template each redemption issues (a coupon of the HQ mall).
    coupon_template_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("coupon_templates.id"), nullable=True
    )


class RewardStock(Base):
    __tablename__ = "reward_stocks"
    __table_args__ = (
        UniqueConstraint("reward_id", "store_key"),
        CheckConstraint("quantity >= 0", name="quantity_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    reward_id: Mapped[int] = mapped_column(BigId, ForeignKey("rewards.id"), index=True)
    # 0 for the central stock, else the store id (a plain column so the unique key works on every backend).
    store_key: Mapped[int] = mapped_column(BigInteger, default=0)
    quantity: Mapped[int] = mapped_column(Integer, default=0)


class RewardRedemption(Base):
    __tablename__ = "reward_redemptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    reward_id: Mapped[int] = mapped_column(BigId, ForeignKey("rewards.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    points: Mapped[int] = mapped_column(BigInteger)
    cash_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("point_entries.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fulfilled_by: Mapped[str] = mapped_column(String(120), default="")


class PointTransfer(Base):
    __tablename__ = "point_transfers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    from_member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    to_member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(300), default="")
    actor: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointAdjustment(Base):
    """A manual change by staff; one above the program's threshold waits for a second person."""

    __tablename__ = "point_adjustments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    requested_by: Mapped[str] = mapped_column(String(120))
    decided_by: Mapped[str] = mapped_column(String(120), default="")
    entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("point_entries.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
