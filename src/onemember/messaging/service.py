"""Queue messages inside the caller's transaction; deliver them after commit.

``queue_message`` renders a template and writes one outbox row with the recipient encrypted. The
caller commits. ``deliver_pending`` then works like the event dispatcher, in short transactions that
never stay open across a provider call: claim a batch of due messages (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers share the outbox), count the attempt and push ``next_attempt_at`` out
by a lease, commit; send each; record the answer. A failed send is retried with backoff until
``MAX_ATTEMPTS``; a worker that dies mid-send leaves its claim to run out, so delivery is
at-least-once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from onemember.common.crypto import get_cipher, mask
from onemember.db import utcnow
from onemember.messaging.channels import Channel, ChannelKind
from onemember.messaging.errors import ChannelFailed, UnknownTemplate
from onemember.messaging.models import OutboxMessage

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
CLAIM_BATCH = 50
LEASE = timedelta(seconds=60)
BACKOFF_BASE_SECONDS = 30


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


# Template key -> (channel, text). SMS texts carry the signature the carriers require.
TEMPLATES: dict[str, tuple[ChannelKind, str]] = {
    "member.login_code": (ChannelKind.SMS, "【OneMember】您的验证码是 {code}，{minutes} 分钟内有效"),
}


def render(template_key: str, params: dict[str, str | int]) -> tuple[ChannelKind, str]:
    try:
        kind, text = TEMPLATES[template_key]
    except KeyError as exc:
        raise UnknownTemplate(
            f"消息模板不存在：{template_key}", f"No such message template: {template_key}"
        ) from exc
    return kind, text.format(**params)


def queue_message(
    session: Session,
    org_id: int,
    recipient: str,
    template_key: str,
    params: dict[str, str | int],
    *,
    member_id: int | None = None,
    now: datetime | None = None,
) -> OutboxMessage:
    """Write one message to the outbox in the caller's transaction; it is sent after commit."""
    kind, body = render(template_key, params)
    now = now or utcnow()
    message = OutboxMessage(
        org_id=org_id,
        member_id=member_id,
        channel=kind.value,
        recipient_enc=get_cipher().encrypt(recipient),
        recipient_masked=mask("phone" if kind == ChannelKind.SMS else "other", recipient),
        template_key=template_key,
        body=body,
        status=MessageStatus.QUEUED,
        attempts=0,
        next_attempt_at=now,
        provider_id="",
        error="",
        created_at=now,
    )
    session.add(message)
    session.flush()
    return message


@dataclass
class Claimed:
    message_id: int
    recipient: str
    body: str


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def deliver_pending(
    session_factory: sessionmaker[Session], channel: Channel, *, now: datetime | None = None
) -> DeliveryReport:
    """Send every due message of ``channel``'s kind; call it after the transaction that queued them."""
    report = DeliveryReport()
    while True:
        claimed = _claim(session_factory, channel.kind, now or utcnow())
        for item in claimed:
            try:
                provider_id = channel.send(item.recipient, item.body)
            except ChannelFailed as exc:
                _record_failure(session_factory, item, exc.reason, exc.permanent, now or utcnow(), report)
            except Exception as exc:  # a broken adapter must cost one attempt, not the whole batch
                log.exception("channel %s raised on message %s", channel.kind, item.message_id)
                reason = f"{type(exc).__name__}: {exc}"
                _record_failure(session_factory, item, reason, False, now or utcnow(), report)
            else:
                _record_sent(session_factory, item, provider_id, now or utcnow())
                report.sent += 1
        if len(claimed) < CLAIM_BATCH:
            return report


def _claim(session_factory: sessionmaker[Session], kind: str, now: datetime) -> list[Claimed]:
    claimed: list[Claimed] = []
    cipher = get_cipher()
    with session_factory() as session, session.begin():
        due = session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.status == MessageStatus.QUEUED,
                OutboxMessage.next_attempt_at <= now,
                OutboxMessage.channel == kind,
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        )
        for message in due:
            if message.attempts >= MAX_ATTEMPTS:
                # Its last attempt was claimed by a worker that never reported back.
                message.status = MessageStatus.FAILED
                message.error = message.error or "worker lost during the last attempt"
                continue
            message.attempts += 1
            message.next_attempt_at = now + LEASE
            claimed.append(Claimed(message.id, cipher.decrypt(message.recipient_enc), message.body))
    return claimed


def _record_sent(
    session_factory: sessionmaker[Session], item: Claimed, provider_id: str, now: datetime
) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == item.message_id, OutboxMessage.status == MessageStatus.QUEUED)
            .values(status=MessageStatus.SENT, sent_at=now, provider_id=provider_id[:120], error="")
        )


def _record_failure(
    session_factory: sessionmaker[Session],
    item: Claimed,
    reason: str,
    permanent: bool,
    now: datetime,
    report: DeliveryReport,
) -> None:
    log.warning("message %s not sent: %s", item.message_id, reason)
    with session_factory() as session, session.begin():
        message = session.scalar(
            select(OutboxMessage).where(OutboxMessage.id == item.message_id).with_for_update()
        )
        if message is None or message.status != MessageStatus.QUEUED:
            return
        message.error = reason[:1000]
        if permanent or message.attempts >= MAX_ATTEMPTS:
            message.status = MessageStatus.FAILED
            report.failed += 1
        else:
            message.next_attempt_at = now + timedelta(
                seconds=BACKOFF_BASE_SECONDS * 2 ** (message.attempts - 1)
            )
            report.retrying += 1


def forget_member(session: Session, member_id: int) -> int:
    """Erasure: cancel unsent messages to this member and drop the recipient and text of all of them."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.member_id == member_id, OutboxMessage.status == MessageStatus.QUEUED)
        .values(status=MessageStatus.FAILED, error="member erased before sending")
    )
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.member_id == member_id)
        .values(recipient_enc=b"", recipient_masked="", body="")
    )
    return int(getattr(result, "rowcount", 0) or 0)
