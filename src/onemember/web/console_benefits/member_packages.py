"""A member's service packages: uses left, expiry, every use and refunds, with sale, grant, use and refund."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members.models import Member
from onemember.org.models import Store
from onemember.packages import api as packages_api
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.web.common import ConsoleUser, Csrf, page_error_text
from onemember.web.console_benefits.base import (
    GRANT_SOURCES,
    PAYMENT_METHODS,
    OrgNames,
    api_answer,
    bad_value,
    base_context,
    domain_errors,
    idem_of,
    lookup_member,
    member_context,
    member_of_query,
    org_names,
    validation_errors,
)
from onemember.web.forms import FormErrors, PostedForm, done, org_tz, writable_stores, yuan_to_fen
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


# --- a member's packages -------------------------------------------------------------------------------


@dataclass
class UseRow:
    use: PackageUse
    store: str
    staff: str
    last_no: int


@dataclass
class HeldPackage:
    package: MemberPackage
    template: ServicePackage
    expired: bool
    issuer: str
    uses: list[UseRow]
    refundable_fen: int | None
    refund_blocker: str
    use_stores: list[Store]
    can_refund: bool


def actor_name(actor: str) -> str:
    """``staff:wang`` reads ``wang``; a till key keeps its ``api_key:`` prefix (it is not a person)."""
    return actor.removeprefix("staff:")


def held_packages(
    session: Session, user: Principal, member: Member, names: OrgNames, lang: str
) -> list[HeldPackage]:
    now = utcnow()
    scope_stores = writable_stores(session, user)
    held = packages.packages_of(session, member, include_closed=True)
    uses: dict[int, list[PackageUse]] = {p.id: [] for p in held}
    for use in session.scalars(  # every package's uses in one read, in the order of ``packages.uses_of``
        select(PackageUse).where(PackageUse.member_package_id.in_(uses or {-1})).order_by(PackageUse.id)
    ):
        uses[use.member_package_id].append(use)
    use_stores: dict[int, list[Store]] = {}  # per template, not per package: a store check may query
    out = []
    for package in held:
        template = session.get(ServicePackage, package.package_id)
        assert template is not None
        if template.id not in use_stores:
            use_stores[template.id] = [
                s for s in scope_stores if packages.offers_service(session, template, s)
            ]
        try:
            refundable: int | None = packages.refund_amount(package, template.refund_rule)
            blocker = ""
        except DomainError as err:
            refundable, blocker = None, page_error_text(err, lang)
        in_scope = (
            user.can_access_store(package.sold_store_id) if package.sold_store_id is not None else user.is_hq
        )
        out.append(
            HeldPackage(
                package=package,
                template=template,
                expired=package.expires_at is not None and now >= package.expires_at,
                issuer=names.store(package.sold_store_id),
                uses=[
                    UseRow(u, names.store(u.used_store_id), actor_name(u.actor), u.first_use_no + u.uses - 1)
                    for u in uses[package.id]
                ],
                refundable_fen=refundable,
                refund_blocker=blocker,
                use_stores=use_stores[template.id],
                can_refund=user.role in packages.REFUND_ROLES and in_scope,
            )
        )
    return out


def holders_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    query: str = "",
    member: Member | None = None,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    active_form: str = "",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    names = org_names(session, user.org_id)
    member, lookup_error, status = member_of_query(session, user, query, member, lang, status)
    stores = writable_stores(session, user)
    default_store = next((s.code for s in stores if s.id == user.store_id), "")
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/holders.html",
        base_context(
            user,
            "holders",
            org_tz(session, user),
            **member_context(session, user, query, member, lookup_error, names),
            held=held_packages(session, user, member, names, lang) if member else [],
            templates=packages.templates(session, user.org_id),
            stores=stores,
            can_sell=user.role in packages.SELL_ROLES,
            can_use=user.role in packages.USE_ROLES,
            can_grant=user.role in packages.GRANT_ROLES,
            any_action=user.role in (packages.SELL_ROLES | packages.GRANT_ROLES | packages.REFUND_ROLES),
            values={"store_code": default_store, **(values or {})},
            errors=errors or FormErrors(),
            active_form=active_form,
            payment_methods=PAYMENT_METHODS,
            grant_sources=GRANT_SOURCES,
            notice=notice if notice in ("sold", "granted", "used", "refunded") else "",
            notice_id=request.query_params.get("id", ""),
        ),
        status_code=status,
    )


@router.get("/console/packages/members")
def member_packages_page(
    request: Request, user: ConsoleUser, session: SessionDep, q: Annotated[str, Query(max_length=40)] = ""
) -> HTMLResponse:
    """A member's packages (uses left, expiry, every use, refunds) with sale, grant, use and refund."""
    return holders_page(request, session, user, query=q)


