"""HQ's view of the points pool: liability, expiry ahead, issued vs redeemed by store, breakage and the
biggest manual adjustments. Reads lots and entries by indexed columns and groups in SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.members.models import Member
from onemember.org.models import Org, Region, Store
from onemember.points import service as points
from onemember.points.models import PointAdjustment, PointEntry, PointLot


class StoreFlow(BaseModel):
    store_code: str
    store_name: str
    issued: int
    redeemed: int
    expired: int


class MonthPoints(BaseModel):
    month: str
    points: int


class Adjustment(BaseModel):
    member_no: str
    points: int
    reason: str
    requested_by: str
    decided_by: str
    created_at: datetime


class Overview(BaseModel):
    outstanding_points: int
    point_value_fen_per_100: int
    liability_fen: int
    issued_12m: int
    redeemed_12m: int
    expired_12m: int
    breakage_pct: float
    expiring_by_month: list[MonthPoints]
    by_store: list[StoreFlow]
    biggest_adjustments: list[Adjustment]


def scope_store_ids(
    session: Session, principal: Principal, store: str | None, region: str | None
) -> frozenset[int] | None:
    chosen = principal.store_ids
    if store:
        s = session.scalar(select(Store).where(Store.org_id == principal.org_id, Store.code == store))
        if s is not None:
            principal.require_store(s.id)
            chosen = frozenset({s.id})
    elif region:
        r = session.scalar(select(Region).where(Region.org_id == principal.org_id, Region.code == region))
        if r is not None:
            ids = {i for i in session.scalars(select(Store.id).where(Store.region_id == r.id))}
            chosen = frozenset(ids if chosen is None else ids & chosen)
    return chosen


def _in(column: Any, store_ids: frozenset[int] | None) -> ColumnElement[bool]:
    return literal(True) if store_ids is None else column.in_(sorted(store_ids))


def compute(
    session: Session, org_id: int, store_ids: frozenset[int] | None, now: datetime, *, months: int = 12
) -> Overview:
    org = session.get(Org, org_id)
    assert org is not None
    program = points.default_program(session, org_id)
    tz = ZoneInfo(org.timezone)
    outstanding = int(
        session.scalar(
            select(func.coalesce(func.sum(PointLot.remaining), 0)).where(
                PointLot.org_id == org_id, PointLot.remaining > 0, _in(PointLot.store_id, store_ids)
            )
        )
        or 0
    )
    liability = outstanding * 100 // program.redeem_points_per_yuan
    since = now - timedelta(days=365)
    flows = session.execute(
        select(PointEntry.store_id, PointEntry.kind, func.sum(PointEntry.amount))
        .where(
            PointEntry.org_id == org_id,
            PointEntry.created_at >= since,
            PointEntry.kind.in_(["earn", "redeem", "expire", "earn_reversal", "redeem_refund"]),
            _in(PointEntry.store_id, store_ids),
        )
        .group_by(PointEntry.store_id, PointEntry.kind)
    ).all()
    stores = {s.id: s for s in session.scalars(select(Store).where(Store.org_id == org_id))}
    per: dict[int | None, dict[str, int]] = {}
    for store_id, kind, total in flows:
        per.setdefault(store_id, {}).setdefault(kind, 0)
        per[store_id][kind] += int(total or 0)
    issued = sum(v.get("earn", 0) + v.get("earn_reversal", 0) for v in per.values())
    redeemed = -sum(v.get("redeem", 0) + v.get("redeem_refund", 0) for v in per.values())
    expired = -sum(v.get("expire", 0) for v in per.values())
    by_store = [
        StoreFlow(
            store_code=stores[sid].code,
            store_name=stores[sid].name,
            issued=v.get("earn", 0) + v.get("earn_reversal", 0),
            redeemed=-(v.get("redeem", 0) + v.get("redeem_refund", 0)),
            expired=-v.get("expire", 0),
        )
        for sid, v in per.items()
        if sid is not None and sid in stores
    ]
    by_store.sort(key=lambda f: -f.issued)
    horizon = now + timedelta(days=31 * months)
    rows = (
        session.execute(
            select(PointLot.expires_at, PointLot.remaining).where(
                PointLot.org_id == org_id,
                PointLot.remaining > 0,
                PointLot.expires_at > now,
                PointLot.expires_at <= horizon,
                _in(PointLot.store_id, store_ids),
            )
        ).all()
        if outstanding
        else []
    )
    buckets: dict[str, int] = {}
    local_now = now.astimezone(tz)
    for i in range(months):
        y, m = divmod(local_now.month - 1 + i, 12)
        buckets[f"{local_now.year + y}-{m + 1:02d}"] = 0
    for expires_at, remaining in rows:
        if expires_at is None:
            continue
        # A lot expiring at local midnight belongs to the day before (its last valid day).
        key = (expires_at.astimezone(tz) - timedelta(seconds=1)).strftime("%Y-%m")
        if key in buckets:
            buckets[key] += int(remaining)
    adjustments = session.execute(
        select(PointAdjustment, Member.member_no)
        .join(Member, Member.id == PointAdjustment.member_id)
        .where(
            PointAdjustment.org_id == org_id,
            PointAdjustment.status == "applied",
            PointAdjustment.created_at >= since,
        )
        .order_by(func.abs(PointAdjustment.points).desc())
        .limit(10)
    ).all()
    return Overview(
        outstanding_points=outstanding,
        point_value_fen_per_100=100 * 100 // program.redeem_points_per_yuan,
        liability_fen=liability,
        issued_12m=issued,
        redeemed_12m=redeemed,
        expired_12m=expired,
        breakage_pct=round(100 * expired / issued, 2) if issued else 0.0,
        expiring_by_month=[MonthPoints(month=k, points=v) for k, v in buckets.items()],
        by_store=by_store,
        biggest_adjustments=[
            Adjustment(
                member_no=no,
                points=a.points,
                reason=a.reason,
                requested_by=a.requested_by,
                decided_by=a.decided_by,
                created_at=a.created_at,
            )
            for a, no in adjustments
        ],
    )
