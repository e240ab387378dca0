"""The real server process over real HTTP: `onemember db upgrade`, then `onemember serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from onemember.db import make_engine, make_sessionmaker
from tests.factories import make_chain
from tests.helpers import line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_answers_over_http(tmp_path: Path) -> None:
    env = {**os.environ, "ONEMEMBER_VAR_DIR": str(tmp_path), "ONEMEMBER_DISPATCHER_ENABLED": "false"}
    env.pop("DATABASE_URL", None)
    exe = [sys.executable, "-m", "onemember"]
    subprocess.run([*exe, "db", "upgrade"], env=env, check=True, capture_output=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'onemember.db'}")
    with Session(engine) as s:
        chain = make_chain(s, code="httpchain")
        s.commit()
    engine.dispose()
    port = _free_port()
    server = subprocess.Popen(
        [*exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, headers=chain.key("A"), timeout=10) as client:
            m = client.post("/api/v1/members", json={"phone": "13122223333", "name": "张三"})
            assert m.status_code == 201, m.text
            r = client.post(
                "/api/v1/orders",
                json={
                    "member": {"kind": "phone", "value": "13122223333"},
                    "lines": [line("A", 2, 1550)],
                    "payments": [{"method": "alipay", "amount_fen": 3100}],
                },
                headers={"Idempotency-Key": "k1"},
            )
            assert r.status_code == 201, r.text
            assert r.json()["points_earned"] == 31
            again = client.post(
                "/api/v1/orders",
                json={
                    "member": {"kind": "phone", "value": "13122223333"},
                    "lines": [line("A", 2, 1550)],
                    "payments": [{"method": "alipay", "amount_fen": 3100}],
                },
                headers={"Idempotency-Key": "k1"},
            )
            assert again.headers["Idempotent-Replayed"] == "true"
            assert client.get("/openapi.json").json()["info"]["title"] == "OneMember API"
    finally:
        server.terminate()
        server.wait(timeout=10)
    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'onemember.db'}"))
    with factory() as s:
        from onemember.points.verify import verify

        assert verify(s).ok
