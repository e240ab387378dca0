"""Webhooks end to end: the API subscribes, checkouts and returns write events, the dispatcher signs and
POSTs them to a real HTTP receiver on 127.0.0.1, retries with backoff on a controllable clock, and gives up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.auth.principal import system_principal
from onemember.common.models import IdempotencyRecord
from onemember.db import utcnow
from onemember.events import service as events_service
from onemember.events import webhooks
from onemember.events.dispatcher import Dispatcher
from onemember.events.models import Event, WebhookDelivery, WebhookEndpoint
from onemember.settings import Settings, get_settings
from tests.factories import Chain, make_chain
from tests.helpers import checkout, line, login, register

# --- a real receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """A threaded HTTP server that records every POST and answers with scripted status codes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.scripts: dict[str, list[int]] = {}
        self.on_request: Callable[[], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body))
                    script = receiver.scripts.get(self.path)
                    status = script.pop(0) if script else 200
                    if receiver.on_request is not None:
                        receiver.on_request()
                answer = b"ok" if status < 300 else b"boom"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def settings() -> Settings:
    return get_settings().model_copy(update={"webhook_backoff_base_seconds": 2.0, "webhook_max_attempts": 4})


@pytest.fixture
def dispatcher(factory: sessionmaker[Session], settings: Settings) -> Iterator[Dispatcher]:
    d = Dispatcher(factory, settings)
    yield d
    d.stop()


@pytest.fixture
def t0() -> datetime:
    return utcnow().replace(microsecond=0)


# --- helpers --------------------------------------------------------------------------------------


def subscribe(
    client: TestClient,
    headers: dict[str, str],
    url: str,
    event_types: list[str],
    store_code: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, "event_types": event_types}
    if store_code is not None:
        body["store_code"] = store_code
    r = client.post("/api/v1/webhooks", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def deliveries(factory: sessionmaker[Session], endpoint_id: int) -> list[WebhookDelivery]:
    with factory() as s:
        return list(
            s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.id)
            )
        )


def org_events(factory: sessionmaker[Session], org_id: int) -> list[Event]:
    with factory() as s:
        return list(s.scalars(select(Event).where(Event.org_id == org_id).order_by(Event.id)))


def counts(factory: sessionmaker[Session], org_id: int) -> dict[str, int]:
    with factory() as s:
        return {
            name: s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id)) or 0
            for name, model in (
                ("endpoints", WebhookEndpoint),
                ("deliveries", WebhookDelivery),
                ("audit", AuditLog),
                ("idempotency", IdempotencyRecord),
            )
        }


def expected_signature(secret: str, received: Received) -> tuple[int, str]:
    parts = dict(part.split("=", 1) for part in received.headers["x-onemember-signature"].split(","))
    assert sorted(parts) == ["t", "v1"]
    t = int(parts["t"])
    mac = hmac.new(secret.encode(), f"{t}.".encode() + received.body, hashlib.sha256).hexdigest()
    return t, mac


# --- delivery ---------------------------------------------------------------------------------------


