"""Coupon tables.

* ``coupon_templates`` say what a coupon does (kind and amounts), where and when it is accepted, how it
  stacks, how many may be issued and how much discount it may give in total (``total_quantity`` and
  ``budget_fen``), who bears its cost (``bearer``) and what a return does to it. The counters
  ``issued_count``, ``redeemed_count`` and ``budget_used`` change only with atomic conditional
  ``UPDATE``s; CHECK constraints make the database refuse an overshoot as well.
* ``coupons`` are the instances a member holds, each with its code, issuing store, validity window,
  status and, once used, the order, store and discount.
* ``coupon_redemptions`` record each use (one per coupon and order) with what settlement needs: the
  discount, the price difference the member paid, the issuing and redeeming stores and the bearer.
  ``coupon_redemption_lines`` hold each use's exact per-line share, so a partial return takes back
  exactly its part.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class CouponTemplate(Base):
    __tablename__ = "coupon_templates"
    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        CheckConstraint(
            "total_quantity IS NULL OR issued_count <= total_quantity", name="quantity_not_exceeded"
        ),
        CheckConstraint("budget_fen IS NULL OR budget_used <= budget_fen", name="budget_not_exceeded"),
        CheckConstraint(
            "issued_count >= 0 AND redeemed_count >= 0 AND budget_used >= 0", name="counters_nonneg"
        ),
        CheckConstraint("issuer_pct >= 0 AND issuer_pct <= 100", name="issuer_pct_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    # amount_off | percent_off | fixed_price | free_item | exchange | service
    kind: Mapped[str] = mapped_column(String(20))
    threshold_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # amount_off: the Y of 满X减Y
    percent_off: Mapped[int] = mapped_column(Integer, default=0)  # percent_off: 20 = 20 % off (八折)
    cap_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # percent_off: most it takes off
    price_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # fixed_price: the unit's price
    # Item vouchers (free_item, exchange, service): the value covered when the issuer names none;
    # None covers the item's full price wherever it is redeemed.
    face_value_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pay_difference: Mapped[bool] = mapped_column(Boolean, default=True)
    skus: Mapped[list[str]] = mapped_column(JSON, default=list)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    # all | brand | region | stores | issuing_store
    accept_scope: Mapped[str] = mapped_column(String(20), default="all")
    accept_brand_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("brands.id"), nullable=True)
    accept_region_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("regions.id"), nullable=True)
    accept_store_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    cross_store: Mapped[bool] = mapped_column(Boolean, default=True)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    stack_group: Mapped[str | None] = mapped_column(String(40), nullable=True)
    combines_with_tier_discount: Mapped[bool] = mapped_column(Boolean, default=True)
    per_order_limit: Mapped[int] = mapped_column(Integer, default=1)
    per_member_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_quantity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    issued_count: Mapped[int] = mapped_column(BigInteger, default=0)
    redeemed_count: Mapped[int] = mapped_column(BigInteger, default=0)
    budget_used: Mapped[int] = mapped_column(BigInteger, default=0)
    return_policy: Mapped[str] = mapped_column(String(10), default="restore")  # restore | void
    giftable: Mapped[bool] = mapped_column(Boolean, default=False)
    bearer: Mapped[str] = mapped_column(String(20), default="hq")  # hq|issuing_store|redeeming_store|split
    issuer_pct: Mapped[int] = mapped_column(Integer, default=0)  # split: the issuing store's share
    owner_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Coupon(Base):
    __tablename__ = "coupons"
    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        UniqueConstraint("org_id", "source_ref"),
        Index("ix_coupons_member_status", "member_id", "status"),
        Index("ix_coupons_template_member", "template_id", "member_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    code: Mapped[str] = mapped_column(String(24))
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_templates.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    # The member it was first issued to (for the per-member limit); differs from member_id after a gift.
    issued_to_member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"))
    issuing_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    # Item vouchers: the value covered (the item's price at the issuing store, or the face value).
    cover_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source: Mapped[str] = mapped_column(String(20))  # staff | compensation | mall | campaign
    source_ref: Mapped[str | None] = mapped_column(String(120), nullable=True)
    reason: Mapped[str] = mapped_column(String(300), default="")
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="available")  # available|redeemed|void|expired
    issued_by: Mapped[str] = mapped_column(String(120), default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    gifted_from_member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True)
    redeemed_order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True)
    redeemed_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class CouponRedemption(Base):
    """One use of a coupon on an order; ``status`` becomes ``restored`` or ``voided`` after a full return."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (
        UniqueConstraint("coupon_id", "order_id"),
        Index("ix_coupon_redemptions_store_at", "redeeming_store_id", "redeemed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    coupon_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupons.id"), index=True)
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_templates.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    issuing_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    redeeming_store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"))
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    price_difference_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    bearer: Mapped[str] = mapped_column(String(20))
    issuer_pct: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="redeemed")  # redeemed | restored | voided
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CouponRedemptionLine(Base):
    __tablename__ = "coupon_redemption_lines"
    __table_args__ = (
        UniqueConstraint("redemption_id", "line_no"),
        CheckConstraint("returned_quantity >= 0 AND returned_quantity <= quantity", name="returned_in_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"))
    redemption_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_redemptions.id"), index=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)  # the order line's quantity
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    returned_quantity: Mapped[int] = mapped_column(Integer, default=0)
    returned_fen: Mapped[int] = mapped_column(BigInteger, default=0)
