"""Coupon templates: the list with its numbers in the user's scope and charts, HQ's create form (its value
fields follow the chosen kind), and stopping or resuming a template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.coupons import api as coupons_api
from onemember.coupons import service as coupons
from onemember.coupons.calculations import Kind
from onemember.coupons.models import Coupon, CouponRedemption, CouponTemplate
from onemember.coupons.service import templates as coupon_templates
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.org.models import Brand, Region, Store
from onemember.points.calculations import end_of_local_day
from onemember.web import charts
from onemember.web.charts import grouped_bar
from onemember.web.common import ConsoleUser, Csrf
from onemember.web.console import choose_scope, scope_context
from onemember.web.console_benefits.base import (
    BEARERS,
    CHART_TEMPLATES,
    PAGE_SIZE,
    TEMPLATE_ROLES,
    api_answer,
    bad_value,
    base_context,
    domain_errors,
    idem_of,
    in_stores,
    kept,
    org_names,
    parse_day,
    split_list,
    validation_errors,
    whole_numbers,
)
from onemember.web.console_benefits.coupon_rules import CouponFlow, template_row
from onemember.web.console_org import Paged, linker, page_number, read_params, texts
from onemember.web.forms import FormErrors, Posted, PostedForm, done, org_tz, yuan_to_fen
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


# --- the coupon template form --------------------------------------------------------------------------

MONEY_FIELDS = {
    "threshold": "threshold_fen",
    "amount": "amount_fen",
    "cap": "cap_fen",
    "price": "price_fen",
    "face_value": "face_value_fen",
    "budget": "budget_fen",
}
FORM_NAMES = {api: form for form, api in MONEY_FIELDS.items()}
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.AMOUNT_OFF: ("threshold", "amount"),
    Kind.PERCENT_OFF: ("threshold", "percent_off", "cap"),
    Kind.FIXED_PRICE: ("threshold", "price"),
    Kind.FREE_ITEM: ("threshold", "face_value", "pay_difference"),
    Kind.EXCHANGE: ("threshold", "face_value", "pay_difference"),
    Kind.SERVICE: ("threshold", "face_value", "pay_difference"),
}
CHECKBOXES = ("pay_difference", "cross_store", "exclusive", "combines_with_tier_discount", "giftable")
OPTIONAL_INTS = ("valid_days", "per_member_limit", "total_quantity")
ACCEPT_SCOPES = ("all", "brand", "region", "stores", "issuing_store")
TEMPLATE_DEFAULTS: dict[str, Any] = {
    "kind": "amount_off",
    "threshold": "0",
    "pay_difference": "on",
    "accept_scope": "all",
    "cross_store": "on",
    "valid_days": "30",
    "combines_with_tier_discount": "on",
    "per_order_limit": "1",
    "return_policy": "restore",
    "bearer": "hq",
    "accept_store_codes": [],
}


@dataclass
class TemplateForm:
    values: dict[str, Any]
    errors: FormErrors
    kind_fields: tuple[str, ...]
    brands: list[Brand]
    regions: list[Region]
    stores: list[Store]


def template_form(
    session: Session, user: Principal, values: dict[str, Any] | None = None, errors: FormErrors | None = None
) -> TemplateForm:
    chosen = {**TEMPLATE_DEFAULTS, **(values or {})}
    kind = chosen["kind"] if chosen["kind"] in KIND_FIELDS else "amount_off"
    names = org_names(session, user.org_id)
    return TemplateForm(
        values=chosen,
        errors=errors or FormErrors(),
        kind_fields=KIND_FIELDS[kind],
        brands=list(names.brands.values()),
        regions=list(names.regions.values()),
        stores=[s for s in names.stores.values() if s.active],
    )


def parse_template(
    form: Posted, tz: str, lang: str
) -> tuple[dict[str, Any], coupons_api.TemplateIn | None, FormErrors]:
    """The typed form as the API's ``TemplateIn`` (or the errors). Money is typed in yuan; only the value
    fields of the chosen kind and the sub-choice of the chosen store scope are read."""
    errors = FormErrors()
    kind = form.get("kind")
    values: dict[str, Any] = {
        name: form.get(name)
        for name in (
            "code",
            "name",
            "kind",
            "threshold",
            "amount",
            "percent_off",
            "cap",
            "price",
            "face_value",
            "skus",
            "categories",
            "accept_scope",
            "accept_brand_code",
            "accept_region_code",
            "valid_from",
            "valid_to",
            "valid_days",
            "stack_group",
            "per_order_limit",
            "per_member_limit",
            "total_quantity",
            "budget",
            "return_policy",
            "bearer",
            "issuer_pct",
        )
    }
    values["accept_store_codes"] = [c for c in form.getlist("accept_store_codes") if c]
    for name in CHECKBOXES:
        values[name] = "on" if form.get(name) else ""
    data: dict[str, Any] = {"code": values["code"], "name": values["name"], "kind": kind}
    kind_fields = KIND_FIELDS.get(kind, ())
    for name in (*kind_fields, "budget"):
        text = values.get(name, "")
        if name == "pay_difference":
            data[name] = bool(values[name])
        elif name in MONEY_FIELDS and text:
            amount = yuan_to_fen(text)
            if amount is None:
                bad_value(errors, name, "ben.f", "ben.bad_money", lang)
            else:
                data[MONEY_FIELDS[name]] = amount
        elif text:
            data[name] = text
    data["skus"] = split_list(values["skus"])
    data["categories"] = split_list(values["categories"])
    scope = values["accept_scope"] or "all"
    data["accept_scope"] = scope
    if scope == "brand":
        data["accept_brand_code"] = values["accept_brand_code"] or None
    elif scope == "region":
        data["accept_region_code"] = values["accept_region_code"] or None
    elif scope == "stores":
        data["accept_store_codes"] = values["accept_store_codes"]
    data["cross_store"] = bool(values["cross_store"])
    for name, end in (("valid_from", False), ("valid_to", True)):
        if not values[name]:
            continue
        day = parse_day(values[name])
        if day is None or not date(1, 1, 2) <= day <= date(9999, 12, 30):  # its UTC instant must exist
            bad_value(errors, name, "ben.f", "ben.bad_date", lang)
            continue
        data[name] = (
            end_of_local_day(day, tz)
            if end
            else datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)
        )
    for name in OPTIONAL_INTS:
        if values[name]:
            data[name] = values[name]
    data["exclusive"] = bool(values["exclusive"])
    data["stack_group"] = values["stack_group"] or None
    data["combines_with_tier_discount"] = bool(values["combines_with_tier_discount"])
    data["per_order_limit"] = values["per_order_limit"] or "1"
    data["return_policy"] = values["return_policy"] or "restore"
    data["giftable"] = bool(values["giftable"])
    data["bearer"] = values["bearer"] or "hq"
    if data["bearer"] == "split":
        data["issuer_pct"] = values["issuer_pct"] or "0"
    try:
        body = coupons_api.TemplateIn.model_validate(data)
    except ValidationError as exc:
        return values, None, validation_errors(exc, lang, "ben.f", FORM_NAMES, errors)
    if errors:
        return values, None, errors
    return values, body, errors


# --- coupon templates ----------------------------------------------------------------------------------

TEMPLATE_STATUSES = ("active", "stopped")


def coupon_flows(
    session: Session, org_id: int, store_ids: frozenset[int] | None
) -> dict[int, CouponFlow] | None:
    """Per template: coupons the chosen stores issued and redemptions (still standing) at those stores.
    None for the whole chain, where the templates' own counters say it."""
    if store_ids is None:
        return None
    flows: dict[int, CouponFlow] = {}
    issued = session.execute(
        select(Coupon.template_id, func.count())
        .where(Coupon.org_id == org_id, *in_stores(Coupon.issuing_store_id, store_ids))
        .group_by(Coupon.template_id)
    )
    for template_id, n in issued.all():
        flows.setdefault(template_id, CouponFlow()).issued = int(n)
    redeemed = session.execute(
        select(
            CouponRedemption.template_id,
            func.count(),
            func.coalesce(func.sum(CouponRedemption.discount_fen), 0),
        )
        .where(
            CouponRedemption.org_id == org_id,
            CouponRedemption.status == "redeemed",
            *in_stores(CouponRedemption.redeeming_store_id, store_ids),
        )
        .group_by(CouponRedemption.template_id)
    )
    for template_id, n, discount in redeemed.all():
        flow = flows.setdefault(template_id, CouponFlow())
        flow.redeemed, flow.discount_fen = int(n), int(discount)
    return flows


