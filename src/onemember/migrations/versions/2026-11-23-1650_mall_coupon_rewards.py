"""points mall: a coupon reward names the coupon template it issues

Revision ID: b8c9d0e1f2a3
Revises: a7b8c9d0e1f2
Create Date: 2026-11-23 16:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8c9d0e1f2a3"
down_revision: str | None = "a7b8c9d0e1f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN so SQLite upgrades in place; PostgreSQL also gets the foreign key.
    op.add_column("rewards", sa.Column("coupon_template_id", ID, nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        op.create_foreign_key(
            op.f("fk_rewards_coupon_template_id_coupon_templates"),
            "rewards",
            "coupon_templates",
            ["coupon_template_id"],
            ["id"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(
            op.f("fk_rewards_coupon_template_id_coupon_templates"), "rewards", type_="foreignkey"
        )
    op.drop_column("rewards", "coupon_template_id")
