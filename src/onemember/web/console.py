"""The admin console (/console): login, the overview dashboard; more sections plug in as routers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.analytics import dashboard
from onemember.auth import service as auth_service
from onemember.auth.principal import Principal
from onemember.db import utcnow
from onemember.deps import SessionDep, client_ip
from onemember.org.models import Org, Region, Store
from onemember.web import charts
from onemember.web.common import STAFF_COOKIE, ConsoleUser, check_csrf
from onemember.web.i18n import translate
from onemember.web.templating import fen, render

router = APIRouter(prefix="/console", include_in_schema=False)


def safe_next(target: str | None, default: str) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else default


def login_page(
    request: Request, action: str, next_url: str, error: str | None = None, heading: str | None = None
) -> HTMLResponse:
    return render(
        request,
        "console/login.html",
        {"action": action, "next": next_url, "error": error, "heading": heading},
        status_code=401 if error else 200,
    )


def do_login(
    request: Request,
    session: Session,
    org: str,
    username: str,
    password: str,
    next_url: str,
    action: str,
    heading: str | None = None,
) -> Response:
    try:
        token, record, _ = auth_service.login(session, org or None, username, password, client_ip(request))
    except auth_service.LoginFailed:
        session.rollback()
        return login_page(request, action, next_url, translate("login.failed", request.state.lang), heading)
    session.commit()
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(STAFF_COOKIE, token, httponly=True, samesite="lax", expires=record.expires_at)
    return response


@router.get("/login")
def console_login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(request, "/console/login", safe_next(next, "/console"))


@router.post("/login", dependencies=[Depends(check_csrf)])
def console_login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    return do_login(request, session, org, username, password, safe_next(next, "/console"), "/console/login")


@router.post("/logout", dependencies=[Depends(check_csrf)])
def console_logout(request: Request, session: SessionDep) -> Response:
    token = request.cookies.get(STAFF_COOKIE)
    if token:
        auth_service.logout(session, token)
        session.commit()
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE)
    return response


@dataclass
class ScopeChoice:
    store_ids: frozenset[int] | None
    label: str
    stores: list[Store]
    regions: list[Region]
    store_code: str
    region_code: str
    tz: str


def choose_scope(
    session: Session, user: Principal, lang: str, store: str | None, region: str | None
) -> ScopeChoice:
    """The stores a page shows: the user's scope, narrowed by an optional region/store filter."""
    org = session.get(Org, user.org_id)
    assert org is not None
    visible = [
        s
        for s in session.scalars(select(Store).where(Store.org_id == user.org_id).order_by(Store.code))
        if user.can_access_store(s.id)
    ]
    region_ids = {s.region_id for s in visible}
    regions = [
        r
        for r in session.scalars(select(Region).where(Region.org_id == user.org_id).order_by(Region.code))
        if r.id in region_ids
    ]
    chosen: frozenset[int] | None = user.store_ids
    label = translate("scope.all", lang) if user.store_ids is None else "、".join(s.name for s in visible)
    sel_store, sel_region = "", ""
    by_code = {s.code: s for s in visible}
    if store and store in by_code:
        chosen, label, sel_store = frozenset({by_code[store].id}), by_code[store].name, store
    elif region:
        reg = next((r for r in regions if r.code == region), None)
        if reg is not None:
            chosen = frozenset(s.id for s in visible if s.region_id == reg.id)
            label, sel_region = reg.name, region
    return ScopeChoice(chosen, label, visible, regions, sel_store, sel_region, org.timezone)


def scope_context(choice: ScopeChoice, keep: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "filter_stores": choice.stores,
        "filter_regions": choice.regions,
        "sel_store": choice.store_code,
        "sel_region": choice.region_code,
        "scope_label": choice.label,
        "keep": keep or {},
    }


@router.get("")
def console_home(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    store: str | None = None,
    region: str | None = None,
) -> HTMLResponse:
    lang = request.state.lang
    choice = choose_scope(session, user, lang, store, region)
    scope = dashboard.Scope(user.org_id, choice.store_ids, choice.tz)
    now = utcnow()
    k = dashboard.kpis(session, scope, now)
    s = dashboard.daily_series(session, scope, now)
    names = {st.id: st.name for st in choice.stores}

    def t(key: str) -> str:
        return translate(key, lang)

    kpi_rows = [
        ("members", None, f"{k.members:,}"),
        ("new_members", f"{k.new_members_today:,}", f"{k.new_members_month:,}"),
        ("orders", f"{k.orders_today:,}", f"{k.orders_month:,}"),
        ("sales", fen(k.sales_today_fen), fen(k.sales_month_fen)),
        ("multi_store", None, f"{k.multi_store_members:,}"),
        ("points_issued", f"{k.points_issued_today:,}", f"{k.points_issued_month:,}"),
        ("points_redeemed", f"{k.points_redeemed_today:,}", f"{k.points_redeemed_month:,}"),
    ]
    by_store = dashboard.sales_by_store(session, scope, now)
    dist = dashboard.store_count_distribution(session, scope)
    chart_list = [
        charts.line(
            t("chart.daily_sales"), s.days, {t("kpi.sales"): [v / 100 for v in s.sales_fen]}, area=True
        ),
        charts.bar(t("chart.daily_orders"), [d[5:] for d in s.days], s.orders),
        charts.line(
            t("chart.points"),
            s.days,
            {t("kpi.points_issued"): s.points_issued, t("kpi.points_redeemed"): s.points_redeemed},
        ),
        charts.bar(t("chart.daily_members"), [d[5:] for d in s.days], s.new_members),
        charts.bar(
            t("chart.store_share"),
            [names.get(sid, str(sid)) for sid, _ in by_store][:15][::-1],
            [v / 100 for _, v in by_store][:15][::-1],
            horizontal=True,
        ),
        charts.pie(
            t("chart.multi_store"), [(f"{n} {'stores' if lang == 'en' else '家门店'}", c) for n, c in dist]
        ),
    ]
    return render(
        request,
        "console/home.html",
        {
            "user": user,
            "section": "home",
            "kpi_rows": kpi_rows,
            "charts": chart_list,
            **scope_context(choice),
        },
    )
