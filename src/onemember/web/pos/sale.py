"""The sale screen's actions: identify a member, build the basket, price it as the clerk types, choose
coupons and check out (once per rendered form).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.common.counters import is_valid_member_no
from onemember.common.types import IdentityKind
from onemember.coupons import service as coupon_service
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members import service as members
from onemember.members.errors import InvalidIdentity, MemberCodeInvalid, MemberNotFound
from onemember.members.models import Member
from onemember.orders import checkout as checkout_service
from onemember.orders.schemas import CheckoutOut, PaymentIn
from onemember.web import i18n
from onemember.web.common import Csrf, PosUser
from onemember.web.pos.base import (
    _AMOUNT,
    _COUNT,
    PAYMENT_METHODS,
    Basket,
    BasketLine,
    PageError,
    PosInvalid,
    RecentItem,
    _message,
    _see_other,
    _write_once,
    load_basket,
    member_card,
    open_till,
    parse_count,
    recent_items,
    yuan_to_fen,
)
from onemember.web.pos.panels import coupon_panel
from onemember.web.pos.screen import checkout_body, parse_codes, price_basket, sale_page
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


# --- the sale screen --------------------------------------------------------------------------------


@router.get("/pos")
def pos_home(
    request: Request, session: SessionDep, user: PosUser, store: str | None = None, redeem: str = ""
) -> HTMLResponse:
    till = open_till(request, session, user, store)
    form = {"redeem": redeem.strip()[:12]} if redeem else None
    return sale_page(request, session, till, load_basket(request, till), form=form)


def identify_member(session: Session, org_id: int, text: str) -> Member:
    """Member code first ("OM…"), then phone, member number and card, as a till would try them."""
    q = text.strip()
    if not q:
        raise PosInvalid("pos.err.identify_empty", "pos.identify_empty")
    found: Member | None = None
    if q.upper().startswith("OM"):
        try:
            found = members.by_id(session, org_id, members.parse_member_code(org_id, q))
        except MemberCodeInvalid:
            found = _by_identity(session, org_id, IdentityKind.CARD, q)
            if found is None:
                raise
    else:
        compact = re.sub(r"[\s\-]", "", q)
        found = _by_identity(session, org_id, IdentityKind.PHONE, q)
        if found is None and is_valid_member_no(compact):
            try:
                found = members.by_member_no(session, org_id, compact)
            except MemberNotFound:
                found = None
        if found is None:
            found = _by_identity(session, org_id, IdentityKind.CARD, q)
    if found is None:
        raise MemberNotFound()
    # Follows a merge to the surviving member and refuses an erased one.
    return members.by_member_no(session, org_id, found.member_no)


def _by_identity(session: Session, org_id: int, kind: IdentityKind, text: str) -> Member | None:
    """The member with this phone or card, or None when there is none or the text is not one."""
    try:
        return members.find_by_identity(session, org_id, kind, text)
    except InvalidIdentity:
        return None


@router.post("/pos/identify", dependencies=[Csrf])
def pos_identify(
    request: Request, session: SessionDep, user: PosUser, q: Annotated[str, Form()] = ""
) -> Response:
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        till.require_store()
        member = identify_member(session, user.org_id, q)
    except DomainError as err:
        error = PageError("identify", _message(err, request.state.lang))
        # A scanned member code is not put back: the next scan must start in an empty box.
        kept = "" if q.strip().upper().startswith("OM") else q
        return sale_page(request, session, till, basket, error=error, form={"q": kept}, status=err.status)
    basket.member_no = member.member_no
    basket.changed()
    return _see_other("/pos", basket)


@router.post("/pos/member/clear", dependencies=[Csrf])
def pos_clear_member(request: Request, session: SessionDep, user: PosUser) -> Response:
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    basket.member_no = None
    basket.changed()
    return _see_other("/pos", basket)


def parse_line(
    sku: str, name: str, category: str, quantity: str, price: str, recent: list[RecentItem]
) -> BasketLine:
    sku = sku.strip()
    if not sku or len(sku) > 64:
        raise PosInvalid("pos.err.sku", "pos.bad_sku")
    qty = parse_count(quantity or "1", low=1, high=100000, key="pos.err.quantity", code="pos.bad_quantity")
    known = next((item for item in recent if item.sku == sku), None)
    if price.strip():
        unit_price = yuan_to_fen(price)
    elif known is not None:
        unit_price = known.unit_price_fen
    else:
        raise PosInvalid("pos.err.price_required", "pos.price_required")
    name = name.strip() or (known.name if known else sku)
    category = category.strip() or (known.category if known else "")
    if len(name) > 100 or len(category) > 60:
        raise PosInvalid("pos.err.text_long", "pos.text_too_long")
    return BasketLine(sku, name, category, qty, unit_price)


@router.post("/pos/basket/lines", dependencies=[Csrf])
def pos_add_line(
    request: Request,
    session: SessionDep,
    user: PosUser,
    sku: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    category: Annotated[str, Form()] = "",
    quantity: Annotated[str, Form()] = "1",
    price: Annotated[str, Form()] = "",
) -> Response:
    """Add a line typed or scanned by the clerk; bad input re-shows the form and changes nothing."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    form = {"sku": sku, "name": name, "category": category, "quantity": quantity, "price": price}
    try:
        store = till.require_store()
        basket.add(
            parse_line(sku, name, category, quantity, price, recent_items(session, user.org_id, store.id))
        )
        basket.encode()  # refuses a basket too large for its cookie
    except DomainError as err:
        error = PageError("line", _message(err, request.state.lang))
        return sale_page(
            request, session, till, load_basket(request, till), error=error, form=form, status=err.status
        )
    return _see_other("/pos", basket)


