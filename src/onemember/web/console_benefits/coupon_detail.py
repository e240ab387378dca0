"""One coupon template: its rules, redemptions by redeeming store, its coupons by status, and the issued
coupons page by page and as Excel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon, CouponRedemption, CouponTemplate
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.members.models import Member
from onemember.web import charts
from onemember.web.common import ConsoleUser
from onemember.web.console import choose_scope, scope_context
from onemember.web.console_benefits.base import (
    COUPON_STATUSES,
    EXPORT_LIMIT,
    PAGE_SIZE,
    TEMPLATE_ROLES,
    OrgNames,
    base_context,
    in_stores,
    kept,
    org_names,
)
from onemember.web.console_benefits.coupon_rules import template_row
from onemember.web.console_org import Paged, linker, page_number, read_params, texts
from onemember.web.export import xlsx_response
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)


# --- one coupon template -------------------------------------------------------------------------------


def count_and_money(
    title: str, x: list[str], count_name: str, counts: list[int], money_name: str, yuan: list[float]
) -> str:
    """Counts as bars on the left axis and yuan as bars on the right axis, per category."""
    option: dict[str, Any] = {
        "color": charts.PALETTE,
        "title": {"text": title, "left": 0, "textStyle": {"fontSize": 14, "fontWeight": 500}},
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"bottom": 0, "left": "center"},
        "grid": {"left": 48, "right": 64, "top": 48, "bottom": 56},
        "xAxis": {"type": "category", "data": x},
        "yAxis": [{"type": "value", "minInterval": 1}, {"type": "value"}],
        "series": [
            {"name": count_name, "type": "bar", "data": counts, "barMaxWidth": 22},
            {"name": money_name, "type": "bar", "yAxisIndex": 1, "data": yuan, "barMaxWidth": 22},
        ],
        "animation": False,
    }
    return json.dumps(option, ensure_ascii=False)


def coupon_conditions(
    template: CouponTemplate, store_ids: frozenset[int] | None, status: str, now: datetime
) -> list[ColumnElement[bool]]:
    """The template's coupons a user sees: in a narrowed scope those issued or redeemed at its stores."""
    where: list[ColumnElement[bool]] = [Coupon.org_id == template.org_id, Coupon.template_id == template.id]
    if store_ids is not None:
        ids = sorted(store_ids)
        where.append(or_(Coupon.issuing_store_id.in_(ids), Coupon.redeemed_store_id.in_(ids)))
    lapsed = and_(Coupon.status == "available", Coupon.valid_to.is_not(None), Coupon.valid_to <= now)
    if status == "available":
        where.append(
            and_(Coupon.status == "available", or_(Coupon.valid_to.is_(None), Coupon.valid_to > now))
        )
    elif status == "expired":
        where.append(or_(Coupon.status == "expired", lapsed))
    elif status in ("redeemed", "void"):
        where.append(Coupon.status == status)
    return where


def coupons_query(
    template: CouponTemplate, store_ids: frozenset[int] | None, status: str, now: datetime
) -> Select[Coupon, str]:
    return (
        select(Coupon, Member.member_no)
        .join(Member, Member.id == Coupon.member_id)
        .where(*coupon_conditions(template, store_ids, status, now))
        .order_by(Coupon.id.desc())
    )


def status_counts(
    session: Session, template: CouponTemplate, store_ids: frozenset[int] | None, now: datetime
) -> dict[str, int]:
    base = coupon_conditions(template, store_ids, "", now)
    counts = {s: 0 for s in COUPON_STATUSES}
    for status, n in session.execute(
        select(Coupon.status, func.count()).where(*base).group_by(Coupon.status)
    ).all():
        counts[status] = counts.get(status, 0) + int(n)
    lapsed = int(
        session.scalar(
            select(func.count()).where(
                *base, Coupon.status == "available", Coupon.valid_to.is_not(None), Coupon.valid_to <= now
            )
        )
        or 0
    )
    counts["available"] -= lapsed
    counts["expired"] += lapsed
    return counts


@dataclass
class StoreRedemptions:
    store_code: str
    store_name: str
    count: int
    discount_fen: int
    difference_fen: int


def redemptions_by_store(
    session: Session, template: CouponTemplate, store_ids: frozenset[int] | None, names: OrgNames
) -> list[StoreRedemptions]:
    found = session.execute(
        select(
            CouponRedemption.redeeming_store_id,
            func.count(),
            func.coalesce(func.sum(CouponRedemption.discount_fen), 0),
            func.coalesce(func.sum(CouponRedemption.price_difference_fen), 0),
        )
        .where(
            CouponRedemption.template_id == template.id,
            CouponRedemption.status == "redeemed",
            *in_stores(CouponRedemption.redeeming_store_id, store_ids),
        )
        .group_by(CouponRedemption.redeeming_store_id)
    ).all()
    rows = [
        StoreRedemptions(names.store_code(sid), names.store(sid), int(n), int(d), int(p))
        for sid, n, d, p in found
    ]
    return sorted(rows, key=lambda r: (-r.count, r.store_code))


