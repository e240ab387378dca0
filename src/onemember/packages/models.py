"""Service packages (次卡 / 服务权益).

* ``service_packages`` are the templates HQ offers: a service (``service_code``), a number of uses, a
  validity, a price, a refund rule, the stores that perform the service (all, a brand, a region or a
  list in ``service_package_stores``) and who bears the cost of a use at another store
  (``bearer``, ``issuer_pct``; the vocabulary of ``settlement``).
* ``member_packages`` are the packages a member holds: sold at a store (``price_fen`` paid) or granted
  free (``source``: compensation, tier benefit, ...). ``uses_left`` only ever changes with an atomic
  conditional ``UPDATE`` and a CHECK keeps it between 0 and ``uses_total``.
* ``package_uses`` record each use: where, by whom, how many uses and their value in fen. Use values
  split ``value_fen`` over ``uses_total`` by largest remainder (the first ``value_fen % uses_total``
  uses are worth one fen more), so the uses of a package add up to exactly its value, and a pro-rata
  refund of the unused uses is exactly what the used ones did not consume.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class ServicePackage(Base):
    """A package template: N uses of one service, sold for a price, valid for some days."""

    __tablename__ = "service_packages"
    __table_args__ = (
        UniqueConstraint("org_id", "code"),
        CheckConstraint("uses > 0", name="uses_pos"),
        CheckConstraint("price_fen >= 0", name="price_nonneg"),
        CheckConstraint("validity_days IS NULL OR validity_days > 0", name="validity_pos"),
        CheckConstraint("issuer_pct >= 0 AND issuer_pct <= 100", name="issuer_pct_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    service_code: Mapped[str] = mapped_column(String(40))
    uses: Mapped[int] = mapped_column(Integer)
    validity_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: never expires
    price_fen: Mapped[int] = mapped_column(BigInteger)
    refund_rule: Mapped[str] = mapped_column(String(20))  # none | unused_pro_rata | full_if_unused
    store_scope: Mapped[str] = mapped_column(String(10))  # all | brand | region | stores
    scope_brand_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("brands.id"), nullable=True)
    scope_region_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("regions.id"), nullable=True)
    # Who repays the store that performs a use at another store, in settlement's terms: issuing_store
    # (the selling store; HQ for a package HQ granted), hq (the HQ pool), redeeming_store (no one) or
    # split (the selling store repays issuer_pct percent, the performing store bears the rest).
    bearer: Mapped[str] = mapped_column(String(20), default="issuing_store")
    issuer_pct: Mapped[int] = mapped_column(Integer, default=100)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServicePackageStore(Base):
    """A store on a template's list (``store_scope`` = ``stores``)."""

    __tablename__ = "service_package_stores"
    __table_args__ = (UniqueConstraint("package_id", "store_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    package_id: Mapped[int] = mapped_column(BigId, ForeignKey("service_packages.id"), index=True)
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"))


class MemberPackage(Base):
    """A package a member holds: sold at a store or granted, with the uses left and an expiry."""

    __tablename__ = "member_packages"
    __table_args__ = (
        CheckConstraint("uses_left >= 0 AND uses_left <= uses_total", name="uses_left_range"),
        CheckConstraint("price_fen >= 0 AND value_fen >= 0 AND refunded_fen >= 0", name="money_nonneg"),
        CheckConstraint("refunded_fen <= price_fen", name="refund_within_price"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    package_id: Mapped[int] = mapped_column(BigId, ForeignKey("service_packages.id"), index=True)
    service_code: Mapped[str] = mapped_column(String(40))
    uses_total: Mapped[int] = mapped_column(Integer)
    uses_left: Mapped[int] = mapped_column(Integer)
    # What the member paid (0 for a grant) and what the uses are worth for settlement (the price paid,
    # or for a grant the template's price at the time).
    price_fen: Mapped[int] = mapped_column(BigInteger)
    value_fen: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[str] = mapped_column(String(30), default="")
    source: Mapped[str] = mapped_column(
        String(20)
    )  # sale | compensation | tier_benefit | campaign | goodwill
    reason: Mapped[str] = mapped_column(String(300), default="")
    # The store that sold (or granted) it; None for a grant by HQ.
    sold_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    sold_by: Mapped[str] = mapped_column(String(120), default="")
    sold_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="active")  # active | refunded
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    uses_refunded: Mapped[int] = mapped_column(Integer, default=0)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refunded_by: Mapped[str] = mapped_column(String(120), default="")


class PackageUse(Base):
    """One use (or several at once) of a member package at a store, with its value in fen."""

    __tablename__ = "package_uses"
    __table_args__ = (
        CheckConstraint("uses > 0", name="uses_pos"),
        CheckConstraint("value_fen >= 0", name="value_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), index=True)
    member_package_id: Mapped[int] = mapped_column(BigId, ForeignKey("member_packages.id"), index=True)
    package_id: Mapped[int] = mapped_column(BigId, ForeignKey("service_packages.id"))
    sold_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stores.id"), nullable=True)
    used_store_id: Mapped[int] = mapped_column(BigId, ForeignKey("stores.id"), index=True)
    uses: Mapped[int] = mapped_column(Integer)
    first_use_no: Mapped[int] = mapped_column(Integer)  # 1-based number of the package's first use here
    value_fen: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(120))  # staff:<username> or api_key:<prefix>
    staff_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"), nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("api_keys.id"), nullable=True)
    note: Mapped[str] = mapped_column(String(300), default="")
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
