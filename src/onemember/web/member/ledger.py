"""The points ledger, paged and filtered by type, with an Excel export of the same rows."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from onemember.common.types import EntryKind
from onemember.deps import SessionDep
from onemember.orders.models import Order
from onemember.points.models import PointEntry
from onemember.web.export import xlsx_response
from onemember.web.member.base import (
    EXPORT_LIMIT,
    PAGE_SIZE,
    MemberDep,
    _account,
    _org_of,
    _page_url,
    _paging,
    _store_names,
    _t,
)
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

KIND_LABELS: dict[str, tuple[str, str]] = {
    EntryKind.EARN: ("消费得积分", "Earned"),
    EntryKind.REDEEM: ("积分抵现", "Redeemed"),
    EntryKind.EARN_REVERSAL: ("退货扣回", "Taken back (return)"),
    EntryKind.REDEEM_REFUND: ("退货返还", "Given back (return)"),
    EntryKind.DEBT_OFFSET: ("抵扣欠分", "Debt repaid"),
    EntryKind.DEBT_CASH_SETTLE: ("退款抵扣欠分", "Debt settled from refund"),
    EntryKind.WRITE_OFF: ("欠分核销", "Debt forgiven"),
    EntryKind.EXPIRE: ("积分过期", "Expired"),
    EntryKind.ADJUST: ("人工调整", "Adjustment"),
    EntryKind.IMPORT_OPENING: ("期初导入", "Opening balance"),
    EntryKind.MERGE_IN: ("合并转入", "Merged in"),
    EntryKind.MERGE_OUT: ("合并转出", "Merged out"),
    EntryKind.TRANSFER_OUT: ("转赠他人", "Transferred out"),
    EntryKind.TRANSFER_IN: ("他人转赠", "Transferred in"),
}


def kind_label(kind: str, lang: str) -> str:
    pair = KIND_LABELS.get(kind)
    if pair is None:
        return kind
    return pair[1] if lang == "en" else pair[0]


@router.get("/m/ledger", response_model=None)
def member_ledger(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    page: int = 1,
    kind: str = "",
    sort: str = "newest",
    format: str = "",
) -> Response:
    """The points ledger, newest first, paged; filter by type; Excel export of the same rows."""
    lang = request.state.lang
    org = _org_of(session, member)
    account = _account(session, member)
    kind = kind if kind in KIND_LABELS else ""
    sort = "oldest" if sort == "oldest" else "newest"
    conditions = [PointEntry.account_id == (account.id if account else -1)]
    if kind:
        conditions.append(PointEntry.kind == kind)
    total = int(session.scalar(select(func.count()).select_from(PointEntry).where(*conditions)) or 0)
    paging = _paging(total, page)
    order_by = PointEntry.id.asc() if sort == "oldest" else PointEntry.id.desc()
    query = (
        select(PointEntry, Order.order_no)
        .outerjoin(Order, Order.id == PointEntry.order_id)
        .where(*conditions)
        .order_by(order_by)
    )
    stores = _store_names(session, member.org_id)
    if format == "xlsx":
        rows = session.execute(query.limit(EXPORT_LIMIT)).all()
        return xlsx_response(
            f"points-{member.member_no}.xlsx",
            [
                _t(request, f"member.ledger.{key}")
                for key in ("time", "kind", "amount", "balance_after", "store", "order", "reason")
            ],
            [
                (
                    e.created_at.astimezone(ZoneInfo(org.timezone)),
                    kind_label(e.kind, lang),
                    e.amount,
                    e.balance_after,
                    stores.get(e.store_id or 0, ""),
                    no or "",
                    e.reason,
                )
                for e, no in rows
            ],
            sheet="points",
        )
    rows = session.execute(query.limit(PAGE_SIZE).offset(paging.offset)).all()
    params = {"kind": kind, "sort": sort if sort != "newest" else ""}
    return render(
        request,
        "member/ledger.html",
        {
            "member": member,
            "section": "points",
            "org": org,
            "account": account,
            "rows": [(e, no, kind_label(e.kind, lang), stores.get(e.store_id or 0, "")) for e, no in rows],
            "paging": paging,
            "kind": kind,
            "sort": sort,
            "kinds": [(k, kind_label(k, lang)) for k in KIND_LABELS],
            "prev_url": _page_url("/m/ledger", params, page=paging.page - 1),
            "next_url": _page_url("/m/ledger", params, page=paging.page + 1),
            "export_url": _page_url("/m/ledger", params, format="xlsx"),
        },
    )
