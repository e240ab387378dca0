"""Proves the settlement entries hold together (``onemember verify`` calls ``verify_settlement``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.common.types import EntryKind
from onemember.orders.models import OrderReturn
from onemember.points.models import PointEntry
from onemember.settlement.models import SettlementEntry, SettlementPeriod
from onemember.settlement.service import (
    Kind,
    PeriodStatus,
    PointsPolicy,
    party_nets,
    per_issuer,
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


def _verify_points(session: Session, org_id: int, report: SettlementReport, problems: list[str]) -> None:
    entries = session.scalars(
        select(SettlementEntry)
        .where(SettlementEntry.org_id == org_id, SettlementEntry.kind == Kind.POINTS_REDEEMED)
        .order_by(SettlementEntry.id)
    ).all()
    by_source: dict[int, list[SettlementEntry]] = {}
    for e in entries:
        if e.point_entry_id is None:
            problems.append(f"settlement entry {e.id}: points entry without its point entry")
            continue
        by_source.setdefault(e.point_entry_id, []).append(e)
    done: dict[int, int] = {}
    # Sources in id order, so each refund is re-derived with the refunds before it already counted.
    for source_id in sorted(by_source):
        report.sources += 1
        recorded = by_source[source_id]
        point_entry = session.get(PointEntry, source_id)
        if point_entry is None:
            problems.append(f"point entry {source_id}: settled but missing")
            continue
        got = sorted((e.debtor_key, e.creditor_key, e.points or 0, e.amount_fen) for e in recorded)
        if point_entry.kind == EntryKind.REDEEM:
            try:
                policy = PointsPolicy.from_details(recorded[0].details)
            except (KeyError, ValueError, TypeError):
                problems.append(f"point entry {source_id}: settlement entries carry no valid policy")
                continue
            redeemer = recorded[0].creditor_key
            shares = redemption_shares(per_issuer(session, source_id, -1), redeemer, policy)
            want = sorted((s.debtor, redeemer, s.points, s.amount_fen) for s in shares)
        elif point_entry.kind == EntryKind.REDEEM_REFUND and point_entry.reverses_entry_id is not None:
            originals = [e for e in by_source.get(point_entry.reverses_entry_id, []) if e.reverses_id is None]
            plan = refund_reversals(originals, done, per_issuer(session, source_id, +1))
            want = sorted((o.creditor_key, o.debtor_key, pts, fen) for o, pts, fen in plan)
            for e in recorded:
                if e.reverses_id is not None:
                    done[e.reverses_id] = done.get(e.reverses_id, 0) + (e.points or 0)
        else:
            problems.append(f"point entry {source_id}: a {point_entry.kind} entry cannot be settled")
            continue
        if got != want:
            problems.append(
                f"point entry {source_id}: settlement {got} does not match the redemption's lots {want}"
            )


def _verify_returns(session: Session, org_id: int, problems: list[str]) -> None:
    rows = session.execute(
        select(SettlementEntry, OrderReturn)
        .outerjoin(OrderReturn, OrderReturn.id == SettlementEntry.return_id)
        .where(SettlementEntry.org_id == org_id, SettlementEntry.kind == Kind.CROSS_STORE_RETURN)
    ).all()
    for entry, ret in rows:
        if ret is None:
            problems.append(f"settlement entry {entry.id}: cross-store return without its return")
            continue
        want = (ret.original_store_id, ret.store_id, ret.refund_fen)
        got = (entry.debtor_key, entry.creditor_key, entry.amount_fen)
        if got != want:
            problems.append(f"return {ret.return_no}: settlement {got} does not match the return {want}")
