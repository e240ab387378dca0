"""Proves the settlement entries hold together (``onemember verify`` calls ``verify_settlement``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, String, any_, cast, exists, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from onemember.common.types import EntryKind
from onemember.coupons.models import CouponRedemption
from onemember.orders.models import OrderReturn
from onemember.packages import service as packages
from onemember.packages.models import PackageUse
from onemember.points.models import PointEntry, PointLot, PointLotMovement
from onemember.settlement.models import SettlementEntry, SettlementPeriod
from onemember.settlement.service import (
    Kind,
    PeriodStatus,
    PointsPolicy,
    coupon_owed,
    coupon_ref,
    party,
    party_nets,
    redemption_shares,
    refund_reversals,
)


@dataclass
class SettlementReport:
    entries: int = 0
    sources: int = 0  # redemptions and refunds whose points settlement was re-derived
    closed_periods: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_settlement(session: Session, org_id: int | None = None) -> SettlementReport:
    """Prove the settlement entries hold together:

    * per kind and overall, what all parties are owed equals what all parties owe (nets sum to zero);
    * every closed period still has exactly the entries, total and per-party nets frozen at its close;
    * every coupon redemption and package use that someone else funds has exactly the entries its
      template's bearer rule gives (after returns, the reversals leave what the kept discount is owed),
      and every coupon or package entry has its source;
    * every points entry re-derives from the lot movements of the redemption or refund it settles, under
      the policy recorded on it; every cross-store return entry matches its return.
    """
    report = SettlementReport()
    problems = report.problems
    org_ids = (
        [org_id]
        if org_id is not None
        else [int(o) for o in session.scalars(select(SettlementEntry.org_id).distinct())]
    )
    for oid in org_ids:
        _verify_org(session, oid, report, problems)
    return report


def _verify_org(session: Session, org_id: int, report: SettlementReport, problems: list[str]) -> None:
    # Each party's net per kind, from the creditor side and the debtor side read separately: what all
    # parties are owed must equal what all parties owe, per kind and overall.
    kind_nets: dict[str, dict[int, int]] = {}
    for party_col, sign in ((SettlementEntry.creditor_key, 1), (SettlementEntry.debtor_key, -1)):
        rows = session.execute(
            select(SettlementEntry.kind, party_col, func.sum(SettlementEntry.amount_fen), func.count())
            .where(SettlementEntry.org_id == org_id)
            .group_by(SettlementEntry.kind, party_col)
        ).all()
        for kind, key, amount, n in rows:
            per_kind = kind_nets.setdefault(str(kind), {})
            per_kind[int(key)] = per_kind.get(int(key), 0) + sign * int(amount or 0)
            if sign == 1:
                report.entries += int(n)
    for kind, per_party in sorted(kind_nets.items()):
        if sum(per_party.values()) != 0:
            problems.append(f"org {org_id} {kind}: party nets sum to {sum(per_party.values())}, not 0")
    overall = sum(v for per_party in kind_nets.values() for v in per_party.values())
    if overall != 0:
        problems.append(f"org {org_id}: party nets sum to {overall}, not 0")
    closed = session.scalars(
        select(SettlementPeriod).where(
            SettlementPeriod.org_id == org_id, SettlementPeriod.status == PeriodStatus.CLOSED
        )
    ).all()
    for row in closed:
        report.closed_periods += 1
        nets, count, total = party_nets(session, org_id, row.period)
        if sum(nets.values()) != 0:
            problems.append(f"org {org_id} period {row.period}: party nets sum to {sum(nets.values())}")
        frozen = {str(k): v for k, v in sorted(nets.items()) if v}
        if (count, total, frozen) != (row.entry_count, row.total_fen, dict(row.closing_nets)):
            problems.append(
                f"org {org_id} period {row.period}: entries changed after close "
                f"({count} entries, {total} fen now; {row.entry_count} entries, {row.total_fen} fen at close)"
            )
        late = session.scalar(
            select(func.count()).where(
                SettlementEntry.org_id == org_id,
                SettlementEntry.period == row.period,
                SettlementEntry.created_at > row.closed_at,
            )
        )
        if late:
            problems.append(f"org {org_id} period {row.period}: {late} entries written after the close")
    _verify_points(session, org_id, report, problems)
    _verify_returns(session, org_id, problems)
    _verify_coupons(session, org_id, report, problems)
    _verify_packages(session, org_id, report, problems)


# Sources are read in batches: the product of a month at chain scale is millions of entries, which
# neither fit in one session's memory as ORM objects nor bear two round trips each.
BATCH = 2_000


def _batches(session: Session, column: Any, where: Sequence[Any]) -> Iterator[list[int]]:
    """The distinct non-null values of ``column`` (ascending) under ``where``, ``BATCH`` at a time."""
    last: int | None = None
    while True:
        query = select(column).where(*where, column.is_not(None)).group_by(column).order_by(column)
        if last is not None:
            query = query.where(column > last)
        ids = [int(v) for v in session.scalars(query.limit(BATCH))]
        if not ids:
            return
        yield ids
        last = ids[-1]


def _one_of(session: Session, column: Any, values: Sequence[Any], item: Any) -> Any:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``: one parameter instead of thousands
    for the driver to bind and the server to parse."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), ARRAY(item)))
    return column.in_(list(values))


def _per_issuer_many(session: Session, signs: dict[int, int]) -> dict[int, dict[int, int]]:
    """``service.per_issuer`` for many point entries in one query: entry id -> issuing party -> points
    taken from (sign -1) or given back to (+1) lots of that party."""
    out: dict[int, dict[int, int]] = {}
    if not signs:
        return out
    rows = session.execute(
        select(PointLotMovement.entry_id, PointLot.store_id, func.sum(PointLotMovement.amount))
        .join(PointLot, PointLot.id == PointLotMovement.lot_id)
        .where(_one_of(session, PointLotMovement.entry_id, sorted(signs), BigInteger))
        .group_by(PointLotMovement.entry_id, PointLot.store_id)
    ).all()
    for entry_id, store_id, amount in rows:
        pts = int(amount or 0) * signs[int(entry_id)]
        if pts > 0:
            per = out.setdefault(int(entry_id), {})
            per[party(store_id)] = per.get(party(store_id), 0) + pts
    return out


_POINTS_COLUMNS = (
    SettlementEntry.id,
    SettlementEntry.point_entry_id,
    SettlementEntry.debtor_key,
    SettlementEntry.creditor_key,
    SettlementEntry.points,
    SettlementEntry.amount_fen,
    SettlementEntry.reverses_id,
    # As text, decoded only for the one entry per redemption whose policy is read.
    cast(SettlementEntry.details, String).label("details"),
)


def _verify_points(session: Session, org_id: int, report: SettlementReport, problems: list[str]) -> None:
    points_entries = (SettlementEntry.org_id == org_id, SettlementEntry.kind == Kind.POINTS_REDEEMED)
    for (entry_id,) in session.execute(
        select(SettlementEntry.id)
        .where(*points_entries, SettlementEntry.point_entry_id.is_(None))
        .order_by(SettlementEntry.id)
    ):
        problems.append(f"settlement entry {entry_id}: points entry without its point entry")
    # Sources in id order, so each refund is re-derived with the refunds before it already counted.
    for source_ids in _batches(session, SettlementEntry.point_entry_id, points_entries):
        by_source: dict[int, list[Any]] = {}
        for row in session.execute(
            select(*_POINTS_COLUMNS)
            .where(*points_entries, SettlementEntry.point_entry_id.between(source_ids[0], source_ids[-1]))
            .order_by(SettlementEntry.id)
        ):
            by_source.setdefault(int(row.point_entry_id), []).append(row)
        kinds = {
            int(pid): (str(kind), reverses)
            for pid, kind, reverses in session.execute(
                select(PointEntry.id, PointEntry.kind, PointEntry.reverses_entry_id).where(
                    _one_of(session, PointEntry.id, source_ids, BigInteger)
                )
            )
        }
        redeemed = [i for i in source_ids if kinds.get(i, ("", None))[0] == EntryKind.REDEEM]
        refunds: dict[int, int] = {}  # refund point entry -> the redemption it reverses
        for i in source_ids:
            kind, reverses = kinds.get(i, ("", None))
            if kind == EntryKind.REDEEM_REFUND and reverses is not None:
                refunds[i] = int(reverses)
        moved = _per_issuer_many(session, {**dict.fromkeys(redeemed, -1), **dict.fromkeys(refunds, +1)})
        originals, done = _refunded_originals(session, org_id, refunds, source_ids[0])
        for source_id in source_ids:
            report.sources += 1
            recorded = by_source[source_id]
            if source_id not in kinds:
                problems.append(f"point entry {source_id}: settled but missing")
                continue
            kind, reverses_entry_id = kinds[source_id]
            got = sorted((e.debtor_key, e.creditor_key, e.points or 0, e.amount_fen) for e in recorded)
            if kind == EntryKind.REDEEM:
                try:
                    policy = PointsPolicy.from_details(json.loads(recorded[0].details))
                except (KeyError, ValueError, TypeError):
                    problems.append(f"point entry {source_id}: settlement entries carry no valid policy")
                    continue
                redeemer = recorded[0].creditor_key
                shares = redemption_shares(moved.get(source_id, {}), redeemer, policy)
                want = sorted((s.debtor, redeemer, s.points, s.amount_fen) for s in shares)
            elif kind == EntryKind.REDEEM_REFUND and reverses_entry_id is not None:
                plan = refund_reversals(
                    originals.get(int(reverses_entry_id), []), done, moved.get(source_id, {})
                )
                want = sorted((o.creditor_key, o.debtor_key, pts, fen) for o, pts, fen in plan)
                for e in recorded:
                    if e.reverses_id is not None:
                        done[e.reverses_id] = done.get(e.reverses_id, 0) + (e.points or 0)
            else:
                problems.append(f"point entry {source_id}: a {kind} entry cannot be settled")
                continue
            if got != want:
                problems.append(
                    f"point entry {source_id}: settlement {got} does not match the redemption's lots {want}"
                )


def _refunded_originals(
    session: Session, org_id: int, refunds: dict[int, int], first_source: int
) -> tuple[dict[int, list[SettlementEntry]], dict[int, int]]:
    """For the refunds of a batch: the entries of the redemptions they reverse (by redemption point
    entry), and the points already reversed from each by refunds of earlier batches."""
    if not refunds:
        return {}, {}
    originals: dict[int, list[SettlementEntry]] = {}
    for e in session.scalars(
        select(SettlementEntry)
        .where(
            SettlementEntry.org_id == org_id,
            SettlementEntry.kind == Kind.POINTS_REDEEMED,
            _one_of(session, SettlementEntry.point_entry_id, sorted(set(refunds.values())), BigInteger),
            SettlementEntry.reverses_id.is_(None),
        )
        .order_by(SettlementEntry.id)
    ):
        assert e.point_entry_id is not None
        originals.setdefault(e.point_entry_id, []).append(e)
    ids = [e.id for es in originals.values() for e in es]
    done: dict[int, int] = {}
    if ids:
        refund = aliased(PointEntry)
        for reverses_id, pts in session.execute(
            select(SettlementEntry.reverses_id, func.coalesce(func.sum(SettlementEntry.points), 0))
            .join(refund, refund.id == SettlementEntry.point_entry_id)
            .where(
                SettlementEntry.org_id == org_id,
                SettlementEntry.kind == Kind.POINTS_REDEEMED,
                _one_of(session, SettlementEntry.reverses_id, ids, BigInteger),
                SettlementEntry.point_entry_id < first_source,
                refund.kind == EntryKind.REDEEM_REFUND,
                refund.reverses_entry_id.is_not(None),
            )
            .group_by(SettlementEntry.reverses_id)
        ):
            if reverses_id is not None:
                done[int(reverses_id)] = int(pts or 0)
    return originals, done


def _verify_returns(session: Session, org_id: int, problems: list[str]) -> None:
    """Only the mismatches come back from the database: every cross-store return entry is compared
    with its return there."""
    got = tuple_(SettlementEntry.debtor_key, SettlementEntry.creditor_key, SettlementEntry.amount_fen)
    want = tuple_(OrderReturn.original_store_id, OrderReturn.store_id, OrderReturn.refund_fen)
    rows = session.execute(
        select(
            SettlementEntry.id,
            SettlementEntry.debtor_key,
            SettlementEntry.creditor_key,
            SettlementEntry.amount_fen,
            OrderReturn.id,
            OrderReturn.return_no,
            OrderReturn.original_store_id,
            OrderReturn.store_id,
            OrderReturn.refund_fen,
        )
        .outerjoin(OrderReturn, OrderReturn.id == SettlementEntry.return_id)
        .where(
            SettlementEntry.org_id == org_id,
            SettlementEntry.kind == Kind.CROSS_STORE_RETURN,
            or_(OrderReturn.id.is_(None), got != want),
        )
        .order_by(SettlementEntry.id)
    ).all()
    for entry_id, debtor, creditor, amount, return_id, return_no, original, store, refund in rows:
        if return_id is None:
            problems.append(f"settlement entry {entry_id}: cross-store return without its return")
            continue
        problems.append(
            f"return {return_no}: settlement {(debtor, creditor, amount)} does not match the return "
            f"{(original, store, refund)}"
        )


def _entries_by_ref(session: Session, org_id: int, kind: Kind, refs: Sequence[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in session.execute(
        select(
            SettlementEntry.id,
            SettlementEntry.source_ref,
            SettlementEntry.debtor_key,
            SettlementEntry.creditor_key,
            SettlementEntry.amount_fen,
        )
        .where(
            SettlementEntry.org_id == org_id,
            SettlementEntry.kind == kind,
            _one_of(session, SettlementEntry.source_ref, refs, String),
        )
        .order_by(SettlementEntry.id)
    ):
        out.setdefault(str(row.source_ref), []).append(row)
    return out


def _orphan_refs(
    session: Session, org_id: int, kind: Kind, prefix: str, source: Any, source_ref: Any
) -> list[str]:
    """Refs of ``kind`` entries (those starting with ``prefix``, or all) that no row of ``source``
    carries as ``source_ref`` (an anti-join, so the database never holds one side in memory)."""
    ref = func.coalesce(SettlementEntry.source_ref, "")
    query = select(ref).where(
        SettlementEntry.org_id == org_id,
        SettlementEntry.kind == kind,
        ~exists().where(source.org_id == org_id, source_ref == ref),
    )
    if prefix:
        query = query.where(SettlementEntry.source_ref.startswith(prefix, autoescape=True))
    return sorted({str(r) for r in session.scalars(query.distinct())})


def _verify_coupons(session: Session, org_id: int, report: SettlementReport, problems: list[str]) -> None:
    coupon_entries = (SettlementEntry.org_id == org_id, SettlementEntry.kind == Kind.COUPON_REDEEMED)
    ref = func.coalesce(SettlementEntry.source_ref, "")
    for entry_id, source_ref in session.execute(
        select(SettlementEntry.id, ref)
        .where(
            *coupon_entries,
            ~ref.startswith("coupon:", autoescape=True),
            or_(
                SettlementEntry.reverses_id.is_(None),
                ~ref.startswith("coupon_return:", autoescape=True),
            ),
        )
        .order_by(SettlementEntry.id)
    ):
        problems.append(f"settlement entry {entry_id}: coupon entry {source_ref!r} without its redemption")
    for ids in _batches(session, CouponRedemption.id, (CouponRedemption.org_id == org_id,)):
        redemptions = session.scalars(
            select(CouponRedemption)
            .where(CouponRedemption.org_id == org_id, CouponRedemption.id.between(ids[0], ids[-1]))
            .order_by(CouponRedemption.id)
        ).all()
        originals = _entries_by_ref(session, org_id, Kind.COUPON_REDEEMED, [coupon_ref(i) for i in ids])
        original_ids = [e.id for es in originals.values() for e in es]
        reversals: dict[int, int] = {}  # original entry id -> fen reversed
        if original_ids:
            for reverses_id, fen in session.execute(
                select(SettlementEntry.reverses_id, func.sum(SettlementEntry.amount_fen))
                .where(
                    *coupon_entries,
                    _one_of(session, SettlementEntry.reverses_id, original_ids, BigInteger),
                    ref.startswith("coupon_return:", autoescape=True),
                )
                .group_by(SettlementEntry.reverses_id)
            ):
                if reverses_id is not None:
                    reversals[int(reverses_id)] = int(fen or 0)
        for redemption in redemptions:
            recorded = originals.get(coupon_ref(redemption.id), [])
            report.sources += 1
            charged = coupon_owed(redemption, redemption.discount_fen)  # what the redemption first cost
            want = [] if charged is None else [(charged[0], redemption.redeeming_store_id, charged[1])]
            got = [(e.debtor_key, e.creditor_key, e.amount_fen) for e in recorded]
            if got != want:
                problems.append(f"coupon redemption {redemption.id}: settlement {got} does not match {want}")
                continue
            now = coupon_owed(redemption)
            for e in recorded:
                left = e.amount_fen - reversals.get(e.id, 0)
                still = now[1] if now is not None else 0
                if left != still:
                    problems.append(
                        f"coupon redemption {redemption.id}: {left} fen owed after returns, expected {still}"
                    )
    carried = literal("coupon:") + cast(CouponRedemption.id, String)
    for orphan in _orphan_refs(session, org_id, Kind.COUPON_REDEEMED, "coupon:", CouponRedemption, carried):
        problems.append(f"settlement {orphan}: no such coupon redemption")


def _verify_packages(session: Session, org_id: int, report: SettlementReport, problems: list[str]) -> None:
    for ids in _batches(session, PackageUse.id, (PackageUse.org_id == org_id,)):
        entries = _entries_by_ref(session, org_id, Kind.PACKAGE_USED, [packages.source_ref(i) for i in ids])
        for fact in packages.settlement_facts(session, org_id, use_ids=ids):
            ref = packages.source_ref(fact.use_id)
            report.sources += 1
            owed = packages.owed_for(fact)
            want = (
                [] if owed is None else [(party(owed.payer_store_id), owed.payee_store_id, owed.amount_fen)]
            )
            got = [(e.debtor_key, e.creditor_key, e.amount_fen) for e in entries.get(ref, [])]
            if got != want:
                problems.append(f"package use {fact.use_id}: settlement {got} does not match {want}")
    carried = literal("package_use:") + cast(PackageUse.id, String)
    for orphan in _orphan_refs(session, org_id, Kind.PACKAGE_USED, "", PackageUse, carried):
        problems.append(f"settlement {orphan}: no such package use")
