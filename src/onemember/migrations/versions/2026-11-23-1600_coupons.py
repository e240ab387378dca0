"""coupons: templates, coupons

Revision ID: e1a2b3c4d5e6
Revises: d4e5f6a7b8c9
Create Date: 2026-11-23 16:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import onemember.db

revision: str = "e1a2b3c4d5e6"
down_revision: str | None = "d4e5f6a7b8c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coupon_templates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("threshold_fen", sa.BigInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("percent_off", sa.Integer(), nullable=False),
        sa.Column("cap_fen", sa.BigInteger(), nullable=True),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("face_value_fen", sa.BigInteger(), nullable=True),
        sa.Column("pay_difference", sa.Boolean(), nullable=False),
        sa.Column("skus", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("accept_scope", sa.String(length=20), nullable=False),
        sa.Column("accept_brand_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("accept_region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("accept_store_ids", sa.JSON(), nullable=False),
        sa.Column("cross_store", sa.Boolean(), nullable=False),
        sa.Column("valid_from", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_to", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("stack_group", sa.String(length=40), nullable=True),
        sa.Column("combines_with_tier_discount", sa.Boolean(), nullable=False),
        sa.Column("per_order_limit", sa.Integer(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        sa.Column("total_quantity", sa.BigInteger(), nullable=True),
        sa.Column("budget_fen", sa.BigInteger(), nullable=True),
        sa.Column("issued_count", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_count", sa.BigInteger(), nullable=False),
        sa.Column("budget_used", sa.BigInteger(), nullable=False),
        sa.Column("return_policy", sa.String(length=10), nullable=False),
        sa.Column("giftable", sa.Boolean(), nullable=False),
        sa.Column("bearer", sa.String(length=20), nullable=False),
        sa.Column("issuer_pct", sa.Integer(), nullable=False),
        sa.Column("owner_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "budget_fen IS NULL OR budget_used <= budget_fen",
            name=op.f("ck_coupon_templates_budget_not_exceeded"),
        ),
        sa.CheckConstraint(
            "issued_count >= 0 AND redeemed_count >= 0 AND budget_used >= 0",
            name=op.f("ck_coupon_templates_counters_nonneg"),
        ),
        sa.CheckConstraint(
            "issuer_pct >= 0 AND issuer_pct <= 100", name=op.f("ck_coupon_templates_issuer_pct_range")
        ),
        sa.CheckConstraint(
            "total_quantity IS NULL OR issued_count <= total_quantity",
            name=op.f("ck_coupon_templates_quantity_not_exceeded"),
        ),
        sa.ForeignKeyConstraint(
            ["accept_brand_id"], ["brands.id"], name=op.f("fk_coupon_templates_accept_brand_id_brands")
        ),
        sa.ForeignKeyConstraint(
            ["accept_region_id"], ["regions.id"], name=op.f("fk_coupon_templates_accept_region_id_regions")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_coupon_templates_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["owner_store_id"], ["stores.id"], name=op.f("fk_coupon_templates_owner_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_templates")),
        sa.UniqueConstraint("org_id", "code", name=op.f("uq_coupon_templates_org_id_code")),
    )
    op.create_index(op.f("ix_coupon_templates_org_id"), "coupon_templates", ["org_id"], unique=False)

    op.create_table(
        "coupons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=24), nullable=False),
        sa.Column("template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "issued_to_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("issuing_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("cover_fen", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("source_ref", sa.String(length=120), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("valid_from", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_to", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("issued_by", sa.String(length=120), nullable=False),
        sa.Column("issued_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "gifted_from_member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("redeemed_order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("redeemed_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("redeemed_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("discount_fen", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gifted_from_member_id"], ["members.id"], name=op.f("fk_coupons_gifted_from_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["issued_to_member_id"], ["members.id"], name=op.f("fk_coupons_issued_to_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["issuing_store_id"], ["stores.id"], name=op.f("fk_coupons_issuing_store_id_stores")
        ),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_coupons_member_id_members")),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_coupons_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["redeemed_order_id"], ["orders.id"], name=op.f("fk_coupons_redeemed_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["redeemed_store_id"], ["stores.id"], name=op.f("fk_coupons_redeemed_store_id_stores")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["coupon_templates.id"], name=op.f("fk_coupons_template_id_coupon_templates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("org_id", "code", name=op.f("uq_coupons_org_id_code")),
        sa.UniqueConstraint("org_id", "source_ref", name=op.f("uq_coupons_org_id_source_ref")),
    )
    op.create_index("ix_coupons_member_status", "coupons", ["member_id", "status"], unique=False)
    op.create_index("ix_coupons_template_member", "coupons", ["template_id", "member_id"], unique=False)

    op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("coupon_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("issuing_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("redeeming_store_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("discount_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_difference_fen", sa.BigInteger(), nullable=False),
        sa.Column("returned_fen", sa.BigInteger(), nullable=False),
        sa.Column("bearer", sa.String(length=20), nullable=False),
        sa.Column("issuer_pct", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("redeemed_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_redemptions_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["issuing_store_id"], ["stores.id"], name=op.f("fk_coupon_redemptions_issuing_store_id_stores")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_coupon_redemptions_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_coupon_redemptions_order_id_orders")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_coupon_redemptions_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["redeeming_store_id"],
            ["stores.id"],
            name=op.f("fk_coupon_redemptions_redeeming_store_id_stores"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["coupon_templates.id"],
            name=op.f("fk_coupon_redemptions_template_id_coupon_templates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_redemptions")),
        sa.UniqueConstraint("coupon_id", "order_id", name=op.f("uq_coupon_redemptions_coupon_id_order_id")),
    )
    op.create_index(
        op.f("ix_coupon_redemptions_coupon_id"), "coupon_redemptions", ["coupon_id"], unique=False
    )
    op.create_index(
        op.f("ix_coupon_redemptions_member_id"), "coupon_redemptions", ["member_id"], unique=False
    )
    op.create_index(op.f("ix_coupon_redemptions_order_id"), "coupon_redemptions", ["order_id"], unique=False)
    op.create_index(
        "ix_coupon_redemptions_store_at",
        "coupon_redemptions",
        ["redeeming_store_id", "redeemed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_coupon_redemptions_template_id"), "coupon_redemptions", ["template_id"], unique=False
    )

    op.create_table(
        "coupon_redemption_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("redemption_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("discount_fen", sa.BigInteger(), nullable=False),
        sa.Column("returned_quantity", sa.Integer(), nullable=False),
        sa.Column("returned_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "returned_quantity >= 0 AND returned_quantity <= quantity",
            name=op.f("ck_coupon_redemption_lines_returned_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_coupon_redemption_lines_order_id_orders")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_coupon_redemption_lines_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["coupon_redemptions.id"],
            name=op.f("fk_coupon_redemption_lines_redemption_id_coupon_redemptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_redemption_lines")),
        sa.UniqueConstraint(
            "redemption_id", "line_no", name=op.f("uq_coupon_redemption_lines_redemption_id_line_no")
        ),
    )
    op.create_index(
        op.f("ix_coupon_redemption_lines_order_id"), "coupon_redemption_lines", ["order_id"], unique=False
    )
    op.create_index(
        op.f("ix_coupon_redemption_lines_redemption_id"),
        "coupon_redemption_lines",
        ["redemption_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("coupon_redemption_lines")
    op.drop_table("coupon_redemptions")
    op.drop_table("coupons")
    op.drop_table("coupon_templates")
