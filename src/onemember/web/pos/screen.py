"""The sale screen: the basket priced as the checkout would price it (``checkout.quote``, with the
coupons chosen and the points typed), and the page itself with the member card and the panels. The
feature pages come back to it when a step cannot start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from onemember.errors import DomainError
from onemember.orders import checkout as checkout_service
from onemember.orders.schemas import CheckoutIn, LineIn, MemberRefIn, PaymentIn
from onemember.points import calculations as calc
from onemember.web import i18n
from onemember.web.pos.base import (
    PAYMENT_METHODS,
    QUICK_ITEMS,
    Basket,
    MemberCard,
    PageError,
    PosInvalid,
    Till,
    _member_or_none,
    _message,
    _settled,
    card_of,
    max_redeemable,
    new_idempotency_key,
    parse_count,
    recent_items,
    till_page,
)
from onemember.web.pos.panels import coupon_panel, package_offers, package_rows, reward_rows

# --- the basket priced as the checkout would price it -----------------------------------------------


def checkout_body(
    till: Till, basket: Basket, redeem: int, codes: list[str], payment: PaymentIn | None = None
) -> CheckoutIn:
    try:
        return CheckoutIn(
            member=MemberRefIn(member_no=basket.member_no) if basket.member_no else None,
            store_code=till.store_code_for_api,
            lines=[
                LineIn(
                    sku=x.sku,
                    name=x.name,
                    category=x.category,
                    quantity=x.quantity,
                    unit_price_fen=x.unit_price_fen,
                )
                for x in basket.lines
            ],
            redeem_points=redeem,
            coupon_codes=codes,
            payments=[payment] if payment is not None else [],
        )
    except ValidationError as exc:
        raise PosInvalid("pos.err.basket_changed", "pos.basket_invalid") from exc


@dataclass
class SaleQuote:
    """What the basket comes to with the chosen coupons and points, priced by ``checkout.quote``."""

    total: int = 0
    tier_discount: int = 0
    coupon_discount: int = 0
    price_difference: int = 0
    value: int = 0  # paid with points
    due: int = 0
    earned: int = 0
    left: int = 0  # what points may still pay: after the member price and the coupons
    max_points: int = 0
    redeem: int = 0  # the points this quote is for
    warning: str = ""

    def take(self, q: checkout_service.Quote) -> None:
        self.tier_discount = q.discount_fen - q.coupon_discount_fen
        self.coupon_discount = q.coupon_discount_fen
        self.price_difference = q.coupon_app.price_difference_fen if q.coupon_app is not None else 0
        self.value = q.value_fen
        self.due = q.due_fen
        self.earned = q.earned


def price_basket(
    session: Session,
    till: Till,
    basket: Basket,
    card: MemberCard | None,
    codes: list[str],
    redeem: str,
    lang: str,
) -> SaleQuote:
    """The quote the checkout would make (no locks, nothing written), or why it cannot be made."""
    out = SaleQuote(total=basket.total_fen, due=basket.total_fen, left=basket.total_fen)
    if not basket.lines:
        return out
    try:
        base = checkout_service.quote(session, till.user, checkout_body(till, basket, 0, codes), lock=False)
    except DomainError as err:
        out.warning = _message(err, lang)
        return out
    out.take(base)
    out.left = base.due_fen
    program = till.program
    out.max_points = max_redeemable(program, card.balance, out.left) if card else 0
    try:
        wanted = parse_count(redeem or "0", low=0, high=10**9, key="pos.err.points", code="pos.bad_points")
    except DomainError as err:
        out.warning = _message(err, lang)
        return out
    unit = calc.redeem_unit(program.redeem_points_per_yuan)
    if wanted % unit:
        out.warning = i18n.translate("pos.err.points_unit", lang).format(unit=unit)
    elif calc.points_value_fen(wanted, program.redeem_points_per_yuan) > out.left:
        out.warning = i18n.translate("pos.err.points_over_total", lang)
    elif wanted > (card.balance if card else 0):
        out.warning = i18n.translate("pos.err.points_over_balance", lang)
    elif wanted:
        try:
            body = checkout_body(till, basket, wanted, codes)
            out.take(checkout_service.quote(session, till.user, body, lock=False))
            out.redeem = wanted
        except DomainError as err:
            out.warning = _message(err, lang)
    return out


def parse_codes(text: str) -> list[str]:
    return [c.strip().upper() for c in text.split(",") if c.strip()]


# --- the sale screen --------------------------------------------------------------------------------


def sale_page(
    request: Request,
    session: Session,
    till: Till,
    basket: Basket,
    *,
    error: PageError | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    ctx: dict[str, Any] = {"error": error, "form": form or {}}
    if till.store is not None:
        member = _member_or_none(session, till.org.id, basket.member_no)
        card = card_of(session, member) if member is not None else None
        panel = coupon_panel(session, till, member, basket, lang) if member and basket.lines else None
        codes = panel.selected if panel is not None else []
        quote = price_basket(session, till, basket, card, codes, ctx["form"].get("redeem", ""), lang)
        ctx.update(
            basket=basket,
            token=basket.encode(),
            idem=new_idempotency_key(),
            member=card,
            recent=recent_items(session, till.org.id, till.store.id)[:QUICK_ITEMS],
            rate=till.program.redeem_points_per_yuan,
            max_points=quote.max_points,
            methods=PAYMENT_METHODS,
            quote=quote,
            coupons=panel,
            codes=",".join(codes),
            packages=package_rows(session, member, till.store) if member else [],
            offers=package_offers(session, till.org.id, till.store) if member else [],
            rewards=reward_rows(session, till.store, member, card.balance, lang) if member and card else [],
            focus="identify"
            if (card is None and not basket.lines) or (error and error.where == "identify")
            else "coupon"
            if error and error.where == "coupon"
            else "sku",
        )
    response = till_page(request, till, "pos/sale.html", "sale", "/pos", ctx, status=status)
    return _settled(request, till, response, "/pos")
