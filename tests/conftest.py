"""Test database set-up: the real migrations on SQLite always, and on PostgreSQL when DATABASE_URL is set.

Each test runs inside an outer transaction that is rolled back; the app's sessions join it with
savepoints, so ``commit()`` in the code under test is real to that code and leaves nothing behind.
Concurrency tests use ``committed_factory`` instead, with their own org, and real parallel connections.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="onemember-tests-"))
os.environ.setdefault("ONEMEMBER_VAR_DIR", str(_TMP / "var"))
os.environ.setdefault("ONEMEMBER_PII_KEY", secrets.token_hex(32))
os.environ.setdefault("ONEMEMBER_SECRET_KEY", secrets.token_hex(32))
os.environ["ONEMEMBER_DISPATCHER_ENABLED"] = "false"
PG_URL = os.environ.pop("DATABASE_URL", "")  # the tests choose their databases themselves

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from onemember.app import create_app  # noqa: E402
from onemember.db import make_engine, make_sessionmaker  # noqa: E402
from onemember.migrate import upgrade  # noqa: E402
from onemember.settings import get_settings  # noqa: E402
from tests.factories import Chain, make_chain  # noqa: E402

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _fresh_postgres(url: str) -> Engine:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    return engine


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{_TMP / 'test.db'}")
    else:
        eng = _fresh_postgres(PG_URL)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions that all join one outer transaction, rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    yield sessionmaker(
        bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False, autoflush=False
    )
    outer.rollback()
    conn.close()


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    s = factory()
    yield s
    s.close()


@pytest.fixture
def chain(factory: sessionmaker[Session]) -> Chain:
    with factory() as s:
        built = make_chain(s)
        s.commit()
    return built


@pytest.fixture
def app_client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(get_settings(), factory, start_dispatcher=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def committed_factory(engine: Engine) -> sessionmaker[Session]:
    """Real commits, for tests that need several connections; each such test builds its own org."""
    return make_sessionmaker(engine)
