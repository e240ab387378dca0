"""Running member statistics, changed inside the checkout and return transactions.

Each update is an atomic upsert, so concurrent orders of the same member never lose an increment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select, update
from sqlalchemy.orm import Session

from onemember.common.upsert import upsert
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from onemember.tiers.models import MemberMonthlyStats


@dataclass
class LineFact:
    category: str
    quantity: int
    spend_fen: int


def _earliest(col: ColumnElement[datetime], new: datetime) -> ColumnElement[datetime]:
    return case((col.is_(None), new), (col > new, new), else_=col)


def _latest(col: ColumnElement[datetime], new: datetime) -> ColumnElement[datetime]:
    return case((col.is_(None), new), (col < new, new), else_=col)


def apply_order(
    session: Session,
    *,
    org_id: int,
    member_id: int,
    store_id: int,
    at: datetime,
    spend_fen: int,
    lines: list[LineFact],
    month: int | None = None,
) -> None:
    ms: Table = MemberStats.__table__  # type: ignore[assignment]
    upsert(
        session,
        ms,
        {
            "member_id": member_id,
            "org_id": org_id,
            "first_purchase_at": at,
            "first_store_id": store_id,
            "last_purchase_at": at,
            "last_store_id": store_id,
            "order_count": 1,
            "total_spend_fen": spend_fen,
            "return_count": 0,
            "returned_fen": 0,
            "store_count": 0,
        },
        ["member_id"],
        {
            "first_store_id": case((ms.c.first_purchase_at > at, store_id), else_=ms.c.first_store_id),
            "first_purchase_at": _earliest(ms.c.first_purchase_at, at),
            "last_store_id": case((ms.c.last_purchase_at <= at, store_id), else_=ms.c.last_store_id),
            "last_purchase_at": _latest(ms.c.last_purchase_at, at),
            "order_count": ms.c.order_count + 1,
            "total_spend_fen": ms.c.total_spend_fen + spend_fen,
        },
    )
    ss: Table = MemberStoreStats.__table__  # type: ignore[assignment]
    upsert(
        session,
        ss,
        {
            "member_id": member_id,
            "store_id": store_id,
            "org_id": org_id,
            "order_count": 1,
            "spend_fen": spend_fen,
            "last_purchase_at": at,
        },
        ["member_id", "store_id"],
        {
            "order_count": ss.c.order_count + 1,
            "spend_fen": ss.c.spend_fen + spend_fen,
            "last_purchase_at": _latest(ss.c.last_purchase_at, at),
        },
    )
    by_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        by_cat[line.category or "-"][0] += line.quantity
        by_cat[line.category or "-"][1] += line.spend_fen
    cs: Table = MemberCategoryStats.__table__  # type: ignore[assignment]
    if by_cat:
        upsert(
            session,
            cs,
            [
                {
                    "member_id": member_id,
                    "category": category,
                    "org_id": org_id,
                    "order_count": 1,
                    "quantity": qty,
                    "spend_fen": spend,
                    "last_purchase_at": at,
                }
                for category, (qty, spend) in sorted(by_cat.items())
            ],
            ["member_id", "category"],
            {
                "order_count": cs.c.order_count + 1,
                "quantity": lambda excluded: cs.c.quantity + excluded.quantity,
                "spend_fen": lambda excluded: cs.c.spend_fen + excluded.spend_fen,
                "last_purchase_at": _latest(cs.c.last_purchase_at, at),
            },
        )
    if month is not None:
        mm: Table = MemberMonthlyStats.__table__  # type: ignore[assignment]
        upsert(
            session,
            mm,
            {"member_id": member_id, "month": month, "org_id": org_id, "orders": 1, "spend_fen": spend_fen},
            ["member_id", "month"],
            {"orders": mm.c.orders + 1, "spend_fen": mm.c.spend_fen + spend_fen},
        )
    _refresh_store_count(session, member_id)


def _refresh_store_count(session: Session, member_id: int) -> None:
    session.execute(
        update(MemberStats)
        .where(MemberStats.member_id == member_id)
        .values(
            store_count=select(func.count())
            .where(MemberStoreStats.member_id == member_id, MemberStoreStats.order_count > 0)
            .scalar_subquery()
        )
    )


def apply_return(
    session: Session,
    *,
    member_id: int,
    original_store_id: int,
    amount_fen: int,
    lines: list[LineFact],
    month: int | None = None,
) -> None:
    """A return lowers spend where it was made (the original store, categories and the order's month);
    counts of orders stay."""
    if month is not None:
        session.execute(
            update(MemberMonthlyStats)
            .where(MemberMonthlyStats.member_id == member_id, MemberMonthlyStats.month == month)
            .values(spend_fen=MemberMonthlyStats.spend_fen - amount_fen)
        )
    session.execute(
        update(MemberStats)
        .where(MemberStats.member_id == member_id)
        .values(
            return_count=MemberStats.return_count + 1,
            returned_fen=MemberStats.returned_fen + amount_fen,
            total_spend_fen=MemberStats.total_spend_fen - amount_fen,
        )
    )
    session.execute(
        update(MemberStoreStats)
        .where(MemberStoreStats.member_id == member_id, MemberStoreStats.store_id == original_store_id)
        .values(spend_fen=MemberStoreStats.spend_fen - amount_fen)
    )
    by_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        by_cat[line.category or "-"][0] += line.quantity
        by_cat[line.category or "-"][1] += line.spend_fen
    for category, (qty, spend) in sorted(by_cat.items()):
        session.execute(
            update(MemberCategoryStats)
            .where(MemberCategoryStats.member_id == member_id, MemberCategoryStats.category == category)
            .values(
                quantity=MemberCategoryStats.quantity - qty, spend_fen=MemberCategoryStats.spend_fen - spend
            )
        )


def merge_into(session: Session, *, survivor_id: int, merged_id: int) -> None:
    """Fold the merged member's running stats into the survivor's."""
    src = session.get(MemberStats, merged_id)
    if src is not None:
        dst = session.get(MemberStats, survivor_id)
        if dst is None:
            session.add(
                MemberStats(
                    member_id=survivor_id,
                    org_id=src.org_id,
                    first_purchase_at=src.first_purchase_at,
                    first_store_id=src.first_store_id,
                    last_purchase_at=src.last_purchase_at,
                    last_store_id=src.last_store_id,
                    order_count=src.order_count,
                    total_spend_fen=src.total_spend_fen,
                    return_count=src.return_count,
                    returned_fen=src.returned_fen,
                    store_count=0,
                )
            )
        else:
            if src.first_purchase_at and (
                dst.first_purchase_at is None or src.first_purchase_at < dst.first_purchase_at
            ):
                dst.first_purchase_at, dst.first_store_id = src.first_purchase_at, src.first_store_id
            if src.last_purchase_at and (
                dst.last_purchase_at is None or src.last_purchase_at > dst.last_purchase_at
            ):
                dst.last_purchase_at, dst.last_store_id = src.last_purchase_at, src.last_store_id
            dst.order_count += src.order_count
            dst.total_spend_fen += src.total_spend_fen
            dst.return_count += src.return_count
            dst.returned_fen += src.returned_fen
        session.delete(src)
    _fold(session, MemberStoreStats, "store_id", ("order_count", "spend_fen"), survivor_id, merged_id)
    _fold(
        session,
        MemberCategoryStats,
        "category",
        ("order_count", "quantity", "spend_fen"),
        survivor_id,
        merged_id,
    )
    _fold(session, MemberMonthlyStats, "month", ("orders", "spend_fen"), survivor_id, merged_id)
    session.flush()
    _refresh_store_count(session, survivor_id)


def _fold(
    session: Session, model: Any, key: str, sums: tuple[str, ...], survivor_id: int, merged_id: int
) -> None:
    """Add the merged member's rows of a per-(member, key) stats table into the survivor's rows."""
    for row in list(session.scalars(select(model).where(model.member_id == merged_id))):
        target = session.get(model, (survivor_id, getattr(row, key)))
        if target is None:
            columns = [c.key for c in model.__table__.columns]
            session.add(model(**{**{c: getattr(row, c) for c in columns}, "member_id": survivor_id}))
        else:
            for column in sums:
                setattr(target, column, getattr(target, column) + getattr(row, column))
            latest = getattr(row, "last_purchase_at", None)
            if latest is not None and (target.last_purchase_at is None or latest > target.last_purchase_at):
                target.last_purchase_at = latest
        session.delete(row)
