"""What the coupons and packages pages share: the section's tabs and texts, the plumbing around the JSON
API's endpoint functions (a fresh Idempotency-Key per form, the API's answer, errors next to their
fields), the org's names, finding a member and the member's card, and a few words and chart helpers."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common.types import IdentityKind
from onemember.coupons.calculations import Kind
from onemember.coupons.service import templates as coupon_templates
from onemember.errors import DomainError, Invalid
from onemember.members import service as members
from onemember.members import views as member_views
from onemember.members.errors import InvalidIdentity
from onemember.members.models import Member
from onemember.org.models import Brand, Region, Store
from onemember.web import i18n
from onemember.web.common import page_error_text
from onemember.web.console_benefits.translations import TEXTS
from onemember.web.console_org import HTMX_CONFIG, texts
from onemember.web.forms import FormErrors, Posted, error_text, label_sep

i18n.register(TEXTS)

PAGE_SIZE = 20
EXPORT_LIMIT = 10_000
CHART_TEMPLATES = 12
TABS = ("coupons", "issue", "packages", "holders")
TAB_URLS = {
    "coupons": "/console/coupons",
    "issue": "/console/coupons/issue",
    "packages": "/console/packages",
    "holders": "/console/packages/members",
}
TEMPLATE_ROLES = coupon_templates.TEMPLATE_ROLES
PAYMENT_METHODS = ("wechat_pay", "alipay", "cash", "bank_card")
GRANT_SOURCES = ("compensation", "tier_benefit", "campaign", "goodwill")
COUPON_STATUSES = ("available", "redeemed", "expired", "void")
PROBLEM_KEYS = frozenset({"type", "title", "status", "code", "detail", "message_zh", "message_en"})
BEARERS = ("hq", "issuing_store", "redeeming_store", "split")


# --- shared plumbing -----------------------------------------------------------------------------------


def base_context(user: Principal, tab: str, tz: str, **extra: Any) -> dict[str, Any]:
    return {
        "user": user,
        "section": "benefits",
        "tab": tab,
        "tabs": [(name, TAB_URLS[name]) for name in TABS],
        "tz": tz,
        "htmx_config": HTMX_CONFIG,
        "new_key": new_key,
        "until": until_text,
        "kinds": list(Kind),
        **extra,
    }


def new_key() -> str:
    """A fresh Idempotency-Key for one rendered form."""
    return secrets.token_urlsafe(18)


def fmt(text: str, **values: object) -> str:
    """Fill ``{name}`` placeholders of a page text (``str.format`` would choke on other braces)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def api_answer(response: JSONResponse) -> dict[str, Any]:
    """What an API endpoint answered. A problem answer (an error stored or replayed under the form's
    Idempotency-Key) is raised again as the domain error it was, so the page shows it like any other."""
    body = json.loads(bytes(response.body))
    if response.status_code >= 400:
        extra = {k: v for k, v in body.items() if k not in PROBLEM_KEYS}
        raise DomainError(
            str(body.get("message_zh", "")),
            str(body.get("message_en", "")),
            code=str(body.get("code", "error")),
            status=response.status_code,
            **extra,
        )
    return dict(body)


def idem_of(form: Posted) -> str | None:
    return form.get("idem") or None


def validation_errors(
    exc: ValidationError,
    lang: str,
    prefix: str,
    rename: dict[str, str] | None = None,
    errors: FormErrors | None = None,
) -> FormErrors:
    """Pydantic's errors next to the form fields they belong to, with the field's label in zh/en."""
    errors = FormErrors() if errors is None else errors
    t = texts(lang)
    for err in exc.errors():
        names = [p for p in err["loc"] if isinstance(p, str)]
        name = (rename or {}).get(names[0], names[0]) if names else ""
        errors.add(name, f"{t(f'{prefix}.{name}')}{label_sep(lang)}{error_text(err, lang)}")
    return errors


def domain_errors(
    err: DomainError, lang: str, rename: dict[str, str] | None = None, errors: FormErrors | None = None
) -> FormErrors:
    """A domain error's message on top, and next to its field when it names one."""
    errors = FormErrors() if errors is None else errors
    message = page_error_text(err, lang)
    errors.general.append(message)
    name = err.extra.get("field")
    if isinstance(name, str):
        errors.add((rename or {}).get(name, name), message)
    return errors


def bad_value(errors: FormErrors, name: str, prefix: str, problem: str, lang: str) -> None:
    t = texts(lang)
    errors.add(name, f"{t(f'{prefix}.{name}')}{label_sep(lang)}{t(problem)}")