@router.post("/pos/basket/quick", dependencies=[Csrf])
def pos_quick_add(
    request: Request, session: SessionDep, user: PosUser, sku: Annotated[str, Form()]
) -> Response:
    """One unit of a product this store sold recently, at its latest price."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        store = till.require_store()
        basket.add(parse_line(sku, "", "", "1", "", recent_items(session, user.org_id, store.id)))
        basket.encode()
    except DomainError as err:
        error = PageError("line", _message(err, request.state.lang))
        return sale_page(request, session, till, load_basket(request, till), error=error, status=err.status)
    return _see_other("/pos", basket)


@router.post("/pos/basket/change", dependencies=[Csrf])
def pos_change_line(
    request: Request, session: SessionDep, user: PosUser, op: Annotated[str, Form()]
) -> Response:
    """``line:delta``: one unit more or fewer (a line that reaches zero goes); delta 0 removes the line."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    index, _, delta = op.partition(":")
    if index.isdigit() and delta in ("-1", "0", "1") and int(index) < len(basket.lines):
        basket.changed()
        item = basket.lines[int(index)]
        item.quantity = min(item.quantity + int(delta), 100000) if delta != "0" else 0
        if item.quantity <= 0:
            del basket.lines[int(index)]
    return _see_other("/pos", basket)


@router.post("/pos/basket/clear", dependencies=[Csrf])
def pos_clear_basket(request: Request, session: SessionDep, user: PosUser) -> Response:
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    basket.lines = []
    basket.changed()
    return _see_other("/pos", basket)


# --- the quote as the clerk types, the coupon choice, the checkout ----------------------------------


@router.get("/pos/quote")
def pos_quote(
    request: Request, session: SessionDep, user: PosUser, redeem: str = "", coupons: str = ""
) -> HTMLResponse:
    """What the coupons shown and the typed points take off, what is left to pay and the points it
    earns (shown as the clerk types)."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    card = member_card(session, user.org_id, basket.member_no)
    quote = price_basket(session, till, basket, card, parse_codes(coupons), redeem, request.state.lang)
    return render(request, "pos/_quote.html", {"quote": quote, "member": card})


@router.post("/pos/coupons", dependencies=[Csrf])
def pos_coupons(
    request: Request,
    session: SessionDep,
    user: PosUser,
    toggle: Annotated[str, Form()] = "",
    scan: Annotated[str, Form()] = "",
    best: Annotated[str, Form()] = "",
    none: Annotated[str, Form()] = "",
    redeem: Annotated[str, Form()] = "",
) -> Response:
    """Select or unselect a coupon (a tap, or a scanned or typed code), go back to the best combination,
    or use none. A choice the coupons cannot make together is refused and changes nothing."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)

    def refuse(text: str, status: int) -> HTMLResponse:
        session.rollback()
        error = PageError("coupon", text)
        return sale_page(request, session, till, basket, error=error, form={"redeem": redeem}, status=status)

    chosen: list[str] | None = None  # None: back to the best combination
    try:
        store = till.require_store()
        if not basket.member_no:
            raise PosInvalid("pos.err.coupon_member", "pos.coupon_member_required")
        member = members.by_member_no(session, user.org_id, basket.member_no)
        if not basket.lines:
            raise PosInvalid("pos.err.coupon_lines", "pos.coupon_lines_required")
        panel = coupon_panel(session, till, member, basket, lang)
        if none:
            chosen = []
        elif not best:
            code = (toggle or scan).strip().upper()
            if not code:
                raise PosInvalid("pos.err.coupon_code", "pos.coupon_code_required")
            chosen = list(panel.selected)
            if code in chosen:
                if toggle:  # a tap unselects; scanning a selected coupon again changes nothing
                    chosen.remove(code)
            else:
                unusable = next((row for row in panel.unusable if row.code == code), None)
                if unusable is not None:
                    text = i18n.translate("pos.err.coupon_unusable", lang)
                    return refuse(text.format(code=code, reason=unusable.reason), 409)
                if not any(row.code == code for row in panel.usable):
                    # Not this member's, or no longer available: the coupon service says which.
                    coupon_service.apply_coupons(
                        session,
                        member,
                        store,
                        panel.lines,
                        [code],
                        tier_discount_applied=panel.tier_applied,
                        lock=False,
                    )
                chosen.append(code)
                # The whole choice, priced as the checkout will price it: refuses what does not stack.
                checkout_service.quote(session, user, checkout_body(till, basket, 0, chosen), lock=False)
    except DomainError as err:
        return refuse(_message(err, lang), err.status)
    basket.coupons = chosen
    kept = redeem.strip()
    return _see_other(f"/pos?redeem={kept}" if _COUNT.match(kept) else "/pos", basket)


