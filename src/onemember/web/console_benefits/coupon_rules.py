"""What a coupon template does, in words: its value, products, validity, stores, stacking, limits and
costs, as one row of the templates list or the rules on the template's own page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onemember.coupons.calculations import ITEM_VOUCHERS, Kind
from onemember.coupons.models import CouponTemplate
from onemember.web.console_benefits.base import OrgNames, fmt, local_day, stores_text, until_text
from onemember.web.templating import fen


def zhe(percent_off: int) -> str:
    """20 % off reads 8 折 in Chinese; 15 % off 8.5 折."""
    left = 100 - percent_off
    return str(left // 10) if left % 10 == 0 else f"{left / 10:g}"


def value_text(t: Callable[[str], str], tpl: CouponTemplate) -> str:
    threshold = fmt(t("ben.v.threshold"), threshold=fen(tpl.threshold_fen)) if tpl.threshold_fen else ""
    if tpl.kind == Kind.AMOUNT_OFF:
        if tpl.threshold_fen:
            return fmt(t("ben.v.amount_off"), threshold=fen(tpl.threshold_fen), amount=fen(tpl.amount_fen))
        return fmt(t("ben.v.amount_off_plain"), amount=fen(tpl.amount_fen))
    parts: list[str] = []
    if tpl.kind == Kind.PERCENT_OFF:
        parts.append(fmt(t("ben.v.percent_off"), zhe=zhe(tpl.percent_off), pct=tpl.percent_off))
        if tpl.cap_fen is not None:
            parts.append(fmt(t("ben.v.cap"), cap=fen(tpl.cap_fen)))
    elif tpl.kind == Kind.FIXED_PRICE:
        parts.append(fmt(t("ben.v.fixed_price"), price=fen(tpl.price_fen)))
    elif not tpl.pay_difference:
        parts.append(t("ben.v.whole_item"))
    elif tpl.face_value_fen is not None:
        parts.append(fmt(t("ben.v.face_value"), face=fen(tpl.face_value_fen)))
    else:
        parts.append(t("ben.v.cover_at_issue"))
    if threshold:
        parts.append(threshold)
    return " · ".join(parts)


def products_text(t: Callable[[str], str], skus: Sequence[str], categories: Sequence[str]) -> str:
    parts = []
    if categories:
        parts.append(fmt(t("ben.products.categories"), list="、".join(categories)))
    if skus:
        parts.append(fmt(t("ben.products.skus"), list="、".join(skus)))
    return " · ".join(parts) or t("ben.products.all")


def validity_text(t: Callable[[str], str], tpl: CouponTemplate, tz: str) -> str:
    parts = []
    if tpl.valid_from is not None or tpl.valid_to is not None:
        start, end = local_day(tpl.valid_from, tz), until_text(tpl.valid_to, tz)
        key = "ben.valid.range" if start and end else "ben.valid.until" if end else "ben.valid.from"
        parts.append(fmt(t(key), start=start, end=end))
    if tpl.valid_days is not None:
        parts.append(fmt(t("ben.valid.days"), n=tpl.valid_days))
    return " · ".join(parts) or t("ben.valid.open")


@dataclass
class CouponFlow:
    issued: int = 0
    redeemed: int = 0
    discount_fen: int = 0


@dataclass
class TemplateRow:
    template: CouponTemplate
    value: str
    products: str
    validity: str
    stores: str
    cross: list[str]
    stacking: list[str]
    limits: list[str]
    settle: list[str]
    scoped: CouponFlow | None
    budget_pct: int | None

    @property
    def issued(self) -> int:
        return self.scoped.issued if self.scoped is not None else self.template.issued_count

    @property
    def redeemed(self) -> int:
        return self.scoped.redeemed if self.scoped is not None else self.template.redeemed_count


def template_row(
    t: Callable[[str], str], names: OrgNames, tpl: CouponTemplate, tz: str, scoped: CouponFlow | None
) -> TemplateRow:
    cross: list[str] = []
    if tpl.accept_scope != "issuing_store":
        cross.append(t("ben.cross.yes" if tpl.cross_store else "ben.cross.no"))
    if tpl.kind in ITEM_VOUCHERS:
        cross.append(t("ben.diff.yes" if tpl.pay_difference else "ben.diff.no"))
    stacking = [
        t("ben.stack.exclusive")
        if tpl.exclusive
        else fmt(t("ben.stack.group"), g=tpl.stack_group)
        if tpl.stack_group
        else t("ben.stack.free"),
        t("ben.stack.tier_yes" if tpl.combines_with_tier_discount else "ben.stack.tier_no"),
        fmt(t("ben.stack.per_order"), n=tpl.per_order_limit),
    ]
    limits = [
        fmt(t("ben.limit.per_member"), n=tpl.per_member_limit)
        if tpl.per_member_limit is not None
        else t("ben.limit.per_member_none"),
        fmt(t("ben.limit.total"), n=f"{tpl.total_quantity:,}")
        if tpl.total_quantity is not None
        else t("ben.limit.total_none"),
    ]
    if tpl.total_quantity is not None:
        limits.append(fmt(t("ben.limit.left"), n=f"{tpl.total_quantity - tpl.issued_count:,}"))
    bearer = (
        fmt(t("ben.bearer.split"), pct=tpl.issuer_pct)
        if tpl.bearer == "split"
        else t(f"ben.bearer.{tpl.bearer}")
    )
    settle = [
        bearer,
        t(f"ben.return.{tpl.return_policy}"),
        t("ben.giftable" if tpl.giftable else "ben.not_giftable"),
    ]
    budget_pct = min(100, tpl.budget_used * 100 // tpl.budget_fen) if tpl.budget_fen else None
    return TemplateRow(
        template=tpl,
        value=value_text(t, tpl),
        products=products_text(t, tpl.skus or [], tpl.categories or []),
        validity=validity_text(t, tpl, tz),
        stores=stores_text(
            t, names, tpl.accept_scope, tpl.accept_brand_id, tpl.accept_region_id, tpl.accept_store_ids or []
        ),
        cross=cross,
        stacking=stacking,
        limits=limits,
        settle=settle,
        scoped=scoped,
        budget_pct=budget_pct,
    )
