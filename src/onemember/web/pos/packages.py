"""Service packages (次卡) at the till: sell one to the member being served, record a use of one of
theirs at this store (each through a confirm step, once per rendered form), and the slips of both.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.deps import SessionDep
from onemember.errors import DomainError, NotFound
from onemember.members.models import Member
from onemember.org.models import Staff, Store
from onemember.packages import service as packages
from onemember.packages.errors import MemberPackageNotFound
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.web import i18n
from onemember.web.common import Csrf, PosUser
from onemember.web.pos.base import (
    _AMOUNT,
    PAYMENT_METHODS,
    Basket,
    PageError,
    PosInvalid,
    Till,
    _actor_name,
    _message,
    _see_other,
    _served_member,
    _write_once,
    card_of,
    load_basket,
    member_card,
    new_idempotency_key,
    open_till,
    parse_count,
    till_page,
)
from onemember.web.pos.panels import PackageOffer, PackageRow, _offer, _store_names, package_row
from onemember.web.pos.screen import sale_page

router = APIRouter(include_in_schema=False)


i18n.register(
    {
        "pos.packages": ("次卡", "Service packages"),
        "pos.package_left": ("剩余 {left}/{total} 次", "{left} of {total} uses left"),
        "pos.package_until": ("有效期至 {date}", "Valid until {date}"),
        "pos.package_no_expiry": ("长期有效", "Does not expire"),
        "pos.package_expired": ("已过期", "Expired"),
        "pos.package_used_up": ("已用完", "Used up"),
        "pos.package_here": ("本店可用", "Offered here"),
        "pos.package_not_here": ("本店不提供该服务", "Not offered at this store"),
        "pos.package_none": ("该会员没有次卡", "The member holds no service packages"),
        "pos.package_use": ("核销", "Use"),
        "pos.package_uses": ("核销次数", "Uses"),
        "pos.package_sold_at": ("售卡门店", "Sold at"),
        "pos.package_service": ("服务", "Service"),
        "pos.package_use_title": ("核销次卡", "Use a service package"),
        "pos.package_use_hint": (
            "确认后在本店记录核销，记在当前收银员名下。",
            "Confirming records the use at this store, under your name.",
        ),
        "pos.package_confirm_use": ("确认核销", "Confirm use"),
        "pos.package_left_now": ("当前剩余", "Left now"),
        "pos.package_use_receipt": ("次卡核销单", "Service package use"),
        "pos.package_use_nos": ("第 {first}–{last} 次，共 {total} 次", "Uses {first}–{last} of {total}"),
        "pos.package_use_no": ("第 {first} 次，共 {total} 次", "Use {first} of {total}"),
        "pos.package_left_after": ("本次后剩余", "Left after this use"),
        "pos.package_store": ("服务门店", "Performed at"),
        "pos.package_staff": ("服务人员", "Staff"),
        "pos.package_back": ("返回收银", "Back to the till"),
        "pos.package_sell": ("售卖次卡", "Sell a package"),
        "pos.package_sell_submit": ("售卡", "Sell"),
        "pos.package_sell_title": ("售卖次卡", "Sell a service package"),
        "pos.package_price": ("售价", "Price"),
        "pos.package_times": ("{uses} 次", "{uses} uses"),
        "pos.package_validity": ("有效期", "Validity"),
        "pos.package_days": ("购买后 {days} 天", "{days} days from purchase"),
        "pos.package_refund_rule": ("退款规则", "Refund rule"),
        "pos.package_refund.none": ("不可退款", "Not refundable"),
        "pos.package_refund.unused_pro_rata": ("未使用次数按比例退款", "Unused uses refunded pro rata"),
        "pos.package_refund.full_if_unused": ("未使用可全额退款", "Full refund while unused"),
        "pos.package_confirm_sell": ("确认收款并售卡", "Take payment and sell"),
        "pos.package_sale_receipt": ("次卡购买凭证", "Service package sale"),
        "pos.package_seller": ("售卡人", "Sold by"),
        "pos.err.package_member": ("请先识别会员", "Identify the member first"),
        "pos.err.uses": ("核销次数须为 1 到 1000 的整数", "Uses must be a whole number from 1 to 1000"),
    }
)


def _package_for_sale(
    session: Session, till: Till, basket: Basket, code: str
) -> tuple[Store, Member, ServicePackage]:
    """This store, the member being served and the package on sale with this code."""
    store = till.require_store()
    member = _served_member(session, till, basket)
    return store, member, packages.template_by_code(session, till.org.id, code.strip())


def _held_package(
    session: Session, till: Till, basket: Basket, package_id: int
) -> tuple[Store, Member, PackageRow]:
    """This store, the member being served and one of their packages as this store sees it (another
    member's is not found, as the service says)."""
    store = till.require_store()
    member = _served_member(session, till, basket)
    package = packages.member_package(session, till.org.id, package_id)
    if packages.holder(session, package).id != member.id:
        raise MemberPackageNotFound()
    template = session.get(ServicePackage, package.package_id)
    assert template is not None
    names = _store_names(session, till.org.id, {package.sold_store_id})
    return store, member, package_row(session, package, template, store, names)


def _sale_refusal(
    request: Request, session: Session, till: Till, basket: Basket, where: str, err: DomainError
) -> HTMLResponse:
    """Back to the sale screen with why a step cannot start (no store chosen, no member, not found)."""
    error = PageError(where, _message(err, request.state.lang))
    return sale_page(request, session, till, basket, error=error, status=err.status)


def package_page(
    request: Request,
    session: Session,
    till: Till,
    member: Member,
    *,
    mode: str,
    row: PackageRow | None = None,
    offer: PackageOffer | None = None,
    error: str = "",
    form: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The confirm step of a package use or sale (a new idempotency key each time it is shown)."""
    return till_page(
        request,
        till,
        "pos/package.html",
        "sale",
        str(request.url.path),
        {
            "mode": mode,
            "row": row,
            "offer": offer,
            "member": card_of(session, member),
            "methods": PAYMENT_METHODS,
            "idem": new_idempotency_key(),
            "error": error,
            "form": form or {},
        },
        status=status,
    )


@router.get("/pos/packages/sell")
def pos_package_sell_form(
    request: Request, session: SessionDep, user: PosUser, package: str = ""
) -> HTMLResponse:
    """Confirm selling a package to the member being served: price, uses, validity, payment method."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        _, member, template = _package_for_sale(session, till, basket, package)
    except DomainError as err:
        return _sale_refusal(request, session, till, basket, "package", err)
    return package_page(request, session, till, member, mode="sell", offer=_offer(template))


@router.post("/pos/packages/sell", dependencies=[Csrf])
def pos_package_sell(
    request: Request,
    session: SessionDep,
    user: PosUser,
    package: Annotated[str, Form()] = "",
    idem: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
) -> Response:
    """Sell the package at this store for the price shown (``packages.sell_package``), once per form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        store, member, template = _package_for_sale(session, till, basket, package)
    except DomainError as err:
        return _sale_refusal(request, session, till, basket, "package", err)
    offer = _offer(template)

    def attempt() -> idempotency.Outcome:
        if not idem or not _AMOUNT.match(amount.strip()):
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        if method not in PAYMENT_METHODS:
            raise PosInvalid("pos.err.payment", "pos.bad_payment")
        amount_fen = int(amount.strip())
        payload = {
            "package": template.code,
            "member_no": member.member_no,
            "store": store.code,
            "method": method,
            "amount_fen": amount_fen,
        }
        return idempotency.run(
            session,
            user,
            idem,
            "pos.package_sell",
            payload,
            lambda: {
                "member_package_id": packages.sell_package(
                    session, user, member, template, store, payment_method=method, amount_fen=amount_fen
                ).id
            },
            status=201,
            lang=lang,
        )

    def refuse(text: str, status: int) -> Response:
        return package_page(
            request,
            session,
            till,
            member,
            mode="sell",
            offer=offer,
            error=text,
            form={"method": method},
            status=status,
        )

    return _write_once(
        session,
        lang,
        attempt,
        refuse,
        lambda done: _see_other(f"/pos/packages/{done['member_package_id']}/sold"),
    )


@router.get("/pos/packages/{package_id}/use")
def pos_package_use_form(
    package_id: int, request: Request, session: SessionDep, user: PosUser, uses: str = "1"
) -> HTMLResponse:
    """Confirm a use of one of the served member's packages at this store."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        _, member, row = _held_package(session, till, basket, package_id)
    except DomainError as err:
        return _sale_refusal(request, session, till, basket, "package", err)
    return package_page(request, session, till, member, mode="use", row=row, form={"uses": uses.strip()[:6]})


@router.post("/pos/packages/{package_id}/uses", dependencies=[Csrf])
def pos_package_use(
    package_id: int,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    uses: Annotated[str, Form()] = "",
) -> Response:
    """Record the use at this store by this clerk (``packages.use_package``), once per rendered form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        store, member, row = _held_package(session, till, basket, package_id)
    except DomainError as err:
        return _sale_refusal(request, session, till, basket, "package", err)

    def attempt() -> idempotency.Outcome:
        if not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        count = parse_count(
            uses or "", low=1, high=packages.MAX_USES, key="pos.err.uses", code="pos.bad_uses"
        )
        payload = {
            "package_id": package_id,
            "uses": count,
            "member_no": member.member_no,
            "store": store.code,
        }
        return idempotency.run(
            session,
            user,
            idem,
            "pos.package_use",
            payload,
            lambda: {
                "use_id": packages.use_package(session, user, package_id, store, uses=count, member=member).id
            },
            status=201,
            lang=lang,
        )

    def refuse(text: str, status: int) -> Response:
        return package_page(
            request,
            session,
            till,
            member,
            mode="use",
            row=row,
            error=text,
            form={"uses": uses},
            status=status,
        )

    return _write_once(
        session, lang, attempt, refuse, lambda done: _see_other(f"/pos/package-uses/{done['use_id']}")
    )


def _staff_name(session: Session, staff_id: int | None, actor: str) -> str:
    staff = session.get(Staff, staff_id) if staff_id is not None else None
    if staff is None:
        return _actor_name(actor)
    return staff.display_name or staff.username


@router.get("/pos/package-uses/{use_id}")
def pos_package_use_receipt(
    use_id: int, request: Request, session: SessionDep, user: PosUser
) -> HTMLResponse:
    """A small print-friendly slip of one package use: where, by whom, which uses, how many are left."""
    till = open_till(request, session, user)
    use = session.get(PackageUse, use_id)
    if use is None or use.org_id != user.org_id:
        raise NotFound("找不到该核销记录", "Package use not found", code="packages.use_not_found")
    package = session.get(MemberPackage, use.member_package_id)
    template = session.get(ServicePackage, use.package_id)
    assert package is not None
    assert template is not None
    names = _store_names(session, user.org_id, {use.used_store_id, package.sold_store_id})
    last = use.first_use_no + use.uses - 1
    return till_page(
        request,
        till,
        "pos/package_receipt.html",
        "sale",
        f"/pos/package-uses/{use_id}",
        {
            "mode": "use",
            "use": use,
            "last": last,
            "left_after": package.uses_total - last,
            "template": template,
            "package": package,
            "member": member_card(session, user.org_id, packages.holder(session, package).member_no),
            "store_name": names.get(use.used_store_id, ""),
            "sold_store": names.get(package.sold_store_id) if package.sold_store_id else None,
            "staff": _staff_name(session, use.staff_id, use.actor),
        },
    )


@router.get("/pos/packages/{package_id}/sold")
def pos_package_sale_receipt(
    package_id: int, request: Request, session: SessionDep, user: PosUser
) -> HTMLResponse:
    """The member's slip for a package bought at the till."""
    till = open_till(request, session, user)
    package = packages.member_package(session, user.org_id, package_id)
    template = session.get(ServicePackage, package.package_id)
    assert template is not None
    names = _store_names(session, user.org_id, {package.sold_store_id})
    return till_page(
        request,
        till,
        "pos/package_receipt.html",
        "sale",
        f"/pos/packages/{package_id}/sold",
        {
            "mode": "sale",
            "template": template,
            "package": package,
            "member": member_card(session, user.org_id, packages.holder(session, package).member_no),
            "store_name": names.get(package.sold_store_id, "") if package.sold_store_id else "",
            "staff": _actor_name(package.sold_by),
        },
    )
