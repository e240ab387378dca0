"""The POS page (/pos) for a clerk at a store without its own till integration.

One screen: identify a member (member code, phone, member number or card), build a basket, choose
coupons (the best combination for the basket is pre-selected; why the others cannot be used is said),
redeem points, check out, print the receipt; use or sell the member's service packages (次卡) at this
store; and /pos/orders: look up any order of the chain and return lines of it at this store.

The basket lives in a signed cookie tied to the clerk and the store, so it survives a reload; it also
carries the clerk's coupon choice (none kept means "the best combination"). The checkout and return
forms carry what they act on (the signed basket, the coupon codes and amount shown, the chosen
quantities) and an idempotency key minted when the page was rendered: a double click or a resubmit of
the same form replays the first answer through ``common.idempotency.run`` instead of writing twice.
Every number on the page comes from the services the JSON API calls (``orders.checkout.quote``,
``coupons.best_for_basket``, ``packages.use_package``...), so permissions and validation are the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
from onemember.coupons import calculations as coupon_calc
from onemember.coupons import service as coupon_service
from onemember.coupons.models import Coupon, CouponRedemption, CouponRedemptionLine, CouponTemplate
from onemember.coupons.service.till import UnusableCoupon, candidate
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError, Invalid, NotFound
from onemember.members import service as members
from onemember.members.errors import InvalidIdentity, MemberCodeInvalid, MemberNotFound
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.orders import checkout as checkout_service
from onemember.orders import returns as returns_service
from onemember.orders.models import Order, OrderLine, OrderReturn, ReturnLine
from onemember.orders.schemas import (
    CheckoutIn,
    CheckoutOut,
    LineIn,
    MemberRefIn,
    OrderOut,
    PaymentIn,
    ReturnIn,
)
from onemember.orders.views import order_out
from onemember.org import service as org_service
from onemember.org.models import Org, Staff, Store
from onemember.packages import service as packages
from onemember.packages.errors import MemberPackageNotFound
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.points import calculations as calc
from onemember.points import mall
from onemember.points import service as points
from onemember.points.models import (
    PointAccount,
    PointEntry,
    PointLot,
    PointsProgram,
    Reward,
    RewardRedemption,
)
from onemember.settings import get_settings
from onemember.tiers import service as tiers
from onemember.web import i18n
from onemember.web.common import STAFF_COOKIE, Csrf, PosUser
from onemember.web.console import do_login, login_page, safe_next
from onemember.web.templating import fen, local_time, render

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
_AMOUNT = re.compile(r"^\d{1,13}$")


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
    # The clerk's coupon choice for this basket; None: the best combination, worked out afresh.
    coupons: list[str] | None = None

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)

    def changed(self) -> None:
        """A new basket or member: coupons go back to the best combination for it."""
        self.coupons = None

    def add(self, line: BasketLine) -> None:
        """Scanning the same item again raises the quantity of its line."""
        self.changed()
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
                "c": self.coupons,
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
                coupons=[str(c) for c in data["c"]] if data.get("c") is not None else None,
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


def _with_coupon(text: str, code: object, lang: str) -> str:
    """A coupon error names the coupon, so the clerk knows which one to take off."""
    if not isinstance(code, str) or not code or code in text:
        return text
    note = i18n.translate("pos.coupon_code_note", lang).format(code=code)
    return f"{text} ({note})" if lang == "en" else f"{text}（{note}）"


def _message(err: DomainError, lang: str) -> str:
    return _with_coupon(err.en if lang == "en" else err.zh, err.extra.get("coupon_code"), lang)


def _problem_message(body: dict[str, Any], lang: str) -> str:
    text = str(body.get("message_en" if lang == "en" else "message_zh") or body.get("detail") or "")
    return _with_coupon(text, body.get("coupon_code"), lang)


def _write_once(
    session: Session,
    lang: str,
    attempt: Callable[[], idempotency.Outcome],
    refuse: Callable[[str, int], Response],
    done: Callable[[dict[str, Any]], Response],
) -> Response:
    """The write behind a confirm step: ``attempt`` checks the form and runs the write once per key
    (``idempotency.run``). A refusal, made now or replayed from the first submit, re-shows the form
    with why and changes nothing; success goes on to ``done`` with the answer."""
    try:
        outcome = attempt()
    except DomainError as err:
        session.rollback()
        return refuse(_message(err, lang), err.status)
    if outcome.status >= 400:
        return refuse(_problem_message(outcome.body, lang), outcome.status)
    return done(outcome.body)


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


def _member_or_none(session: Session, org_id: int, member_no: str | None) -> Member | None:
    if not member_no:
        return None
    try:
        return members.by_member_no(session, org_id, member_no)
    except MemberNotFound:
        return None


def member_card(session: Session, org_id: int, member_no: str | None) -> MemberCard | None:
    member = _member_or_none(session, org_id, member_no)
    if member is None:
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


def till_page(
    request: Request,
    till: Till,
    template: str,
    section: str,
    here: str,
    ctx: dict[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    """A POS page or slip: the till, the clerk, the tab and the address, then what this page shows."""
    page = {"till": till, "user": till.user, "section": section, "here": here, **ctx}
    return render(request, template, page, status_code=status)


def _settled(request: Request, till: Till, response: HTMLResponse, url: str) -> HTMLResponse:
    """An htmx answer puts its own address in the bar; a store chosen in the query is remembered."""
    if request.headers.get("hx-request"):
        response.headers["HX-Replace-Url"] = url
    if till.chosen and till.store is not None:
        response.set_cookie(STORE_COOKIE, till.store.code, path=COOKIE_PATH, samesite="lax")
    return response


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
        card = member_card(session, till.org.id, basket.member_no)
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


# --- coupons for this basket ------------------------------------------------------------------------

i18n.register(
    {
        "pos.coupons": ("优惠券", "Coupons"),
        "pos.coupon_scan": ("券码", "Coupon code"),
        "pos.coupon_scan_placeholder": ("扫码或输入券码", "Scan or type a coupon code"),
        "pos.coupon_apply": ("使用", "Apply"),
        "pos.coupon_best": ("推荐组合", "Best combination"),
        "pos.coupon_none": ("不用券", "No coupons"),
        "pos.coupon_best_badge": ("推荐", "Best"),
        "pos.coupon_is_best": ("已选推荐组合，共减", "Best combination selected, saving"),
        "pos.coupon_not_best": ("推荐组合可减", "The best combination would save"),
        "pos.coupon_alone": ("单用可减", "Alone saves"),
        "pos.coupon_until": ("有效期至", "Valid until"),
        "pos.coupon_unusable": ("暂不可用", "Not usable for this basket"),
        "pos.coupon_needs_lines": ("添加商品后显示可用优惠券", "Add items to see the usable coupons"),
        "pos.coupon_empty": ("该会员没有可用的优惠券", "The member has no coupons to use"),
        "pos.coupon_toggle": ("选择或取消", "Select or unselect"),
        "pos.tier_discount": ("会员折扣", "Member discount"),
        "pos.coupon_discount": ("优惠券抵扣", "Coupon discount"),
        "pos.price_difference": ("含补差价", "Incl. price difference paid"),
        "pos.price_difference_short": ("补差价", "Price difference"),
        "pos.to_earn": ("本单可得积分", "Points to earn"),
        "pos.keys_coupon": ("Alt+Q 券码", "Alt+Q coupon"),
        "pos.coupon.rule.amount_off": ("满 {threshold} 减 {amount}", "{amount} off {threshold}+"),
        "pos.coupon.rule.amount_off_flat": ("立减 {amount}", "{amount} off"),
        "pos.coupon.rule.percent_off": ("{zhe} 折", "{pct}% off"),
        "pos.coupon.rule.cap": ("，最多减 {cap}", ", up to {cap}"),
        "pos.coupon.rule.threshold": ("满 {threshold} 可用 · ", "On {threshold}+ · "),
        "pos.coupon.rule.fixed_price": ("特价 {price}", "Special price {price}"),
        "pos.coupon.rule.free_item": ("免费商品券", "Free item"),
        "pos.coupon.rule.exchange": ("兑换券", "Exchange voucher"),
        "pos.coupon.rule.service": ("服务券", "Service voucher"),
        "pos.coupon.rule.cover": (
            "，抵 {cover}，超出部分补差价",
            ", covers {cover}; the member pays any difference",
        ),
        "pos.coupon.rule.only": ("（限 {items}）", " ({items} only)"),
        "pos.coupon.why.threshold_not_met": (
            "未达到使用门槛：满 {threshold}，还差 {short}",
            "Below its threshold: {threshold} needed, {short} short",
        ),
        "pos.coupon.why.not_usable_here": ("不能在本门店使用", "Not accepted at this store"),
        "pos.coupon.why.not_applicable": ("购物篮中没有适用的商品", "Nothing in the basket qualifies"),
        "pos.coupon.why.expired": ("已过期", "Expired"),
        "pos.coupon.why.not_yet_valid": ("{date} 起可用", "Valid from {date}"),
        "pos.coupon.why.not_stackable": (
            "不能与会员折扣同时使用",
            "Does not combine with the member discount",
        ),
        "pos.coupon.why.budget_exhausted": ("活动预算已用完", "Its budget is used up"),
        "pos.coupon.why.already_used": ("已使用或已作废", "Already used or voided"),
        "pos.coupon.why.other": ("暂不可用", "Cannot be used now"),
        "pos.coupon_code_note": ("券码 {code}", "coupon {code}"),
        "pos.err.coupon_member": ("请先识别会员再使用优惠券", "Identify the member before using coupons"),
        "pos.err.coupon_lines": ("请先添加商品再选择优惠券", "Add items before choosing coupons"),
        "pos.err.coupon_code": ("请输入或扫描券码", "Type or scan a coupon code"),
        "pos.err.coupon_unusable": (
            "优惠券 {code} 暂不可用：{reason}",
            "Coupon {code} cannot be used: {reason}",
        ),
        "pos.err.due_changed": (
            "应付金额已变化，请核对后重新结账",
            "The amount due has changed; check it and check out again",
        ),
    }
)

COUPON_WHY = {
    "coupons.threshold_not_met",
    "coupons.not_usable_here",
    "coupons.not_applicable",
    "coupons.expired",
    "coupons.not_yet_valid",
    "coupons.not_stackable",
    "coupons.budget_exhausted",
    "coupons.already_used",
}


def coupon_rule(template: CouponTemplate, cover_fen: int | None, lang: str) -> str:
    """What a coupon does in a few words: 满 ¥300.00 减 ¥50.00, 9 折，最多减 ¥20.00, 特价 ¥9.90..."""

    def tr(key: str, **values: str) -> str:
        return i18n.translate(f"pos.coupon.rule.{key}", lang).format(**values)

    kind = template.kind
    threshold = fen(template.threshold_fen)
    if kind == coupon_calc.Kind.AMOUNT_OFF:
        amount = fen(template.amount_fen)
        if template.threshold_fen:
            text = tr("amount_off", threshold=threshold, amount=amount)
        else:
            text = tr("amount_off_flat", amount=amount)
    elif kind == coupon_calc.Kind.PERCENT_OFF:
        paid = 100 - template.percent_off  # 20 % off is 8 折; 15 % off is 8.5 折
        zhe = f"{paid // 10}.{paid % 10}" if paid % 10 else str(paid // 10)
        text = tr("percent_off", zhe=zhe, pct=str(template.percent_off))
        if template.cap_fen is not None:
            text += tr("cap", cap=fen(template.cap_fen))
        if template.threshold_fen:
            text = tr("threshold", threshold=threshold) + text
    elif kind == coupon_calc.Kind.FIXED_PRICE:
        text = tr("fixed_price", price=fen(template.price_fen))
    else:
        text = tr(kind) if kind in coupon_calc.ITEM_VOUCHERS else template.kind
        if template.pay_difference and cover_fen is not None:
            text += tr("cover", cover=fen(cover_fen))
        if template.threshold_fen:
            text = tr("threshold", threshold=threshold) + text
    items = [*(template.categories or []), *(template.skus or [])]
    if items:
        text += tr(
            "only", items=("、" if lang != "en" else ", ").join(items[:4]) + ("…" if len(items) > 4 else "")
        )
    return text


def unusable_reason(u: UnusableCoupon, lines: list[coupon_service.Line], tz: str, lang: str) -> str:
    """Why a coupon cannot be used for this basket, in the clerk's language."""
    key = u.reason.removeprefix("coupons.") if u.reason in COUPON_WHY else "other"
    text = i18n.translate(f"pos.coupon.why.{key}", lang)
    if u.reason == "coupons.threshold_not_met":
        rule = candidate(u.coupon, u.template)
        counted = (
            lines if u.template.kind in coupon_calc.UNIT_KINDS else [x for x in lines if rule.qualifies(x)]
        )
        short = max(0, u.template.threshold_fen - sum(x.amount_fen for x in counted))
        return text.format(threshold=fen(u.template.threshold_fen), short=fen(short))
    if u.reason == "coupons.not_yet_valid":
        return text.format(date=local_time(u.coupon.valid_from, tz))
    return text


