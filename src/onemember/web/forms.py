"""Small helpers the console's form pages share."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic_core import ErrorDetails
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.org import service as org_service
from onemember.org.models import Store


def label_sep(lang: str) -> str:
    """What stands between a field's label and its message: "金额：须大于 0" / "Amount must be above 0"."""
    return " " if lang == "en" else "："


@dataclass
class Posted:
    """A submitted form as strings (repeated fields keep every value)."""

    values: dict[str, list[str]]

    def get(self, name: str) -> str:
        found = self.values.get(name)
        return found[-1].strip() if found else ""

    def getlist(self, name: str) -> list[str]:
        return [v.strip() for v in self.values.get(name, [])]


async def posted_form(request: Request) -> Posted:
    form = await request.form()
    return Posted({k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form})


PostedForm = Annotated[Posted, Depends(posted_form)]


def is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def done(request: Request, url: str) -> Response:
    """After a change: htmx follows HX-Redirect, a plain form post a 303 (post/redirect/get)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def org_tz(session: Session, user: Principal) -> str:
    return org_service.get_org(session, user.org_id).timezone


def writable_stores(session: Session, user: Principal) -> list[Store]:
    found = session.scalars(
        select(Store).where(Store.org_id == user.org_id, Store.active.is_(True)).order_by(Store.code)
    )
    return [s for s in found if user.can_access_store(s.id)]


# Pydantic error types → (zh, en) templates; ``{ge}`` etc. come from the error's context.
ERROR_TEXTS: dict[str, tuple[str, str]] = {
    "greater_than_equal": ("不能小于 {ge}", "must be at least {ge}"),
    "greater_than": ("须大于 {gt}", "must be more than {gt}"),
    "less_than_equal": ("不能大于 {le}", "must be at most {le}"),
    "less_than": ("须小于 {lt}", "must be less than {lt}"),
    "int_parsing": ("须为整数", "must be a whole number"),
    "int_from_float": ("须为整数", "must be a whole number"),
    "int_type": ("须为整数", "must be a whole number"),
    "missing": ("必填", "is required"),
    "literal_error": ("不是可选的值", "is not one of the choices"),
    "enum": ("不是可选的值", "is not one of the choices"),
    "string_too_long": ("最多 {max_length} 个字符", "has at most {max_length} characters"),
    "string_too_short": ("至少 {min_length} 个字符", "needs at least {min_length} characters"),
    "too_short": ("至少需要 {min_length} 项", "needs at least {min_length} entries"),
    "too_long": ("最多 {max_length} 项", "has at most {max_length} entries"),
    "bool_parsing": ("须为是或否", "must be yes or no"),
}


def error_text(err: ErrorDetails, lang: str) -> str:
    """One Pydantic error in the page's language, bounds filled in ("须大于 0" / "must be more than 0")."""
    zh, en = ERROR_TEXTS.get(err["type"], ("格式不正确", "is not valid"))
    ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
    return (en if lang == "en" else zh).format_map(defaultdict(lambda: "?", ctx))


@dataclass
class FormErrors:
    """Messages per field (dotted location, e.g. ``levels.0.threshold``) plus page-level ones."""

    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, message)


def yuan_to_fen(text: str) -> int | None:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount.adjusted() > 12 or len(amount.as_tuple().digits) > 20:
        return None  # NaN, Infinity, 1e999999 or more digits than Decimal keeps exactly: not an amount
    fen = amount * 100
    if amount < 0 or fen != fen.to_integral_value():
        return None
    return int(fen)
