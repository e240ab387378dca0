"""Delivery channels: one small interface per way of reaching a member.

A real SMS vendor (Aliyun, Tencent Cloud, ...) is an adapter with the same ``send`` method; until one
is configured, ``LogSmsChannel`` records what it would have sent, in memory and in the log, so the
product runs on a bare machine and tests can read exactly what a member would receive.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from onemember.common.crypto import mask
from onemember.db import utcnow

log = logging.getLogger(__name__)


class ChannelKind(StrEnum):
    SMS = "sms"


@runtime_checkable
class Channel(Protocol):
    """Hands one rendered message to a provider and returns the provider's message id.

    Raises ``messaging.errors.ChannelFailed`` when the provider did not take the message.
    """

    kind: str

    def send(self, recipient: str, body: str) -> str: ...


@dataclass(frozen=True)
class LoggedMessage:
    provider_id: str
    recipient: str
    body: str
    at: datetime


class LogSmsChannel:
    """The default SMS channel: keeps the last messages in memory and logs them (masked)."""

    kind = ChannelKind.SMS.value

    def __init__(self, keep: int = 1000) -> None:
        self._sent: deque[LoggedMessage] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def send(self, recipient: str, body: str) -> str:
        provider_id = f"log-{uuid.uuid4().hex[:16]}"
        with self._lock:
            self._sent.append(LoggedMessage(provider_id, recipient, body, utcnow()))
        log.info("SMS to %s (%s): %d characters", mask("phone", recipient), provider_id, len(body))
        return provider_id

    @property
    def sent(self) -> list[LoggedMessage]:
        with self._lock:
            return list(self._sent)

    def last_to(self, recipient: str) -> LoggedMessage | None:
        with self._lock:
            return next((m for m in reversed(self._sent) if m.recipient == recipient), None)


_default_sms = LogSmsChannel()


def default_sms_channel() -> Channel:
    return _default_sms
