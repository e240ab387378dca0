"""Monthly statements: for each party (a store, or HQ) what it is owed and what it owes in a period,
netted per counterparty and broken down by kind, traceable to every entry and order; Excel export.

One grouped query per period (debtor, creditor, kind) feeds every statement, so the cost does not grow
with the number of entries a store has, only with the pairs of parties that settled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from onemember.orders.models import Order, OrderReturn
from onemember.org.models import Store
from onemember.settlement.models import HQ, SettlementEntry
from onemember.settlement.service import HQ_CODE, Kind, PeriodStatus, period_status


@dataclass(frozen=True)
class PartyInfo:
    key: int
    code: str
    name: str


@dataclass
class CounterpartyLine:
    counterparty: PartyInfo
    receivable_fen: int = 0  # the counterparty owes this party
    payable_fen: int = 0  # this party owes the counterparty
    entries: int = 0
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (receivable, payable)

    @property
    def net_fen(self) -> int:
        return self.receivable_fen - self.payable_fen


@dataclass
class Statement:
    period: str
    status: str
    party: PartyInfo
    lines: list[CounterpartyLine]

    @property
    def receivable_fen(self) -> int:
        return sum(line.receivable_fen for line in self.lines)

    @property
    def payable_fen(self) -> int:
        return sum(line.payable_fen for line in self.lines)

    @property
    def net_fen(self) -> int:
        return self.receivable_fen - self.payable_fen

    @property
    def entries(self) -> int:
        return sum(line.entries for line in self.lines)


def parties(session: Session, org_id: int) -> dict[int, PartyInfo]:
    info = {HQ: PartyInfo(HQ, HQ_CODE, "总部 HQ")}
    for store_id, code, name in session.execute(
        select(Store.id, Store.code, Store.name).where(Store.org_id == org_id)
    ).all():
        info[int(store_id)] = PartyInfo(int(store_id), code, name)
    return info


def party_by_code(session: Session, org_id: int, code: str) -> PartyInfo | None:
    if code.upper() == HQ_CODE:
        return parties(session, org_id)[HQ]
    row = session.execute(
        select(Store.id, Store.code, Store.name).where(Store.org_id == org_id, Store.code == code)
    ).first()
    return PartyInfo(int(row[0]), row[1], row[2]) if row else None


def statements(
    session: Session, org_id: int, period: str, party_keys: set[int] | None = None
) -> list[Statement]:
    """Statements of ``party_keys`` (every party with entries when ``None``) for ``period``."""
    query = (
        select(
            SettlementEntry.debtor_key,
            SettlementEntry.creditor_key,
            SettlementEntry.kind,
            func.sum(SettlementEntry.amount_fen),
            func.count(),
        )
        .where(SettlementEntry.org_id == org_id, SettlementEntry.period == period)
        .group_by(SettlementEntry.debtor_key, SettlementEntry.creditor_key, SettlementEntry.kind)
    )
    if party_keys is not None:
        keys = sorted(party_keys)
        query = query.where(or_(SettlementEntry.debtor_key.in_(keys), SettlementEntry.creditor_key.in_(keys)))
    info = parties(session, org_id)

    def who(key: int) -> PartyInfo:
        return info.get(key) or PartyInfo(key, str(key), str(key))

    lines: dict[int, dict[int, CounterpartyLine]] = {k: {} for k in party_keys or ()}
    for debtor, creditor, kind, amount, n in session.execute(query).all():
        fen, count = int(amount or 0), int(n)
        for me, other, receivable in (
            (int(creditor), int(debtor), True),
            (int(debtor), int(creditor), False),
        ):
            if party_keys is not None and me not in party_keys:
                continue
            line = lines.setdefault(me, {}).setdefault(other, CounterpartyLine(who(other)))
            recv, pay = line.by_kind.get(str(kind), (0, 0))
            if receivable:
                line.receivable_fen += fen
                line.by_kind[str(kind)] = (recv + fen, pay)
            else:
                line.payable_fen += fen
                line.by_kind[str(kind)] = (recv, pay + fen)
            line.entries += count
    row = period_status(session, org_id, period)
    status = row.status if row is not None else str(PeriodStatus.OPEN)
    out = []
    for key in sorted(lines, key=lambda k: (k != HQ, who(k).code)):
        per_counterparty = sorted(
            lines[key].values(), key=lambda c: (c.counterparty.key != HQ, c.counterparty.code)
        )
        out.append(Statement(period, status, who(key), per_counterparty))
    return out


@dataclass(frozen=True)
class EntryView:
    id: int
    period: str
    business_month: str
    kind: str
    debtor: PartyInfo
    creditor: PartyInfo
    amount_fen: int
    points: int | None
    order_no: str | None
    return_no: str | None
    point_entry_id: int | None
    reverses_id: int | None
    source_ref: str | None
    reason: str
    actor: str
    occurred_at: datetime
    created_at: datetime


def entries(
    session: Session,
    org_id: int,
    period: str,
    *,
    party_key: int | None = None,
    counterparty_key: int | None = None,
    kind: str | None = None,
    entry_id: int | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[EntryView]:
    """The entries behind a statement, oldest first, with the order and return numbers they settle."""
    query = (
        select(SettlementEntry, Order.order_no, OrderReturn.return_no)
        .outerjoin(Order, Order.id == SettlementEntry.order_id)
        .outerjoin(OrderReturn, OrderReturn.id == SettlementEntry.return_id)
        .where(SettlementEntry.org_id == org_id, SettlementEntry.period == period)
        .order_by(SettlementEntry.id)
        .offset(offset)
    )
    if party_key is not None and counterparty_key is not None and party_key != counterparty_key:
        # The pair's entries in either direction: two ranges of the (period, debtor, creditor) index,
        # instead of either party's entries filtered (the same rows, as a party never owes itself).
        query = query.where(
            or_(
                and_(
                    SettlementEntry.debtor_key == party_key, SettlementEntry.creditor_key == counterparty_key
                ),
                and_(
                    SettlementEntry.debtor_key == counterparty_key, SettlementEntry.creditor_key == party_key
                ),
            )
        )
    else:
        for key in (party_key, counterparty_key):
            if key is not None:
                query = query.where(
                    or_(SettlementEntry.debtor_key == key, SettlementEntry.creditor_key == key)
                )
    if kind is not None:
        query = query.where(SettlementEntry.kind == kind)
    if entry_id is not None:
        query = query.where(SettlementEntry.id == entry_id)
    if limit is not None:
        query = query.limit(limit)
    info = parties(session, org_id)

    def who(key: int) -> PartyInfo:
        return info.get(key) or PartyInfo(key, str(key), str(key))

    return [
        EntryView(
            e.id,
            e.period,
            e.business_month,
            e.kind,
            who(e.debtor_key),
            who(e.creditor_key),
            e.amount_fen,
            e.points,
            order_no,
            return_no,
            e.point_entry_id,
            e.reverses_id,
            e.source_ref,
            e.reason,
            e.actor,
            e.occurred_at,
            e.created_at,
        )
        for e, order_no, return_no in session.execute(query).all()
    ]


KIND_LABELS = {
    Kind.POINTS_REDEEMED: "积分抵扣 points redeemed",
    Kind.COUPON_REDEEMED: "优惠券核销 coupon redeemed",
    Kind.PACKAGE_USED: "次卡使用 package used",
    Kind.CROSS_STORE_RETURN: "跨店退货 cross-store return",
    Kind.CORRECTION: "调整 correction",
}


def workbook(statement_list: list[Statement], entry_rows: list[EntryView]) -> bytes:
    """Two sheets: the statements netted per counterparty (and kind), then every entry behind them.

    Written in openpyxl's write-only mode: a store's month can be a hundred thousand entries, which
    the normal mode would hold as millions of cell objects; column widths are worked out first."""
    summary: list[list[object]] = []
    for st in statement_list:
        for line in st.lines:
            summary.append(
                [
                    st.period,
                    st.status,
                    st.party.code,
                    line.counterparty.code,
                    "合计 total",
                    line.receivable_fen,
                    line.payable_fen,
                    line.net_fen,
                    line.entries,
                ]
            )
            for kind, (recv, pay) in sorted(line.by_kind.items()):
                summary.append(
                    [
                        st.period,
                        st.status,
                        st.party.code,
                        line.counterparty.code,
                        KIND_LABELS.get(Kind(kind), kind),
                        recv,
                        pay,
                        recv - pay,
                        None,
                    ]
                )
        summary.append(
            [
                st.period,
                st.status,
                st.party.code,
                "全部 all",
                "合计 total",
                st.receivable_fen,
                st.payable_fen,
                st.net_fen,
                st.entries,
            ]
        )
    detail: list[list[object]] = [
        [
            e.id,
            e.period,
            e.business_month,
            e.kind,
            e.debtor.code,
            e.creditor.code,
            e.amount_fen,
            e.points,
            e.order_no,
            e.return_no,
            e.source_ref,
            e.reverses_id,
            e.reason,
            e.occurred_at.replace(tzinfo=None),
        ]
        for e in entry_rows
    ]
    wb = Workbook(write_only=True)
    for title, header, rows in (
        (
            "对账单 statement",
            [
                "期间 period",
                "状态 status",
                "结算方 party",
                "对方 counterparty",
                "类型 kind",
                "应收 receivable (fen)",
                "应付 payable (fen)",
                "净额 net (fen)",
                "笔数 entries",
            ],
            summary,
        ),
        (
            "明细 entries",
            [
                "编号 id",
                "期间 period",
                "业务月份 business month",
                "类型 kind",
                "应付方 debtor",
                "应收方 creditor",
                "金额 amount (fen)",
                "积分 points",
                "订单 order",
                "退货单 return",
                "来源 source",
                "冲回 reverses",
                "原因 reason",
                "发生时间 occurred (UTC)",
            ],
            detail,
        ),
    ):
        ws = wb.create_sheet(title)
        widths = [len(h) for h in header]
        for row in rows:
            for i, value in enumerate(row):
                if value is not None:
                    widths[i] = max(widths[i], len(str(value)))
        for i, width in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = min(max(10, width + 2), 60)
        bold = Font(bold=True)
        cells = []
        for h in header:
            cell = WriteOnlyCell(ws, value=h)
            cell.font = bold
            cells.append(cell)
        ws.append(cells)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
