"""The POS page (/pos) for a clerk at a store without its own till integration.

One screen: identify a member (member code, phone, member number or card), build a basket, redeem
points, check out, print the receipt; and /pos/orders: look up any order of the chain and return
lines of it at this store.

The basket lives in a signed cookie tied to the clerk and the store, so it survives a reload. The
checkout and return forms carry what they act on (the signed basket, the chosen quantities) and an
idempotency key minted when the page was rendered: a double click or a resubmit of the same form
replays the first answer through ``common.idempotency.run`` instead of writing a second order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.auth import service as auth_service
from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common import idempotency
from onemember.common.counters import is_valid_member_no
from onemember.common.types import IdentityKind
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError, Invalid, NotFound
from onemember.members import service as members
from onemember.members.errors import InvalidIdentity, MemberCodeInvalid, MemberNotFound
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.orders import checkout as checkout_service
from onemember.orders import returns as returns_service
from onemember.orders.models import Order, OrderLine, OrderReturn
from onemember.orders.schemas import CheckoutIn, LineIn, MemberRefIn, OrderOut, PaymentIn, ReturnIn
from onemember.orders.views import order_out
from onemember.org import service as org_service
from onemember.org.models import Org, Store
from onemember.points import calculations as calc
from onemember.points import service as points
from onemember.points.models import PointAccount, PointEntry, PointLot, PointsProgram
from onemember.settings import get_settings
from onemember.web import i18n
from onemember.web.common import STAFF_COOKIE, Csrf, PosUser
from onemember.web.console import do_login, login_page, safe_next
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

BASKET_COOKIE = "om_pos_basket"
STORE_COOKIE = "om_pos_store"
COOKIE_PATH = "/pos"
BASKET_MAX_AGE = 12 * 3600
MAX_LINES = 30
MAX_TOKEN_CHARS = 3600  # a cookie must stay under 4 KB
RECENT_ORDERS = 200  # quick-add reads the lines of this store's latest orders only
RECENT_LINES = 300
QUICK_ITEMS = 12
EXPIRY_WINDOW = timedelta(days=30)
PAYMENT_METHODS = ("wechat_pay", "alipay", "cash", "bank_card")

i18n.register(
    {
        "pos.login": ("收银台登录", "POS login"),
        "pos.sale": ("收银", "Sale"),
        "pos.returns": ("退货", "Returns"),
        "pos.store": ("门店", "Store"),
        "pos.switch_store": ("切换", "Switch"),
        "pos.choose_store": ("请选择收银门店", "Choose the store you are serving"),
        "pos.choose_store_hint": (
            "总部和区域员工需先选择门店，结账和退货都记在该门店。",
            "HQ and regional staff pick a store first; sales and returns are booked to it.",
        ),
        "pos.identify": ("识别会员", "Identify member"),
        "pos.identify_placeholder": (
            "扫会员码 / 手机号 / 会员号 / 卡号",
            "Member code / phone / member no. / card",
        ),
        "pos.identify_submit": ("识别", "Find"),
        "pos.no_member": ("未识别会员：可按非会员结账", "No member: you can check out as a guest"),
        "pos.member": ("会员", "Member"),
        "pos.member_no": ("会员号", "Member no."),
        "pos.phone": ("手机", "Phone"),
        "pos.tier": ("等级", "Tier"),
        "pos.balance": ("可用积分", "Points balance"),
        "pos.debt": ("欠分", "Points owed"),
        "pos.expiring": ("30 天内到期", "Expiring within 30 days"),
        "pos.expiring_first": ("最早", "first on"),
        "pos.clear_member": ("更换会员", "Change member"),
        "pos.add_line": ("添加商品", "Add item"),
        "pos.sku": ("商品编码", "SKU"),
        "pos.name": ("品名", "Name"),
        "pos.category": ("品类", "Category"),
        "pos.quantity": ("数量", "Qty"),
        "pos.unit_price": ("单价（元）", "Unit price (¥)"),
        "pos.add": ("加入", "Add"),
        "pos.scan_hint": (
            "扫码枪扫商品编码后回车即可；本店近期售出的商品会自动带出品名和价格。",
            "Scan the SKU and press Enter; items this store sold recently fill in name and price.",
        ),
        "pos.quick_add": ("本店近期商品", "Recent items at this store"),
        "pos.basket": ("购物篮", "Basket"),
        "pos.basket_empty": ("购物篮是空的", "The basket is empty"),
        "pos.amount": ("金额", "Amount"),
        "pos.remove": ("删除", "Remove"),
        "pos.clear_basket": ("清空购物篮", "Clear basket"),
        "pos.total": ("合计", "Total"),
        "pos.redeem": ("积分抵扣", "Redeem points"),
        "pos.redeem_max": ("最多可用", "Up to"),
        "pos.points_unit": ("积分", "points"),
        "pos.rate": ("积分 = ¥1.00", "points = ¥1.00"),
        "pos.redeem_needs_member": ("识别会员后可用积分抵扣", "Identify a member to redeem points"),
        "pos.points_value": ("积分抵扣", "Paid with points"),
        "pos.due": ("应付", "Due"),
        "pos.payment": ("支付方式", "Payment"),
        "pos.pay.wechat_pay": ("微信支付", "WeChat Pay"),
        "pos.pay.alipay": ("支付宝", "Alipay"),
        "pos.pay.cash": ("现金", "Cash"),
        "pos.pay.bank_card": ("银行卡", "Bank card"),
        "pos.checkout": ("结账", "Check out"),
        "pos.keys": (
            "快捷键：Alt+M 识别会员 · Alt+S 商品编码 · Alt+C 结账",
            "Keys: Alt+M member · Alt+S SKU · Alt+C check out",
        ),
        "pos.receipt": ("购物小票", "Receipt"),
        "pos.order_no": ("订单号", "Order no."),
        "pos.time": ("时间", "Time"),
        "pos.cashier": ("收银员", "Cashier"),
        "pos.guest": ("非会员", "Guest"),
        "pos.paid": ("实付", "Paid"),
        "pos.earned": ("本单获得积分", "Points earned"),
        "pos.redeemed": ("本单使用积分", "Points redeemed"),
        "pos.new_balance": ("积分余额", "Points balance"),
        "pos.debt_repaid": ("抵还欠分", "Owed points repaid"),
        "pos.earn_why": ("积分说明", "How points were earned"),
        "pos.line_points": ("行积分", "Line points"),
        "pos.print": ("打印", "Print"),
        "pos.new_sale": ("下一位顾客", "Next customer"),
        "pos.order_lookup": ("查找订单", "Find an order"),
        "pos.order_lookup_hint": (
            "可查找全连锁任意门店的订单，并在本店办理退货。",
            "Find any order of the chain and take the return at this store.",
        ),
        "pos.find": ("查找", "Find"),
        "pos.order_store": ("下单门店", "Sold at"),
        "pos.status": ("状态", "Status"),
        "pos.status.completed": ("已完成", "Completed"),
        "pos.status.partially_returned": ("部分退货", "Partly returned"),
        "pos.status.returned": ("已全部退货", "Returned"),
        "pos.cross_store": ("跨店退货：该订单购于", "Cross-store return: sold at"),
        "pos.ordered": ("购买", "Bought"),
        "pos.returned_qty": ("已退", "Returned"),
        "pos.returnable": ("可退", "Returnable"),
        "pos.return_qty": ("本次退货", "Return now"),
        "pos.reason": ("退货原因", "Reason"),
        "pos.reason_placeholder": ("例如：质量问题", "e.g. faulty item"),
        "pos.do_return": ("确认退货", "Return"),
        "pos.nothing_returnable": ("该订单已全部退货", "Everything on this order was returned"),
        "pos.past_returns": ("退货记录", "Returns so far"),
        "pos.return_receipt": ("退货单", "Return receipt"),
        "pos.return_no": ("退货单号", "Return no."),
        "pos.return_store": ("退货门店", "Returned at"),
        "pos.refund": ("退款金额", "Refund"),
        "pos.refund_deducted": ("因积分不足从退款中扣除", "Kept from the refund for spent points"),
        "pos.points_reversed": ("扣回积分", "Points taken back"),
        "pos.points_refunded": ("退还抵扣积分", "Redeemed points given back"),
        "pos.shortfall": ("积分不足（已用掉）", "Points already spent"),
        "pos.policy.debt": ("记为欠分，之后消费抵还", "owed; repaid from later earnings"),
        "pos.policy.deduct_refund": ("从退款中扣除", "kept from the refund"),
        "pos.policy.write_off": ("由总部核销", "written off by HQ"),
        "pos.next_return": ("继续退货", "Another return"),
        "pos.err.price": (
            "单价格式无效：请输入以元为单位、最多两位小数的金额，如 12.50",
            "Invalid unit price: enter yuan with at most two decimals, e.g. 12.50",
        ),
        "pos.err.price_required": (
            "本店近期没有售出该商品，请输入单价",
            "This store has not sold that SKU recently; enter the unit price",
        ),
        "pos.err.quantity": (
            "数量须为 1 到 100000 的整数",
            "Quantity must be a whole number from 1 to 100000",
        ),
        "pos.err.sku": ("请填写商品编码（最多 64 个字符）", "Enter the SKU (up to 64 characters)"),
        "pos.err.text_long": (
            "品名最多 100 个字，品类最多 60 个字",
            "Name up to 100, category up to 60 characters",
        ),
        "pos.err.basket_full": (
            f"购物篮最多 {MAX_LINES} 行，请先结账",
            f"The basket holds up to {MAX_LINES} lines; check out first",
        ),
        "pos.err.basket_empty": ("购物篮是空的，请先添加商品", "The basket is empty; add items first"),
        "pos.err.basket_changed": (
            "购物篮已变更，请核对后重新结账",
            "The basket has changed; check it and check out again",
        ),
        "pos.err.points": (
            "抵扣积分须为不小于 0 的整数",
            "Points to redeem must be a whole number, 0 or more",
        ),
        "pos.err.points_unit": ("抵扣积分须为 {unit} 的整数倍", "Redeem a multiple of {unit} points"),
        "pos.err.points_over_total": ("抵扣金额超过订单金额", "Points would pay more than the total"),
        "pos.err.points_over_balance": ("超过会员可用积分", "More than the member's balance"),
        "pos.err.payment": ("请选择支付方式", "Choose a payment method"),
        "pos.err.identify_empty": ("请输入或扫描会员标识", "Type or scan a member identifier"),
        "pos.err.store_required": ("请先选择收银门店", "Choose the store you are serving first"),
        "pos.err.return_empty": ("请至少填写一行的退货数量", "Enter a return quantity on at least one line"),
        "pos.err.return_qty": (
            "退货数量须为不小于 0 的整数",
            "Return quantities must be whole numbers, 0 or more",
        ),
        "pos.err.form_stale": ("页面已过期，请刷新后重试", "The page has expired; reload it and try again"),
    }
)


class PosInvalid(Invalid):
    """Bad input on the POS page; the message comes from the page's own texts."""

    def __init__(self, key: str, code: str) -> None:
        zh, en = i18n.MESSAGES[key]
        super().__init__(zh, en, code=code)


