"""Orders, their lines and payments, and returns (which may happen at any store of the chain).

Each line keeps its share of the points payment and the points it earned, so that a partial return
can reverse exactly what that line brought.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("org_id", "order_no"),
        UniqueConstraint("org_id", "store_id", "client_order_id"),
        Index("ix_orders_store_occurred", "store_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    order_no: Mapped[str] = mapped_column(String(32))
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True, index=True)
    client_order_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="completed")
    source: Mapped[str] = mapped_column(String(12), default="pos")
    total_fen: Mapped[int] = mapped_column(BigInteger)
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_value_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    # Member price (tier discount) taken off the lines, and growth value the order earned.
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    growth_earned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    earn_explanation: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    actor: Mapped[str] = mapped_column(String(120), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        UniqueConstraint("order_id", "line_no"),
        CheckConstraint("quantity > 0", name="quantity_pos"),
        CheckConstraint("returned_quantity >= 0 AND returned_quantity <= quantity", name="returned_in_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(60), default="")
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_value_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    growth_earned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    returned_quantity: Mapped[int] = mapped_column(Integer, default=0)


class OrderPayment(Base):
    __tablename__ = "order_payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    method: Mapped[str] = mapped_column(String(30))
    amount_fen: Mapped[int] = mapped_column(BigInteger)


class OrderReturn(Base):
    __tablename__ = "order_returns"
    __table_args__ = (
        UniqueConstraint("org_id", "return_no"),
        UniqueConstraint("org_id", "store_id", "client_return_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    return_no: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True, index=True)
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"), index=True)
    original_store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"))
    client_return_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    refund_fen: Mapped[int] = mapped_column(BigInteger)
    refund_deducted_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    points_reversed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    points_shortfall: Mapped[int] = mapped_column(BigInteger, default=0)
    shortfall_policy: Mapped[str] = mapped_column(String(20), default="debt")
    reason: Mapped[str] = mapped_column(String(300), default="")
    actor: Mapped[str] = mapped_column(String(120), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReturnLine(Base):
    __tablename__ = "return_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    return_id: Mapped[int] = mapped_column(BigId, ForeignKey("order_returns.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(BigId, ForeignKey("order_lines.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    refund_fen: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    points_refunded: Mapped[int] = mapped_column(BigInteger)
