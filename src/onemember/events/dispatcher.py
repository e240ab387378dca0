"""Delivers outbox events after commit (being written by the webhooks work)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from onemember.settings import Settings


class Dispatcher:
    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
