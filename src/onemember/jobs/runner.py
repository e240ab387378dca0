"""Runs the daily jobs of each org once per business day: expiry, reminders, birthday gifts, tier review.

``onemember jobs run`` runs them now; ``serve`` and ``worker`` run them in the background shortly after
02:00 in the org's time zone. A ``job_runs`` row per (org, job, day) is the once-a-day lock, so several
workers never run the same job twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from onemember.db import utcnow
from onemember.jobs.models import JobRun
from onemember.org.models import Org
from onemember.points import jobs as points_jobs
from onemember.points import service as points
from onemember.tiers import service as tiers

log = logging.getLogger(__name__)
JOBS = ("expire", "remind", "birthday", "tiers", "coupons")
DAILY_HOUR = 2


def _run_one(session: Session, org: Org, name: str, now: datetime) -> dict[str, Any]:
    program = points.default_program(session, org.id)
    if name == "expire":
        r = points_jobs.expire_due(session, org.id, now)
        return {"accounts": r.accounts, "points": r.points}
    if name == "remind":
        return {"members": points_jobs.remind_expiring(session, org.id, program, now, org.timezone)}
    if name == "birthday":
        return {"members": points_jobs.birthday_gifts(session, org.id, program, now, org.timezone)}
    if name == "coupons":
        from onemember.coupons.service import expire_coupons

        return {"expired": expire_coupons(session, org.id, now)}
    if name == "tiers":
        tier_set = tiers.active_set(session, program.id)
        return tiers.review_all(session, tier_set, now, org.timezone) if tier_set else {}
    raise ValueError(f"unknown job {name}")


def run_daily(
    factory: sessionmaker[Session],
    now: datetime | None = None,
    *,
    only: tuple[str, ...] = JOBS,
    force: bool = False,
    org_ids: list[int] | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the daily jobs for every org (or the given ones); a job already run for that business day is
    skipped unless forced."""
    now = now or utcnow()
    results: dict[str, dict[str, Any]] = {}
    with factory() as session:
        query = select(Org).order_by(Org.id)
        if org_ids is not None:
            query = query.where(Org.id.in_(org_ids))
        orgs = list(session.scalars(query))
    for org in orgs:
        day = now.astimezone(ZoneInfo(org.timezone)).date()
        for name in only:
            if progress:
                progress(org.code, name)
            with factory() as session:
                if not force:
                    try:
                        session.add(JobRun(org_id=org.id, name=name, day=day, started_at=utcnow()))
                        session.flush()
                    except IntegrityError:
                        session.rollback()
                        results[f"{org.code}:{name}"] = {"skipped": "already ran today"}
                        continue
                out = _run_one(session, org, name, now)
                run = session.scalar(
                    select(JobRun).where(JobRun.org_id == org.id, JobRun.name == name, JobRun.day == day)
                )
                if run is not None:
                    run.finished_at, run.result = utcnow(), out
                session.commit()
                results[f"{org.code}:{name}"] = out
    return results


class Scheduler:
    """A background thread that runs the daily jobs once the org's day has passed 02:00."""

    def __init__(self, factory: sessionmaker[Session], interval: float = 60.0) -> None:
        self.factory = factory
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="onemember-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                now = utcnow()
                if now.astimezone(ZoneInfo("Asia/Shanghai")).hour >= DAILY_HOUR:
                    run_daily(self.factory, now)
            except Exception:  # keep the thread alive; the next tick retries
                log.exception("daily jobs failed")
