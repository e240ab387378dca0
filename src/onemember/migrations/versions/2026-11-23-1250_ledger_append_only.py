"""ledger append-only: the database refuses updates and deletes of point entries

Revision ID: b7c1e0a9d2f4
Revises: 093aa5311ab2
Create Date: 2026-11-23 12:50:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b7c1e0a9d2f4"
down_revision: str | None = "093aa5311ab2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION point_entries_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'point_entries is append-only';
            END;
            $$ LANGUAGE plpgsql;
            """
        )
        op.execute(
            "CREATE TRIGGER point_entries_no_update BEFORE UPDATE OR DELETE ON point_entries "
            "FOR EACH ROW EXECUTE FUNCTION point_entries_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER point_entries_no_{verb.lower()} BEFORE {verb} ON point_entries "
                "BEGIN SELECT RAISE(ABORT, 'point_entries is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER point_entries_no_update ON point_entries")
        op.execute("DROP FUNCTION point_entries_append_only()")
    else:
        op.execute("DROP TRIGGER point_entries_no_update")
        op.execute("DROP TRIGGER point_entries_no_delete")
