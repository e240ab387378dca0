"""Delivers outbox events after commit: fan-out into webhook deliveries, then signed HTTP POSTs.

Each pass (``run_once``) works in short transactions and never holds one open across an HTTP call:

1. fan-out: lock a batch of undispatched events (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
   workers share the outbox), add one delivery per matching active endpoint, mark the events
   dispatched, commit;
2. claim: lock a batch of due deliveries the same way, count the attempt and push ``next_attempt_at``
   out by a lease so no other worker takes them, commit;
3. send each claimed delivery, then record the answer in its own transaction: 2xx is delivered,
   anything else is retried after ``backoff_base * 2**(attempts-1)`` seconds until
   ``webhook_max_attempts``, then the delivery is dead.

A worker that dies mid-call leaves its deliveries to be claimed again once the lease runs out, which
is why delivery is at-least-once and receivers de-duplicate by event id.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onemember.db import utcnow
from onemember.events import webhooks
from onemember.events.models import Event, WebhookDelivery, WebhookEndpoint
from onemember.events.webhooks import Attempt, AttemptResult, DeliveryStatus
from onemember.settings import Settings

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 200
CLAIM_BATCH = 20
MAX_BATCHES_PER_PASS = 50
REQUEST_TIMEOUT_SECONDS = 5.0


class Dispatcher:
    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, *, client: httpx.Client | None = None
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.timeout = REQUEST_TIMEOUT_SECONDS
        # Long enough for a whole claimed batch to time out before anyone may claim it again.
        self.lease = timedelta(seconds=CLAIM_BATCH * REQUEST_TIMEOUT_SECONDS + 30)
        self._client = client
        self._owns_client = client is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run passes in a background thread every ``dispatcher_interval_seconds``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="onemember-dispatcher", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the running pass to end after its current HTTP call; unsent claims are given back."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("event dispatcher still finishing an HTTP call; leaving it to end on its own")
                return
            self._thread = None
        self.close()

    def run_forever(self) -> None:
        """Run passes in the calling thread until interrupted (``onemember worker``)."""
        self._stop.clear()
        try:
            self._loop()
        except KeyboardInterrupt:
            log.info("dispatcher interrupted")
        finally:
            self.close()

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def _loop(self) -> None:
        log.info("event dispatcher started")
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # A broken row or a lost database must not end the thread; the next pass retries.
                log.exception("event dispatcher pass failed")
            try:
                # Messages (SMS codes, reminders) whose first send failed are retried here.
                from onemember.messaging.channels import default_sms_channel
                from onemember.messaging.service import deliver_pending

                deliver_pending(self.factory, default_sms_channel())
            except Exception:
                log.exception("message delivery pass failed")
            self._stop.wait(self.settings.dispatcher_interval_seconds)
        self.close()
        log.info("event dispatcher stopped")

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False, timeout=self.timeout)
        return self._client

    # --- one pass -------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Fan out new events and send every due delivery; returns how many HTTP attempts were made.

        ``now`` fixes the clock for the whole pass (tests drive retries with it); by default each
        step reads the wall clock.
        """
        self.fan_out(now)
        sent = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            if self._stop.is_set():
                break
            attempts = self.claim(now or utcnow())
            for index, attempt in enumerate(attempts):
                if self._stop.is_set():
                    self.release(attempts[index:], now or utcnow())
                    return sent
                try:
                    result = webhooks.send(self.client, attempt, now or utcnow(), self.timeout)
                except Exception as exc:  # a bug must cost one attempt, not the rest of the batch
                    log.exception("webhook delivery %s raised", attempt.delivery_id)
                    result = AttemptResult(False, None, f"{type(exc).__name__}: {exc}"[:1000])
                self.record(attempt, result, now or utcnow())
                sent += 1
            if len(attempts) < CLAIM_BATCH:
                break
        return sent

    def fan_out(self, now: datetime | None = None) -> int:
        """Turn undispatched events into deliveries, batch by batch; returns how many were dispatched."""
        total = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            done = self._fan_out_batch(now or utcnow())
            total += done
            if done < FAN_OUT_BATCH:
                break
        return total

    def _fan_out_batch(self, now: datetime) -> int:
        with self.factory() as session, session.begin():
            events = list(
                session.scalars(
                    select(Event)
                    .where(Event.dispatched_at.is_(None))
                    .order_by(Event.id)
                    .limit(FAN_OUT_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not events:
                return 0
            endpoints: dict[int, list[WebhookEndpoint]] = defaultdict(list)
            for endpoint in session.scalars(
                select(WebhookEndpoint)
                .where(
                    WebhookEndpoint.org_id.in_({e.org_id for e in events}), WebhookEndpoint.active.is_(True)
                )
                .order_by(WebhookEndpoint.id)
            ):
                endpoints[endpoint.org_id].append(endpoint)
            for event in events:
                for endpoint in endpoints[event.org_id]:
                    if webhooks.endpoint_matches(endpoint, event):
                        session.add(
                            WebhookDelivery(
                                org_id=event.org_id,
                                endpoint_id=endpoint.id,
                                event_id=event.id,
                                status=DeliveryStatus.PENDING,
                                attempts=0,
                                next_attempt_at=now,
                                last_error="",
                            )
                        )
                event.dispatched_at = now
            return len(events)

    def claim(self, now: datetime) -> list[Attempt]:
        """Take a batch of due deliveries for this worker and count their attempt; commits before sending."""
        attempts: list[Attempt] = []
        with self.factory() as session, session.begin():
            due = list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(
                        WebhookDelivery.status == DeliveryStatus.PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not due:
                return attempts
            events = {
                e.id: e for e in session.scalars(select(Event).where(Event.id.in_({d.event_id for d in due})))
            }
            endpoints = {
                e.id: e
                for e in session.scalars(
                    select(WebhookEndpoint).where(WebhookEndpoint.id.in_({d.endpoint_id for d in due}))
                )
            }
            for delivery in due:
                event, endpoint = events[delivery.event_id], endpoints[delivery.endpoint_id]
                if not endpoint.active:
                    delivery.status = DeliveryStatus.CANCELLED
                    continue
                if delivery.attempts >= self.settings.webhook_max_attempts:
                    # Its last attempt was claimed by a worker that never reported back.
                    delivery.status = DeliveryStatus.DEAD
                    delivery.last_error = delivery.last_error or "worker lost during the last attempt"
                    continue
                delivery.attempts += 1
                delivery.next_attempt_at = now + self.lease
                try:
                    secret = webhooks.open_secret(endpoint.secret)
                except ValueError as exc:
                    self._fail(delivery, None, f"cannot read the signing secret: {exc}", now)
                    continue
                attempts.append(
                    Attempt(
                        delivery_id=delivery.id,
                        url=endpoint.url,
                        secret=secret,
                        event_id=event.event_id,
                        event_type=event.type,
                        body=webhooks.event_body(event),
                    )
                )
        return attempts

    def release(self, attempts: list[Attempt], now: datetime) -> None:
        """Give back claimed deliveries that were not sent (the worker is stopping), uncounted."""
        with self.factory() as session, session.begin():
            for delivery in session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.id.in_([a.delivery_id for a in attempts]),
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                )
                .with_for_update()
            ):
                delivery.attempts -= 1
                delivery.next_attempt_at = now

    def record(self, attempt: Attempt, result: AttemptResult, now: datetime) -> None:
        """Store the answer of one attempt."""
        with self.factory() as session, session.begin():
            delivery = session.scalar(
                select(WebhookDelivery).where(WebhookDelivery.id == attempt.delivery_id).with_for_update()
            )
            if delivery is None or delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD):
                return
            if result.ok:
                # Also when the endpoint was disabled during the call: the receiver did get it.
                delivery.status = DeliveryStatus.DELIVERED
                delivery.delivered_at = now
                delivery.next_attempt_at = now  # drop the claim's lease
                delivery.last_status_code = result.status_code
                delivery.last_error = ""
            elif delivery.status == DeliveryStatus.PENDING:
                self._fail(delivery, result.status_code, result.error, now)
            else:
                delivery.last_status_code, delivery.last_error = result.status_code, result.error
        if not result.ok:
            log.warning(
                "webhook delivery %s to %s failed: %s", attempt.delivery_id, attempt.url, result.error
            )

    def _fail(self, delivery: WebhookDelivery, status_code: int | None, error: str, now: datetime) -> None:
        delivery.last_status_code = status_code
        delivery.last_error = error
        if delivery.attempts >= self.settings.webhook_max_attempts:
            delivery.status = DeliveryStatus.DEAD
            delivery.next_attempt_at = now  # the time of the last attempt, not the claim's lease
        else:
            backoff = self.settings.webhook_backoff_base_seconds * 2 ** (delivery.attempts - 1)
            delivery.next_attempt_at = now + timedelta(seconds=backoff)
