"""Browser tests: the real server in a thread on a migrated database, driven by Debian's Chromium through
Playwright (no browser downloads). Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, expect, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.db import make_engine, make_sessionmaker
from onemember.migrate import upgrade
from onemember.settings import get_settings
from tests.factories import Chain, make_chain

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
DESKTOP: ViewportSize = {"width": 1366, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

# CI machines are shared and slow at times: give assertions room rather than fail on a busy moment.
expect.set_options(timeout=15_000)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)"
)


@dataclass
class Live:
    url: str
    chain: Chain
    factory: sessionmaker[Session]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def live() -> Iterator[Live]:
    db = Path(tempfile.mkdtemp(prefix="onemember-browser-")) / "web.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    factory = make_sessionmaker(engine)
    with factory() as s:
        chain = make_chain(s, code="webchain")
        s.commit()
    app = create_app(get_settings(), factory, start_dispatcher=False)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield Live(f"http://127.0.0.1:{port}", chain, factory)
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN")
    p = context.new_page()
    p.set_default_timeout(20000)
    yield p
    context.close()


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
    p = context.new_page()
    p.set_default_timeout(20000)
    yield p
    context.close()


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot for people to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def staff_login(page: Page, live: Live, username: str, base: str = "/console") -> None:
    from tests.factories import PASSWORD

    page.goto(f"{live.url}{base}/login")
    page.fill("#org", live.chain.org_code)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