@dataclass
class IssuedRow:
    code: str
    member_no: str
    source: str
    issuing_store: str
    issued_at: datetime
    issued_by: str
    valid_to: datetime | None
    status: str
    redeemed_store: str
    redeemed_at: datetime | None
    discount_fen: int
    reason: str


def issued_rows(rows: Sequence[Any], names: OrgNames, now: datetime) -> list[IssuedRow]:
    return [
        IssuedRow(
            code=c.code,
            member_no=member_no,
            source=c.source,
            issuing_store=names.store(c.issuing_store_id),
            issued_at=c.issued_at,
            issued_by=c.issued_by,
            valid_to=c.valid_to,
            status=coupons.shown_status(c, now),
            redeemed_store=names.store(c.redeemed_store_id),
            redeemed_at=c.redeemed_at,
            discount_fen=c.discount_fen,
            reason=c.reason,
        )
        for c, member_no in rows
    ]


@router.get("/console/coupons/{code}")
def coupon_template_detail(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> HTMLResponse:
    """One template: its rules, redemptions by redeeming store, coupons by status and the issued coupons."""
    lang = request.state.lang
    t = texts(lang)
    template = coupons.template_by_code(session, user.org_id, code)
    params = read_params(request, ("store", "region", "status", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    now = utcnow()
    status = params.get("status", "") if params.get("status") in COUPON_STATUSES else ""
    by_store = redemptions_by_store(session, template, choice.store_ids, names)
    counts = status_counts(session, template, choice.store_ids, now)
    page = page_number(params.get("page"))
    found = session.execute(
        coupons_query(template, choice.store_ids, status, now)
        .limit(PAGE_SIZE + 1)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    listing = Paged(issued_rows(found[:PAGE_SIZE], names, now), page, PAGE_SIZE, len(found) > PAGE_SIZE)
    store_chart = count_and_money(
        t("ben.d.chart_store"),
        [r.store_name for r in by_store],
        t("ben.d.count"),
        [r.count for r in by_store],
        t("ben.d.discount_yuan"),
        [r.discount_fen / 100 for r in by_store],
    )
    status_chart = charts.pie(
        t("ben.d.chart_status"), [(t(f"ben.cs.{s}"), counts[s]) for s in COUPON_STATUSES if counts[s]]
    )
    issued = sum(counts.values())
    redeemed = sum(r.count for r in by_store)
    kpis = [
        ("issued", f"{issued:,}"),
        ("redeemed", f"{redeemed:,}"),
        ("rate", f"{redeemed * 100 / issued:.1f}%" if issued else "-"),
        (
            "budget",
            f"{fen(template.budget_used)} / {fen(template.budget_fen)}"
            if template.budget_fen
            else t("ben.no_budget"),
        ),
    ]
    row = template_row(t, names, template, choice.tz, None)
    back = linker(f"/console/coupons/{quote(template.code)}", params)()
    return render(
        request,
        "console/benefits/coupon.html",
        base_context(
            user,
            "coupons",
            choice.tz,
            row=row,
            template=template,
            kpis=kpis,
            by_store=by_store,
            charts={"store": store_chart, "status": status_chart},
            counts=counts,
            listing=listing,
            link=linker(f"/console/coupons/{quote(template.code)}", params),
            export_url=linker(f"/console/coupons/{quote(template.code)}/coupons.xlsx", params)(page=None),
            params=params,
            status=status,
            statuses=COUPON_STATUSES,
            scoped=choice.store_ids is not None,
            editable=user.role in TEMPLATE_ROLES,
            back=back,
            notice=request.query_params.get("done", "")
            if request.query_params.get("done") in ("stopped", "resumed")
            else "",
            **scope_context(choice, kept(params, ("status",))),
        ),
    )


@router.get("/console/coupons/{code}/coupons.xlsx")
def coupon_template_coupons_xlsx(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """The template's issued coupons as Excel: the page's scope and status filter, newest first."""
    lang = request.state.lang
    t = texts(lang)
    template = coupons.template_by_code(session, user.org_id, code)
    params = read_params(request, ("store", "region", "status"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    now = utcnow()
    status = params.get("status", "") if params.get("status") in COUPON_STATUSES else ""
    found = session.execute(coupons_query(template, choice.store_ids, status, now).limit(EXPORT_LIMIT)).all()
    zone = ZoneInfo(choice.tz)
    headers = [
        t(f"ben.cc.{k}")
        for k in (
            "code",
            "member",
            "source",
            "issuing_store",
            "issued_at",
            "issued_by",
            "valid_to",
            "status",
            "redeemed_store",
            "redeemed_at",
            "discount",
            "reason",
        )
    ]
    rows = [
        (
            r.code,
            r.member_no,
            t(f"ben.src.{r.source}"),
            r.issuing_store,
            r.issued_at.astimezone(zone),
            r.issued_by,
            r.valid_to.astimezone(zone) if r.valid_to else None,
            t(f"ben.cs.{r.status}"),
            r.redeemed_store,
            r.redeemed_at.astimezone(zone) if r.redeemed_at else None,
            r.discount_fen / 100,
            r.reason,
        )
        for r in issued_rows(found, names, now)
    ]
    return xlsx_response(f"coupons-{template.code}.xlsx", headers, rows, sheet=f"coupons {template.code}")