def test_checkout_event_is_posted_signed_and_verifiable(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hq = login(app_client, chain, "hq")
    hook = subscribe(app_client, hq, receiver.url("/hq"), ["order.completed"])
    assert hook["store_code"] is None
    assert hook["event_types"] == ["order.completed"]
    assert hook["active"] is True
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    assert len(secret) == 38
    member = register(app_client, chain, "A", "13800000001")
    order = checkout(app_client, chain, "A", {"member_no": member["member_no"]}, [line("SKU1", 2, 5050)])

    assert dispatcher.run_once(t0) == 1

    [got] = receiver.at("/hq")
    [event] = [e for e in org_events(factory, chain.org_id) if e.type == "order.completed"]
    assert got.headers["content-type"] == "application/json; charset=utf-8"
    assert got.headers["x-onemember-event-id"] == event.event_id
    assert got.headers["x-onemember-event-type"] == "order.completed"
    assert got.json == {
        "event_id": event.event_id,
        "type": "order.completed",
        "created_at": event.created_at.isoformat(),
        "org_id": chain.org_id,
        "member_id": event.member_id,
        "store_ids": [chain.stores["A"]],
        "payload": {
            "order_no": order["order_no"],
            "store_code": "A",
            "member_no": member["member_no"],
            "total_fen": 10100,
            "discount_fen": 0,
            "paid_fen": 10100,
            "points_redeemed": 0,
            "points_earned": 101,
            "occurred_at": event.payload["occurred_at"],
        },
    }
    t, mac = expected_signature(secret, got)
    assert t == int(t0.timestamp())
    assert got.headers["x-onemember-signature"] == f"t={t},v1={mac}"
    assert webhooks.verify_signature(secret, got.headers["x-onemember-signature"], got.body, now=t0)
    assert not webhooks.verify_signature(
        "whsec_wrong", got.headers["x-onemember-signature"], got.body, now=t0
    )
    assert not webhooks.verify_signature(
        secret, got.headers["x-onemember-signature"], got.body + b" ", now=t0
    )
    late = t0 + timedelta(seconds=301)
    assert not webhooks.verify_signature(secret, got.headers["x-onemember-signature"], got.body, now=late)

    [delivery] = deliveries(factory, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered",
        1,
        200,
        "",
    )
    assert delivery.delivered_at == t0
    with factory() as s:
        stored = s.get(WebhookEndpoint, hook["id"])
        assert stored is not None
        assert secret not in stored.secret  # encrypted at rest
        assert all(
            e.dispatched_at == t0 for e in s.scalars(select(Event).where(Event.org_id == chain.org_id))
        )

    # Nothing more to do: the event is not sent twice.
    assert dispatcher.run_once(t0 + timedelta(hours=1)) == 0
    assert len(receiver.at("/hq")) == 1

    r = app_client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=hq)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "deliveries": [
            {
                "id": delivery.id,
                "endpoint_id": hook["id"],
                "event_id": event.event_id,
                "event_type": "order.completed",
                "status": "delivered",
                "attempts": 1,
                "next_attempt_at": t0.isoformat().replace("+00:00", "Z"),
                "last_status_code": 200,
                "last_error": "",
                "delivered_at": t0.isoformat().replace("+00:00", "Z"),
            }
        ]
    }