def member_tier(session: Session, member: Member) -> tuple[str, str]:
    """The member's tier name (zh, en): the level in the program's tier set, or a plain member."""
    from onemember.points.service import default_program
    from onemember.tiers.service import current_level

    level = current_level(session, default_program(session, member.org_id), member)
    if level is None:
        return ("普通会员", "Member")
    return (level.name, level.code)


# --- money and quantities from form text -----------------------------------------------------------

_YUAN = re.compile(r"^(\d{1,9})(?:\.(\d{1,2}))?$")
_COUNT = re.compile(r"^\d{1,9}$")


def yuan_to_fen(text: str) -> int:
    """Integer fen from a yuan amount typed by a person ("12", "12.5", "12.50"); more than two
    decimals, signs, separators and anything else are refused rather than rounded."""
    match = _YUAN.match(text.strip().removeprefix("¥").strip())
    if match is None:
        raise PosInvalid("pos.err.price", "pos.bad_price")
    yuan, cents = match.group(1), (match.group(2) or "").ljust(2, "0")
    return int(yuan) * 100 + int(cents)


def fen_to_yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def parse_count(text: str, *, low: int, high: int, key: str, code: str) -> int:
    raw = text.strip()
    if not _COUNT.match(raw) or not low <= int(raw) <= high:
        raise PosInvalid(key, code)
    return int(raw)


