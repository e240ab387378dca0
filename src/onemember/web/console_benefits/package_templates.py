"""Service package (次卡) templates: sales, grants, uses and refunds in the user's scope with charts, HQ's
create form, and withdrawing or relisting a package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.packages import api as packages_api
from onemember.packages import service as packages
from onemember.packages.calculations import per_use_values
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.web import charts
from onemember.web.charts import grouped_bar
from onemember.web.common import ConsoleUser, Csrf
from onemember.web.console import choose_scope, scope_context
from onemember.web.console_benefits.base import (
    BEARERS,
    CHART_TEMPLATES,
    PAGE_SIZE,
    OrgNames,
    api_answer,
    bad_value,
    base_context,
    domain_errors,
    fmt,
    idem_of,
    in_stores,
    kept,
    org_names,
    stores_text,
    validation_errors,
    whole_numbers,
)
from onemember.web.console_org import Paged, linker, page_number, read_params, texts
from onemember.web.forms import FormErrors, Posted, PostedForm, done, yuan_to_fen
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)


# --- service package templates -------------------------------------------------------------------------


@dataclass
class PackageFlow:
    sold: int = 0
    revenue_fen: int = 0
    granted: int = 0
    uses: int = 0
    use_value_fen: int = 0
    refunded: int = 0
    refunded_fen: int = 0


@dataclass
class PackageRow:
    template: ServicePackage
    per_use: str
    validity: str
    refund: str
    stores: str
    bearer: str
    flow: PackageFlow


def package_flows(session: Session, org_id: int, store_ids: frozenset[int] | None) -> dict[int, PackageFlow]:
    """Per template: sales, grants and refunds of the chosen stores and the uses they performed."""
    flows: dict[int, PackageFlow] = {}
    sold = session.execute(
        select(
            MemberPackage.package_id,
            MemberPackage.source,
            func.count(),
            func.coalesce(func.sum(MemberPackage.price_fen), 0),
        )
        .where(MemberPackage.org_id == org_id, *in_stores(MemberPackage.sold_store_id, store_ids))
        .group_by(MemberPackage.package_id, MemberPackage.source)
    ).all()
    for package_id, source, n, paid in sold:
        flow = flows.setdefault(package_id, PackageFlow())
        if source == packages.Source.SALE:
            flow.sold += int(n)
            flow.revenue_fen += int(paid)
        else:
            flow.granted += int(n)
    refunds = session.execute(
        select(MemberPackage.package_id, func.count(), func.coalesce(func.sum(MemberPackage.refunded_fen), 0))
        .where(
            MemberPackage.org_id == org_id,
            MemberPackage.status == "refunded",
            *in_stores(MemberPackage.sold_store_id, store_ids),
        )
        .group_by(MemberPackage.package_id)
    ).all()
    for package_id, n, amount in refunds:
        flow = flows.setdefault(package_id, PackageFlow())
        flow.refunded, flow.refunded_fen = int(n), int(amount)
    used = session.execute(
        select(
            PackageUse.package_id,
            func.coalesce(func.sum(PackageUse.uses), 0),
            func.coalesce(func.sum(PackageUse.value_fen), 0),
        )
        .where(PackageUse.org_id == org_id, *in_stores(PackageUse.used_store_id, store_ids))
        .group_by(PackageUse.package_id)
    ).all()
    for package_id, uses, value in used:
        flow = flows.setdefault(package_id, PackageFlow())
        flow.uses, flow.use_value_fen = int(uses), int(value)
    return flows


def uses_by_store(
    session: Session, org_id: int, store_ids: frozenset[int] | None, names: OrgNames
) -> list[tuple[str, int]]:
    found = session.execute(
        select(PackageUse.used_store_id, func.coalesce(func.sum(PackageUse.uses), 0))
        .where(PackageUse.org_id == org_id, *in_stores(PackageUse.used_store_id, store_ids))
        .group_by(PackageUse.used_store_id)
    ).all()
    return sorted(((names.store(sid), int(n)) for sid, n in found), key=lambda p: (-p[1], p[0]))


def package_bearer_text(t: Callable[[str], str], bearer: str, issuer_pct: int) -> str:
    return fmt(t("ben.p.bearer.split"), pct=issuer_pct) if bearer == "split" else t(f"ben.p.bearer.{bearer}")


def package_row(
    session: Session, t: Callable[[str], str], names: OrgNames, tpl: ServicePackage, flow: PackageFlow
) -> PackageRow:
    values = per_use_values(tpl.price_fen, tpl.uses)
    low, high = min(values), max(values)
    return PackageRow(
        template=tpl,
        per_use=fen(low) if low == high else f"{fen(low)}–{fen(high)}",
        validity=fmt(t("ben.p.validity_days"), n=tpl.validity_days)
        if tpl.validity_days
        else t("ben.p.never"),
        refund=t(f"ben.p.refund.{tpl.refund_rule}"),
        stores=stores_text(
            t,
            names,
            tpl.store_scope,
            tpl.scope_brand_id,
            tpl.scope_region_id,
            packages.template_store_ids(session, tpl.id) if tpl.store_scope == "stores" else [],
        ),
        bearer=package_bearer_text(t, tpl.bearer, tpl.issuer_pct),
        flow=flow,
    )


PACKAGE_FIELDS = (
    "code",
    "name",
    "service_code",
    "uses",
    "price",
    "validity_days",
    "refund_rule",
    "store_scope",
    "brand_code",
    "region_code",
    "bearer",
    "issuer_pct",
)
PACKAGE_DEFAULTS: dict[str, Any] = {
    "uses": "10",
    "validity_days": "365",
    "refund_rule": "unused_pro_rata",
    "store_scope": "all",
    "bearer": "issuing_store",
    "store_codes": [],
}
PACKAGE_SCOPES = ("all", "brand", "region", "stores")
REFUND_RULES = ("unused_pro_rata", "full_if_unused", "none")


def parse_package(
    form: Posted, lang: str
) -> tuple[dict[str, Any], packages_api.TemplateIn | None, FormErrors]:
    """The typed package form as the API's ``TemplateIn`` (or the errors); the price is typed in yuan."""
    errors = FormErrors()
    values: dict[str, Any] = {n: form.get(n) for n in PACKAGE_FIELDS}
    values["store_codes"] = [c for c in form.getlist("store_codes") if c]
    data: dict[str, Any] = {
        "code": values["code"],
        "name": values["name"],
        "service_code": values["service_code"],
        "uses": values["uses"],
        "validity_days": values["validity_days"] or None,
        "refund_rule": values["refund_rule"] or "unused_pro_rata",
        "store_scope": values["store_scope"] or "all",
        "bearer": values["bearer"] or "issuing_store",
    }
    price = yuan_to_fen(values["price"]) if values["price"] else None
    if price is None:
        bad_value(errors, "price", "ben.pf", "ben.bad_money", lang)
    else:
        data["price_fen"] = price
    if data["store_scope"] == "brand":
        data["brand_code"] = values["brand_code"] or None
    elif data["store_scope"] == "region":
        data["region_code"] = values["region_code"] or None
    elif data["store_scope"] == "stores":
        data["store_codes"] = values["store_codes"]
    if data["bearer"] == "split":
        data["issuer_pct"] = values["issuer_pct"] or "0"
    try:
        body = packages_api.TemplateIn.model_validate(data)
    except ValidationError as exc:
        return values, None, validation_errors(exc, lang, "ben.pf", {"price_fen": "price"}, errors)
    if errors:
        return values, None, errors
    return values, body, errors


