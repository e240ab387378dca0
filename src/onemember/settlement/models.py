"""Settlement tables.

* ``settlement_entries`` are append-only (a database trigger refuses updates and deletes): one row says
  that ``debtor_key`` owes ``creditor_key`` ``amount_fen`` for one reason. A party is a store id, or
  ``0`` for the HQ pool (a plain column, so unique keys and ``GROUP BY`` treat HQ like any store).
  Reversals (a refund of redeemed points, say) are new rows with the parties swapped.
* Each entry lands in a ``period`` ('YYYY-MM'): the earliest open period at or after its
  ``business_month``. ``settlement_periods`` rows are created when first used; a missing row is an
  open period. Once HQ closes a period its entries are frozen: a database trigger refuses inserts into
  it, and the close stores each party's net so ``verify_settlement`` can prove nothing changed since.
* ``settlement_policies`` say who bears the cost of redeemed points and what a point is worth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow

HQ = 0  # the HQ pool's party key


class SettlementPolicy(Base):
    __tablename__ = "settlement_policies"
    __table_args__ = (
        UniqueConstraint("org_id", "program_id"),
        CheckConstraint("bearer IN ('hq', 'issuing_store', 'redeeming_store', 'split')", name="bearer_known"),
        CheckConstraint("issuer_pct >= 0 AND issuer_pct <= 100", name="issuer_pct_range"),
        CheckConstraint(
            "(value_fen IS NULL AND value_points IS NULL) OR (value_fen >= 0 AND value_points > 0)",
            name="value_rate_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigId, ForeignKey("points_programs.id"))
    bearer: Mapped[str] = mapped_column(String(20), default="issuing_store")
    # With ``split``: the issuing store's share in percent; the redeeming store bears the rest.
    issuer_pct: Mapped[int] = mapped_column(Integer, default=100)
    # ``value_fen`` fen per ``value_points`` points; NULL means the program's redeem rate.
    value_fen: Mapped[int | None] = mapped_column(Integer, nullable=True)
    value_points: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(120), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SettlementPeriod(Base):
    __tablename__ = "settlement_periods"
    __table_args__ = (
        UniqueConstraint("org_id", "period"),
        CheckConstraint("status IN ('open', 'closed')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    status: Mapped[str] = mapped_column(String(10), default="open")
    closed_by: Mapped[str] = mapped_column(String(120), default="")
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Frozen at close: entry count, total amount and each party's net ({"<party key>": fen}).
    entry_count: Mapped[int] = mapped_column(BigInteger, default=0)
    total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    closing_nets: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SettlementEntry(Base):
    __tablename__ = "settlement_entries"
    __table_args__ = (
        # One source (a points redemption, a coupon use, a return) settles each pair of parties once.
        UniqueConstraint("org_id", "kind", "source_ref", "debtor_key", "creditor_key"),
        CheckConstraint("amount_fen > 0", name="amount_pos"),
        CheckConstraint("debtor_key <> creditor_key", name="parties_differ"),
        CheckConstraint("debtor_key >= 0 AND creditor_key >= 0", name="party_keys_valid"),
        CheckConstraint("period >= business_month", name="period_not_before_event"),
        # A party's entries as debtor, and a pair's entries (the statement drilldown).
        Index("ix_settlement_entries_period_pair", "org_id", "period", "debtor_key", "creditor_key"),
        Index("ix_settlement_entries_period_creditor", "org_id", "period", "creditor_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    period: Mapped[str] = mapped_column(String(7))
    business_month: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(20))
    debtor_key: Mapped[int] = mapped_column(BigInteger)
    creditor_key: Mapped[int] = mapped_column(BigInteger)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True, index=True)
    return_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("order_returns.id"), nullable=True)
    point_entry_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("point_entries.id"), nullable=True, index=True
    )
    reverses_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("settlement_entries.id"), nullable=True, index=True
    )
    # What the entry comes from, unique per kind and pair: "pe:<point entry>", "ret:<return>", "coupon:<id>".
    source_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reason: Mapped[str] = mapped_column(String(300), default="")
    actor: Mapped[str] = mapped_column(String(120), default="")
    # The policy in force when the entry was made (points: bearer, issuer_pct, value rate).
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