def stacked_bar(title: str, x: list[str], series: dict[str, list[float]]) -> str:
    """Horizontal bars stacked per category (ECharts options for static/app/charts.js)."""
    option: dict[str, Any] = {
        "color": [charts.PALETTE[0], "#dee2e6"],
        "title": {"text": title, "left": 0, "textStyle": {"fontSize": 14, "fontWeight": 500}},
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"top": 0, "right": 0},
        "grid": {"left": 120, "right": 24, "top": 48, "bottom": 24},
        "xAxis": {"type": "value"},
        "yAxis": {"type": "category", "data": x},
        "series": [
            {"name": n, "type": "bar", "stack": "budget", "data": v, "barMaxWidth": 22}
            for n, v in series.items()
        ],
        "animation": False,
    }
    return json.dumps(option, ensure_ascii=False)


def coupon_templates_listing(
    session: Session, user: Principal, params: dict[str, str]
) -> list[CouponTemplate]:
    status = params.get("status", "")
    active = True if status == "active" else False if status == "stopped" else None
    found = coupons.templates_of(session, user.org_id, active=active)
    if params.get("kind") in set(Kind):
        found = [t for t in found if t.kind == params["kind"]]
    return found


def coupons_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    form: TemplateForm | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, ("store", "region", "status", "kind", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    found = coupon_templates_listing(session, user, params)
    flows = coupon_flows(session, user.org_id, choice.store_ids)
    rows = [
        template_row(
            t, names, tpl, choice.tz, (flows or {}).get(tpl.id, CouponFlow()) if flows is not None else None
        )
        for tpl in found
    ]
    page = page_number(params.get("page"))
    chunk = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    listing = Paged(chunk[:PAGE_SIZE], page, PAGE_SIZE, len(chunk) > PAGE_SIZE)
    top = sorted(rows, key=lambda r: (-r.issued, r.template.code))[:CHART_TEMPLATES]
    flow_chart = whole_numbers(
        grouped_bar(
            t("ben.chart.issued_redeemed"),
            [r.template.name for r in top],
            {t("ben.col.issued"): [r.issued for r in top], t("ben.col.redeemed"): [r.redeemed for r in top]},
        )
    )
    budgeted = [r.template for r in rows if r.template.budget_fen][:CHART_TEMPLATES][::-1]
    budget_chart = stacked_bar(
        t("ben.chart.budget"),
        [b.name for b in budgeted],
        {
            t("ben.chart.used"): [b.budget_used / 100 for b in budgeted],
            t("ben.chart.left"): [max(0, (b.budget_fen or 0) - b.budget_used) / 100 for b in budgeted],
        },
    )
    editable = user.role in TEMPLATE_ROLES
    if form is None and editable:
        form = template_form(session, user)
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/coupons.html",
        base_context(
            user,
            "coupons",
            choice.tz,
            listing=listing,
            link=linker("/console/coupons", params),
            params=params,
            scoped=choice.store_ids is not None,
            charts={"flows": flow_chart, "budget": budget_chart if budgeted else ""},
            has_rows=bool(rows),
            editable=editable,
            form=form,
            statuses=TEMPLATE_STATUSES,
            accept_scopes=ACCEPT_SCOPES,
            bearers=BEARERS,
            notice=notice if notice in ("created", "stopped", "resumed") else "",
            notice_code=request.query_params.get("code", ""),
            **scope_context(choice, kept(params, ("status", "kind"))),
        ),
        status_code=status,
    )