def holder_done(request: Request, member_no: str, notice: str, package_id: object) -> Response:
    query = urlencode({"q": member_no, "done": notice, "id": package_id})
    return done(request, f"/console/packages/members?{query}#pkg-{package_id}")


def holder_failed(
    request: Request,
    session: Session,
    user: Principal,
    member_text: str,
    values: dict[str, str],
    errors: FormErrors,
    form_id: str,
    status: int,
) -> HTMLResponse:
    return holders_page(
        request,
        session,
        user,
        query=member_text,
        values=values,
        errors=errors,
        active_form=form_id,
        status=status,
    )


@router.post("/console/packages/sell", dependencies=[Csrf])
def sell_package(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Sell a package to a member at a store through the API's endpoint; the amount must be the price."""
    lang = request.state.lang
    values = {n: form.get(n) for n in ("member", "package_code", "store_code", "payment_method", "amount")}
    errors = FormErrors()
    amount = yuan_to_fen(values["amount"]) if values["amount"] else None
    if amount is None:
        bad_value(errors, "amount", "ben.m", "ben.bad_money", lang)
    status = 422
    if amount is not None:
        try:
            member = lookup_member(session, user.org_id, values["member"])
            body = packages_api.SellIn(
                package_code=values["package_code"],
                store_code=values["store_code"] or None,
                payment_method=values["payment_method"],
                amount_fen=amount,
            )
            answer = api_answer(
                packages_api.sell_package(member.member_no, body, user, session, lang, idem_of(form))
            )
            return holder_done(request, member.member_no, "sold", answer["id"])
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.m", SELL_RENAME, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, SELL_RENAME, errors)
            status = err.status
    return holder_failed(request, session, user, values["member"], values, errors, "sell", status)


SELL_RENAME = {"amount_fen": "amount", "price_fen": "amount"}
GRANT_RENAME = {"source": "grant_source", "reason": "grant_reason"}


@router.post("/console/packages/grant", dependencies=[Csrf])
def grant_package(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Give a member a package free, with a reason, through the API's endpoint."""
    lang = request.state.lang
    values = {
        "member": form.get("member"),
        "package_code": form.get("package_code"),
        "store_code": form.get("store_code"),
        "grant_source": form.get("source"),
        "grant_reason": form.get("reason"),
    }
    errors = FormErrors()
    status = 422
    try:
        member = lookup_member(session, user.org_id, values["member"])
        body = packages_api.GrantIn(
            package_code=values["package_code"],
            source=values["grant_source"],
            reason=values["grant_reason"],
            store_code=values["store_code"] or None,
        )
        answer = api_answer(
            packages_api.grant_package(member.member_no, body, user, session, lang, idem_of(form))
        )
        return holder_done(request, member.member_no, "granted", answer["id"])
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", GRANT_RENAME, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, GRANT_RENAME, errors)
        status = err.status
    return holder_failed(request, session, user, values["member"], values, errors, "grant", status)


USE_RENAME = {"store_code": "use_store", "uses": "use_count", "note": "use_note"}


@router.post("/console/member-packages/{package_id}/uses", dependencies=[Csrf])
def use_package(
    package_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Take uses of a member's package at a store offering the service, through the API's endpoint."""
    lang = request.state.lang
    member_no = form.get("member_no")
    values = {
        "use_store": form.get("store_code"),
        "use_count": form.get("uses") or "1",
        "use_note": form.get("note"),
    }
    errors = FormErrors()
    status = 422
    try:
        body = packages_api.UseIn.model_validate(
            {
                "uses": values["use_count"],
                "store_code": values["use_store"] or None,
                "member_no": member_no or None,
                "note": values["use_note"],
            }
        )
        api_answer(packages_api.use_package(package_id, body, user, session, lang, idem_of(form)))
        return holder_done(request, member_no, "used", package_id)
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", USE_RENAME, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, USE_RENAME, errors)
        status = err.status
    return holder_failed(request, session, user, member_no, values, errors, f"use-{package_id}", status)


@router.post("/console/member-packages/{package_id}/refund", dependencies=[Csrf])
def refund_package(
    package_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Refund a package's unused uses by its rule and close it, through the API's endpoint."""
    lang = request.state.lang
    member_no = form.get("member_no")
    values = {"refund_reason": form.get("reason")}
    errors = FormErrors()
    status = 422
    try:
        body = packages_api.RefundIn(reason=values["refund_reason"])
        api_answer(packages_api.refund_package(package_id, body, user, session, lang, idem_of(form)))
        return holder_done(request, member_no, "refunded", package_id)
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", {"reason": "refund_reason"}, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, {"reason": "refund_reason"}, errors)
        status = err.status
    return holder_failed(request, session, user, member_no, values, errors, f"refund-{package_id}", status)