def packages_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, Any] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, ("store", "region", "status", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    found = packages.templates(session, user.org_id, active_only=False)
    if params.get("status") in ("active", "inactive"):
        found = [p for p in found if p.active == (params["status"] == "active")]
    flows = package_flows(session, user.org_id, choice.store_ids)
    flow = {p.id: flows.get(p.id, PackageFlow()) for p in found}
    page = page_number(params.get("page"))
    chunk = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    # Only the shown page becomes rows: a row of a store-scoped template reads its stores.
    rows = [package_row(session, t, names, p, flow[p.id]) for p in chunk[:PAGE_SIZE]]
    listing = Paged(rows, page, PAGE_SIZE, len(chunk) > PAGE_SIZE)
    top = sorted(found, key=lambda p: (-(flow[p.id].sold + flow[p.id].granted), p.code))[:CHART_TEMPLATES]
    by_template = whole_numbers(
        grouped_bar(
            t("ben.p.chart_templates"),
            [p.name for p in top],
            {
                t("ben.p.col.sold"): [flow[p.id].sold for p in top],
                t("ben.p.col.granted"): [flow[p.id].granted for p in top],
                t("ben.p.col.used"): [flow[p.id].uses for p in top],
            },
        )
    )
    stores = uses_by_store(session, user.org_id, choice.store_ids, names)
    by_store = whole_numbers(
        charts.bar(t("ben.p.chart_stores"), [n for n, _ in stores], [u for _, u in stores])
    )
    editable = user.role in packages.TEMPLATE_ROLES
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/packages.html",
        base_context(
            user,
            "packages",
            choice.tz,
            listing=listing,
            link=linker("/console/packages", params),
            params=params,
            charts={"templates": by_template, "stores": by_store},
            has_rows=bool(found),
            has_uses=bool(stores),
            editable=editable,
            values={**PACKAGE_DEFAULTS, **(values or {})},
            errors=errors or FormErrors(),
            brands=list(names.brands.values()),
            regions=list(names.regions.values()),
            all_stores=[s for s in names.stores.values() if s.active],
            scopes=PACKAGE_SCOPES,
            refund_rules=REFUND_RULES,
            bearers=BEARERS,
            notice=notice if notice in ("created", "withdrawn", "relisted") else "",
            notice_code=request.query_params.get("code", ""),
            **scope_context(choice, kept(params, ("status",))),
        ),
        status_code=status,
    )