@dataclass
class CouponRow:
    code: str
    name: str
    rule: str
    valid_to: datetime | None
    discount_fen: int = 0  # what it takes off this basket alone
    price_difference_fen: int = 0
    selected: bool = False
    best: bool = False
    reason: str = ""


@dataclass
class CouponPanel:
    usable: list[CouponRow]
    unusable: list[CouponRow]
    selected: list[str]
    best: list[str]
    best_discount_fen: int

    @property
    def is_best(self) -> bool:
        return sorted(self.selected) == sorted(self.best)


def coupon_lines(
    session: Session, till: Till, member: Member, basket: Basket
) -> tuple[list[coupon_service.Line], bool]:
    """The basket as the coupon maths sees it: each line after the member price (checkout's rule)."""
    level = tiers.current_level(session, till.program, member)
    pct = level.discount_pct if level is not None else 0
    lines = [
        coupon_service.Line(i, x.sku, x.category, x.quantity, x.amount_fen - x.amount_fen * pct // 100)
        for i, x in enumerate(basket.lines, start=1)
    ]
    return lines, pct > 0


def coupon_panel(session: Session, till: Till, member: Member, basket: Basket, lang: str) -> CouponPanel:
    """The member's coupons for this basket at this store (``best_for_basket``, as the JSON API's
    ``/coupons/usable``): the usable ones with what each saves, the others with the reason, the best
    combination, and what is selected (the clerk's choice, or the best combination)."""
    store = till.require_store()
    lines, tier_applied = coupon_lines(session, till, member, basket)
    suggestion = coupon_service.best_for_basket(
        session, member, store, lines, tier_discount_applied=tier_applied
    )
    usable_codes = [u.coupon.code for u in suggestion.usability.usable]
    if basket.coupons is None:
        selected = list(suggestion.codes)
    else:
        selected = [c for c in basket.coupons if c in usable_codes]

    def row(coupon: Coupon, template: CouponTemplate) -> CouponRow:
        rule = coupon_rule(template, coupon.cover_fen, lang)
        return CouponRow(code=coupon.code, name=template.name, rule=rule, valid_to=coupon.valid_to)

    usable = [
        replace(
            row(u.coupon, u.template),
            discount_fen=u.discount_fen,
            price_difference_fen=u.price_difference_fen,
            selected=u.coupon.code in selected,
            best=u.coupon.code in suggestion.codes,
        )
        for u in suggestion.usability.usable
    ]
    unusable = [
        replace(row(u.coupon, u.template), reason=unusable_reason(u, lines, till.org.timezone, lang))
        for u in suggestion.usability.unusable
    ]
    return CouponPanel(
        usable=usable,
        unusable=unusable,
        selected=selected,
        best=list(suggestion.codes),
        best_discount_fen=suggestion.best.discount_fen,
    )


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
                    lines, tier_applied = coupon_lines(session, till, member, basket)
                    coupon_service.apply_coupons(
                        session, member, store, lines, [code], tier_discount_applied=tier_applied, lock=False
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


# --- service packages at the till -------------------------------------------------------------------

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


@dataclass
class PackageRow:
    id: int
    name: str
    service_code: str
    uses_left: int
    uses_total: int
    expires_at: datetime | None
    expired: bool
    offered_here: bool
    sold_store: str | None

    @property
    def usable(self) -> bool:
        return self.offered_here and not self.expired and self.uses_left > 0


@dataclass
class PackageOffer:
    code: str
    name: str
    service_code: str
    uses: int
    price_fen: int
    validity_days: int | None
    refund_rule: str


def _store_names(session: Session, org_id: int) -> dict[int, str]:
    return {s.id: s.name for s in session.scalars(select(Store).where(Store.org_id == org_id))}


def package_row(
    session: Session, package: MemberPackage, template: ServicePackage, store: Store, names: dict[int, str]
) -> PackageRow:
    return PackageRow(
        id=package.id,
        name=template.name,
        service_code=template.service_code,
        uses_left=package.uses_left,
        uses_total=package.uses_total,
        expires_at=package.expires_at,
        expired=package.expires_at is not None and utcnow() >= package.expires_at,
        offered_here=packages.offers_service(session, template, store),
        sold_store=names.get(package.sold_store_id) if package.sold_store_id else None,
    )


def package_rows(session: Session, member: Member, store: Store) -> list[PackageRow]:
    """The member's open packages (``packages.packages_of``), and whether this store performs each."""
    names = _store_names(session, member.org_id)
    rows = []
    for package in packages.packages_of(session, member):
        template = session.get(ServicePackage, package.package_id)
        assert template is not None
        rows.append(package_row(session, package, template, store, names))
    return rows


def _offer(template: ServicePackage) -> PackageOffer:
    return PackageOffer(
        code=template.code,
        name=template.name,
        service_code=template.service_code,
        uses=template.uses,
        price_fen=template.price_fen,
        validity_days=template.validity_days,
        refund_rule=template.refund_rule,
    )


def package_offers(session: Session, org_id: int, store: Store) -> list[PackageOffer]:
    """The packages on sale whose service this store performs (what a clerk here can sell)."""
    return [_offer(t) for t in packages.templates(session, org_id, store=store)]


def _served_member(
    session: Session, till: Till, basket: Basket, key: str = "pos.err.package_member"
) -> Member:
    """The member being served; without one, ``key`` says to identify them first."""
    if not basket.member_no:
        raise PosInvalid(key, "pos.member_required")
    return members.by_member_no(session, till.org.id, basket.member_no)


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
    return store, member, package_row(session, package, template, store, _store_names(session, till.org.id))


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
            "member": member_card(session, till.org.id, member.member_no),
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


def _actor_name(actor: str) -> str:
    """The name in an audit actor ("staff:wang"), or the actor itself."""
    return actor.partition(":")[2] or actor


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
    names = _store_names(session, user.org_id)
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
    names = _store_names(session, user.org_id)
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


# --- coupons on receipts ----------------------------------------------------------------------------

i18n.register(
    {
        "pos.coupon_on_receipt": ("优惠券", "Coupon"),
        "pos.coupon_taken_back": ("收回优惠券分摊（不退款）", "Coupon share taken back (not refunded)"),
        "pos.coupon_action.restored": ("优惠券已退回会员账户", "Coupon given back to the member"),
        "pos.coupon_action.voided": ("优惠券已按规则作废", "Coupon voided, as its rules say"),
        "pos.coupon_action.kept": ("部分退货，优惠券仍为已使用", "Partial return: the coupon stays used"),
        "pos.coupon_status.redeemed": ("已使用", "Used"),
        "pos.coupon_status.restored": ("已退回", "Given back"),
        "pos.coupon_status.voided": ("已作废", "Voided"),
        "pos.order_coupons": ("本单优惠券", "Coupons on this order"),
    }
)


@dataclass
class UsedCoupon:
    code: str
    name: str
    discount_fen: int
    price_difference_fen: int
    status: str  # redeemed | restored | voided


def _redemptions(session: Session, order_id: int) -> list[tuple[CouponRedemption, str, str]]:
    rows = session.execute(
        select(CouponRedemption, Coupon.code, CouponTemplate.name)
        .join(Coupon, Coupon.id == CouponRedemption.coupon_id)
        .join(CouponTemplate, CouponTemplate.id == CouponRedemption.template_id)
        .where(CouponRedemption.order_id == order_id)
        .order_by(CouponRedemption.coupon_id)
    ).all()
    return [(r, str(code), str(name)) for r, code, name in rows]


def order_coupons(session: Session, order_id: int) -> list[UsedCoupon]:
    """The coupons an order used, with what each took off and where each stands now."""
    return [
        UsedCoupon(code, name, r.discount_fen, r.price_difference_fen, r.status)
        for r, code, name in _redemptions(session, order_id)
    ]


@dataclass
class ReturnedCoupon:
    code: str
    name: str
    taken_back_fen: int
    action: str  # kept | restored | voided


def return_coupons(session: Session, order_id: int, return_id: int) -> list[ReturnedCoupon]:
    """Each coupon's share on the units of one return, and what that return did to the coupon.

    The share is worked out as ``coupons.on_return`` did when the return was made: each redemption
    line's discount scaled by cumulative quantity over the order's returns in order, so the shares of
    all returns add up to the coupon's discount. The return that took back a coupon's last unit is the
    one that restored or voided it.
    """
    line_nos = {
        x.id: x.line_no for x in session.scalars(select(OrderLine).where(OrderLine.order_id == order_id))
    }
    before: dict[int, int] = {}
    this: dict[int, int] = {}
    for rl in session.scalars(
        select(ReturnLine)
        .join(OrderReturn, OrderReturn.id == ReturnLine.return_id)
        .where(OrderReturn.order_id == order_id, OrderReturn.id <= return_id)
    ):
        into = this if rl.return_id == return_id else before
        no = line_nos[rl.order_line_id]
        into[no] = into.get(no, 0) + rl.quantity
    out = []
    for redemption, code, name in _redemptions(session, order_id):
        rows = list(
            session.scalars(
                select(CouponRedemptionLine).where(CouponRedemptionLine.redemption_id == redemption.id)
            )
        )
        touched = [x for x in rows if this.get(x.line_no, 0)]
        if not touched:
            continue
        share = sum(
            calc.proportional_part(x.discount_fen, before.get(x.line_no, 0), this[x.line_no], x.quantity)
            for x in touched
        )
        done_before = all(before.get(x.line_no, 0) >= x.quantity for x in rows)
        done_after = all(before.get(x.line_no, 0) + this.get(x.line_no, 0) >= x.quantity for x in rows)
        action = redemption.status if done_after and not done_before else "kept"
        out.append(ReturnedCoupon(code, name, share, action if action in ("restored", "voided") else "kept"))
    return out


# --- receipts ---------------------------------------------------------------------------------------


def _points_after(
    session: Session, order_id: int, return_id: int | None, member: MemberCard | None
) -> tuple[int, int] | None:
    """Balance and debt right after an order's (or one of its returns') last ledger entry; with no
    entry, the member's balance and debt now."""
    query = select(PointEntry.balance_after, PointEntry.debt_after).where(PointEntry.order_id == order_id)
    query = query.where(
        PointEntry.return_id.is_(None) if return_id is None else PointEntry.return_id == return_id
    )
    row = session.execute(query.order_by(PointEntry.id.desc()).limit(1)).first()
    if row:
        return (int(row[0]), int(row[1]))
    return (member.balance, member.debt) if member is not None else None


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
    after = _points_after(session, order.id, None, member)
    used = order_coupons(session, order.id)
    return till_page(
        request,
        till,
        "pos/receipt.html",
        "sale",
        f"/pos/receipt/{order_no}",
        {
            "order": out,
            "member": member,
            "after": after,
            "coupons": used,
            "tier_discount": order.discount_fen - sum(c.discount_fen for c in used),
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
    after = _points_after(session, order.id, ret.id, member)
    stores = {s.code: s.name for s in session.scalars(select(Store).where(Store.org_id == user.org_id))}
    return till_page(
        request,
        till,
        "pos/return_receipt.html",
        "returns",
        f"/pos/returns/{return_no}",
        {
            "order": out,
            "ret": detail,
            "reason": ret.reason,
            "member": member,
            "after": after,
            "names": {line.line_no: line.name for line in out.lines},
            "store_names": stores,
            "coupons": return_coupons(session, order.id, ret.id),
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
    here = f"/pos/orders?no={order_no}" if order_no else "/pos/orders"
    response = till_page(
        request,
        till,
        "pos/orders.html",
        "returns",
        here,
        {
            "no": order_no,
            "order": order,
            "member": member,
            "returnable": any(x.quantity > x.returned_quantity for x in order.lines) if order else False,
            "coupons": order_coupons(session, found.id) if order else [],
            "idem": new_idempotency_key(),
            "error": error,
            "form": form or {},
        },
        status=status,
    )
    return _settled(request, till, response, here)


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

    def attempt() -> idempotency.Outcome:
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
        return idempotency.run(
            session,
            user,
            idem,
            "pos.return",
            {"order_no": order_no, **body.model_dump(mode="json")},
            lambda: returns_service.return_lines(session, user, order_no, body),
            status=201,
            lang=lang,
        )

    def checked() -> idempotency.Outcome:
        try:
            return attempt()
        except ValidationError as exc:  # a return the API's schema refuses
            raise PosInvalid("pos.err.return_qty", "pos.bad_return_qty") from exc

    def refuse(text: str, status: int) -> Response:
        error = PageError("return", text)
        return orders_page(request, session, till, order_no, error=error, form=form, status=status)

    return _write_once(
        session, lang, checked, refuse, lambda done: _see_other(f"/pos/returns/{done['return_no']}")
    )


# --- the points mall at the till --------------------------------------------------------------------

i18n.register(
    {
        "pos.rewards": ("积分兑换", "Rewards"),
        "pos.rewards_title": ("积分兑换 · 本店可兑礼品", "Rewards offered at this store"),
        "pos.rewards_open": ("积分兑换", "Rewards"),
        "pos.rewards_count": ("本店 {n} 件礼品，可兑 {ok} 件", "{n} rewards here, {ok} redeemable"),
        "pos.rewards_none": ("本店暂无可兑换的礼品", "No rewards are offered at this store now"),
        "pos.rewards_need_member": ("识别会员后可兑换礼品", "Identify a member to redeem rewards"),
        "pos.reward_kind.gift": ("礼品", "Gift"),
        "pos.reward_kind.coupon": ("优惠券", "Coupon"),
        "pos.reward_kind.service": ("服务", "Service"),
        "pos.reward_kind.points_cash": ("积分+现金", "Points + cash"),
        "pos.reward_points": ("所需积分", "Points"),
        "pos.reward_cash": ("另付现金", "Plus cash"),
        "pos.reward_stock": ("本店库存", "In stock here"),
        "pos.reward_stock_central": ("总部库存", "Central stock"),
        "pos.reward_unlimited": ("不限", "Unlimited"),
        "pos.reward_limit": ("每人限兑", "Limit per member"),
        "pos.reward_limit_used": ("已兑 {used}/{limit}", "{used} of {limit} redeemed"),
        "pos.reward_redeem": ("兑换", "Redeem"),
        "pos.reward_ok": ("可兑换", "Can redeem"),
        "pos.reward_why.points": ("积分不足，还差 {short}", "Not enough points: {short} short"),
        "pos.reward_why.limit": ("已达每人限兑 {limit} 次", "Limit of {limit} per member reached"),
        "pos.reward_why.stock": ("本店已兑完", "Out of stock here"),
        "pos.reward_confirm_title": ("确认兑换", "Confirm the redemption"),
        "pos.reward_balance_now": ("当前积分", "Points now"),
        "pos.reward_spend": ("扣除积分", "Points to spend"),
        "pos.reward_collect": ("应收现金", "Cash to collect"),
        "pos.reward_cash_taken": ("实收现金（元）", "Cash collected (¥)"),
        "pos.reward_balance_after": ("兑换后积分", "Points after"),
        "pos.reward_coupon_note": (
            "确认后立即向会员发放优惠券。",
            "Confirming issues the coupon to the member at once.",
        ),
        "pos.reward_handover_note": (
            "确认后请将礼品交给会员，并在积分兑换页的待交付列表中标记已交付。",
            "After confirming, hand the gift over and mark it in the rewards page's pending list.",
        ),
        "pos.reward_confirm": ("确认兑换", "Confirm redemption"),
        "pos.reward_slip": ("积分兑换凭证", "Reward redemption slip"),
        "pos.reward_slip_no": ("兑换单号", "Redemption no."),
        "pos.reward_name": ("礼品", "Reward"),
        "pos.reward_points_spent": ("扣除积分", "Points spent"),
        "pos.reward_cash_paid": ("收取现金", "Cash taken"),
        "pos.reward_balance": ("积分余额", "Points balance"),
        "pos.reward_coupon_code": ("券码", "Coupon code"),
        "pos.reward_status": ("状态", "Status"),
        "pos.reward_status.pending": ("待交付", "To hand over"),
        "pos.reward_status.fulfilled": ("已交付", "Handed over"),
        "pos.reward_status.cancelled": ("已取消（积分已退回）", "Cancelled (points given back)"),
        "pos.reward_back": ("返回积分兑换", "Back to rewards"),
        "pos.reward_pending": ("本店待交付的兑换", "Redemptions to hand over at this store"),
        "pos.reward_pending_none": ("本店没有待交付的兑换", "Nothing waiting to be handed over here"),
        "pos.reward_fulfil": ("已交付", "Handed over"),
        "pos.reward_cancel": ("取消兑换", "Cancel"),
        "pos.reward_cancel_reason": ("取消原因", "Reason"),
        "pos.reward_cancel_placeholder": ("例如：会员不要了", "e.g. the member changed their mind"),
        "pos.reward_done.fulfilled": ("已标记交付：{name}", "Marked handed over: {name}"),
        "pos.reward_done.cancelled": ("已取消兑换并退回积分：{name}", "Cancelled, points given back: {name}"),
        "pos.err.reward_reason": (
            "请填写取消原因（不超过 200 字）",
            "Give a reason for cancelling (200 characters at most)",
        ),
        "pos.err.reward_member": ("请先识别会员", "Identify the member first"),
    }
)

PENDING_SHOWN = 50


@dataclass
class RewardRow:
    code: str
    name: str
    kind: str
    points_cost: int
    cash_fen: int
    stock_mode: str
    quantity: int | None  # units on hand here (or centrally); None when unlimited
    limit: int | None
    used: int
    why: list[str]  # why the member cannot redeem it now (empty: redeemable)

    @property
    def redeemable(self) -> bool:
        return not self.why


@dataclass
class PendingRow:
    id: int
    reward_name: str
    reward_code: str
    member_no: str
    member_name: str
    points: int
    cash_fen: int
    created_at: datetime


def reward_rows(session: Session, store: Store, member: Member, balance: int, lang: str) -> list[RewardRow]:
    """The active rewards: those offered here (``mall.offers_at_store``, as ``GET /rewards`` lists them)
    with whether this member can redeem each and why not; the rest are out of stock here."""
    offers = mall.offers_at_store(session, store.org_id, store.id)
    offered = {o.reward.id for o in offers}
    gone = [
        mall.Offer(r, 0)
        for r in session.scalars(
            select(Reward)
            .where(Reward.org_id == store.org_id, Reward.active.is_(True))
            .order_by(Reward.points_cost, Reward.id)
        )
        if r.id not in offered
    ]
    used = mall.redemptions_counted(session, member.id)
    rows = []
    for offer in [*offers, *gone]:
        reward = offer.reward
        count = used.get(reward.id, 0)
        why = []
        if offer.quantity == 0:
            why.append(i18n.translate("pos.reward_why.stock", lang))
        if reward.per_member_limit is not None and count >= reward.per_member_limit:
            why.append(i18n.translate("pos.reward_why.limit", lang).format(limit=reward.per_member_limit))
        if balance < reward.points_cost:
            why.append(
                i18n.translate("pos.reward_why.points", lang).format(short=reward.points_cost - balance)
            )
        rows.append(
            RewardRow(
                code=reward.code,
                name=reward.name,
                kind=reward.kind,
                points_cost=reward.points_cost,
                cash_fen=reward.cash_fen,
                stock_mode=reward.stock_mode,
                quantity=offer.quantity,
                limit=reward.per_member_limit,
                used=count,
                why=why,
            )
        )
    return rows


def pending_rows(session: Session, store: Store) -> list[PendingRow]:
    """This store's redemptions still waiting for the gift (or service) to be handed over, newest first."""
    rows = session.execute(
        select(RewardRedemption, Reward, Member)
        .join(Reward, Reward.id == RewardRedemption.reward_id)
        .join(Member, Member.id == RewardRedemption.member_id)
        .where(
            RewardRedemption.org_id == store.org_id,
            RewardRedemption.store_id == store.id,
            RewardRedemption.status == mall.RedemptionStatus.PENDING,
        )
        .order_by(RewardRedemption.id.desc())
        .limit(PENDING_SHOWN)
    ).all()
    return [
        PendingRow(
            id=r.id,
            reward_name=w.name,
            reward_code=w.code,
            member_no=m.member_no,
            member_name=mask_name(m.name),
            points=r.points,
            cash_fen=r.cash_fen,
            created_at=r.created_at,
        )
        for r, w, m in rows
    ]


def rewards_page(
    request: Request,
    session: Session,
    till: Till,
    basket: Basket,
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    store = till.require_store()
    member = _member_or_none(session, till.org.id, basket.member_no)
    card = member_card(session, till.org.id, basket.member_no)
    rows = reward_rows(session, store, member, card.balance, lang) if member and card else []
    return till_page(
        request,
        till,
        "pos/rewards.html",
        "rewards",
        "/pos/rewards",
        {
            "member": card,
            "rows": rows,
            "pending": pending_rows(session, store),
            "idem": new_idempotency_key(),
            "error": error,
            "notice": notice,
        },
        status=status,
    )


def _rewards_refusal(
    request: Request, session: Session, till: Till, basket: Basket, text: str, status: int
) -> HTMLResponse:
    """Back to the rewards page with why; HQ and regional staff without a store go to choose one."""
    if till.store is None:
        return sale_page(request, session, till, basket, error=PageError("identify", text))
    return rewards_page(request, session, till, basket, error=text, status=status)


def _reward_for_member(
    session: Session, till: Till, basket: Basket, code: str
) -> tuple[Store, Member, Reward]:
    """This store, the member being served and the reward with this code."""
    store = till.require_store()
    member = _served_member(session, till, basket, "pos.err.reward_member")
    return store, member, mall.reward_by_code(session, till.org.id, code)


@router.get("/pos/rewards")
def pos_rewards(
    request: Request, session: SessionDep, user: PosUser, done: int | None = None
) -> HTMLResponse:
    """The rewards offered at this store for the member being served, and this store's pending handovers."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    if till.store is None:
        return sale_page(request, session, till, basket)  # HQ and regional staff choose a store first
    notice = ""
    if done is not None:
        found = session.execute(
            select(RewardRedemption.status, Reward.name)
            .join(Reward, Reward.id == RewardRedemption.reward_id)
            .where(RewardRedemption.id == done, RewardRedemption.org_id == user.org_id)
        ).first()
        if found is not None and found[0] != mall.RedemptionStatus.PENDING:
            notice = i18n.translate(f"pos.reward_done.{found[0]}", request.state.lang).format(name=found[1])
    return rewards_page(request, session, till, basket, notice=notice)


def reward_confirm_page(
    request: Request,
    session: Session,
    till: Till,
    member: Member,
    reward: Reward,
    *,
    error: str = "",
    cash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The confirm step: points to spend, cash to collect, the balance after (a new key each time)."""
    card = member_card(session, till.org.id, member.member_no)
    assert card is not None
    return till_page(
        request,
        till,
        "pos/reward_confirm.html",
        "rewards",
        str(request.url.path),
        {
            "member": card,
            "reward": reward,
            "after": card.balance - reward.points_cost,
            "idem": new_idempotency_key(),
            "cash": fen_to_yuan(reward.cash_fen) if cash is None else cash,
            "error": error,
        },
        status=status,
    )


@router.get("/pos/rewards/{reward_code}/redeem")
def pos_reward_confirm(
    reward_code: str, request: Request, session: SessionDep, user: PosUser
) -> HTMLResponse:
    """Confirm redeeming one reward for the member being served."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    lang = request.state.lang
    try:
        _, member, reward = _reward_for_member(session, till, basket, reward_code)
        if not reward.active:
            raise mall.RewardInactive()
    except DomainError as err:
        return _rewards_refusal(request, session, till, basket, _message(err, lang), err.status)
    return reward_confirm_page(request, session, till, member, reward)


@router.post("/pos/rewards/{reward_code}/redeem", dependencies=[Csrf])
def pos_reward_redeem(
    reward_code: str,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    cash: Annotated[str, Form()] = "",
) -> Response:
    """Redeem the reward at this store through ``mall.redeem_reward`` (the service the API calls), once
    per rendered form: a double submit replays the first answer."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        store, member, reward = _reward_for_member(session, till, basket, reward_code)
    except DomainError as err:
        return _rewards_refusal(request, session, till, basket, _message(err, lang), err.status)

    def attempt() -> idempotency.Outcome:
        if not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        cash_fen = yuan_to_fen(cash or "0")
        payload = {
            "reward_code": reward.code,
            "member_no": member.member_no,
            "store": store.code,
            "cash_fen": cash_fen,
        }
        return idempotency.run(
            session,
            user,
            idem,
            "pos.reward_redeem",
            payload,
            lambda: {
                "redemption_id": mall.redeem_reward(
                    session, user, member, reward, store, cash_fen=cash_fen
                ).id
            },
            status=201,
            lang=lang,
        )

    def refuse(text: str, status: int) -> Response:
        return reward_confirm_page(
            request, session, till, member, reward, error=text, cash=cash, status=status
        )

    return _write_once(
        session,
        lang,
        attempt,
        refuse,
        lambda done: _see_other(f"/pos/reward-redemptions/{done['redemption_id']}"),
    )


@router.get("/pos/reward-redemptions/{redemption_id}")
def pos_reward_slip(redemption_id: int, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A small slip of one redemption: reward, points spent, cash taken, balance, the coupon issued."""
    till = open_till(request, session, user)
    redemption = session.scalar(
        select(RewardRedemption).where(
            RewardRedemption.id == redemption_id, RewardRedemption.org_id == user.org_id
        )
    )
    if redemption is None:
        raise mall.RedemptionNotFound()
    reward = session.get(Reward, redemption.reward_id)
    assert reward is not None
    entry = session.get(PointEntry, redemption.entry_id) if redemption.entry_id is not None else None
    member = mall.current_member(session, redemption.member_id)
    coupon = mall.coupon_of(session, redemption)
    store = session.get(Store, redemption.store_id) if redemption.store_id is not None else None
    return till_page(
        request,
        till,
        "pos/reward_slip.html",
        "rewards",
        f"/pos/reward-redemptions/{redemption_id}",
        {
            "redemption": redemption,
            "reward": reward,
            "balance_after": entry.balance_after if entry is not None else None,
            "member": member_card(session, user.org_id, member.member_no),
            "coupon_code": coupon.code if coupon is not None else None,
            "store_name": store.name if store is not None else "",
            "staff": _actor_name(redemption.actor),
        },
    )


def _handle_pending(
    request: Request,
    session: Session,
    user: Principal,
    redemption_id: int,
    idem: str,
    action: str,
    reason: str = "",
) -> Response:
    """Fulfil or cancel one of this store's pending redemptions through the mall service, once per form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)

    def attempt() -> idempotency.Outcome:
        till.require_store()
        if not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        if action == "cancel" and not 0 < len(reason) <= 200:
            raise PosInvalid("pos.err.reward_reason", "pos.bad_reason")

        def work() -> dict[str, Any]:
            if action == "fulfil":
                done = mall.fulfil_redemption(session, user, redemption_id)
            else:
                done = mall.cancel_redemption(session, user, redemption_id, reason)
            return {"id": done.id, "status": done.status}

        payload: dict[str, Any] = {"id": redemption_id}
        if action == "cancel":
            payload["reason"] = reason
        return idempotency.run(session, user, idem, f"pos.reward_{action}", payload, work, lang=lang)

    def refuse(text: str, status: int) -> Response:
        return _rewards_refusal(request, session, till, basket, text, status)

    return _write_once(
        session, lang, attempt, refuse, lambda done: _see_other(f"/pos/rewards?done={done['id']}")
    )


@router.post("/pos/reward-redemptions/{redemption_id}/fulfil", dependencies=[Csrf])
def pos_reward_fulfil(
    redemption_id: int,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
) -> Response:
    """Mark a pending redemption of this store handed over (``mall.fulfil_redemption``)."""
    return _handle_pending(request, session, user, redemption_id, idem, "fulfil")


@router.post("/pos/reward-redemptions/{redemption_id}/cancel", dependencies=[Csrf])
def pos_reward_cancel(
    redemption_id: int,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Cancel a pending redemption of this store with a reason: points and stock go back."""
    return _handle_pending(request, session, user, redemption_id, idem, "cancel", reason.strip())
