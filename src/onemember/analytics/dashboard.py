"""Key numbers and daily series for a scope (the whole org, a region or a store).

Everything here reads indexed ranges (orders by time, entries by time, running member stats), never a
scan of all orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, literal_column, select
from sqlalchemy.orm import Session

from onemember.members.models import Member
from onemember.orders.models import Order
from onemember.points.models import PointEntry
from onemember.segments.models import MemberStats, MemberStoreStats


@dataclass
class Scope:
    org_id: int
    store_ids: frozenset[int] | None  # None: every store
    tz: str = "Asia/Shanghai"

    def stores(self, column: Any) -> ColumnElement[bool]:
        if self.store_ids is None:
            return literal_column("1") == literal_column("1")
        return column.in_(sorted(self.store_ids))  # type: ignore[no-any-return]


@dataclass
class Kpis:
    members: int
    new_members_today: int
    new_members_month: int
    orders_today: int
    orders_month: int
    sales_today_fen: int
    sales_month_fen: int
    multi_store_members: int
    points_issued_today: int
    points_issued_month: int
    points_redeemed_today: int
    points_redeemed_month: int


@dataclass
class Series:
    days: list[str] = field(default_factory=list)
    sales_fen: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    new_members: list[int] = field(default_factory=list)
    points_issued: list[int] = field(default_factory=list)
    points_redeemed: list[int] = field(default_factory=list)


def _bounds(tz: str, now: datetime) -> tuple[datetime, datetime, date]:
    local = now.astimezone(ZoneInfo(tz))
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    return day_start, month_start, local.date()


def _local_day(session: Session, column: Any, tz: str) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone(tz, column), "YYYY-MM-DD")
    offset = datetime.now(ZoneInfo(tz)).utcoffset() or timedelta()
    return func.strftime("%Y-%m-%d", column, f"{int(offset.total_seconds())} seconds")


def kpis(session: Session, scope: Scope, now: datetime) -> Kpis:
    day_start, month_start, _ = _bounds(scope.tz, now)

    def count_members(since: datetime | None) -> int:
        q = (
            select(func.count())
            .select_from(Member)
            .where(
                Member.org_id == scope.org_id,
                Member.status == "active",
                scope.stores(Member.registered_store_id),
            )
        )
        if since is not None:
            q = q.where(Member.created_at >= since)
        return int(session.scalar(q) or 0)

    def orders(since: datetime) -> tuple[int, int]:
        row = session.execute(
            select(func.count(), func.coalesce(func.sum(Order.total_fen), 0)).where(
                Order.org_id == scope.org_id, Order.occurred_at >= since, scope.stores(Order.store_id)
            )
        ).one()
        return int(row[0]), int(row[1])

    def points(kind: str, since: datetime) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(PointEntry.amount), 0)).where(
                PointEntry.org_id == scope.org_id,
                PointEntry.kind == kind,
                PointEntry.created_at >= since,
                scope.stores(PointEntry.store_id),
            )
        )
        return abs(int(total or 0))

    if scope.store_ids is None:
        multi = session.scalar(
            select(func.count())
            .select_from(MemberStats)
            .where(MemberStats.org_id == scope.org_id, MemberStats.store_count >= 2)
        )
    else:
        multi = session.scalar(
            select(func.count(func.distinct(MemberStoreStats.member_id)))
            .join(MemberStats, MemberStats.member_id == MemberStoreStats.member_id)
            .where(
                MemberStoreStats.org_id == scope.org_id,
                scope.stores(MemberStoreStats.store_id),
                MemberStats.store_count >= 2,
            )
        )
    o_today, s_today = orders(day_start)
    o_month, s_month = orders(month_start)
    return Kpis(
        members=count_members(None),
        new_members_today=count_members(day_start),
        new_members_month=count_members(month_start),
        orders_today=o_today,
        orders_month=o_month,
        sales_today_fen=s_today,
        sales_month_fen=s_month,
        multi_store_members=int(multi or 0),
        points_issued_today=points("earn", day_start),
        points_issued_month=points("earn", month_start),
        points_redeemed_today=points("redeem", day_start),
        points_redeemed_month=points("redeem", month_start),
    )


def daily_series(session: Session, scope: Scope, now: datetime, days: int = 30) -> Series:
    _, _, today = _bounds(scope.tz, now)
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=ZoneInfo(scope.tz))
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}
    series = Series(
        days=labels,
        sales_fen=[0] * days,
        orders=[0] * days,
        new_members=[0] * days,
        points_issued=[0] * days,
        points_redeemed=[0] * days,
    )
    day = _local_day(session, Order.occurred_at, scope.tz)
    for d, n, total in session.execute(
        select(day, func.count(), func.coalesce(func.sum(Order.total_fen), 0))
        .where(Order.org_id == scope.org_id, Order.occurred_at >= since, scope.stores(Order.store_id))
        .group_by(day)
    ).all():
        if d in index:
            series.orders[index[d]] = int(n)
            series.sales_fen[index[d]] = int(total)
    mday = _local_day(session, Member.created_at, scope.tz)
    for d, n in session.execute(
        select(mday, func.count())
        .where(
            Member.org_id == scope.org_id,
            Member.created_at >= since,
            scope.stores(Member.registered_store_id),
        )
        .group_by(mday)
    ).all():
        if d in index:
            series.new_members[index[d]] = int(n)
    eday = _local_day(session, PointEntry.created_at, scope.tz)
    for d, kind, total in session.execute(
        select(eday, PointEntry.kind, func.coalesce(func.sum(PointEntry.amount), 0))
        .where(
            PointEntry.org_id == scope.org_id,
            PointEntry.created_at >= since,
            PointEntry.kind.in_(["earn", "redeem"]),
            scope.stores(PointEntry.store_id),
        )
        .group_by(eday, PointEntry.kind)
    ).all():
        if d in index:
            target = series.points_issued if kind == "earn" else series.points_redeemed
            target[index[d]] = abs(int(total))
    return series


def sales_by_store(session: Session, scope: Scope, now: datetime) -> list[tuple[int, int]]:
    _, month_start, _ = _bounds(scope.tz, now)
    rows = session.execute(
        select(Order.store_id, func.coalesce(func.sum(Order.total_fen), 0))
        .where(Order.org_id == scope.org_id, Order.occurred_at >= month_start, scope.stores(Order.store_id))
        .group_by(Order.store_id)
        .order_by(func.sum(Order.total_fen).desc())
    ).all()
    return [(int(s), int(v)) for s, v in rows]


def store_count_distribution(session: Session, scope: Scope) -> list[tuple[int, int]]:
    """How many members shopped at 1, 2, 3, ... stores (members of the scope's stores)."""
    q = select(MemberStats.store_count, func.count()).where(
        MemberStats.org_id == scope.org_id, MemberStats.store_count > 0
    )
    if scope.store_ids is not None:
        q = q.where(
            MemberStats.member_id.in_(
                select(MemberStoreStats.member_id).where(and_(scope.stores(MemberStoreStats.store_id)))
            )
        )
    rows = session.execute(q.group_by(MemberStats.store_count).order_by(MemberStats.store_count)).all()
    return [(int(n), int(c)) for n, c in rows]