@router.get("/console/packages")
def package_templates_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Service package templates with sales, grants, uses and refunds in the user's scope; HQ's form."""
    return packages_page(request, session, user)


@router.post("/console/packages", dependencies=[Csrf])
def create_package_template(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Create a service package template through the API's own endpoint (HQ; audited by the service)."""
    user.require_role(
        packages.TEMPLATE_ROLES, "管理次卡", "manage service packages"
    )  # before reading the form
    lang = request.state.lang
    values, body, errors = parse_package(form, lang)
    status = 422
    if body is not None:
        try:
            answer = api_answer(
                packages_api.create_package_template(body, user, session, lang, idem_of(form))
            )
            return done(request, f"/console/packages?done=created&code={quote(answer['code'])}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, {"price_fen": "price"}, errors)
            status = err.status
    return packages_page(request, session, user, values=values, errors=errors, status=status)


def set_package_active(
    request: Request, session: Session, user: Principal, code: str, active: bool
) -> Response:
    template = packages.template_by_code(session, user.org_id, code)
    packages.set_active(session, user, template, active)
    session.commit()
    return done(request, f"/console/packages?done={'relisted' if active else 'withdrawn'}&code={quote(code)}")


@router.post("/console/packages/{code}/withdraw", dependencies=[Csrf])
def withdraw_package_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """Stop selling a package (HQ); packages members hold keep working. Audited by the service."""
    return set_package_active(request, session, user, code, False)


@router.post("/console/packages/{code}/relist", dependencies=[Csrf])
def relist_package_template(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """Sell a withdrawn package again (HQ). Audited by the service."""
    return set_package_active(request, session, user, code, True)
