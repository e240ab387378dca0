"""The message outbox: queued inside the caller's transaction, sent after commit, retried, scrubbed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.common.crypto import get_cipher
from onemember.db import utcnow
from onemember.messaging import service
from onemember.messaging.channels import Channel, LogSmsChannel
from onemember.messaging.errors import ChannelFailed, UnknownTemplate
from onemember.messaging.models import OutboxMessage
from tests.factories import Chain


class FlakyChannel:
    """Fails the first ``failures`` sends, then works."""

    kind = "sms"

    def __init__(self, failures: int, *, permanent: bool = False) -> None:
        self.failures = failures
        self.permanent = permanent
        self.calls: list[tuple[str, str]] = []

    def send(self, recipient: str, body: str) -> str:
        self.calls.append((recipient, body))
        if len(self.calls) <= self.failures:
            raise ChannelFailed("vendor said no", permanent=self.permanent)
        return f"vendor-{len(self.calls)}"


def _queue(
    factory: sessionmaker[Session], chain: Chain, phone: str = "18800000201", code: str = "123456"
) -> int:
    with factory() as s:
        message = service.queue_message(
            s, chain.org_id, phone, "member.login_code", {"code": code, "minutes": 5}
        )
        s.commit()
        return message.id


def _get(factory: sessionmaker[Session], message_id: int) -> OutboxMessage:
    with factory() as s:
        message = s.get(OutboxMessage, message_id)
        assert message is not None
        return message


def test_queue_renders_encrypts_and_masks(factory: sessionmaker[Session], chain: Chain) -> None:
    message = _get(factory, _queue(factory, chain))
    assert message.body == "【OneMember】您的验证码是 123456，5 分钟内有效"
    assert message.status == "queued"
    assert message.attempts == 0
    assert message.recipient_masked == "188****0201"
    assert b"18800000201" not in message.recipient_enc
    assert get_cipher().decrypt(message.recipient_enc) == "18800000201"
    assert message.sent_at is None


def test_nothing_is_sent_for_a_transaction_that_rolled_back(
    factory: sessionmaker[Session], chain: Chain
) -> None:
    with factory() as s:
        service.queue_message(
            s, chain.org_id, "18800000202", "member.login_code", {"code": "1", "minutes": 5}
        )
        s.rollback()
    channel = LogSmsChannel()
    assert service.deliver_pending(factory, channel).sent == 0
    assert channel.sent == []


def test_deliver_pending_sends_once(factory: sessionmaker[Session], chain: Chain) -> None:
    first = _queue(factory, chain, "18800000203", "111111")
    second = _queue(factory, chain, "18800000204", "222222")
    channel = LogSmsChannel()
    report = service.deliver_pending(factory, channel)
    assert (report.sent, report.retrying, report.failed) == (2, 0, 0)
    assert [(m.recipient, m.body[-14:]) for m in channel.sent] == [
        ("18800000203", "111111，5 分钟内有效"),
        ("18800000204", "222222，5 分钟内有效"),
    ]
    for message_id, logged in zip((first, second), channel.sent, strict=True):
        message = _get(factory, message_id)
        assert (message.status, message.attempts, message.provider_id, message.error) == (
            "sent",
            1,
            logged.provider_id,
            "",
        )
        assert message.sent_at is not None
    assert service.deliver_pending(factory, channel).sent == 0
    assert len(channel.sent) == 2
    last = channel.last_to("18800000204")
    assert last is not None
    assert "222222" in last.body


def test_failed_send_is_retried_with_backoff_then_given_up(
    factory: sessionmaker[Session], chain: Chain
) -> None:
    message_id = _queue(factory, chain)
    channel = FlakyChannel(failures=service.MAX_ATTEMPTS)
    assert isinstance(channel, Channel)
    now = utcnow()
    report = service.deliver_pending(factory, channel, now=now)
    assert (report.sent, report.retrying, report.failed) == (0, 1, 0)
    message = _get(factory, message_id)
    assert (message.status, message.attempts, message.error) == ("queued", 1, "vendor said no")
    assert message.next_attempt_at == now + timedelta(seconds=service.BACKOFF_BASE_SECONDS)
    # Not due yet: nothing is tried.
    assert service.deliver_pending(factory, channel, now=now + timedelta(seconds=1)).retrying == 0
    assert len(channel.calls) == 1
    for attempt in range(2, service.MAX_ATTEMPTS + 1):
        now = now + timedelta(hours=1)
        service.deliver_pending(factory, channel, now=now)
        assert _get(factory, message_id).attempts == attempt
    message = _get(factory, message_id)
    assert (message.status, message.attempts, message.sent_at) == ("failed", service.MAX_ATTEMPTS, None)
    assert service.deliver_pending(factory, channel, now=now + timedelta(days=1)).failed == 0
    assert len(channel.calls) == service.MAX_ATTEMPTS


def test_permanent_failure_is_not_retried(factory: sessionmaker[Session], chain: Chain) -> None:
    message_id = _queue(factory, chain)
    channel = FlakyChannel(failures=1, permanent=True)
    assert service.deliver_pending(factory, channel).failed == 1
    message = _get(factory, message_id)
    assert (message.status, message.attempts) == ("failed", 1)


def test_a_lost_worker_leaves_its_claim_to_run_out(factory: sessionmaker[Session], chain: Chain) -> None:
    message_id = _queue(factory, chain)
    now = utcnow()
    claimed = service._claim(factory, "sms", now)  # a worker claims and then dies
    assert [c.message_id for c in claimed] == [message_id]
    channel = LogSmsChannel()
    assert service.deliver_pending(factory, channel, now=now + timedelta(seconds=5)).sent == 0
    assert service.deliver_pending(factory, channel, now=now + service.LEASE).sent == 1
    assert _get(factory, message_id).attempts == 2


def test_unknown_template_writes_nothing(factory: sessionmaker[Session], chain: Chain) -> None:
    with factory() as s:
        with pytest.raises(UnknownTemplate):
            service.queue_message(s, chain.org_id, "18800000205", "no.such", {})
        assert s.scalar(select(func.count()).where(OutboxMessage.org_id == chain.org_id)) == 0


def test_forget_member_scrubs_recipient_and_text(factory: sessionmaker[Session], chain: Chain) -> None:
    from onemember.members.models import Member

    with factory() as s:
        member = Member(org_id=chain.org_id, member_no="900000001", name="x")
        s.add(member)
        s.flush()
        sent = service.queue_message(
            s,
            chain.org_id,
            "18800000206",
            "member.login_code",
            {"code": "1", "minutes": 5},
            member_id=member.id,
        )
        s.commit()
    service.deliver_pending(factory, LogSmsChannel())
    with factory() as s:
        queued = service.queue_message(
            s,
            chain.org_id,
            "18800000206",
            "member.login_code",
            {"code": "2", "minutes": 5},
            member_id=member.id,
        )
        assert service.forget_member(s, member.id) == 2
        s.commit()
    for message_id, status in ((sent.id, "sent"), (queued.id, "failed")):
        message = _get(factory, message_id)
        assert (message.status, message.recipient_enc, message.recipient_masked, message.body) == (
            status,
            b"",
            "",
            "",
        )
