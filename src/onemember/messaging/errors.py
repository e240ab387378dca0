"""Errors of the messaging domain."""

from __future__ import annotations

from onemember.errors import DomainError


class UnknownTemplate(DomainError):
    status = 500
    code = "messaging.unknown_template"
    zh = "消息模板不存在"
    en = "No such message template"


class ChannelFailed(Exception):
    """A channel could not hand the message to its provider; the outbox retries it later."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # A permanent failure (say, the provider refuses the number) is not retried.
        self.permanent = permanent