@router.post("/pos/checkout", dependencies=[Csrf])
def pos_checkout(
    request: Request,
    session: SessionDep,
    user: PosUser,
    basket: Annotated[str, Form()] = "",
    idem: Annotated[str, Form()] = "",
    redeem: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "",
    coupons: Annotated[str, Form()] = "",
    due: Annotated[str, Form()] = "",
) -> Response:
    """Check out the basket shown on the page with the coupons shown, once per rendered form (double
    clicks replay). The coupons are validated and redeemed inside the checkout's transaction."""
    lang = request.state.lang
    till = open_till(request, session, user)
    current = load_basket(request, till)
    form = {"redeem": redeem, "method": method}

    def attempt() -> idempotency.Outcome:
        store = till.require_store()
        sent = Basket.decode(basket, user.id, store.code)
        if sent is None or not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        if not sent.lines:
            raise PosInvalid("pos.err.basket_empty", "pos.basket_empty")
        wanted = parse_count(redeem or "0", low=0, high=10**9, key="pos.err.points", code="pos.bad_points")
        if method not in PAYMENT_METHODS:
            raise PosInvalid("pos.err.payment", "pos.bad_payment")
        codes = parse_codes(coupons)
        # The amount the page showed, and for which points: a quote the clerk typed past (points
        # typed and submitted before the quote came back) is not held against the checkout.
        shown_for, _, shown_due = due.strip().partition(":")
        shown = (
            int(shown_due)
            if _COUNT.match(shown_for) and _AMOUNT.match(shown_due) and int(shown_for) == wanted
            else None
        )
        checkout_body(till, sent, wanted, codes)  # a basket the API would refuse never gets a key

        def work() -> CheckoutOut:
            # Price it as the checkout will (no locks), then pay exactly what is due. When the page
            # said another amount, the customer was told something else: refuse, write nothing.
            priced = checkout_service.quote(
                session, user, checkout_body(till, sent, wanted, codes), lock=False
            )
            if shown is not None and shown != priced.due_fen:
                raise PosInvalid("pos.err.due_changed", "pos.due_changed")
            payment = PaymentIn(method=method, amount_fen=priced.due_fen) if priced.due_fen > 0 else None
            body = checkout_body(till, sent, wanted, codes, payment)
            return checkout_service.checkout(session, user, body, source="pos")

        return idempotency.run(
            session,
            user,
            idem,
            "pos.checkout",
            # What the order is made of; the amount shown only guards it, so a resubmit replays.
            {"basket": basket, "redeem": wanted, "method": method, "coupons": codes},
            work,
            status=201,
            lang=lang,
        )

    def refuse(text: str, status: int) -> Response:
        error = PageError("checkout", text)
        return sale_page(request, session, till, current, error=error, form=form, status=status)

    return _write_once(
        session,
        lang,
        attempt,
        refuse,
        # The next customer starts with an empty basket at this store.
        lambda done: _see_other(f"/pos/receipt/{done['order_no']}", Basket(user.id, current.store_code)),
    )
