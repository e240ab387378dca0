"""The message outbox: every SMS (later WeChat, e-mail, push) is written here inside the business
transaction and sent by ``messaging.service.deliver_pending`` after commit.

The recipient is stored encrypted (``recipient_enc``) with a masked copy for screens, like member
identities.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from onemember.db import Base, BigId, UTCDateTime, utcnow


class OutboxMessage(Base):
    __tablename__ = "message_outbox"
    __table_args__ = (Index("ix_message_outbox_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId, ForeignKey("orgs.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("members.id"), nullable=True, index=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient_enc: Mapped[bytes] = mapped_column(LargeBinary)
    recipient_masked: Mapped[str] = mapped_column(String(80))
    template_key: Mapped[str] = mapped_column(String(60))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the message may be tried (again); a claimed message is pushed out by a lease.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    provider_id: Mapped[str] = mapped_column(String(120), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
