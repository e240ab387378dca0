"""settlement: one index for a party's entries and for a pair of parties' entries

Revision ID: f630a1b2c3d4
Revises: b8c9d0e1f2a3
Create Date: 2026-11-23 16:30:00+00:00

The statement drilldown (one store's entries with one counterparty, oldest first) found its rows by
scanning the period's entries in id order: at 10,000,000 entries a month, 2-4 s for a pair of stores
that settled little. ``(org_id, period, debtor_key, creditor_key)`` finds exactly the pair's entries
(both directions are two ranges of it) and serves every query the ``(org_id, period, debtor_key)``
index served, which it replaces.

On a large table this build blocks writes to ``settlement_entries`` while it runs (about a minute at
10 M rows). To avoid that, build the index first by hand with
``CREATE INDEX CONCURRENTLY ix_settlement_entries_period_pair ON settlement_entries
(org_id, period, debtor_key, creditor_key)``: the upgrade then only drops the old index.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f630a1b2c3d4"
down_revision: str | None = "b8c9d0e1f2a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_settlement_entries_period_pair",
        "settlement_entries",
        ["org_id", "period", "debtor_key", "creditor_key"],
        unique=False,
        if_not_exists=True,
    )
    op.drop_index("ix_settlement_entries_period_debtor", table_name="settlement_entries", if_exists=True)


def downgrade() -> None:
    op.create_index(
        "ix_settlement_entries_period_debtor",
        "settlement_entries",
        ["org_id", "period", "debtor_key"],
        unique=False,
    )
    op.drop_index("ix_settlement_entries_period_pair", table_name="settlement_entries")