# --- the basket: a signed token in a cookie and in the checkout form -------------------------------


@dataclass
class BasketLine:
    sku: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int

    @property
    def amount_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass
class Basket:
    staff_id: int
    store_code: str
    member_no: str | None = None
    lines: list[BasketLine] = field(default_factory=list)

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)

    def add(self, line: BasketLine) -> None:
        """Scanning the same item again raises the quantity of its line."""
        for existing in self.lines:
            same = (existing.sku, existing.name, existing.category, existing.unit_price_fen)
            if same == (line.sku, line.name, line.category, line.unit_price_fen):
                existing.quantity = min(existing.quantity + line.quantity, 100000)
                return
        if len(self.lines) >= MAX_LINES:
            raise PosInvalid("pos.err.basket_full", "pos.basket_full")
        self.lines.append(line)

    def encode(self) -> str:
        payload = json.dumps(
            {
                "u": self.staff_id,
                "s": self.store_code,
                "m": self.member_no,
                "l": [asdict(x) for x in self.lines],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        token = f"{body}.{_sign(body)}"
        if len(token) > MAX_TOKEN_CHARS:
            raise PosInvalid("pos.err.basket_full", "pos.basket_full")
        return token

    @classmethod
    def decode(cls, token: str, staff_id: int, store_code: str) -> Basket | None:
        """The basket in ``token`` if it is intact and belongs to this clerk and store."""
        body, _, sig = (token or "").partition(".")
        if not body or not hmac.compare_digest(sig, _sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            basket = cls(
                staff_id=int(data["u"]),
                store_code=str(data["s"]),
                member_no=data["m"],
                lines=[BasketLine(**x) for x in data["l"]],
            )
        except (ValueError, KeyError, TypeError):
            return None
        if basket.staff_id != staff_id or basket.store_code != store_code:
            return None
        return basket


def _sign(body: str) -> str:
    digest = hmac.new(get_settings().resolved_secret_key(), b"pos-basket:" + body.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:18]).decode()


def new_idempotency_key() -> str:
    return f"pos-{secrets.token_urlsafe(18)}"


# --- who is at the till, and for which store -------------------------------------------------------


@dataclass
class Till:
    user: Principal
    org: Org
    program: PointsProgram
    store: Store | None
    stores: list[Store]  # the stores a user without a store of their own may choose from
    chosen: bool = False  # the store came from the query string (remember it in a cookie)

    def require_store(self) -> Store:
        if self.store is None:
            raise PosInvalid("pos.err.store_required", "pos.store_required")
        return self.store

    @property
    def store_code_for_api(self) -> str | None:
        """Staff with a store of their own act for it; HQ and regional staff name the chosen one."""
        return None if self.user.store_id is not None or self.store is None else self.store.code


def open_till(request: Request, session: Session, user: Principal, store_param: str | None = None) -> Till:
    user.require_role(TILL_ROLES, "使用收银台", "use the POS")
    org = org_service.get_org(session, user.org_id)
    program = points.default_program(session, user.org_id)
    if user.store_id is not None:
        return Till(user, org, program, org_service.get_store(session, user.org_id, user.store_id), [])
    stores = [
        s
        for s in session.scalars(
            select(Store).where(Store.org_id == user.org_id, Store.active.is_(True)).order_by(Store.code)
        )
        if user.can_access_store(s.id)
    ]
    by_code = {s.code: s for s in stores}
    if store_param and store_param in by_code:
        return Till(user, org, program, by_code[store_param], stores, chosen=True)
    return Till(user, org, program, by_code.get(request.cookies.get(STORE_COOKIE, "")), stores)


def load_basket(request: Request, till: Till) -> Basket:
    store_code = till.store.code if till.store else ""
    found = Basket.decode(request.cookies.get(BASKET_COOKIE, ""), till.user.id, store_code)
    return found or Basket(till.user.id, store_code)


def _keep_basket(response: Response, basket: Basket) -> Response:
    response.set_cookie(
        BASKET_COOKIE,
        basket.encode(),
        max_age=BASKET_MAX_AGE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
    )
    return response


def _see_other(url: str, basket: Basket | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    return _keep_basket(response, basket) if basket is not None else response


def _message(err: DomainError, lang: str) -> str:
    return err.en if lang == "en" else err.zh


def _problem_message(body: dict[str, Any], lang: str) -> str:
    return str(body.get("message_en" if lang == "en" else "message_zh") or body.get("detail") or "")


# --- reading what the page shows -------------------------------------------------------------------


@dataclass
class MemberCard:
    member_no: str
    name: str
    phone: str
    tier: tuple[str, str]
    balance: int
    debt: int
    expiring: int
    expiring_first: datetime | None


def member_card(session: Session, org_id: int, member_no: str | None) -> MemberCard | None:
    if not member_no:
        return None
    try:
        member = members.by_member_no(session, org_id, member_no)
    except MemberNotFound:
        return None
    account = session.scalar(select(PointAccount).where(PointAccount.member_id == member.id))
    expiring, first = 0, None
    if account is not None:
        row = session.execute(
            select(func.coalesce(func.sum(PointLot.remaining), 0), func.min(PointLot.expires_at)).where(
                PointLot.account_id == account.id,
                PointLot.remaining > 0,
                PointLot.expires_at.is_not(None),
                PointLot.expires_at <= utcnow() + EXPIRY_WINDOW,
            )
        ).one()
        expiring, first = int(row[0]), row[1]
    return MemberCard(
        member_no=member.member_no,
        name=mask_name(member.name),
        phone=members.masked_phone(session, member.id),
        tier=member_tier(session, member),
        balance=account.balance if account else 0,
        debt=account.debt if account else 0,
        expiring=expiring,
        expiring_first=first,
    )


@dataclass
class RecentItem:
    sku: str
    name: str
    category: str
    unit_price_fen: int

    @property
    def price_text(self) -> str:
        return fen_to_yuan(self.unit_price_fen)


def recent_items(session: Session, org_id: int, store_id: int) -> list[RecentItem]:
    """Distinct SKUs of the latest lines sold at this store (a LIMITed read through the store index)."""
    latest_orders = (
        select(Order.id)
        .where(Order.org_id == org_id, Order.store_id == store_id)
        .order_by(Order.id.desc())
        .limit(RECENT_ORDERS)
        .subquery()
    )
    rows = session.execute(
        select(OrderLine.sku, OrderLine.name, OrderLine.category, OrderLine.unit_price_fen)
        .where(OrderLine.order_id.in_(select(latest_orders.c.id)))
        .order_by(OrderLine.id.desc())
        .limit(RECENT_LINES)
    ).all()
    items: dict[str, RecentItem] = {}
    for sku, name, category, price in rows:
        if sku not in items:
            items[sku] = RecentItem(sku, name, category, int(price))
    return list(items.values())


def max_redeemable(program: PointsProgram, balance: int, total_fen: int) -> int:
    """The most points this basket can take: the balance and the total, in whole redeem units."""
    unit = calc.redeem_unit(program.redeem_points_per_yuan)
    by_total = total_fen * program.redeem_points_per_yuan // 100
    return min(balance, by_total) // unit * unit


@dataclass
class PageError:
    where: str  # identify | line | basket | checkout | lookup | return
    text: str


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
    ctx: dict[str, Any] = {
        "till": till,
        "user": till.user,
        "section": "sale",
        "here": "/pos",
        "error": error,
        "form": form or {},
    }
    if till.store is not None:
        card = member_card(session, till.org.id, basket.member_no)
        rate = till.program.redeem_points_per_yuan
        ctx.update(
            basket=basket,
            token=basket.encode(),
            idem=new_idempotency_key(),
            member=card,
            recent=recent_items(session, till.org.id, till.store.id)[:QUICK_ITEMS],
            rate=rate,
            max_points=max_redeemable(till.program, card.balance, basket.total_fen) if card else 0,
            methods=PAYMENT_METHODS,
            quote=basket_quote(request.state.lang, basket, till.program, card, ctx["form"].get("redeem", "")),
            focus="identify"
            if (card is None and not basket.lines) or (error and error.where == "identify")
            else "sku",
        )
    response = render(request, "pos/sale.html", ctx, status_code=status)
    if request.headers.get("hx-request"):
        response.headers["HX-Replace-Url"] = "/pos"
    if till.chosen and till.store is not None:
        response.set_cookie(STORE_COOKIE, till.store.code, path=COOKIE_PATH, samesite="lax")
    return response


# --- login ------------------------------------------------------------------------------------------


@router.get("/pos/login")
def pos_login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(
        request,
        "/pos/login",
        safe_next(next, "/pos"),
        heading=i18n.translate("pos.login", request.state.lang),
    )


@router.post("/pos/login", dependencies=[Csrf])
def pos_login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/pos",
) -> Response:
    heading = i18n.translate("pos.login", request.state.lang)
    return do_login(request, session, org, username, password, safe_next(next, "/pos"), "/pos/login", heading)


@router.post("/pos/logout", dependencies=[Csrf])
def pos_logout(request: Request, session: SessionDep) -> Response:
    token = request.cookies.get(STAFF_COOKIE)
    if token:
        auth_service.logout(session, token)
        session.commit()
    response = RedirectResponse("/pos/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE)
    response.delete_cookie(BASKET_COOKIE, path=COOKIE_PATH)
    response.delete_cookie(STORE_COOKIE, path=COOKIE_PATH)
    return response


# --- the sale screen --------------------------------------------------------------------------------


@router.get("/pos")
def pos_home(request: Request, session: SessionDep, user: PosUser, store: str | None = None) -> HTMLResponse:
    till = open_till(request, session, user, store)
    return sale_page(request, session, till, load_basket(request, till))


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
            found = _by_card(session, org_id, q)
            if found is None:
                raise
    else:
        compact = re.sub(r"[\s\-]", "", q)
        found = _by_phone(session, org_id, q)
        if found is None and is_valid_member_no(compact):
            try:
                found = members.by_member_no(session, org_id, compact)
            except MemberNotFound:
                found = None
        if found is None:
            found = _by_card(session, org_id, q)
    if found is None:
        raise MemberNotFound()
    # Follows a merge to the surviving member and refuses an erased one.
    return members.by_member_no(session, org_id, found.member_no)


def _by_phone(session: Session, org_id: int, text: str) -> Member | None:
    try:
        return members.find_by_identity(session, org_id, IdentityKind.PHONE, text)
    except InvalidIdentity:
        return None


def _by_card(session: Session, org_id: int, text: str) -> Member | None:
    try:
        return members.find_by_identity(session, org_id, IdentityKind.CARD, text)
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
    return _see_other("/pos", basket)


@router.post("/pos/member/clear", dependencies=[Csrf])
def pos_clear_member(request: Request, session: SessionDep, user: PosUser) -> Response:
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    basket.member_no = None
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
    return _see_other("/pos", basket)


def basket_quote(
    lang: str, basket: Basket, program: PointsProgram, card: MemberCard | None, redeem: str
) -> dict[str, Any]:
    """The points value and the amount due for the typed points, or why they cannot be used."""
    quote: dict[str, Any] = {"value": 0, "due": basket.total_fen, "warning": ""}
    try:
        wanted = parse_count(redeem or "0", low=0, high=10**9, key="pos.err.points", code="pos.bad_points")
    except DomainError as err:
        quote["warning"] = _message(err, lang)
        return quote
    unit = calc.redeem_unit(program.redeem_points_per_yuan)
    value = calc.points_value_fen(wanted, program.redeem_points_per_yuan)
    if wanted % unit:
        quote["warning"] = i18n.translate("pos.err.points_unit", lang).format(unit=unit)
    elif value > basket.total_fen:
        quote["warning"] = i18n.translate("pos.err.points_over_total", lang)
    elif wanted > (card.balance if card else 0):
        quote["warning"] = i18n.translate("pos.err.points_over_balance", lang)
    else:
        quote.update(value=value, due=basket.total_fen - value)
    return quote


@router.get("/pos/quote")
def pos_quote(request: Request, session: SessionDep, user: PosUser, redeem: str = "") -> HTMLResponse:
    """What the typed points take off the basket and what is left to pay (shown as the clerk types)."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    card = member_card(session, user.org_id, basket.member_no)
    quote = basket_quote(request.state.lang, basket, till.program, card, redeem)
    return render(request, "pos/_quote.html", {"quote": quote})


def checkout_body(till: Till, basket: Basket, redeem: int, method: str) -> CheckoutIn:
    value = calc.points_value_fen(redeem, till.program.redeem_points_per_yuan)
    due = basket.total_fen - value
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
            payments=[PaymentIn(method=method, amount_fen=due)] if due > 0 else [],
        )
    except ValidationError as exc:
        raise PosInvalid("pos.err.basket_changed", "pos.basket_invalid") from exc


@router.post("/pos/checkout", dependencies=[Csrf])
def pos_checkout(
    request: Request,
    session: SessionDep,
    user: PosUser,
    basket: Annotated[str, Form()] = "",
    idem: Annotated[str, Form()] = "",
    redeem: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "",
) -> Response:
    """Check out the basket shown on the page, once per rendered form (double clicks replay)."""
    lang = request.state.lang
    till = open_till(request, session, user)
    current = load_basket(request, till)
    form = {"redeem": redeem, "method": method}
    try:
        store = till.require_store()
        sent = Basket.decode(basket, user.id, store.code)
        if sent is None or not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        if not sent.lines:
            raise PosInvalid("pos.err.basket_empty", "pos.basket_empty")
        wanted = parse_count(redeem or "0", low=0, high=10**9, key="pos.err.points", code="pos.bad_points")
        if method not in PAYMENT_METHODS:
            raise PosInvalid("pos.err.payment", "pos.bad_payment")
        body = checkout_body(till, sent, wanted, method)
        outcome = idempotency.run(
            session,
            user,
            idem,
            "pos.checkout",
            body,
            lambda: checkout_service.checkout(session, user, body, source="pos"),
            status=201,
            lang=lang,
        )
    except DomainError as err:
        session.rollback()
        error = PageError("checkout", _message(err, lang))
        return sale_page(request, session, till, current, error=error, form=form, status=err.status)
    if outcome.status >= 400:
        error = PageError("checkout", _problem_message(outcome.body, lang))
        return sale_page(request, session, till, current, error=error, form=form, status=outcome.status)
    return _see_other(f"/pos/receipt/{outcome.body['order_no']}", Basket(user.id, store.code))


# --- receipts ---------------------------------------------------------------------------------------


def _points_after(session: Session, order_id: int, return_id: int | None) -> tuple[int, int] | None:
    """Balance and debt right after an order's (or one of its returns') last ledger entry."""
    query = select(PointEntry.balance_after, PointEntry.debt_after).where(PointEntry.order_id == order_id)
    query = query.where(
        PointEntry.return_id.is_(None) if return_id is None else PointEntry.return_id == return_id
    )
    row = session.execute(query.order_by(PointEntry.id.desc()).limit(1)).first()
    return (int(row[0]), int(row[1])) if row else None


def _order_member(session: Session, order: Order) -> MemberCard | None:
    if order.member_id is None:
        return None
    member = session.get(Member, order.member_id)
    return member_card(session, order.org_id, member.member_no) if member else None


@router.get("/pos/receipt/{order_no}")
def pos_receipt(order_no: str, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A print-friendly receipt of one order."""
    till = open_till(request, session, user)
    order = returns_service.order_by_no(session, user.org_id, order_no)
    out = order_out(session, order)
    member = _order_member(session, order)
    after = _points_after(session, order.id, None)
    if after is None and member is not None:
        after = (member.balance, member.debt)
    return render(
        request,
        "pos/receipt.html",
        {
            "till": till,
            "user": user,
            "section": "sale",
            "here": f"/pos/receipt/{order_no}",
            "order": out,
            "member": member,
            "after": after,
        },
    )


@router.get("/pos/returns/{return_no}")
def pos_return_receipt(return_no: str, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A print-friendly receipt of one return."""
    till = open_till(request, session, user)
    ret = session.scalar(
        select(OrderReturn).where(OrderReturn.org_id == user.org_id, OrderReturn.return_no == return_no)
    )
    if ret is None:
        raise NotFound("找不到该退货单", "Return not found", code="orders.return_not_found")
    order = session.get(Order, ret.order_id)
    assert order is not None
    out = order_out(session, order)
    detail = next(r for r in out.returns if r.return_no == return_no)
    member = _order_member(session, order)
    after = _points_after(session, order.id, ret.id)
    if after is None and member is not None:
        after = (member.balance, member.debt)
    stores = {s.code: s.name for s in session.scalars(select(Store).where(Store.org_id == user.org_id))}
    return render(
        request,
        "pos/return_receipt.html",
        {
            "till": till,
            "user": user,
            "section": "returns",
            "here": f"/pos/returns/{return_no}",
            "order": out,
            "ret": detail,
            "reason": ret.reason,
            "member": member,
            "after": after,
            "names": {line.line_no: line.name for line in out.lines},
            "store_names": stores,
        },
    )


# --- returns at this store --------------------------------------------------------------------------


def orders_page(
    request: Request,
    session: Session,
    till: Till,
    order_no: str,
    *,
    error: PageError | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    order: OrderOut | None = None
    member: MemberCard | None = None
    if order_no and (error is None or error.where != "lookup"):
        try:
            found = returns_service.order_by_no(session, till.org.id, order_no)
            order = order_out(session, found)
            member = _order_member(session, found)
        except DomainError as err:
            error, status = PageError("lookup", _message(err, request.state.lang)), err.status
    response = render(
        request,
        "pos/orders.html",
        {
            "till": till,
            "user": till.user,
            "section": "returns",
            "here": f"/pos/orders?no={order_no}" if order_no else "/pos/orders",
            "no": order_no,
            "order": order,
            "member": member,
            "returnable": any(x.quantity > x.returned_quantity for x in order.lines) if order else False,
            "idem": new_idempotency_key(),
            "error": error,
            "form": form or {},
        },
        status_code=status,
    )
    if request.headers.get("hx-request"):
        response.headers["HX-Replace-Url"] = f"/pos/orders?no={order_no}" if order_no else "/pos/orders"
    if till.chosen and till.store is not None:
        response.set_cookie(STORE_COOKIE, till.store.code, path=COOKIE_PATH, samesite="lax")
    return response


@router.get("/pos/orders")
def pos_orders(
    request: Request, session: SessionDep, user: PosUser, no: str = "", store: str | None = None
) -> HTMLResponse:
    """Look up any order of the chain by its number."""
    till = open_till(request, session, user, store)
    return orders_page(request, session, till, no.strip())


@router.post("/pos/orders/{order_no}/returns", dependencies=[Csrf])
def pos_return(
    order_no: str,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    line: Annotated[list[int] | None, Form()] = None,
    qty: Annotated[list[str] | None, Form()] = None,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Return the chosen quantities at this store, once per rendered form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    line_nos, quantities = line or [], qty or []
    form: dict[str, Any] = {"qty": dict(zip(line_nos, quantities, strict=False)), "reason": reason}
    try:
        till.require_store()
        if not idem or len(line_nos) != len(quantities):
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        wanted = [
            (
                n,
                parse_count(
                    q or "0", low=0, high=100000, key="pos.err.return_qty", code="pos.bad_return_qty"
                ),
            )
            for n, q in zip(line_nos, quantities, strict=True)
        ]
        chosen = [{"line_no": n, "quantity": q} for n, q in wanted if q > 0]
        if not chosen:
            raise PosInvalid("pos.err.return_empty", "pos.return_empty")
        body = ReturnIn.model_validate(
            {"lines": chosen, "store_code": till.store_code_for_api, "reason": reason.strip()[:300]}
        )
        outcome = idempotency.run(
            session,
            user,
            idem,
            "pos.return",
            {"order_no": order_no, **body.model_dump(mode="json")},
            lambda: returns_service.return_lines(session, user, order_no, body),
            status=201,
            lang=lang,
        )
    except (DomainError, ValidationError) as err:
        session.rollback()
        text = (
            _message(err, lang)
            if isinstance(err, DomainError)
            else i18n.translate("pos.err.return_qty", lang)
        )
        status = err.status if isinstance(err, DomainError) else 422
        return orders_page(
            request, session, till, order_no, error=PageError("return", text), form=form, status=status
        )
    if outcome.status >= 400:
        error = PageError("return", _problem_message(outcome.body, lang))
        return orders_page(request, session, till, order_no, error=error, form=form, status=outcome.status)
    return _see_other(f"/pos/returns/{outcome.body['return_no']}")
