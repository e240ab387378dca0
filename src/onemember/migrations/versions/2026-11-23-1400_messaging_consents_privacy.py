"""messaging outbox, member login codes and sessions, marketing consents, privacy requests

Revision ID: c3d8f1a2b6e9
Revises: b7c1e0a9d2f4
Create Date: 2026-11-23 14:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import onemember.db

revision: str = "c3d8f1a2b6e9"
down_revision: str | None = "b7c1e0a9d2f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_consents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("changed_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_consents_member_id_members")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_member_consents_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_consents")),
        sa.UniqueConstraint("member_id", "purpose", name=op.f("uq_member_consents_member_id_purpose")),
    )
    with op.batch_alter_table("member_consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_consents_org_id"), ["org_id"], unique=False)

    op.create_table(
        "member_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_sessions_member_id_members")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_member_sessions_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_member_sessions_token_hash")),
    )
    with op.batch_alter_table("member_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_sessions_member_id"), ["member_id"], unique=False)

    op.create_table(
        "message_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("recipient_enc", sa.LargeBinary(), nullable=False),
        sa.Column("recipient_masked", sa.String(length=80), nullable=False),
        sa.Column("template_key", sa.String(length=60), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("provider_id", sa.String(length=120), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_message_outbox_member_id_members")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_message_outbox_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_outbox")),
    )
    with op.batch_alter_table("message_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_outbox_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_outbox_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_outbox_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            "ix_message_outbox_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("requested_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_privacy_requests_member_id_members")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_privacy_requests_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_requests")),
    )
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_privacy_requests_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_privacy_requests_org_id"), ["org_id"], unique=False)

    op.create_table(
        "member_otps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("phone_bidx", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", onemember.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", onemember.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_otps_member_id_members")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["message_outbox.id"], name=op.f("fk_member_otps_message_id_message_outbox")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_member_otps_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_otps")),
    )
    with op.batch_alter_table("member_otps", schema=None) as batch_op:
        batch_op.create_index("ix_member_otps_ip_created_at", ["ip", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_otps_member_id"), ["member_id"], unique=False)
        batch_op.create_index(
            "ix_member_otps_org_id_phone_bidx_created_at",
            ["org_id", "phone_bidx", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("member_otps", schema=None) as batch_op:
        batch_op.drop_index("ix_member_otps_org_id_phone_bidx_created_at")
        batch_op.drop_index(batch_op.f("ix_member_otps_member_id"))
        batch_op.drop_index("ix_member_otps_ip_created_at")

    op.drop_table("member_otps")
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_privacy_requests_org_id"))
        batch_op.drop_index(batch_op.f("ix_privacy_requests_member_id"))

    op.drop_table("privacy_requests")
    with op.batch_alter_table("message_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_message_outbox_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_message_outbox_org_id"))
        batch_op.drop_index(batch_op.f("ix_message_outbox_member_id"))
        batch_op.drop_index(batch_op.f("ix_message_outbox_created_at"))

    op.drop_table("message_outbox")
    with op.batch_alter_table("member_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_sessions_member_id"))

    op.drop_table("member_sessions")
    with op.batch_alter_table("member_consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_consents_org_id"))

    op.drop_table("member_consents")
