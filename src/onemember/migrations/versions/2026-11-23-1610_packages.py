"""packages: service package templates, member packages, uses

Revision ID: f1a2b3c4d5e6
Revises: e1a2b3c4d5e6
Create Date: 2026-11-23 16:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import onemember.db

revision: str = "f1a2b3c4d5e6"
down_revision: str | None = "e1a2b3c4d5e6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_packages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("service_code", sa.String(length=40), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("validity_days", sa.Integer(), nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("refund_rule", sa.String(length=20), nullable=False),
        sa.Column("store_scope", sa.String(length=10), nullable=False),
        sa.Column("scope_brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("scope_region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("bearer", sa.String(length=20), nullable=False),
        sa.Column("issuer_pct", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price_fen >= 0", name=op.f("ck_service_packages_price_nonneg")),
        sa.CheckConstraint(
            "issuer_pct >= 0 AND issuer_pct <= 100",
            name=op.f("ck_service_packages_issuer_pct_range"),
        ),
        sa.CheckConstraint("uses > 0", name=op.f("ck_service_packages_uses_pos")),
        sa.CheckConstraint(
            "validity_days IS NULL OR validity_days > 0", name=op.f("ck_service_packages_validity_pos")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_service_packages_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["scope_brand_id"], ["brands.id"], name=op.f("fk_service_packages_scope_brand_id_brands")
        ),
        sa.ForeignKeyConstraint(
            ["scope_region_id"], ["regions.id"], name=op.f("fk_service_packages_scope_region_id_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_packages")),
        sa.UniqueConstraint("org_id", "code", name=op.f("uq_service_packages_org_id_code")),
    )
    with op.batch_alter_table("service_packages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_service_packages_org_id"), ["org_id"], unique=False)

    op.create_table(
        "service_package_stores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("package_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_service_package_stores_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["service_packages.id"],
            name=op.f("fk_service_package_stores_package_id_service_packages"),
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_service_package_stores_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_package_stores")),
        sa.UniqueConstraint(
            "package_id", "store_id", name=op.f("uq_service_package_stores_package_id_store_id")
        ),
    )
    with op.batch_alter_table("service_package_stores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_service_package_stores_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_service_package_stores_package_id"), ["package_id"], unique=False
        )

    op.create_table(
        "member_packages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("package_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("service_code", sa.String(length=40), nullable=False),
        sa.Column("uses_total", sa.Integer(), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(length=30), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("sold_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("sold_by", sa.String(length=120), nullable=False),
        sa.Column("sold_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("uses_refunded", sa.Integer(), nullable=False),
        sa.Column("refunded_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refunded_by", sa.String(length=120), nullable=False),
        sa.CheckConstraint(
            "price_fen >= 0 AND value_fen >= 0 AND refunded_fen >= 0",
            name=op.f("ck_member_packages_money_nonneg"),
        ),
        sa.CheckConstraint("refunded_fen <= price_fen", name=op.f("ck_member_packages_refund_within_price")),
        sa.CheckConstraint(
            "uses_left >= 0 AND uses_left <= uses_total", name=op.f("ck_member_packages_uses_left_range")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_packages_member_id_members")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_member_packages_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["service_packages.id"],
            name=op.f("fk_member_packages_package_id_service_packages"),
        ),
        sa.ForeignKeyConstraint(
            ["sold_store_id"], ["stores.id"], name=op.f("fk_member_packages_sold_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_packages")),
    )
    with op.batch_alter_table("member_packages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_packages_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_packages_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_packages_package_id"), ["package_id"], unique=False)

    op.create_table(
        "package_uses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_package_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("package_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sold_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("used_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("first_use_no", sa.Integer(), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("staff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("api_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("note", sa.String(length=300), nullable=False),
        sa.Column("used_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("uses > 0", name=op.f("ck_package_uses_uses_pos")),
        sa.CheckConstraint("value_fen >= 0", name=op.f("ck_package_uses_value_nonneg")),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_package_uses_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_package_uses_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["member_package_id"],
            ["member_packages.id"],
            name=op.f("fk_package_uses_member_package_id_member_packages"),
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_package_uses_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["package_id"], ["service_packages.id"], name=op.f("fk_package_uses_package_id_service_packages")
        ),
        sa.ForeignKeyConstraint(
            ["sold_store_id"], ["stores.id"], name=op.f("fk_package_uses_sold_store_id_stores")
        ),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_package_uses_staff_id_staff")),
        sa.ForeignKeyConstraint(
            ["used_store_id"], ["stores.id"], name=op.f("fk_package_uses_used_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_package_uses")),
    )
    with op.batch_alter_table("package_uses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_package_uses_member_id"), ["member_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_package_uses_member_package_id"), ["member_package_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_package_uses_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_package_uses_used_at"), ["used_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_package_uses_used_store_id"), ["used_store_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("package_uses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_package_uses_used_store_id"))
        batch_op.drop_index(batch_op.f("ix_package_uses_used_at"))
        batch_op.drop_index(batch_op.f("ix_package_uses_org_id"))
        batch_op.drop_index(batch_op.f("ix_package_uses_member_package_id"))
        batch_op.drop_index(batch_op.f("ix_package_uses_member_id"))

    op.drop_table("package_uses")
    with op.batch_alter_table("member_packages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_packages_package_id"))
        batch_op.drop_index(batch_op.f("ix_member_packages_org_id"))
        batch_op.drop_index(batch_op.f("ix_member_packages_member_id"))

    op.drop_table("member_packages")
    with op.batch_alter_table("service_package_stores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_package_stores_package_id"))
        batch_op.drop_index(batch_op.f("ix_service_package_stores_org_id"))

    op.drop_table("service_package_stores")
    with op.batch_alter_table("service_packages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_packages_org_id"))

    op.drop_table("service_packages")