def local_day(value: datetime | None, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d") if value else ""


def until_text(value: datetime | None, tz: str) -> str:
    """An end as people read it: a midnight end is the last day it still holds (inclusive)."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(tz))
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return (local.date() - timedelta(days=1)).isoformat()
    return local.strftime("%Y-%m-%d %H:%M")


def parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def split_list(text: str) -> list[str]:
    return [p for p in re.split(r"[,，;；、\s]+", text) if p]


@dataclass
class OrgNames:
    """The org's brands, regions and stores by id, read once per page."""

    brands: dict[int, Brand]
    regions: dict[int, Region]
    stores: dict[int, Store]

    def store(self, store_id: int | None) -> str:
        found = self.stores.get(store_id) if store_id is not None else None
        return found.name if found else ""

    def store_code(self, store_id: int | None) -> str:
        found = self.stores.get(store_id) if store_id is not None else None
        return found.code if found else ""


def org_names(session: Session, org_id: int) -> OrgNames:
    return OrgNames(
        {b.id: b for b in session.scalars(select(Brand).where(Brand.org_id == org_id).order_by(Brand.code))},
        {
            r.id: r
            for r in session.scalars(select(Region).where(Region.org_id == org_id).order_by(Region.code))
        },
        {s.id: s for s in session.scalars(select(Store).where(Store.org_id == org_id).order_by(Store.code))},
    )


def in_stores(column: Any, store_ids: frozenset[int] | None) -> list[ColumnElement[bool]]:
    """A condition keeping rows of the chosen stores (none when the whole chain is chosen)."""
    return [] if store_ids is None else [column.in_(sorted(store_ids))]


def kept(params: dict[str, str], keep: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k in keep}


# --- members -------------------------------------------------------------------------------------------


def lookup_member(session: Session, org_id: int, text: str) -> Member:
    """A member by phone or member number (a merged member's number leads to the survivor)."""
    compact = re.sub(r"[\s\-()]", "", text)
    if not compact:
        raise Invalid("请输入会员号或手机号", "Enter a member number or phone", code="members.lookup_empty")
    try:
        found = members.find_by_identity(session, org_id, IdentityKind.PHONE, compact)
    except InvalidIdentity:
        found = None
    return members.by_member_no(session, org_id, found.member_no if found else compact)


def member_of_query(
    session: Session, user: Principal, query: str, member: Member | None, lang: str, status: int
) -> tuple[Member | None, str, int]:
    """The member a page was asked about: the one given, else the one the query finds; a query that finds
    no one gives the error to show and its status (unless the page already answers with another)."""
    if member is None and query.strip():
        try:
            member = lookup_member(session, user.org_id, query)
        except DomainError as err:
            return None, page_error_text(err, lang), err.status if status == 200 else status
    return member, "", status


@dataclass
class MemberCard:
    member_no: str
    name: str
    phone: str
    store: str


def member_card(session: Session, user: Principal, member: Member, names: OrgNames) -> MemberCard:
    full = member_views.in_scope(session, user, member)
    return MemberCard(
        member_no=member.member_no,
        name=member.name if full else member_views.mask_name(member.name),
        phone=members.masked_phone(session, member.id),
        store=names.store(member.registered_store_id),
    )


def member_context(
    session: Session, user: Principal, query: str, member: Member | None, lookup_error: str, names: OrgNames
) -> dict[str, Any]:
    """The member search box and card a member page shows: what was asked, why no one was found, who was."""
    return {
        "query": query if member is None else member.member_no,
        "lookup_error": lookup_error,
        "member": member_card(session, user, member, names) if member else None,
    }


# --- in words and charts, for coupons and packages alike -----------------------------------------------


def stores_text(
    t: Callable[[str], str],
    names: OrgNames,
    scope: str,
    brand_id: int | None,
    region_id: int | None,
    store_ids: Sequence[int],
) -> str:
    if scope == "brand":
        brand = names.brands.get(brand_id or 0)
        return fmt(t("ben.scope.brand"), name=brand.name if brand else "-")
    if scope == "region":
        region = names.regions.get(region_id or 0)
        return fmt(t("ben.scope.region"), name=region.name if region else "-")
    if scope == "stores":
        return fmt(t("ben.scope.stores"), name="、".join(names.store(s) for s in store_ids))
    if scope == "issuing_store":
        return t("ben.scope.issuing_store")
    return t("ben.scope.all")


def whole_numbers(option: str) -> str:
    """A chart of counts: no 0.2 ticks on its value axis."""
    parsed = json.loads(option)
    parsed["yAxis"]["minInterval"] = 1
    return json.dumps(parsed, ensure_ascii=False)