@router.get("/console/coupons")
def coupon_templates_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Coupon templates with their rules, numbers in the user's scope and charts; HQ's create form."""
    return coupons_page(request, session, user)


@router.get("/console/coupons/form/values")
def coupon_value_fields(
    request: Request, user: ConsoleUser, session: SessionDep, kind: str = ""
) -> HTMLResponse:
    """The value inputs of one coupon kind (htmx swaps them in when the kind changes)."""
    user.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")
    form = template_form(session, user, {"kind": kind})
    return render(
        request,
        "console/benefits/_coupon_values.html",
        base_context(user, "coupons", org_tz(session, user), form=form),
    )


@router.post("/console/coupons", dependencies=[Csrf])
def create_coupon_template(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Create a coupon template through the API's own endpoint (HQ; validated and audited the same way)."""
    user.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")  # before reading the form
    lang = request.state.lang
    values, body, errors = parse_template(form, org_tz(session, user), lang)
    status = 422
    if body is not None:
        try:
            answer = api_answer(coupons_api.create_coupon_template(body, user, session, lang, idem_of(form)))
            return done(request, f"/console/coupons?done=created&code={quote(answer['code'])}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, FORM_NAMES, errors)
            status = err.status
    return coupons_page(
        request, session, user, form=template_form(session, user, values, errors), status=status
    )


def set_template_active(
    request: Request, session: Session, user: Principal, code: str, active: bool, back: str
) -> Response:
    template = coupons.template_by_code(session, user.org_id, code)
    coupon_templates.set_active(session, user, template, active)
    session.commit()
    target = back if back.startswith("/console/coupons") else "/console/coupons"
    sep = "&" if "?" in target else "?"
    return done(request, f"{target}{sep}done={'resumed' if active else 'stopped'}&code={quote(code)}")


@router.post("/console/coupons/{code}/stop", dependencies=[Csrf])
def stop_coupon_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Stop issuing a template (HQ); coupons already issued stay usable. Audited by the service."""
    return set_template_active(request, session, user, code, False, form.get("back"))


@router.post("/console/coupons/{code}/resume", dependencies=[Csrf])
def resume_coupon_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Issue a stopped template again (HQ). Audited by the service."""
    return set_template_active(request, session, user, code, True, form.get("back"))
