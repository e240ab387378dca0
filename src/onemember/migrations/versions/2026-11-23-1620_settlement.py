"""settlement: policies, periods, append-only entries

Revision ID: a7b8c9d0e1f2
Revises: f1a2b3c4d5e6
Create Date: 2026-11-23 16:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import onemember.db

revision: str = "a7b8c9d0e1f2"
down_revision: str | None = "f1a2b3c4d5e6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "settlement_policies",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("program_id", ID, nullable=False),
        sa.Column("bearer", sa.String(length=20), nullable=False),
        sa.Column("issuer_pct", sa.Integer(), nullable=False),
        sa.Column("value_fen", sa.Integer(), nullable=True),
        sa.Column("value_points", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(length=120), nullable=False),
        sa.Column("updated_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "bearer IN ('hq', 'issuing_store', 'redeeming_store', 'split')",
            name=op.f("ck_settlement_policies_bearer_known"),
        ),
        sa.CheckConstraint(
            "issuer_pct >= 0 AND issuer_pct <= 100", name=op.f("ck_settlement_policies_issuer_pct_range")
        ),
        sa.CheckConstraint(
            "(value_fen IS NULL AND value_points IS NULL) OR (value_fen >= 0 AND value_points > 0)",
            name=op.f("ck_settlement_policies_value_rate_valid"),
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_settlement_policies_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["points_programs.id"],
            name=op.f("fk_settlement_policies_program_id_points_programs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_policies")),
        sa.UniqueConstraint("org_id", "program_id", name=op.f("uq_settlement_policies_org_id_program_id")),
    )
    op.create_index(op.f("ix_settlement_policies_org_id"), "settlement_policies", ["org_id"], unique=False)

    op.create_table(
        "settlement_periods",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("closed_by", sa.String(length=120), nullable=False),
        sa.Column("closed_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("closing_nets", sa.JSON(), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_settlement_periods_status_known")),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_settlement_periods_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_periods")),
        sa.UniqueConstraint("org_id", "period", name=op.f("uq_settlement_periods_org_id_period")),
    )
    op.create_index(op.f("ix_settlement_periods_org_id"), "settlement_periods", ["org_id"], unique=False)

    op.create_table(
        "settlement_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("business_month", sa.String(length=7), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("debtor_key", sa.BigInteger(), nullable=False),
        sa.Column("creditor_key", sa.BigInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("order_id", ID, nullable=True),
        sa.Column("return_id", ID, nullable=True),
        sa.Column("point_entry_id", ID, nullable=True),
        sa.Column("reverses_id", ID, nullable=True),
        sa.Column("source_ref", sa.String(length=80), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("occurred_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_settlement_entries_amount_pos")),
        sa.CheckConstraint("debtor_key <> creditor_key", name=op.f("ck_settlement_entries_parties_differ")),
        sa.CheckConstraint(
            "debtor_key >= 0 AND creditor_key >= 0", name=op.f("ck_settlement_entries_party_keys_valid")
        ),
        sa.CheckConstraint(
            "period >= business_month", name=op.f("ck_settlement_entries_period_not_before_event")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_settlement_entries_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_settlement_entries_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["return_id"], ["order_returns.id"], name=op.f("fk_settlement_entries_return_id_order_returns")
        ),
        sa.ForeignKeyConstraint(
            ["point_entry_id"],
            ["point_entries.id"],
            name=op.f("fk_settlement_entries_point_entry_id_point_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["settlement_entries.id"],
            name=op.f("fk_settlement_entries_reverses_id_settlement_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_entries")),
        sa.UniqueConstraint(
            "org_id",
            "kind",
            "source_ref",
            "debtor_key",
            "creditor_key",
            name=op.f("uq_settlement_entries_org_id_kind_source_ref_debtor_key_creditor_key"),
        ),
    )
    op.create_index(
        "ix_settlement_entries_period_debtor",
        "settlement_entries",
        ["org_id", "period", "debtor_key"],
        unique=False,
    )
    op.create_index(
        "ix_settlement_entries_period_creditor",
        "settlement_entries",
        ["org_id", "period", "creditor_key"],
        unique=False,
    )
    op.create_index(op.f("ix_settlement_entries_order_id"), "settlement_entries", ["order_id"], unique=False)
    op.create_index(
        op.f("ix_settlement_entries_point_entry_id"), "settlement_entries", ["point_entry_id"], unique=False
    )
    op.create_index(
        op.f("ix_settlement_entries_reverses_id"), "settlement_entries", ["reverses_id"], unique=False
    )

    # The database keeps the entries honest: no edits, no deletes, and nothing new in a closed period.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION settlement_entries_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'settlement_entries is append-only';
            END;
            $$ LANGUAGE plpgsql;
            """
        )
        op.execute(
            "CREATE TRIGGER settlement_entries_no_update BEFORE UPDATE OR DELETE ON settlement_entries "
            "FOR EACH ROW EXECUTE FUNCTION settlement_entries_append_only()"
        )
        op.execute(
            """
            CREATE FUNCTION settlement_entries_open_period() RETURNS trigger AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM settlement_periods
                         WHERE org_id = NEW.org_id AND period = NEW.period AND status = 'closed') THEN
                RAISE EXCEPTION 'settlement period % is closed', NEW.period;
              END IF;
              RETURN NEW;
            END;
            $$ LANGUAGE plpgsql;
            """
        )
        op.execute(
            "CREATE TRIGGER settlement_entries_period_open BEFORE INSERT ON settlement_entries "
            "FOR EACH ROW EXECUTE FUNCTION settlement_entries_open_period()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER settlement_entries_no_{verb.lower()} BEFORE {verb} ON settlement_entries "
                "BEGIN SELECT RAISE(ABORT, 'settlement_entries is append-only'); END"
            )
        op.execute(
            "CREATE TRIGGER settlement_entries_period_open BEFORE INSERT ON settlement_entries "
            "WHEN EXISTS (SELECT 1 FROM settlement_periods WHERE org_id = NEW.org_id "
            "AND period = NEW.period AND status = 'closed') "
            "BEGIN SELECT RAISE(ABORT, 'settlement period is closed'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER settlement_entries_period_open ON settlement_entries")
        op.execute("DROP TRIGGER settlement_entries_no_update ON settlement_entries")
        op.execute("DROP FUNCTION settlement_entries_open_period()")
        op.execute("DROP FUNCTION settlement_entries_append_only()")
    else:
        op.execute("DROP TRIGGER settlement_entries_period_open")
        op.execute("DROP TRIGGER settlement_entries_no_update")
        op.execute("DROP TRIGGER settlement_entries_no_delete")
    op.drop_table("settlement_entries")
    op.drop_table("settlement_periods")
    op.drop_table("settlement_policies")
