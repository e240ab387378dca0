"""Proves the ledger identities for an org (or all): entries, lots, movements and balances agree."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.points.models import GrowthEntry, PointAccount, PointEntry, PointLot, PointLotMovement


@dataclass
class Report:
    accounts: int = 0
    entries: int = 0
    lots: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, org_id: int | None = None) -> Report:
    report = Report()
    acc_q = select(PointAccount.id, PointAccount.balance, PointAccount.debt)
    entry_q = select(
        PointEntry.account_id,
        func.coalesce(func.sum(PointEntry.amount), 0),
        func.coalesce(func.sum(PointEntry.debt_change), 0),
        func.count(),
    ).group_by(PointEntry.account_id)
    lot_q = select(
        PointLot.account_id, func.coalesce(func.sum(PointLot.remaining), 0), func.count()
    ).group_by(PointLot.account_id)
    if org_id is not None:
        acc_q = acc_q.where(PointAccount.org_id == org_id)
        entry_q = entry_q.where(PointEntry.org_id == org_id)
        lot_q = lot_q.where(PointLot.org_id == org_id)
    sums = {a: (int(s), int(d), int(n)) for a, s, d, n in session.execute(entry_q).all()}
    lots = {a: (int(r), int(n)) for a, r, n in session.execute(lot_q).all()}
    for account_id, balance, debt in session.execute(acc_q).all():
        report.accounts += 1
        amount_sum, debt_sum, n_entries = sums.get(account_id, (0, 0, 0))
        lot_sum, n_lots = lots.get(account_id, (0, 0))
        report.entries += n_entries
        report.lots += n_lots
        if balance < 0 or debt < 0:
            report.problems.append(f"account {account_id}: negative balance {balance} or debt {debt}")
        if amount_sum != balance - debt:
            report.problems.append(
                f"account {account_id}: entries sum {amount_sum} != balance {balance} - debt {debt}"
            )
        if debt_sum != debt:
            report.problems.append(f"account {account_id}: entries debt_change sum {debt_sum} != debt {debt}")
        if lot_sum != balance:
            report.problems.append(f"account {account_id}: open lots {lot_sum} != balance {balance}")
    growth_q = select(GrowthEntry.account_id, func.coalesce(func.sum(GrowthEntry.amount), 0)).group_by(
        GrowthEntry.account_id
    )
    value_q = select(PointAccount.id, PointAccount.growth_value)
    if org_id is not None:
        growth_q = growth_q.where(GrowthEntry.org_id == org_id)
        value_q = value_q.where(PointAccount.org_id == org_id)
    growth = {a: int(v) for a, v in session.execute(growth_q).all()}
    for account_id, value in session.execute(value_q).all():
        if growth.get(account_id, 0) != value:
            report.problems.append(
                f"account {account_id}: growth entries {growth.get(account_id, 0)} != growth value {value}"
            )
    mv_q = (
        select(
            PointLot.id,
            PointLot.amount,
            PointLot.remaining,
            func.coalesce(func.sum(PointLotMovement.amount), 0),
        )
        .outerjoin(PointLotMovement, PointLotMovement.lot_id == PointLot.id)
        .group_by(PointLot.id, PointLot.amount, PointLot.remaining)
        .having(PointLot.amount + func.coalesce(func.sum(PointLotMovement.amount), 0) != PointLot.remaining)
    )
    if org_id is not None:
        mv_q = mv_q.where(PointLot.org_id == org_id)
    for lot_id, amount, remaining, moved in session.execute(mv_q).all():
        report.problems.append(f"lot {lot_id}: amount {amount} + movements {moved} != remaining {remaining}")
    return report