def test_return_at_another_store_notifies_the_original_store(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hook_a = subscribe(app_client, login(app_client, chain, "a_mgr"), receiver.url("/a"), ["order.returned"])
    hook_b = subscribe(app_client, login(app_client, chain, "b_mgr"), receiver.url("/b"), ["order.returned"])
    hook_c = subscribe(
        app_client, login(app_client, chain, "hq"), receiver.url("/c"), ["order.returned"], "C"
    )
    assert (hook_a["store_code"], hook_b["store_code"], hook_c["store_code"]) == ("A", "B", "C")
    member = register(app_client, chain, "A", "13800000002")
    order = checkout(app_client, chain, "A", {"member_no": member["member_no"]}, [line("SKU1", 2, 5050)])
    r = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 201, r.text
    ret = r.json()

    assert dispatcher.run_once(t0) == 2

    [event] = [e for e in org_events(factory, chain.org_id) if e.type == "order.returned"]
    [to_a] = receiver.at("/a")
    [to_c] = receiver.at("/c")
    assert receiver.at("/b") == []
    assert deliveries(factory, hook_b["id"]) == []
    assert to_a.body == to_c.body
    assert to_a.headers["x-onemember-event-id"] == to_c.headers["x-onemember-event-id"] == event.event_id
    body = to_a.json
    assert body["type"] == "order.returned"
    assert body["store_ids"] == sorted([chain.stores["A"], chain.stores["C"]])
    assert body["payload"] == {
        "return_no": ret["return_no"],
        "order_no": order["order_no"],
        "store_code": "C",
        "original_store_code": "A",
        "member_no": member["member_no"],
        "amount_fen": 5050,
        "refund_fen": 5050,
        "points_reversed": 50,
        "points_refunded": 0,
        "points_shortfall": 0,
        "coupons": [],
    }
    t, mac = expected_signature(hook_a["secret"], to_a)
    assert to_a.headers["x-onemember-signature"] == f"t={t},v1={mac}"
    assert webhooks.verify_signature(
        hook_a["secret"], to_a.headers["x-onemember-signature"], to_a.body, now=t0
    )
    # Each endpoint has its own secret.
    assert not webhooks.verify_signature(
        hook_a["secret"], to_c.headers["x-onemember-signature"], to_c.body, now=t0
    )


def test_failed_delivery_is_retried_with_exponential_backoff_until_delivered(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hook = subscribe(
        app_client, login(app_client, chain, "hq"), receiver.url("/flaky"), ["member.registered"]
    )
    receiver.scripts["/flaky"] = [500, 500, 200]
    register(app_client, chain, "A", "13800000003")

    assert dispatcher.run_once(t0) == 1
    [d] = deliveries(factory, hook["id"])
    assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("pending", 1, 500, "HTTP 500: boom")
    assert d.next_attempt_at == t0 + timedelta(seconds=2)

    assert dispatcher.run_once(t0 + timedelta(seconds=1)) == 0  # not due yet
    assert dispatcher.run_once(t0 + timedelta(seconds=2)) == 1
    [d] = deliveries(factory, hook["id"])
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 2, 500)
    assert d.next_attempt_at == t0 + timedelta(seconds=2 + 4)

    assert dispatcher.run_once(t0 + timedelta(seconds=5)) == 0
    assert dispatcher.run_once(t0 + timedelta(seconds=6)) == 1
    [d] = deliveries(factory, hook["id"])
    assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("delivered", 3, 200, "")
    assert d.delivered_at == t0 + timedelta(seconds=6)

    got = receiver.at("/flaky")
    assert len(got) == 3
    # A retry is the same event: same id, same bytes; only the signature's timestamp moves.
    assert len({r.headers["x-onemember-event-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    assert [expected_signature(hook["secret"], r)[0] for r in got] == [
        int(t0.timestamp()),
        int(t0.timestamp()) + 2,
        int(t0.timestamp()) + 6,
    ]
    for r in got:
        assert r.headers["x-onemember-signature"] == "t={},v1={}".format(
            *expected_signature(hook["secret"], r)
        )
    assert dispatcher.run_once(t0 + timedelta(days=1)) == 0


def test_delivery_is_dead_after_max_attempts(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hq = login(app_client, chain, "hq")
    down = subscribe(app_client, hq, receiver.url("/down"), ["member.registered"])
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gone = subscribe(app_client, hq, f"http://127.0.0.1:{closed_port}/hook", ["member.registered"])
    receiver.scripts["/down"] = [503] * 10
    register(app_client, chain, "A", "13800000004")

    schedule = [0, 2, 6, 14]  # base 2 s: waits of 2, 4 and 8 seconds
    for n, offset in enumerate(schedule, start=1):
        if offset:
            assert dispatcher.run_once(t0 + timedelta(seconds=offset - 1)) == 0  # not due yet
        assert dispatcher.run_once(t0 + timedelta(seconds=offset)) == 2
        [d] = deliveries(factory, down["id"])
        [g] = deliveries(factory, gone["id"])
        assert d.attempts == g.attempts == n
        assert (d.last_status_code, d.last_error) == (503, "HTTP 503: boom")
        assert g.last_status_code is None
        assert g.last_error.startswith("ConnectError: ")
        if n < len(schedule):
            assert d.status == g.status == "pending"
            assert d.next_attempt_at == g.next_attempt_at == t0 + timedelta(seconds=schedule[n])
    assert d.status == g.status == "dead"
    assert d.next_attempt_at == g.next_attempt_at == t0 + timedelta(seconds=14)  # the last attempt
    assert d.delivered_at is None

    assert dispatcher.run_once(t0 + timedelta(days=30)) == 0
    assert len(receiver.at("/down")) == 4


def test_event_ids_are_unique_and_a_redelivery_carries_the_same_id(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hq = login(app_client, chain, "hq")
    hook = subscribe(app_client, hq, receiver.url("/all"), [])
    assert hook["event_types"] == []
    member = register(app_client, chain, "A", "13800000005")
    checkout(app_client, chain, "A", {"member_no": member["member_no"]}, [line("SKU1", 1, 1000)])
    checkout(app_client, chain, "B", {"member_no": member["member_no"]}, [line("SKU2", 1, 2000)])
    events = org_events(factory, chain.org_id)
    assert [e.type for e in events] == [
        "member.registered",
        "order.completed",
        "points.changed",
        "order.completed",
        "points.changed",
    ]

    assert dispatcher.run_once(t0) == 5
    got = receiver.at("/all")
    ids = [r.headers["x-onemember-event-id"] for r in got]
    assert ids == [e.event_id for e in events]  # in outbox order
    assert len(set(ids)) == 5
    assert [r.json["event_id"] for r in got] == ids

    first = deliveries(factory, hook["id"])[1]
    before = counts(factory, chain.org_id)
    path = f"/api/v1/webhooks/{hook['id']}/deliveries/{first.id}/redeliver"
    r1 = app_client.post(path, headers={**hq, "Idempotency-Key": "redo-1"})
    r2 = app_client.post(path, headers={**hq, "Idempotency-Key": "redo-1"})
    assert r1.status_code == r2.status_code == 201, r1.text
    assert r2.headers["idempotent-replayed"] == "true"
    assert r1.json() == r2.json()
    again = r1.json()
    assert again["id"] != first.id
    assert (again["event_id"], again["event_type"], again["status"], again["attempts"]) == (
        events[1].event_id,
        "order.completed",
        "pending",
        0,
    )
    after = counts(factory, chain.org_id)
    assert after["deliveries"] == before["deliveries"] + 1
    assert after["audit"] == before["audit"] + 1
    with factory() as s:
        audit = s.scalars(
            select(AuditLog).where(AuditLog.org_id == chain.org_id, AuditLog.action == "webhook.redelivered")
        ).one()
        assert audit.details == {
            "endpoint_id": hook["id"],
            "event_id": events[1].event_id,
            "original_delivery_id": first.id,
        }

    assert dispatcher.run_once() == 1
    replayed = receiver.at("/all")[-1]
    assert replayed.headers["x-onemember-event-id"] == events[1].event_id
    assert replayed.body == got[1].body
    assert webhooks.verify_signature(hook["secret"], replayed.headers["x-onemember-signature"], replayed.body)
    assert [d.status for d in deliveries(factory, hook["id"])] == ["delivered"] * 6


# --- the API --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "body", "status", "code"),
    [
        ("hq", {"url": "ftp://example.com/hook"}, 422, "webhooks.invalid_url"),
        ("hq", {"url": "example.com/hook"}, 422, "webhooks.invalid_url"),
        ("hq", {"url": "http://"}, 422, "webhooks.invalid_url"),
        ("hq", {"url": "https://exa mple.com/hook"}, 422, "webhooks.invalid_url"),
        ("hq", {"url": "https://example.com:99999/hook"}, 422, "webhooks.invalid_url"),
        ("hq", {"url": "https://example.com/" + "x" * 500}, 422, "webhooks.invalid_url"),
        (
            "hq",
            {"url": "https://example.com/h", "event_types": ["order.completed", "order.shipped"]},
            422,
            "webhooks.unknown_event_type",
        ),
        ("hq", {"url": "https://example.com/h", "store_code": "Z"}, 404, "org.store_not_found"),
        ("hq", {"url": "https://example.com/h", "secret": "mine"}, 422, "request.invalid"),
        ("a_mgr", {"url": "https://example.com/h", "store_code": "B"}, 403, "auth.store_scope"),
        ("a_clerk", {"url": "https://example.com/h"}, 403, "auth.role"),
        ("east_mgr", {"url": "https://example.com/h"}, 403, "auth.role"),
        ("cs", {"url": "https://example.com/h"}, 403, "auth.role"),
        ("till A", {"url": "https://example.com/h"}, 403, "auth.role"),
    ],
)
def test_invalid_subscriptions_are_refused_and_change_nothing(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    user: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    headers = chain.key("A") if user == "till A" else login(app_client, chain, user)
    before = counts(factory, chain.org_id)
    r = app_client.post(
        "/api/v1/webhooks", json={"event_types": ["order.completed"], **body}, headers=headers
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code
    assert counts(factory, chain.org_id) == before


def test_unknown_event_type_problem_names_the_culprit(app_client: TestClient, chain: Chain) -> None:
    r = app_client.post(
        "/api/v1/webhooks",
        json={"url": "https://example.com/h", "event_types": ["x.y", "a.b"]},
        headers={**login(app_client, chain, "hq"), "Accept-Language": "en"},
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["unknown"] == ["a.b", "x.y"]
    assert problem["allowed"] == list(webhooks.EVENT_TYPES)
    assert problem["detail"] == "Unknown event type(s): a.b, x.y"
    assert problem["message_zh"] == "不支持的事件类型：a.b, x.y"


def test_create_is_idempotent_audited_and_secret_shown_once(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
) -> None:
    hq = {**login(app_client, chain, "hq"), "Idempotency-Key": "hook-1"}
    body = {
        "url": " https://erp.example.com/onemember ",
        "event_types": ["points.changed", "order.completed", "points.changed"],
    }
    before = counts(factory, chain.org_id)
    r1 = app_client.post("/api/v1/webhooks", json=body, headers=hq)
    r2 = app_client.post("/api/v1/webhooks", json=body, headers=hq)
    assert r1.status_code == r2.status_code == 201
    # The replay is the same answer, except that the signing secret is never stored, so never replayed.
    assert r1.json()["secret"].startswith("whsec_")
    assert r2.json() == {**r1.json(), "secret": None}
    assert r2.headers["idempotent-replayed"] == "true"
    created = r1.json()
    assert created["url"] == "https://erp.example.com/onemember"
    assert created["event_types"] == ["order.completed", "points.changed"]
    after = counts(factory, chain.org_id)
    assert after["endpoints"] == before["endpoints"] + 1
    assert after["audit"] == before["audit"] + 1
    r3 = app_client.post("/api/v1/webhooks", json={**body, "url": "https://other.example.com/"}, headers=hq)
    assert r3.status_code == 422
    assert r3.json()["code"] == "idempotency.key_reused"
    assert counts(factory, chain.org_id)["endpoints"] == after["endpoints"]
    with factory() as s:
        audit = s.scalars(
            select(AuditLog).where(AuditLog.org_id == chain.org_id, AuditLog.action == "webhook.created")
        ).one()
        assert (audit.actor, audit.target_type, audit.target_id) == (
            "staff:hq",
            "webhook_endpoint",
            str(created["id"]),
        )
        assert audit.details == {
            "url": "https://erp.example.com/onemember",
            "event_types": ["order.completed", "points.changed"],
            "store_code": None,
        }
    listed = app_client.get("/api/v1/webhooks", headers=hq).json()["webhooks"]
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]


def test_endpoints_are_scoped_to_the_callers_stores(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    t0: datetime,
) -> None:
    hq, a_mgr, b_mgr = (login(app_client, chain, u) for u in ("hq", "a_mgr", "b_mgr"))
    chain_wide = subscribe(app_client, hq, receiver.url("/hq"), [])
    at_a = subscribe(app_client, a_mgr, receiver.url("/a"), [], "A")
    at_b = subscribe(app_client, b_mgr, receiver.url("/b"), [])

    def ids(headers: dict[str, str]) -> list[int]:
        r = app_client.get("/api/v1/webhooks", headers=headers)
        assert r.status_code == 200, r.text
        return [w["id"] for w in r.json()["webhooks"]]

    assert ids(hq) == [chain_wide["id"], at_a["id"], at_b["id"]]
    assert ids(login(app_client, chain, "auditor")) == [chain_wide["id"], at_a["id"], at_b["id"]]
    assert ids(a_mgr) == [at_a["id"]]
    assert ids(chain.key("A")) == [at_a["id"]]
    assert ids(b_mgr) == [at_b["id"]]
    assert ids(chain.key("C")) == []
    assert ids(login(app_client, chain, "east_mgr")) == [at_a["id"], at_b["id"]]

    # Outside the caller's scope an endpoint does not exist; inside it, only managers may change it.
    r = app_client.post(f"/api/v1/webhooks/{at_b['id']}/disable", headers=a_mgr)
    assert (r.status_code, r.json()["code"]) == (404, "webhooks.not_found")
    r = app_client.get(f"/api/v1/webhooks/{chain_wide['id']}/deliveries", headers=a_mgr)
    assert (r.status_code, r.json()["code"]) == (404, "webhooks.not_found")
    r = app_client.post(f"/api/v1/webhooks/{at_a['id']}/disable", headers=chain.key("A"))
    assert (r.status_code, r.json()["code"]) == (403, "auth.role")

    # An event is waiting for A's endpoint when it is disabled: that delivery is cancelled.
    register(app_client, chain, "A", "13800000006")
    dispatcher.fan_out(t0)
    assert [d.status for d in deliveries(factory, at_a["id"])] == ["pending"]
    before = counts(factory, chain.org_id)
    r = app_client.post(f"/api/v1/webhooks/{at_a['id']}/disable", headers={**a_mgr, "Idempotency-Key": "off"})
    assert r.status_code == 200, r.text
    assert r.json() == {**{k: v for k, v in at_a.items() if k != "secret"}, "active": False}
    assert counts(factory, chain.org_id)["audit"] == before["audit"] + 1
    assert [d.status for d in deliveries(factory, at_a["id"])] == ["cancelled"]
    again = app_client.post(f"/api/v1/webhooks/{at_a['id']}/disable", headers=a_mgr)
    assert again.status_code == 200
    assert again.json()["active"] is False
    assert counts(factory, chain.org_id)["audit"] == before["audit"] + 1

    register(app_client, chain, "A", "13800000007")
    assert dispatcher.run_once(t0) == 2  # both registrations to the chain-wide endpoint, none to A's
    assert len(receiver.at("/hq")) == 2
    assert receiver.at("/a") == []
    assert [d.status for d in deliveries(factory, at_a["id"])] == ["cancelled"]
    r = app_client.post(
        f"/api/v1/webhooks/{at_a['id']}/deliveries/{deliveries(factory, at_a['id'])[0].id}/redeliver",
        headers=a_mgr,
    )
    assert (r.status_code, r.json()["code"]) == (409, "webhooks.endpoint_disabled")


def test_event_feed_is_ordered_paged_and_store_scoped(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
) -> None:
    member = register(app_client, chain, "A", "13800000008")
    order = checkout(app_client, chain, "A", {"member_no": member["member_no"]}, [line("SKU1", 2, 5050)])
    checkout(app_client, chain, "B", {"member_no": member["member_no"]}, [line("SKU2", 1, 2000)])
    r = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 201, r.text
    with factory() as s:
        other = make_chain(s)
        s.commit()
    register(app_client, other, "A", "13800000008")
    events = org_events(factory, chain.org_id)
    types = [
        "member.registered",
        "order.completed",
        "points.changed",
        "order.completed",
        "points.changed",
        "order.returned",
        "points.changed",
    ]
    assert [e.type for e in events] == types

    def feed(headers: dict[str, str], **params: Any) -> dict[str, Any]:
        r = app_client.get("/api/v1/events", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    hq = login(app_client, chain, "hq")
    everything = feed(hq)
    assert [e["event_id"] for e in everything["events"]] == [e.event_id for e in events]
    assert everything["next_after_id"] == events[-1].id
    first = everything["events"][0]
    assert first == {
        "id": events[0].id,
        "event_id": events[0].event_id,
        "type": "member.registered",
        "created_at": events[0].created_at.isoformat().replace("+00:00", "Z"),
        "org_id": chain.org_id,
        "member_id": events[0].member_id,
        "store_ids": [chain.stores["A"]],
        "payload": events[0].payload,
    }

    page1 = feed(hq, limit=3)
    page2 = feed(hq, limit=3, after_id=page1["next_after_id"])
    page3 = feed(hq, limit=3, after_id=page2["next_after_id"])
    page4 = feed(hq, limit=3, after_id=page3["next_after_id"])
    assert [e["id"] for p in (page1, page2, page3) for e in p["events"]] == [e.id for e in events]
    assert page4 == {"events": [], "next_after_id": events[-1].id}
    assert [e["id"] for e in feed(hq, type="points.changed")["events"]] == [
        e.id for e in events if e.type == "points.changed"
    ]

    def seen(headers: dict[str, str]) -> list[int]:
        return [e["id"] for e in feed(headers)["events"]]

    a, b, c = chain.stores["A"], chain.stores["B"], chain.stores["C"]
    assert seen(chain.key("A")) == [e.id for e in events if a in e.store_ids]
    assert seen(chain.key("A")) == [events[i].id for i in (0, 1, 2, 5, 6)]
    assert seen(chain.key("B")) == [events[i].id for i in (3, 4)]
    assert seen(chain.key("C")) == [events[i].id for i in (5, 6)]
    assert seen(login(app_client, chain, "b_mgr")) == [e.id for e in events if b in e.store_ids]
    assert seen(login(app_client, chain, "east_mgr")) == [e.id for e in events if {a, b} & set(e.store_ids)]
    assert seen(login(app_client, chain, "c_clerk")) == [e.id for e in events if c in e.store_ids]
    assert [e["type"] for e in feed(other.key("A"))["events"]] == ["member.registered"]

    bad = app_client.get("/api/v1/events", params={"limit": 0}, headers=hq)
    assert (bad.status_code, bad.json()["code"]) == (422, "request.invalid")


def test_stopping_mid_batch_gives_unsent_deliveries_back(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    dispatcher: Dispatcher,
    settings: Settings,
    t0: datetime,
) -> None:
    hook = subscribe(app_client, login(app_client, chain, "hq"), receiver.url("/stop"), ["member.registered"])
    for n in range(3):
        register(app_client, chain, "A", f"1380000010{n}")
    receiver.on_request = dispatcher.request_stop

    assert dispatcher.run_once(t0) == 1
    rows = deliveries(factory, hook["id"])
    assert [(d.status, d.attempts, d.next_attempt_at) for d in rows] == [
        ("delivered", 1, t0),
        ("pending", 0, t0),
        ("pending", 0, t0),
    ]
    receiver.on_request = None
    fresh = Dispatcher(factory, settings)
    assert fresh.run_once(t0) == 2
    fresh.close()
    assert [(d.status, d.attempts) for d in deliveries(factory, hook["id"])] == [("delivered", 1)] * 3
    assert len(receiver.at("/stop")) == 3


# --- the background thread ------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_background_thread_delivers_and_stops(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    receiver: Receiver,
    settings: Settings,
) -> None:
    hook = subscribe(app_client, login(app_client, chain, "hq"), receiver.url("/bg"), ["member.registered"])
    register(app_client, chain, "B", "13800000009")
    worker = Dispatcher(factory, settings.model_copy(update={"dispatcher_interval_seconds": 0.05}))
    worker.start()
    try:
        assert worker.is_running
        assert _wait_for(lambda: len(receiver.at("/bg")) == 1)
    finally:
        worker.stop()
    assert not worker.is_running
    assert [d.status for d in deliveries(factory, hook["id"])] == ["delivered"]


def test_background_thread_survives_errors(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    broken = sessionmaker(bind=engine)
    worker = Dispatcher(broken, settings.model_copy(update={"dispatcher_interval_seconds": 0.01}))
    with caplog.at_level(logging.ERROR, logger="onemember.events.dispatcher"):
        worker.start()
        try:
            assert _wait_for(lambda: sum("pass failed" in r.getMessage() for r in caplog.records) >= 3)
            assert worker.is_running
        finally:
            worker.stop()
            engine.dispose()
    assert not worker.is_running


# --- several workers ------------------------------------------------------------------------------


def test_two_workers_share_the_outbox_and_send_each_event_once(
    committed_factory: sessionmaker[Session],
    receiver: Receiver,
    settings: Settings,
) -> None:
    with committed_factory() as s:
        own = make_chain(s)
        endpoint, _, _ = webhooks.create_endpoint(
            s, system_principal(own.org_id), receiver.url("/many"), [], None
        )
        for n in range(60):
            events_service.emit(s, own.org_id, "order.completed", {"n": n}, store_ids=[own.stores["A"]])
        s.commit()
        expected = set(s.scalars(select(Event.event_id).where(Event.org_id == own.org_id)))
    workers = [Dispatcher(committed_factory, settings) for _ in range(2)]
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def work(worker: Dispatcher) -> None:
        try:
            barrier.wait()
            worker.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for w in workers:
            w.close()
    assert errors == []
    got = receiver.at("/many")
    assert len(got) == 60
    assert {r.headers["x-onemember-event-id"] for r in got} == expected
    with committed_factory() as s:
        rows = list(s.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)))
        assert len(rows) == 60
        assert {(d.status, d.attempts) for d in rows} == {("delivered", 1)}
        assert len({d.event_id for d in rows}) == 60
        stored = s.get(WebhookEndpoint, endpoint.id)
        assert stored is not None
        stored.active = False
        s.commit()
