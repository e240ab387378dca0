"""What every POS page shares: the till's own texts, money and quantities typed at the till, the basket
(a signed token in a cookie and in the checkout form), the till (clerk, store, points program), the
member card, and the helpers that render a page, redirect and run a write once per form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common import idempotency
from onemember.db import utcnow
from onemember.errors import DomainError, Invalid
from onemember.members import service as members
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.orders.models import Order, OrderLine
from onemember.org import service as org_service
from onemember.org.models import Org, Store
from onemember.points import calculations as calc
from onemember.points import service as points
from onemember.points.models import PointAccount, PointLot, PointsProgram
from onemember.settings import get_settings
from onemember.web import i18n
from onemember.web.templating import render

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
    """The card of the member with this number (a merged one's survivor); None when there is none."""
    member = _member_or_none(session, org_id, member_no)
    return card_of(session, member) if member is not None else None


def card_of(session: Session, member: Member) -> MemberCard:
    """The card of a member already resolved (``by_member_no``), without reading the member again."""
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


# --- the member being served, and who acted (the package and reward pages) --------------------------


def _served_member(
    session: Session, till: Till, basket: Basket, key: str = "pos.err.package_member"
) -> Member:
    """The member being served; without one, ``key`` says to identify them first."""
    if not basket.member_no:
        raise PosInvalid(key, "pos.member_required")
    return members.by_member_no(session, till.org.id, basket.member_no)


def _actor_name(actor: str) -> str:
    """The name in an audit actor ("staff:wang"), or the actor itself."""
    return actor.partition(":")[2] or actor
