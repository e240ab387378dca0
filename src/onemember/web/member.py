"""The member page (/m, mobile first): log in with phone and a one-time code, the member code as a QR
that refreshes itself, points and what expires when, the ledger, orders from every store, profile and
marketing consents, the PIPL requests to export or erase one's data, and the member's coupons (each
with its code as a QR, given to another member by phone number), service packages with their uses, and
the points mall (coupon rewards redeemed online through ``points.mall.redeem_online``; gifts, services
and points + cash at a store's till) with the member's redemptions.

Every read is an indexed lookup by the member's id (ledger, lots, orders, coupons, packages) with a
LIMIT; the domain services (``members.privacy``, ``coupons``, ``packages``) do every write and every
check, the same calls the JSON API makes.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.common import idempotency
from onemember.common.types import EntryKind, Gender, IdentityKind
from onemember.coupons import service as coupons
from onemember.coupons.calculations import ITEM_VOUCHERS, Kind
from onemember.coupons.errors import AlreadyUsed, CouponNotFound, Expired, NotGiftable
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service import issuance as coupon_issuance
from onemember.coupons.service.issuance import is_expired
from onemember.coupons.service.templates import AcceptScope
from onemember.db import utcnow
from onemember.deps import SessionDep, client_ip
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members import service as members
from onemember.members.errors import InvalidIdentity, MemberNotFound
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.messaging import service as messaging
from onemember.messaging.channels import Channel, default_sms_channel
from onemember.orders.models import Order
from onemember.orders.views import order_out
from onemember.org.models import Brand, Org, Region, Staff, Store
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.points import mall
from onemember.points.models import PointAccount, PointEntry, PointLot, Reward, RewardStock
from onemember.segments.models import MemberStoreStats
from onemember.settings import get_settings
from onemember.web import charts, i18n
from onemember.web.common import LoginRequired, check_csrf
from onemember.web.export import xlsx_response
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

MEMBER_COOKIE = "om_member"
ORG_COOKIE = "om_member_org"
PAGE_SIZE = 20
EXPORT_LIMIT = 10000
Csrf = [Depends(check_csrf)]

i18n.register(
    {
        "member.title": ("会员中心", "Member centre"),
        "member.nav.home": ("首页", "Home"),
        "member.nav.points": ("积分", "Points"),
        "member.nav.orders": ("订单", "Orders"),
        "member.nav.me": ("我的", "Me"),
        "member.nav.benefits": ("卡券", "Benefits"),
        "member.login.title": ("会员登录", "Member login"),
        "member.login.lead": ("使用手机号和短信验证码登录", "Log in with your phone and a text message code"),
        "member.login.org": ("品牌代码", "Brand code"),
        "member.login.phone": ("手机号", "Mobile number"),
        "member.login.send": ("获取验证码", "Send me a code"),
        "member.login.code": ("验证码", "Code"),
        "member.login.sent": (
            "如果该手机号已注册会员，验证码已发送至 {phone}，5 分钟内有效。",
            "If {phone} belongs to a member, a code is on its way; it works for 5 minutes.",
        ),
        "member.login.submit": ("登录", "Log in"),
        "member.login.resend": ("重新发送", "Send again"),
        "member.login.other_phone": ("换个手机号", "Use another number"),
        "member.login.erased": (
            "您的账户已注销，个人信息已删除。",
            "Your account has been deleted and your personal data erased.",
        ),
        "member.login.logged_out": ("您已退出登录。", "You have logged out."),
        "member.login.org_unknown": ("品牌代码无效", "Unknown brand code"),
        "member.code.title": ("会员码", "Member code"),
        "member.code.hint": (
            "结账时出示此码，每 {n} 秒自动刷新",
            "Show this code at the till; it refreshes itself every {n} s",
        ),
        "member.member_no": ("会员号", "Member no."),
        "member.balance": ("可用积分", "Points"),
        "member.debt": ("待还积分", "Points owed"),
        "member.lifetime_earned": ("累计获得", "Earned in total"),
        "member.expiry.title": ("积分到期", "When points expire"),
        "member.expiry.month": ("到期月份", "Month"),
        "member.expiry.points": ("积分", "Points"),
        "member.expiry.first": ("最早到期日", "First expiry"),
        "member.expiry.never": ("永久有效", "Never expire"),
        "member.expiry.none": ("暂无即将到期的积分", "No points waiting to expire"),
        "member.ledger.title": ("积分明细", "Points history"),
        "member.ledger.time": ("时间", "Time"),
        "member.ledger.kind": ("类型", "Type"),
        "member.ledger.amount": ("变动", "Change"),
        "member.ledger.balance_after": ("余额", "Balance"),
        "member.ledger.store": ("门店", "Store"),
        "member.ledger.order": ("订单号", "Order no."),
        "member.ledger.reason": ("说明", "Note"),
        "member.ledger.all_kinds": ("全部类型", "All types"),
        "member.orders.title": ("我的订单", "My orders"),
        "member.orders.all_stores": ("全部门店", "All stores"),
        "member.orders.order_no": ("订单号", "Order no."),
        "member.orders.store": ("门店", "Store"),
        "member.orders.time": ("时间", "Time"),
        "member.orders.total": ("金额", "Total"),
        "member.orders.paid": ("实付", "Paid"),
        "member.orders.points_earned": ("获得积分", "Points earned"),
        "member.orders.points_redeemed": ("使用积分", "Points used"),
        "member.orders.refunded": ("已退款", "Refunded"),
        "member.orders.lines": ("商品", "Items"),
        "member.orders.qty": ("数量", "Qty"),
        "member.orders.amount": ("小计", "Amount"),
        "member.orders.returns": ("退货", "Returns"),
        "member.sort.newest": ("最新在前", "Newest first"),
        "member.sort.oldest": ("最早在前", "Oldest first"),
        "member.page.of": ("第 {page} / {pages} 页，共 {total} 条", "Page {page} of {pages}, {total} rows"),
        "member.profile.title": ("个人资料", "Profile"),
        "member.profile.name": ("姓名", "Name"),
        "member.profile.birthday": ("生日", "Birthday"),
        "member.profile.gender": ("性别", "Gender"),
        "member.profile.phone": ("手机号", "Mobile number"),
        "member.profile.saved": ("已保存", "Saved"),
        "member.profile.unchanged": ("没有需要保存的修改", "Nothing changed"),
        "member.gender.male": ("男", "Male"),
        "member.gender.female": ("女", "Female"),
        "member.gender.unknown": ("不透露", "Prefer not to say"),
        "member.consents.title": ("营销授权", "Marketing consents"),
        "member.consents.lead": (
            "您可以随时开启或关闭每一项，我们只在您同意的范围内联系您。",
            "Turn each one on or off at any time; we contact you only in the ways you allow.",
        ),
        "member.consents.marketing_sms": ("短信营销", "Offers by text message"),
        "member.consents.marketing_wechat": ("微信营销", "Offers on WeChat"),
        "member.consents.marketing_email": ("邮件营销", "Offers by e-mail"),
        "member.consents.personalised_recommendations": ("个性化推荐", "Personalised recommendations"),
        "member.consents.on": ("已开启", "On"),
        "member.consents.off": ("已关闭", "Off"),
        "member.consents.never": ("尚未设置", "Not set yet"),
        "member.consents.source.member_page": ("会员中心", "member page"),
        "member.consents.source.erasure": ("注销", "account deletion"),
        "member.consents.changed": ("{at} 通过{source}设置", "Set {at} via {source}"),
        "member.privacy.title": ("隐私与数据", "Privacy and data"),
        "member.privacy.export": ("导出我的数据", "Export my data"),
        "member.privacy.export_lead": (
            "下载一份 JSON 文件，包含您的资料、手机号等标识、订单、积分明细和授权记录。",
            "Download a JSON file with your profile, identifiers, orders, points history and consents.",
        ),
        "member.privacy.export_ready": ("您的数据已准备好：", "Your data is ready:"),
        "member.privacy.download": ("下载 JSON", "Download JSON"),
        "member.privacy.delete": ("注销账户并删除个人信息", "Delete my account"),
        "member.privacy.delete_lead": (
            "注销后，您的姓名、生日、手机号等个人信息将被删除，积分将无法再使用；"
            "为满足财务记账要求，订单与积分流水会以匿名方式保留。此操作无法撤销。",
            "Your name, birthday, phone and other personal data will be deleted and your points can no "
            "longer be used; orders and the points ledger are kept anonymously for the accounts. "
            "This cannot be undone.",
        ),
        "member.privacy.delete_confirm_title": ("确认注销账户", "Confirm account deletion"),
        "member.privacy.delete_confirm_check": (
            "我了解注销后无法恢复，积分将作废",
            "I understand this cannot be undone and my points will be lost",
        ),
        "member.privacy.delete_confirm": ("确认注销", "Delete my account"),
        "member.privacy.delete_need_check": ("请先勾选确认", "Tick the box to confirm"),
        "member.privacy.requests": ("我的申请", "My requests"),
        "member.privacy.kind.export": ("数据导出", "Data export"),
        "member.privacy.kind.erasure": ("账户注销", "Account deletion"),
        "member.logout": ("退出登录", "Log out"),
        "member.home.coupons": ("可用优惠券", "Coupons to use"),
        "member.home.package_uses": ("次卡剩余次数", "Package uses left"),
    }
)

KIND_LABELS: dict[str, tuple[str, str]] = {
    EntryKind.EARN: ("消费得积分", "Earned"),
    EntryKind.REDEEM: ("积分抵现", "Redeemed"),
    EntryKind.EARN_REVERSAL: ("退货扣回", "Taken back (return)"),
    EntryKind.REDEEM_REFUND: ("退货返还", "Given back (return)"),
    EntryKind.DEBT_OFFSET: ("抵扣欠分", "Debt repaid"),
    EntryKind.DEBT_CASH_SETTLE: ("退款抵扣欠分", "Debt settled from refund"),
    EntryKind.WRITE_OFF: ("欠分核销", "Debt forgiven"),
    EntryKind.EXPIRE: ("积分过期", "Expired"),
    EntryKind.ADJUST: ("人工调整", "Adjustment"),
    EntryKind.IMPORT_OPENING: ("期初导入", "Opening balance"),
    EntryKind.MERGE_IN: ("合并转入", "Merged in"),
    EntryKind.MERGE_OUT: ("合并转出", "Merged out"),
    EntryKind.TRANSFER_OUT: ("转赠他人", "Transferred out"),
    EntryKind.TRANSFER_IN: ("他人转赠", "Transferred in"),
}


def kind_label(kind: str, lang: str) -> str:
    pair = KIND_LABELS.get(kind)
    if pair is None:
        return kind
    return pair[1] if lang == "en" else pair[0]


def _t(request: Request, key: str, **values: Any) -> str:
    text = i18n.translate(key, request.state.lang)
    return text.format(**values) if values else text


# --- who is logged in ------------------------------------------------------------------------------


def current_member(request: Request, session: SessionDep) -> Member:
    token = request.cookies.get(MEMBER_COOKIE, "")
    if not token:
        raise LoginRequired("/m/login")
    try:
        return privacy.authenticate_member(session, token)
    except privacy.MemberSessionExpired as exc:
        raise LoginRequired("/m/login") from exc


MemberDep = Annotated[Member, Depends(current_member)]


def _org_of(session: Session, member: Member) -> Org:
    org = session.get(Org, member.org_id)
    assert org is not None
    return org


def _sms_channel(request: Request) -> Channel:
    """A real vendor adapter is set on ``app.state.sms_channel``; the logging channel otherwise."""
    channel = getattr(request.app.state, "sms_channel", None)
    return channel if channel is not None else default_sms_channel()


# --- login -----------------------------------------------------------------------------------------


def _login_org(session: Session, request: Request, code: str | None) -> Org | None:
    """The brand a member logs in to: named in the link, remembered, or the only one there is."""
    for candidate in (code, request.cookies.get(ORG_COOKIE)):
        if candidate:
            org = session.scalar(select(Org).where(Org.code == candidate.strip()))
            if org is not None:
                return org
    orgs = list(session.scalars(select(Org).order_by(Org.id).limit(2)))
    return orgs[0] if len(orgs) == 1 else None


def safe_next(target: str | None) -> str:
    """Only a member page may be the target after login."""
    if target and (target == "/m" or target.startswith("/m/")) and "//" not in target:
        return target
    return "/m"


def _login_page(
    request: Request,
    *,
    org: Org | None,
    step: str = "phone",
    phone: str = "",
    error: str | None = None,
    notice: str | None = None,
    next_url: str = "/m",
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "member/login.html",
        {
            "org": org,
            "step": step,
            "phone": phone,
            "error": error,
            "notice": notice,
            "next": safe_next(next_url),
            "org_code": request.query_params.get("org", "") if org is None else org.code,
        },
        status_code=status_code,
    )


def _error_text(request: Request, err: DomainError) -> str:
    return err.en if request.state.lang == "en" else err.zh


@router.get("/m/login")
def member_login_form(
    request: Request, session: SessionDep, org: str | None = None, next: str | None = None
) -> Response:
    """Step one of the login: the phone number."""
    token = request.cookies.get(MEMBER_COOKIE)
    if token:
        try:
            privacy.authenticate_member(session, token)
            return RedirectResponse("/m", status_code=303)
        except privacy.MemberSessionExpired:
            pass
    notice = None
    if request.query_params.get("erased"):
        notice = _t(request, "member.login.erased")
    elif request.query_params.get("bye"):
        notice = _t(request, "member.login.logged_out")
    return _login_page(request, org=_login_org(session, request, org), notice=notice, next_url=next or "/m")


@router.post("/m/login/code", dependencies=Csrf)
def member_login_code(
    request: Request,
    session: SessionDep,
    phone: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/m",
    step: Annotated[str, Form()] = "phone",
) -> Response:
    """Send a login code (the same answer whether or not the phone is a member's)."""
    chosen = _login_org(session, request, org)
    if chosen is None:
        return _login_page(
            request,
            org=None,
            phone=phone,
            error=_t(request, "member.login.org_unknown"),
            next_url=next,
            status_code=422,
        )
    try:
        sent = privacy.request_login_code(session, chosen.id, phone, client_ip(request))
    except (privacy.LoginRateLimited, InvalidIdentity) as err:
        session.rollback()
        # "Send again" that comes too soon keeps the member on the code form, where the last code works.
        resend = step == "code" and isinstance(err, privacy.LoginRateLimited)
        return _login_page(
            request,
            org=chosen,
            step="code" if resend else "phone",
            phone=phone,
            error=_error_text(request, err),
            next_url=next,
            status_code=err.status,
        )
    session.commit()
    response = _login_page(
        request,
        org=chosen,
        step="code",
        phone=phone,
        notice=_t(request, "member.login.sent", phone=sent.phone_masked),
        next_url=next,
    )
    # Sent after the answer, so that how long the answer takes does not tell whether a member was found.
    response.background = BackgroundTask(
        messaging.deliver_pending, request.app.state.sessionmaker, _sms_channel(request)
    )
    return response


@router.post("/m/login/verify", dependencies=Csrf)
def member_login_verify(
    request: Request,
    session: SessionDep,
    phone: Annotated[str, Form()],
    code: Annotated[str, Form()],
    org: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/m",
) -> Response:
    """Check the code and open a member session."""
    chosen = _login_org(session, request, org)
    if chosen is None:
        return _login_page(
            request,
            org=None,
            phone=phone,
            error=_t(request, "member.login.org_unknown"),
            next_url=next,
            status_code=422,
        )
    try:
        login = privacy.verify_login_code(session, chosen.id, phone, code, client_ip(request))
    except (
        privacy.LoginCodeWrong,
        privacy.LoginCodeLocked,
        privacy.LoginCodeExpired,
        InvalidIdentity,
    ) as err:
        if isinstance(err, privacy.LoginCodeWrong | privacy.LoginCodeLocked):
            session.commit()  # the wrong try must count
        else:
            session.rollback()
        return _login_page(
            request,
            org=chosen,
            step="code",
            phone=phone,
            error=_error_text(request, err),
            next_url=next,
            status_code=422,
        )
    session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        MEMBER_COOKIE, login.token, httponly=True, samesite="lax", expires=login.record.expires_at, path="/m"
    )
    response.set_cookie(ORG_COOKIE, chosen.code, max_age=365 * 86400, samesite="lax", path="/m")
    return response


def _logged_out(location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    response.delete_cookie(MEMBER_COOKIE, path="/m")
    return response


@router.post("/m/logout", dependencies=Csrf)
def member_logout(request: Request, session: SessionDep) -> Response:
    """End the member session."""
    token = request.cookies.get(MEMBER_COOKIE)
    if token:
        privacy.logout_member(session, token)
        session.commit()
    return _logged_out("/m/login?bye=1")


# --- home: member code, balance, expiry ------------------------------------------------------------


def refresh_seconds() -> int:
    """Ask for a new code a little before the current one expires."""
    ttl = get_settings().member_code_ttl_seconds
    return max(1, ttl - max(2, ttl // 4))


def _code_context(member: Member) -> dict[str, Any]:
    code, expires = members.issue_member_code(member)
    svg = segno.make(code, error="m").svg_inline(scale=6, dark="#111827", border=2, omitsize=True)
    return {"code": code, "code_expires": expires, "svg": svg, "refresh": refresh_seconds()}


@dataclass
class ExpiryGroup:
    month: str | None  # YYYY-MM in the org's time zone; None for points that never expire
    points: int
    last_day: date | None  # the last day the group's soonest points can be used


def expiry_groups(session: Session, account_id: int, tz: str) -> list[ExpiryGroup]:
    """Open lots grouped by the month they expire, soonest first.

    Points expire at the end of a business day, stored as the next local midnight; a second before it
    is the last day they can be used, which is the day a member wants to see.
    """
    zone = ZoneInfo(tz)
    groups: dict[str | None, ExpiryGroup] = {}
    lots = session.execute(
        select(PointLot.remaining, PointLot.expires_at)
        .where(PointLot.account_id == account_id, PointLot.remaining > 0)
        .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id)
        .limit(5000)
    ).all()
    for remaining, expires_at in lots:
        last_day = (expires_at - timedelta(seconds=1)).astimezone(zone).date() if expires_at else None
        month = last_day.strftime("%Y-%m") if last_day else None
        group = groups.setdefault(month, ExpiryGroup(month, 0, last_day))
        group.points += int(remaining)
    return list(groups.values())


def _account(session: Session, member: Member) -> PointAccount | None:
    return session.scalar(
        select(PointAccount).where(PointAccount.member_id == member.id).order_by(PointAccount.id).limit(1)
    )


@router.get("/m")
def member_home(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The member's home: member code, points and what expires when, coupons and package uses."""
    org = _org_of(session, member)
    account = _account(session, member)
    return render(
        request,
        "member/home.html",
        {
            "member": member,
            "section": "home",
            "org": org,
            "account": account,
            "groups": expiry_groups(session, account.id, org.timezone) if account else [],
            "tier": tier_progress(session, member, org.timezone, request.state.lang),
            "phone_masked": members.masked_phone(session, member.id),
            "counts": _benefit_counts(session, member),
            **_code_context(member),
        },
    )


def tier_progress(session: Session, member: Member, tz: str, lang: str) -> dict[str, object] | None:
    """The member's tier and what is still missing for the next one, in words and as a percentage."""
    from onemember.points.service import default_program
    from onemember.tiers.service import member_tier

    view = member_tier(session, default_program(session, member.org_id), member, tz)
    if view is None:
        return None
    nxt = view.next_level
    if nxt is None:
        text = "您已是最高等级" if lang == "zh" else "You are at the top tier"
        pct = 100
    else:
        if view.basis == "spend_12m":
            yuan = f"¥{view.missing / 100:,.2f}"
            text = (
                f"近 12 个月再消费 {yuan} 即可升级{nxt.name}"
                if lang == "zh"
                else f"{yuan} more spend within 12 months to reach {nxt.name}"
            )
        elif view.basis == "orders_12m":
            text = (
                f"近 12 个月再购物 {view.missing} 次即可升级{nxt.name}"
                if lang == "zh"
                else f"{view.missing} more orders within 12 months to reach {nxt.name}"
            )
        else:
            text = (
                f"再获得 {view.missing:,} 成长值即可升级{nxt.name}"
                if lang == "zh"
                else f"{view.missing:,} more growth points to reach {nxt.name}"
            )
        span = max(nxt.threshold - view.level.threshold, 1)
        pct = max(0, min(100, 100 * (view.basis_value - view.level.threshold) // span))
    grace = None
    if view.grace_until is not None:
        day = view.grace_until.astimezone(ZoneInfo(tz)).date().isoformat()
        grace = f"保级宽限期至 {day}" if lang == "zh" else f"Keep-level grace period until {day}"
    return {
        "name": view.level.name,
        "code": view.level.code,
        "text": text,
        "pct": pct,
        "grace": grace,
        "discount_pct": view.level.discount_pct,
        "multiplier_pct": view.level.points_multiplier_pct,
    }


@router.get("/m/code")
def member_code(request: Request, member: MemberDep) -> HTMLResponse:
    """A fresh member code (htmx swaps it in before the old one expires)."""
    return render(request, "member/_code.html", {"member": member, **_code_context(member)})


# --- lists: ledger and orders ----------------------------------------------------------------------


@dataclass
class Paging:
    page: int
    pages: int
    total: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_SIZE


def _paging(total: int, page: int) -> Paging:
    pages = max(1, -(-total // PAGE_SIZE))
    return Paging(min(max(1, page), pages), pages, total)


def _page_url(path: str, params: dict[str, str], **changes: str | int) -> str:
    merged = {**params, **{k: str(v) for k, v in changes.items()}}
    return f"{path}?{urlencode({k: v for k, v in merged.items() if v})}"


@router.get("/m/ledger", response_model=None)
def member_ledger(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    page: int = 1,
    kind: str = "",
    sort: str = "newest",
    format: str = "",
) -> Response:
    """The points ledger, newest first, paged; filter by type; Excel export of the same rows."""
    lang = request.state.lang
    org = _org_of(session, member)
    account = _account(session, member)
    kind = kind if kind in KIND_LABELS else ""
    sort = "oldest" if sort == "oldest" else "newest"
    conditions = [PointEntry.account_id == (account.id if account else -1)]
    if kind:
        conditions.append(PointEntry.kind == kind)
    total = int(session.scalar(select(func.count()).select_from(PointEntry).where(*conditions)) or 0)
    paging = _paging(total, page)
    order_by = PointEntry.id.asc() if sort == "oldest" else PointEntry.id.desc()
    query = (
        select(PointEntry, Order.order_no)
        .outerjoin(Order, Order.id == PointEntry.order_id)
        .where(*conditions)
        .order_by(order_by)
    )
    stores = _store_names(session, member.org_id)
    if format == "xlsx":
        rows = session.execute(query.limit(EXPORT_LIMIT)).all()
        return xlsx_response(
            f"points-{member.member_no}.xlsx",
            [
                _t(request, f"member.ledger.{key}")
                for key in ("time", "kind", "amount", "balance_after", "store", "order", "reason")
            ],
            [
                (
                    e.created_at.astimezone(ZoneInfo(org.timezone)),
                    kind_label(e.kind, lang),
                    e.amount,
                    e.balance_after,
                    stores.get(e.store_id or 0, ""),
                    no or "",
                    e.reason,
                )
                for e, no in rows
            ],
            sheet="points",
        )
    rows = session.execute(query.limit(PAGE_SIZE).offset(paging.offset)).all()
    params = {"kind": kind, "sort": sort if sort != "newest" else ""}
    return render(
        request,
        "member/ledger.html",
        {
            "member": member,
            "section": "points",
            "org": org,
            "account": account,
            "rows": [(e, no, kind_label(e.kind, lang), stores.get(e.store_id or 0, "")) for e, no in rows],
            "paging": paging,
            "kind": kind,
            "sort": sort,
            "kinds": [(k, kind_label(k, lang)) for k in KIND_LABELS],
            "prev_url": _page_url("/m/ledger", params, page=paging.page - 1),
            "next_url": _page_url("/m/ledger", params, page=paging.page + 1),
            "export_url": _page_url("/m/ledger", params, format="xlsx"),
        },
    )


def _store_names(session: Session, org_id: int, ids: set[int] | None = None) -> dict[int, str]:
    query = select(Store.id, Store.name).where(Store.org_id == org_id)
    if ids is not None:
        query = query.where(Store.id.in_(ids or {-1}))
    return {int(i): str(n) for i, n in session.execute(query).all()}


@router.get("/m/orders", response_model=None)
def member_orders(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    page: int = 1,
    store: str = "",
    sort: str = "newest",
    format: str = "",
) -> Response:
    """The member's orders from every store, paged; filter by store; Excel export of the same rows."""
    org = _org_of(session, member)
    shopped = list(
        session.execute(
            select(Store.code, Store.name, Store.id)
            .join(MemberStoreStats, MemberStoreStats.store_id == Store.id)
            .where(MemberStoreStats.member_id == member.id)
            .order_by(Store.code)
        ).all()
    )
    by_code = {code: sid for code, _, sid in shopped}
    store = store if store in by_code else ""
    sort = "oldest" if sort == "oldest" else "newest"
    conditions = [Order.member_id == member.id]
    if store:
        conditions.append(Order.store_id == by_code[store])
    total = int(session.scalar(select(func.count()).select_from(Order).where(*conditions)) or 0)
    paging = _paging(total, page)
    order_by = (
        (Order.occurred_at.asc(), Order.id.asc())
        if sort == "oldest"
        else (Order.occurred_at.desc(), Order.id.desc())
    )
    query = select(Order).where(*conditions).order_by(*order_by)
    if format == "xlsx":
        orders = list(session.scalars(query.limit(EXPORT_LIMIT)))
        names = _store_names(session, member.org_id, {o.store_id for o in orders})
        return xlsx_response(
            f"orders-{member.member_no}.xlsx",
            [
                _t(request, f"member.orders.{key}")
                for key in (
                    "order_no",
                    "store",
                    "time",
                    "total",
                    "paid",
                    "points_redeemed",
                    "points_earned",
                    "refunded",
                )
            ],
            [
                (
                    o.order_no,
                    names.get(o.store_id, ""),
                    o.occurred_at.astimezone(ZoneInfo(org.timezone)),
                    Decimal(o.total_fen) / 100,
                    Decimal(o.paid_fen) / 100,
                    o.points_redeemed,
                    o.points_earned,
                    Decimal(o.refunded_fen) / 100,
                )
                for o in orders
            ],
            sheet="orders",
        )
    orders = list(session.scalars(query.limit(PAGE_SIZE).offset(paging.offset)))
    names = _store_names(session, member.org_id, {o.store_id for o in orders})
    params = {"store": store, "sort": sort if sort != "newest" else ""}
    return render(
        request,
        "member/orders.html",
        {
            "member": member,
            "section": "orders",
            "org": org,
            "orders": [(o, names.get(o.store_id, "")) for o in orders],
            "paging": paging,
            "stores": [(code, name) for code, name, _ in shopped],
            "store": store,
            "sort": sort,
            "prev_url": _page_url("/m/orders", params, page=paging.page - 1),
            "next_url": _page_url("/m/orders", params, page=paging.page + 1),
            "export_url": _page_url("/m/orders", params, format="xlsx"),
        },
    )


@router.get("/m/orders/{order_no}")
def member_order(request: Request, member: MemberDep, session: SessionDep, order_no: str) -> HTMLResponse:
    """One of the member's orders with its items and returns."""
    order = session.scalar(select(Order).where(Order.org_id == member.org_id, Order.order_no == order_no))
    if order is None or order.member_id != member.id:
        raise MemberNotFound("找不到该订单", "Order not found", code="orders.not_found")
    return render(
        request,
        "member/order.html",
        {
            "member": member,
            "section": "orders",
            "org": _org_of(session, member),
            "order": order_out(session, order),
        },
    )


# --- profile and consents --------------------------------------------------------------------------


def _profile_page(
    request: Request,
    session: Session,
    member: Member,
    *,
    saved: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "member/profile.html",
        {
            "member": member,
            "section": "me",
            "org": _org_of(session, member),
            "phone_masked": members.masked_phone(session, member.id),
            "genders": [g.value for g in Gender],
            "consents": privacy.consents_of(session, member.id),
            "saved": saved,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/profile")
def member_profile(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """Profile (name, birthday, gender; phone masked) and marketing consents."""
    saved = request.query_params.get("saved")
    message = None
    if saved == "1":
        message = _t(request, "member.profile.saved")
    elif saved == "0":
        message = _t(request, "member.profile.unchanged")
    return _profile_page(request, session, member, saved=message)


@router.post("/m/profile", dependencies=Csrf)
def member_profile_save(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
    birthday: Annotated[str, Form()] = "",
    gender: Annotated[str, Form()] = "unknown",
) -> Response:
    """Save the profile."""
    try:
        try:
            born = date.fromisoformat(birthday) if birthday.strip() else None
        except ValueError as exc:
            raise privacy.ProfileInvalid(
                "生日无效", "The birthday is not a valid date", field="birthday"
            ) from exc
        changed = privacy.update_profile(
            session, privacy.member_principal(member, client_ip(request)), member, name, born, gender
        )
    except privacy.ProfileInvalid as err:
        session.rollback()
        return _profile_page(request, session, member, error=_error_text(request, err), status_code=422)
    session.commit()
    return RedirectResponse(f"/m/profile?saved={1 if changed else 0}", status_code=303)


@router.post("/m/consents/{purpose}", dependencies=Csrf)
def member_consent(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    purpose: str,
    granted: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Turn one marketing purpose on or off (htmx swaps the row)."""
    view = privacy.set_consent(
        session,
        privacy.member_principal(member, client_ip(request)),
        member,
        purpose,
        granted in ("on", "1", "true"),
        "member_page",
    )
    session.commit()
    return render(request, "member/_consent.html", {"c": view, "org": _org_of(session, member)})


# --- privacy: export and erasure -------------------------------------------------------------------


@router.get("/m/privacy")
def member_privacy(
    request: Request, member: MemberDep, session: SessionDep, export: int | None = None
) -> HTMLResponse:
    """Export my data; delete my account."""
    ready = privacy.export_request(session, member, export) if export else None
    return render(
        request,
        "member/privacy.html",
        {
            "member": member,
            "section": "me",
            "org": _org_of(session, member),
            "ready": ready,
            "requests": privacy.requests_of(session, member.id),
        },
    )


@router.post("/m/privacy/export", dependencies=Csrf)
def member_privacy_export(request: Request, member: MemberDep, session: SessionDep) -> Response:
    """Record an export request and offer its download."""
    req = privacy.request_export(session, privacy.member_principal(member, client_ip(request)), member)
    session.commit()
    return RedirectResponse(f"/m/privacy?export={req.id}", status_code=303)


@router.get("/m/privacy/exports/{request_id}")
def member_privacy_download(member: MemberDep, session: SessionDep, request_id: int) -> Response:
    """The JSON file of one export request: profile, identities, orders, ledger, consents."""
    req = privacy.export_request(session, member, request_id)
    body = json.dumps(privacy.export_data(session, member, req), ensure_ascii=False, indent=2)
    return Response(
        body.encode(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="onemember-{member.member_no}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/m/privacy/erase")
def member_erase_form(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The confirm step before an account is deleted."""
    return render(
        request,
        "member/erase.html",
        {"member": member, "section": "me", "org": _org_of(session, member), "error": None},
    )


@router.post("/m/privacy/erase", dependencies=Csrf)
def member_erase(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Delete the account: the profile is anonymised, orders and the points ledger stay whole."""
    org = _org_of(session, member)
    if confirm != "yes":
        return render(
            request,
            "member/erase.html",
            {
                "member": member,
                "section": "me",
                "org": org,
                "error": _t(request, "member.privacy.delete_need_check"),
            },
            status_code=422,
        )
    privacy.erase_member(
        session,
        privacy.member_principal(member, client_ip(request)),
        member,
        reason="member asked to delete the account",
    )
    session.commit()
    return _logged_out(f"/m/login?{urlencode({'org': org.code, 'erased': '1'})}")


# --- benefits: coupons and service packages --------------------------------------------------------

i18n.register(
    {
        "member.cp.title": ("我的优惠券", "My coupons"),
        "member.cp.tab": ("优惠券", "Coupons"),
        "member.cp.group.available": ("可使用", "Ready to use"),
        "member.cp.group.used": ("已使用", "Used"),
        "member.cp.group.expired": ("已过期", "Expired"),
        "member.cp.group.gifted": ("已转赠", "Given away"),
        "member.cp.none": ("暂无可用的优惠券", "No coupons to use right now"),
        "member.cp.kind.free_item": ("赠品券", "Free item"),
        "member.cp.kind.exchange": ("兑换券", "Exchange"),
        "member.cp.kind.service": ("服务券", "Service"),
        "member.cp.discount": ("{n}折", "{p}% off"),
        "member.cp.amount_off": (
            "满{threshold}减{amount}",
            "{amount} off when you spend {threshold} or more",
        ),
        "member.cp.amount_off_any": ("无门槛立减{amount}", "{amount} off, no minimum spend"),
        "member.cp.cap": ("，最高减{cap}", ", at most {cap} off"),
        "member.cp.threshold": ("，满{threshold}可用", ", when you spend {threshold} or more"),
        "member.cp.fixed_price": ("指定商品一件只需{price}", "One qualifying item for {price}"),
        "member.cp.free_item": ("免费领取指定商品一件", "One qualifying item free"),
        "member.cp.exchange": ("兑换指定商品一件", "Exchange for one qualifying item"),
        "member.cp.service": ("免费享受指定服务一次", "One qualifying service free"),
        "member.cp.categories": ("适用品类：{names}", "Categories: {names}"),
        "member.cp.skus": ("适用商品：{names}", "Items: {names}"),
        "member.cp.where.all": ("全部门店通用", "Accepted at every store"),
        "member.cp.where.brand": ("{name}品牌门店通用", "Accepted at every {name} store"),
        "member.cp.where.region": ("{name}门店通用", "Accepted at every store in {name}"),
        "member.cp.where.stores": ("仅限：{names}", "Only at {names}"),
        "member.cp.where.issuing_store": ("仅限发券门店：{name}", "Only at the store that gave it: {name}"),
        "member.cp.diff.none": (
            "各门店均全额抵扣，无需补差价",
            "Covers the full price at every store; nothing to pay on top",
        ),
        "member.cp.diff.pay": (
            "最高抵扣{cover}，门店售价更高时需补差价",
            "Covers up to {cover}; where the item costs more, you pay the difference",
        ),
        "member.cp.validity": ("{start} 至 {end}", "{start} to {end}"),
        "member.cp.validity_open": ("{start} 起长期有效", "From {start}, no end date"),
        "member.cp.starts": ("{day} 起可用", "Usable from {day}"),
        "member.cp.note.redeemed": (
            "{day} 于{store}使用，优惠 {amount}",
            "Used at {store} on {day}, saved {amount}",
        ),
        "member.cp.note.void": ("已作废", "Voided"),
        "member.cp.note.expired": ("已于 {day} 到期", "Expired after {day}"),
        "member.cp.note.gifted": ("{day} 转赠给 {phone}", "Given to {phone} on {day}"),
        "member.cp.received": ("好友转赠", "A gift from a friend"),
        "member.cp.code": ("券码", "Coupon code"),
        "member.cp.qr_hint": (
            "结账时出示此码，店员扫码即可使用",
            "Show this code at the till; the clerk scans it",
        ),
        "member.cp.label.validity": ("有效期", "Valid"),
        "member.cp.label.where": ("使用门店", "Where"),
        "member.cp.label.difference": ("补差价", "Price difference"),
        "member.cp.gift.title": ("转赠给好友", "Give it to a friend"),
        "member.cp.gift.lead": (
            "输入对方注册会员时使用的手机号。转赠后该券归对方所有。",
            "Enter the mobile number your friend is a member with. The coupon then belongs to them.",
        ),
        "member.cp.gift.phone": ("对方手机号", "Friend's mobile number"),
        "member.cp.gift.next": ("下一步", "Next"),
        "member.cp.gift.not_giftable": ("该券不可转赠", "This coupon cannot be given away"),
        "member.cp.gift.confirm_title": ("确认转赠", "Confirm the gift"),
        "member.cp.gift.confirm_lead": (
            "将「{name}」转赠给 {phone}？转赠后无法撤回。",
            "Give “{name}” to {phone}? This cannot be undone.",
        ),
        "member.cp.gift.confirm": ("确认转赠", "Give it"),
        "member.cp.gift.done": ("已将「{name}」转赠给 {phone}", "“{name}” was given to {phone}"),
        "member.cp.gift.unknown": (
            "没有会员使用该手机号，请核对号码",
            "No member uses that mobile number; check the number",
        ),
        "member.pk.title": ("我的次卡", "My service packages"),
        "member.pk.tab": ("次卡", "Packages"),
        "member.pk.none": ("暂无次卡", "No service packages yet"),
        "member.pk.group.open": ("可使用", "Ready to use"),
        "member.pk.group.closed": ("已用完、已过期或已退款", "Used up, expired or refunded"),
        "member.pk.uses_left": ("剩余 {left} / {total} 次", "{left} of {total} uses left"),
        "member.pk.expires": ("有效期至 {day}", "Valid until {day}"),
        "member.pk.never": ("长期有效", "No expiry date"),
        "member.pk.expired": ("已于 {day} 到期", "Expired after {day}"),
        "member.pk.used_up": ("已用完", "All used"),
        "member.pk.refunded": (
            "{day} 已退款 {amount}（{uses} 次）",
            "Refunded {amount} for {uses} uses on {day}",
        ),
        "member.pk.bought": ("{day} 于{store}购买，{amount}", "Bought at {store} on {day} for {amount}"),
        "member.pk.granted": ("{day} 由{store}赠送", "Given to you by {store} on {day}"),
        "member.pk.hq": ("总部", "HQ"),
        "member.pk.where.all": ("全部门店可用", "At every store"),
        "member.pk.where.brand": ("{name}品牌门店可用", "At every {name} store"),
        "member.pk.where.region": ("{name}门店可用", "At every store in {name}"),
        "member.pk.where.stores": ("仅限：{names}", "Only at {names}"),
        "member.pk.refund.none": ("不可退款", "Not refundable"),
        "member.pk.refund.unused_pro_rata": (
            "未使用的次数可按比例退款",
            "Unused uses can be refunded pro rata",
        ),
        "member.pk.refund.full_if_unused": ("未使用时可全额退款", "Fully refundable while unused"),
        "member.pk.refund.granted": ("赠送的次卡不可退款", "A package given to you cannot be refunded"),
        "member.pk.label.where": ("使用门店", "Where"),
        "member.pk.label.refund": ("退款规则", "Refunds"),
        "member.pk.history": ("使用记录", "Uses"),
        "member.pk.history_none": ("尚未使用", "Not used yet"),
        "member.pk.served_by": ("服务人员", "served by"),
        "member.pk.use_no": ("第 {n} 次", "No. {n}"),
        "member.pk.use_range": ("第 {first}–{last} 次", "No. {first}–{last}"),
        "member.pk.till": ("收银系统", "Till system"),
        "member.pk.chart": ("次卡使用情况", "Uses per package"),
        "member.pk.chart_used": ("已用", "Used"),
        "member.pk.chart_left": ("剩余", "Left"),
    }
)

GIFTED_LIMIT = 50
LIST_LIMIT = 500  # coupons or packages a member page shows at once
NAME_LIST = 6  # stores, SKUs or categories named before "…"


def _tr(lang: str, key: str, **values: Any) -> str:
    text = i18n.translate(key, lang)
    return text.format(**values) if values else text


def _day(value: datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).date().isoformat()


def _last_day(end: datetime, tz: str) -> str:
    """An end stored as the next local midnight is shown as the last day it still works."""
    return _day(end - timedelta(seconds=1), tz)


def _names(values: list[str]) -> str:
    shown = "、".join(values[:NAME_LIST])
    return shown + ("…" if len(values) > NAME_LIST else "")


@dataclass
class Places:
    """Names of the stores, brands and regions a page mentions, read once per page."""

    stores: dict[int, str]
    brands: dict[int, str]
    regions: dict[int, str]

    def store(self, store_id: int | None, lang: str) -> str:
        if store_id is None:
            return _tr(lang, "member.pk.hq")
        return self.stores.get(store_id, "")


def _places(session: Session, org_id: int, stores: set[int], brands: set[int], regions: set[int]) -> Places:
    def read(model: Any, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = session.execute(select(model.id, model.name).where(model.org_id == org_id, model.id.in_(ids)))
        return {int(i): str(n) for i, n in rows.all()}

    return Places(read(Store, stores), read(Brand, brands), read(Region, regions))


# --- coupons ---------------------------------------------------------------------------------------


@dataclass
class CouponCard:
    """One coupon as the member sees it: what it gives, when and where, and its state."""

    code: str
    name: str
    kind: str
    status: str  # available | redeemed | void | expired | gifted (given away by this member)
    headline: str
    gives: str
    items: str
    validity: str
    starts: str | None  # the first day, while the coupon is not valid yet
    accepted: str
    difference: str | None  # item vouchers: whether another store charges a price difference
    note: str
    received: bool
    giftable: bool


def coupon_headline(t: CouponTemplate, lang: str) -> str:
    if t.kind == Kind.AMOUNT_OFF:
        return fen(t.amount_fen)
    if t.kind == Kind.PERCENT_OFF:
        return _discount(t.percent_off, lang)
    if t.kind == Kind.FIXED_PRICE:
        return fen(t.price_fen)
    return _tr(lang, f"member.cp.kind.{t.kind}")


def _discount(percent_off: int, lang: str) -> str:
    """20 % off is 8折 (and 15 % off 8.5折)."""
    tenths = Decimal(100 - percent_off) / 10
    return _tr(lang, "member.cp.discount", n=f"{tenths.normalize():f}", p=percent_off)


def coupon_gives(t: CouponTemplate, cover_fen: int | None, lang: str) -> str:
    """What the coupon gives, in words: 满¥300.00减¥50.00, 8折，最高减¥20.00, …"""
    threshold = _tr(lang, "member.cp.threshold", threshold=fen(t.threshold_fen)) if t.threshold_fen else ""
    if t.kind == Kind.AMOUNT_OFF:
        if t.threshold_fen:
            return _tr(lang, "member.cp.amount_off", threshold=fen(t.threshold_fen), amount=fen(t.amount_fen))
        return _tr(lang, "member.cp.amount_off_any", amount=fen(t.amount_fen))
    if t.kind == Kind.PERCENT_OFF:
        cap = _tr(lang, "member.cp.cap", cap=fen(t.cap_fen)) if t.cap_fen else ""
        return _discount(t.percent_off, lang) + cap + threshold
    if t.kind == Kind.FIXED_PRICE:
        return _tr(lang, "member.cp.fixed_price", price=fen(t.price_fen)) + threshold
    return _tr(lang, f"member.cp.{t.kind}") + threshold


def coupon_items(t: CouponTemplate, lang: str) -> str:
    parts = []
    if t.categories:
        parts.append(_tr(lang, "member.cp.categories", names=_names(list(t.categories))))
    if t.skus:
        parts.append(_tr(lang, "member.cp.skus", names=_names(list(t.skus))))
    return " · ".join(parts)


def coupon_accepted(t: CouponTemplate, c: Coupon, places: Places, lang: str) -> str:
    """Where the coupon is accepted, in the terms of ``coupons.calculations.accepted_at``."""
    only_issuer = t.accept_scope == AcceptScope.ISSUING_STORE or (
        not t.cross_store and c.issuing_store_id is not None
    )
    if only_issuer:
        return _tr(lang, "member.cp.where.issuing_store", name=places.stores.get(c.issuing_store_id or 0, ""))
    if t.accept_scope == AcceptScope.BRAND:
        return _tr(lang, "member.cp.where.brand", name=places.brands.get(t.accept_brand_id or 0, ""))
    if t.accept_scope == AcceptScope.REGION:
        return _tr(lang, "member.cp.where.region", name=places.regions.get(t.accept_region_id or 0, ""))
    if t.accept_scope == AcceptScope.STORES:
        names = [places.stores.get(i, "") for i in sorted(t.accept_store_ids or [])]
        return _tr(lang, "member.cp.where.stores", names=_names(names))
    return _tr(lang, "member.cp.where.all")


def coupon_difference(t: CouponTemplate, cover_fen: int | None, lang: str) -> str | None:
    """Item vouchers cover the item up to ``cover_fen`` when the template makes the member pay the
    difference (补差价), so a store where it costs more charges the rest; otherwise the whole item."""
    if t.kind not in ITEM_VOUCHERS:
        return None
    if t.pay_difference and cover_fen is not None:
        return _tr(lang, "member.cp.diff.pay", cover=fen(cover_fen))
    return _tr(lang, "member.cp.diff.none")


def _coupon_places(pairs: list[tuple[Coupon, CouponTemplate]], session: Session, org_id: int) -> Places:
    stores: set[int] = set()
    brands: set[int] = set()
    regions: set[int] = set()
    for c, t in pairs:
        stores.update(i for i in (c.issuing_store_id, c.redeemed_store_id) if i is not None)
        stores.update(t.accept_store_ids or [])
        if t.accept_brand_id is not None:
            brands.add(t.accept_brand_id)
        if t.accept_region_id is not None:
            regions.add(t.accept_region_id)
    return _places(session, org_id, stores, brands, regions)


def coupon_card(
    c: Coupon, t: CouponTemplate, status: str, places: Places, tz: str, lang: str, now: datetime
) -> CouponCard:
    start = _day(c.valid_from, tz)
    if c.valid_to is None:
        validity = _tr(lang, "member.cp.validity_open", start=start)
    else:
        validity = _tr(lang, "member.cp.validity", start=start, end=_last_day(c.valid_to, tz))
    note = ""
    if status == coupons.Status.REDEEMED and c.redeemed_at is not None:
        note = _tr(
            lang,
            "member.cp.note.redeemed",
            day=_day(c.redeemed_at, tz),
            store=places.stores.get(c.redeemed_store_id or 0, ""),
            amount=fen(c.discount_fen),
        )
    elif status == coupons.Status.VOID:
        note = _tr(lang, "member.cp.note.void")
    elif status == coupons.Status.EXPIRED and c.valid_to is not None:
        note = _tr(lang, "member.cp.note.expired", day=_last_day(c.valid_to, tz))
    return CouponCard(
        code=c.code,
        name=t.name,
        kind=t.kind,
        status=status,
        headline=coupon_headline(t, lang),
        gives=coupon_gives(t, c.cover_fen, lang),
        items=coupon_items(t, lang),
        validity=validity,
        starts=_tr(lang, "member.cp.starts", day=start) if c.valid_from > now else None,
        accepted=coupon_accepted(t, c, places, lang),
        difference=coupon_difference(t, c.cover_fen, lang),
        note=note,
        received=c.gifted_from_member_id is not None and c.member_id != c.gifted_from_member_id,
        giftable=status == coupons.Status.AVAILABLE and gift_refusal(c, t, now) is None,
    )


def gift_refusal(coupon: Coupon, template: CouponTemplate, now: datetime) -> DomainError | None:
    """Why ``coupons.gift_coupon`` would refuse this coupon, checked in its order, so that the page asks
    for a phone number only when the coupon itself may be given (the service decides in the end)."""
    if not template.giftable:
        return NotGiftable(template_code=template.code)
    if coupon.status != coupons.Status.AVAILABLE:
        return AlreadyUsed(coupon_status=coupon.status)
    if is_expired(coupon, now):
        return Expired()
    return None


@dataclass
class GiftedAway:
    card: CouponCard
    at: datetime
    phone: str  # the receiver's, masked


def gifted_away(session: Session, member: Member, tz: str, lang: str, now: datetime) -> list[GiftedAway]:
    """Coupons this member gave to others, newest first, from the audit of each gift (indexed by the
    giver); a coupon that came back to the member is listed among theirs instead."""
    rows = session.execute(
        select(AuditLog.target_id, AuditLog.at, AuditLog.details)
        .where(
            AuditLog.org_id == member.org_id,
            AuditLog.member_id == member.id,
            AuditLog.action == "coupons.gifted",
        )
        .order_by(AuditLog.id.desc())
        .limit(GIFTED_LIMIT)
    ).all()
    if not rows:
        return []
    codes = {str(code) for code, _, _ in rows}
    found = {
        c.code: (c, t)
        for c, t in session.execute(
            select(Coupon, CouponTemplate)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(Coupon.org_id == member.org_id, Coupon.code.in_(codes))
        ).all()
    }
    receivers = {str((details or {}).get("to_member_no", "")) for _, _, details in rows}
    phones = {
        no: members.masked_phone(session, mid)
        for no, mid in session.execute(
            select(Member.member_no, Member.id).where(
                Member.org_id == member.org_id, Member.member_no.in_(receivers)
            )
        ).all()
    }
    places = _coupon_places(list(found.values()), session, member.org_id)
    result: list[GiftedAway] = []
    seen: set[str] = set()
    for code, at, details in rows:
        if code in seen or code not in found or found[code][0].member_id == member.id:
            continue
        seen.add(code)
        c, t = found[code]
        phone = phones.get(str((details or {}).get("to_member_no", "")), "") or "—"
        card = coupon_card(c, t, "gifted", places, tz, lang, now)
        card.note = _tr(lang, "member.cp.note.gifted", day=_day(at, tz), phone=phone)
        card.received = card.giftable = False
        result.append(GiftedAway(card, at, phone))
    return result


def _benefit_counts(session: Session, member: Member) -> dict[str, int]:
    """What the home page and the benefit tabs show: coupons ready to use, package uses left."""
    now = utcnow()
    usable = session.scalar(
        select(func.count()).where(
            Coupon.member_id == member.id,
            Coupon.status == coupons.Status.AVAILABLE,
            (Coupon.valid_to.is_(None)) | (Coupon.valid_to > now),
        )
    )
    open_packages = [p for p in packages.packages_of(session, member) if _package_open(p, now)]
    return {
        "coupons": int(usable or 0),
        "packages": len(open_packages),
        "package_uses": sum(p.uses_left for p in open_packages),
    }


COUPON_GROUPS = ("available", "used", "expired", "gifted")


@router.get("/m/coupons")
def member_coupons(
    request: Request, member: MemberDep, session: SessionDep, gifted: str = ""
) -> HTMLResponse:
    """My coupons: ready to use, used, expired and given away."""
    lang = request.state.lang
    org = _org_of(session, member)
    now = utcnow()
    rows = coupons.coupons_of(session, member, limit=LIST_LIMIT)
    places = _coupon_places(rows, session, member.org_id)
    groups: dict[str, list[CouponCard]] = {g: [] for g in COUPON_GROUPS}
    for c, t in rows:
        status = coupons.shown_status(c, now)
        group = "available" if status == coupons.Status.AVAILABLE else "expired"
        if status in (coupons.Status.REDEEMED, coupons.Status.VOID):
            group = "used"
        groups[group].append(coupon_card(c, t, status, places, org.timezone, lang, now))
    away = gifted_away(session, member, org.timezone, lang, now)
    groups["gifted"] = [g.card for g in away]
    notice = None
    if gifted:
        done = next((g for g in away if g.card.code == gifted.strip().upper()), None)
        if done is not None:
            notice = _tr(lang, "member.cp.gift.done", name=done.card.name, phone=done.phone)
    return render(
        request,
        "member/coupons.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "groups": groups,
            "notice": notice,
            "counts": _benefit_counts(session, member),
        },
    )


def _my_coupon(session: Session, member: Member, code: str) -> tuple[Coupon, CouponTemplate]:
    """The member's own coupon with this code; another member's looks exactly like a missing one."""
    coupon = coupons.coupon_by_code(session, member.org_id, code)
    if coupon.member_id != member.id:
        raise CouponNotFound()
    template = session.get(CouponTemplate, coupon.template_id)
    assert template is not None
    return coupon, template


def _coupon_page(
    request: Request,
    session: Session,
    member: Member,
    code: str,
    *,
    phone: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    org = _org_of(session, member)
    coupon, template = _my_coupon(session, member, code)
    now = utcnow()
    status = coupons.shown_status(coupon, now)
    card = coupon_card(
        coupon,
        template,
        status,
        _coupon_places([(coupon, template)], session, member.org_id),
        org.timezone,
        lang,
        now,
    )
    svg = None
    if status == coupons.Status.AVAILABLE:
        svg = segno.make(coupon.code, error="m").svg_inline(scale=6, dark="#111827", border=2, omitsize=True)
    return render(
        request,
        "member/coupon.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "c": card,
            "svg": svg,
            "refusal": gift_refusal(coupon, template, now) if status == coupons.Status.AVAILABLE else None,
            "phone": phone,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/coupons/{code}")
def member_coupon(request: Request, member: MemberDep, session: SessionDep, code: str) -> HTMLResponse:
    """One of my coupons: what it gives, where and until when, its code as a QR for the till, and the
    form to give it to another member when its template allows."""
    return _coupon_page(request, session, member, code)


GIFT_UNKNOWN_PHONE_LIMIT = 5  # numbers that match no member, per member per hour


class GiftPhoneUnknown(MemberNotFound):
    """A gift to a number no member uses (counted, so the form cannot be used to probe numbers)."""


class GiftLookupsLimited(DomainError):
    status = 429
    code = "coupons.gift_lookups_limited"
    zh = "转赠时输入的手机号多次不匹配，请 1 小时后再试"
    en = "Too many numbers that match no member; try again in an hour"


def _unknown_phones_lately(session: Session, member: Member) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                AuditLog.member_id == member.id,
                AuditLog.action == "coupons.gift_phone_unknown",
                AuditLog.at >= utcnow() - timedelta(hours=1),
            )
        )
        or 0
    )


def _note_unknown_phone(request: Request, session: Session, member: Member, code: str) -> None:
    """Record (in its own transaction, after the refusal rolled back) a gift to an unknown number."""
    audit.record(
        session,
        privacy.member_principal(member, client_ip(request)),
        "coupons.gift_phone_unknown",
        target_type="coupon",
        target_id=code,
        member_id=member.id,
    )
    session.commit()


def _receiver(
    session: Session, member: Member, coupon: Coupon, template: CouponTemplate, phone: str
) -> Member:
    """The member a coupon goes to, by phone number. The coupon's own refusals come first, so that only
    a coupon that may be given leads to a look-up of the number; the answer then says no more than the
    API's ``members.not_found`` does for a member number."""
    refusal = gift_refusal(coupon, template, utcnow())
    if refusal is not None:
        raise refusal
    if _unknown_phones_lately(session, member) >= GIFT_UNKNOWN_PHONE_LIMIT:
        raise GiftLookupsLimited()
    receiver = members.find_by_identity(session, member.org_id, IdentityKind.PHONE, phone)
    if receiver is None:
        zh, en = i18n.MESSAGES["member.cp.gift.unknown"]
        raise GiftPhoneUnknown(zh, en)
    return receiver


def _gift(request: Request, session: Session, member: Member, code: str, phone: str) -> Coupon:
    coupon, template = _my_coupon(session, member, code)
    receiver = _receiver(session, member, coupon, template, phone)
    principal = privacy.member_principal(member, client_ip(request))
    return coupons.gift_coupon(session, principal, coupon.code, member, receiver)


@router.post("/m/coupons/{code}/gift", dependencies=Csrf)
def member_coupon_gift(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    phone: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Step one of a gift: check it as the service would (and roll the check back), then ask to confirm."""
    try:
        with session.begin_nested() as trial:
            _gift(request, session, member, code, phone)
            trial.rollback()
    except DomainError as err:
        session.rollback()
        if isinstance(err, GiftPhoneUnknown):
            _note_unknown_phone(request, session, member, code)
        return _coupon_page(
            request,
            session,
            member,
            code,
            phone=phone,
            error=_error_text(request, err),
            status_code=err.status,
        )
    session.rollback()
    coupon, template = _my_coupon(session, member, code)
    normalized = members.normalize_identity(IdentityKind.PHONE, phone)
    return render(
        request,
        "member/gift_confirm.html",
        {
            "member": member,
            "section": "benefits",
            "org": _org_of(session, member),
            "code": coupon.code,
            "name": template.name,
            "phone": normalized,
            "phone_masked": f"{normalized[:3]}****{normalized[7:]}",
        },
    )


def _already_given(session: Session, member: Member, code: str, phone: str) -> bool:
    """Whether this member's latest gift of this coupon went to this phone's member, who still holds it."""
    try:
        normalized = members.normalize_identity(IdentityKind.PHONE, phone)
    except DomainError:
        return False
    details = session.scalar(
        select(AuditLog.details)
        .where(
            AuditLog.org_id == member.org_id,
            AuditLog.member_id == member.id,
            AuditLog.action == "coupons.gifted",
            AuditLog.target_id == code.strip().upper(),
        )
        .order_by(AuditLog.id.desc())
        .limit(1)
    )
    if not details:
        return False
    receiver = members.find_by_identity(session, member.org_id, IdentityKind.PHONE, normalized)
    if receiver is None or receiver.member_no != details.get("to_member_no"):
        return False
    holder = session.scalar(
        select(Coupon.member_id).where(Coupon.org_id == member.org_id, Coupon.code == code.strip().upper())
    )
    return holder == receiver.id


@router.post("/m/coupons/{code}/gift/confirm", dependencies=Csrf)
def member_coupon_gift_confirm(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    phone: Annotated[str, Form()] = "",
) -> Response:
    """Give the coupon: the same ``coupons.gift_coupon`` call as the API, with its rules and audit. A
    second tap (or a resubmitted form) after the gift went through lands on the same result."""
    if _already_given(session, member, code, phone):
        return RedirectResponse(f"/m/coupons?{urlencode({'gifted': code.strip().upper()})}", status_code=303)
    try:
        coupon = _gift(request, session, member, code, phone)
    except DomainError as err:
        session.rollback()
        if isinstance(err, GiftPhoneUnknown):
            _note_unknown_phone(request, session, member, code)
        return _coupon_page(
            request,
            session,
            member,
            code,
            phone=phone,
            error=_error_text(request, err),
            status_code=err.status,
        )
    session.commit()
    return RedirectResponse(f"/m/coupons?{urlencode({'gifted': coupon.code})}", status_code=303)


# --- service packages ------------------------------------------------------------------------------


def _package_open(package: MemberPackage, now: datetime) -> bool:
    return (
        package.status == packages.PackageStatus.ACTIVE
        and package.uses_left > 0
        and (package.expires_at is None or now < package.expires_at)
    )


@dataclass
class UseRow:
    at: datetime
    store: str
    staff: str  # masked like a member's name elsewhere: 张*
    uses: str


@dataclass
class PackageCard:
    id: int
    name: str
    service_code: str
    uses_left: int
    uses_total: int
    used: int
    pct_left: int
    open: bool
    state: str  # the expiry, or why the package is closed
    where: str
    origin: str
    refund: str
    history: list[UseRow]


def package_where(template: ServicePackage, store_ids: list[int], places: Places, lang: str) -> str:
    if template.store_scope == packages.StoreScope.BRAND:
        return _tr(lang, "member.pk.where.brand", name=places.brands.get(template.scope_brand_id or 0, ""))
    if template.store_scope == packages.StoreScope.REGION:
        return _tr(lang, "member.pk.where.region", name=places.regions.get(template.scope_region_id or 0, ""))
    if template.store_scope == packages.StoreScope.STORES:
        return _tr(
            lang, "member.pk.where.stores", names=_names([places.stores.get(i, "") for i in store_ids])
        )
    return _tr(lang, "member.pk.where.all")


def package_state(package: MemberPackage, tz: str, lang: str, now: datetime) -> str:
    if package.status == packages.PackageStatus.REFUNDED and package.refunded_at is not None:
        return _tr(
            lang,
            "member.pk.refunded",
            day=_day(package.refunded_at, tz),
            amount=fen(package.refunded_fen),
            uses=package.uses_refunded,
        )
    if package.expires_at is not None and now >= package.expires_at:
        return _tr(lang, "member.pk.expired", day=_last_day(package.expires_at, tz))
    if package.uses_left == 0:
        return _tr(lang, "member.pk.used_up")
    if package.expires_at is None:
        return _tr(lang, "member.pk.never")
    return _tr(lang, "member.pk.expires", day=_last_day(package.expires_at, tz))


def _use_numbers(use: PackageUse, lang: str) -> str:
    if use.uses == 1:
        return _tr(lang, "member.pk.use_no", n=use.first_use_no)
    return _tr(lang, "member.pk.use_range", first=use.first_use_no, last=use.first_use_no + use.uses - 1)


def package_cards(session: Session, member: Member, tz: str, lang: str) -> list[PackageCard]:
    """The member's packages, open ones first, each with its uses (``packages.uses_of``)."""
    now = utcnow()
    held = packages.packages_of(session, member, include_closed=True)[:LIST_LIMIT]
    templates = {
        t.id: t
        for t in session.scalars(
            select(ServicePackage).where(ServicePackage.id.in_({p.package_id for p in held} or {-1}))
        )
    }
    scoped = {
        t.id: packages.template_store_ids(session, t.id)
        for t in templates.values()
        if t.store_scope == packages.StoreScope.STORES
    }
    uses = {p.id: packages.uses_of(session, p) for p in held}
    staff_ids = {u.staff_id for rows in uses.values() for u in rows if u.staff_id is not None}
    staff = {
        int(i): str(name or username)
        for i, name, username in session.execute(
            select(Staff.id, Staff.display_name, Staff.username).where(
                Staff.org_id == member.org_id, Staff.id.in_(staff_ids or {-1})
            )
        ).all()
    }
    store_ids = {s for ids in scoped.values() for s in ids}
    store_ids |= {p.sold_store_id for p in held if p.sold_store_id is not None}
    store_ids |= {u.used_store_id for rows in uses.values() for u in rows}
    places = _places(
        session,
        member.org_id,
        store_ids,
        {t.scope_brand_id for t in templates.values() if t.scope_brand_id is not None},
        {t.scope_region_id for t in templates.values() if t.scope_region_id is not None},
    )
    cards = []
    for p in held:
        t = templates[p.package_id]
        day = _day(p.sold_at, tz)
        sold_at = places.store(p.sold_store_id, lang)
        if p.source == packages.Source.SALE:
            origin = _tr(lang, "member.pk.bought", day=day, store=sold_at, amount=fen(p.price_fen))
            refund = _tr(lang, f"member.pk.refund.{t.refund_rule}")
        else:
            origin = _tr(lang, "member.pk.granted", day=day, store=sold_at)
            refund = _tr(lang, "member.pk.refund.granted")
        history = [
            UseRow(
                at=u.used_at,
                store=places.stores.get(u.used_store_id, ""),
                staff=mask_name(staff[u.staff_id]) if u.staff_id in staff else _tr(lang, "member.pk.till"),
                uses=_use_numbers(u, lang),
            )
            for u in reversed(uses[p.id])
        ]
        used = p.uses_total - p.uses_left - p.uses_refunded
        cards.append(
            PackageCard(
                id=p.id,
                name=t.name,
                service_code=p.service_code,
                uses_left=p.uses_left,
                uses_total=p.uses_total,
                used=used,
                pct_left=100 * p.uses_left // p.uses_total,
                open=_package_open(p, now),
                state=package_state(p, tz, lang, now),
                where=package_where(t, scoped.get(t.id, []), places, lang),
                origin=origin,
                refund=refund,
                history=history,
            )
        )
    cards.sort(key=lambda c: not c.open)  # stable: newest first within each group
    return cards


def uses_chart(cards: list[PackageCard], lang: str) -> str:
    """Used and left uses of each open package, as stacked bars (``charts.bar`` laid out, two series)."""
    names = [c.name for c in cards]
    option = json.loads(
        charts.bar(_tr(lang, "member.pk.chart"), names, [c.uses_left for c in cards], horizontal=True)
    )
    option["legend"] = {"top": 0, "right": 0}
    option["grid"] = {"left": 8, "right": 16, "top": 40, "bottom": 8, "containLabel": True}
    option["series"] = [
        {
            "name": _tr(lang, "member.pk.chart_used"),
            "type": "bar",
            "stack": "uses",
            "data": [c.used for c in cards],
            "barMaxWidth": 22,
            "itemStyle": {"color": "#adb5bd"},
        },
        {
            "name": _tr(lang, "member.pk.chart_left"),
            "type": "bar",
            "stack": "uses",
            "data": [c.uses_left for c in cards],
            "barMaxWidth": 22,
            "itemStyle": {"color": charts.PALETTE[1]},
            "label": {"show": True, "position": "insideRight"},
        },
    ]
    return json.dumps(option, ensure_ascii=False)


@router.get("/m/packages")
def member_packages(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """My service packages: uses left of the total, expiry, where they can be used, and every use."""
    lang = request.state.lang
    org = _org_of(session, member)
    cards = package_cards(session, member, org.timezone, lang)
    open_cards = [c for c in cards if c.open]
    return render(
        request,
        "member/packages.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "open_cards": open_cards,
            "closed_cards": [c for c in cards if not c.open],
            "chart": uses_chart(open_cards, lang) if open_cards else None,
            "chart_height": 72 + 40 * len(open_cards),
            "counts": _benefit_counts(session, member),
        },
    )


# --- points mall -----------------------------------------------------------------------------------

i18n.register(
    {
        "member.mall.title": ("积分商城", "Points mall"),
        "member.mall.entry": ("积分商城 ›", "Points mall ›"),
        "member.mall.rewards": ("可兑礼品", "Rewards"),
        "member.mall.entry_lead": ("用积分兑换礼品和优惠券", "Spend points on gifts and coupons"),
        "member.mall.balance": ("可用积分 {n}", "{n} points to spend"),
        "member.mall.none": ("暂无可兑换的礼品", "No rewards on offer right now"),
        "member.mall.points": ("{n} 积分", "{n} points"),
        "member.mall.cash": ("+ {amount}", "+ {amount}"),
        "member.mall.kind.gift": ("礼品", "Gift"),
        "member.mall.kind.coupon": ("优惠券", "Coupon"),
        "member.mall.kind.service": ("服务", "Service"),
        "member.mall.kind.points_cash": ("积分+现金", "Points + cash"),
        "member.mall.at_store": ("到店兑换", "Redeem at a store"),
        "member.mall.at_store_hint": (
            "请到门店出示会员码，由店员为您兑换",
            "Show your member code at a store and the clerk redeems it for you",
        ),
        "member.mall.online": ("立即兑换", "Redeem now"),
        "member.mall.online_hint": (
            "兑换后优惠券立即发放到“我的优惠券”",
            "The coupon goes straight to My coupons",
        ),
        "member.mall.short": ("还差 {n} 积分", "{n} more points needed"),
        "member.mall.sold_out": ("已兑完", "Sold out"),
        "member.mall.left": ("剩余 {n} 件", "{n} left"),
        "member.mall.store_stock": ("各门店备货", "Stocked at each store"),
        "member.mall.limit": ("每人限兑 {limit} 次，已兑 {used} 次", "{used} of {limit} per member redeemed"),
        "member.mall.limit_reached": ("已达兑换上限", "Limit reached"),
        "member.mall.confirm_title": ("确认兑换", "Confirm the redemption"),
        "member.mall.confirm_spend": ("使用积分", "Points to spend"),
        "member.mall.confirm_after": ("兑换后余额", "Balance afterwards"),
        "member.mall.confirm_now": ("当前积分", "Points now"),
        "member.mall.confirm": ("确认兑换", "Redeem"),
        "member.mall.done": (
            "已兑换「{name}」，优惠券 {code} 已放入“我的优惠券”",
            "“{name}” redeemed: coupon {code} is in My coupons",
        ),
        "member.mall.history": ("我的兑换", "My redemptions"),
        "member.mall.history_none": ("还没有兑换记录", "No redemptions yet"),
        "member.mall.status.pending": ("待领取", "To collect"),
        "member.mall.status.fulfilled": ("已完成", "Done"),
        "member.mall.status.cancelled": ("已取消", "Cancelled"),
        "member.mall.online_place": ("线上兑换", "Online"),
        "member.mall.coupon_code": ("券码", "Coupon code"),
        "member.mall.refunded": ("积分已退回", "Points returned"),
    }
)

MALL_LIMIT = 200  # rewards or redemptions a member page shows at once


@dataclass
class RewardCard:
    """One reward as the member sees it: the price, whether it can be had, and how."""

    code: str
    name: str
    kind: str
    kind_label: str
    points: int
    cash_fen: int
    gives: str  # a coupon reward: what its coupon gives
    online: bool  # redeemable here (a coupon reward); otherwise at a store
    stock: str
    limit: str
    affordable: bool
    refusal: str  # why it cannot be redeemed now (sold out, limit reached, points short); "" when it can


def reward_cards(session: Session, member: Member, balance: int, lang: str) -> list[RewardCard]:
    """Active rewards of the member's org, cheapest first, priced against the member's balance."""
    rewards = list(
        session.scalars(
            select(Reward)
            .where(Reward.org_id == member.org_id, Reward.active.is_(True))
            .order_by(Reward.points_cost, Reward.id)
            .limit(MALL_LIMIT)
        )
    )
    ids = {r.id for r in rewards}
    central = {
        int(reward_id): int(quantity)
        for reward_id, quantity in session.execute(
            select(RewardStock.reward_id, RewardStock.quantity).where(
                RewardStock.org_id == member.org_id,
                RewardStock.reward_id.in_(ids or {-1}),
                RewardStock.store_key == mall.CENTRAL_STOCK,
            )
        ).all()
    }
    template_ids = {r.coupon_template_id for r in rewards if r.coupon_template_id is not None}
    templates = {
        t.id: t
        for t in session.scalars(
            select(CouponTemplate).where(
                CouponTemplate.org_id == member.org_id, CouponTemplate.id.in_(template_ids or {-1})
            )
        )
    }
    used = mall.redemptions_counted(session, member.id, list(ids))
    cards = []
    for r in rewards:
        refusal = ""
        if r.stock_mode == mall.StockMode.CENTRAL:
            left = central.get(r.id, 0)
            stock = _tr(lang, "member.mall.left", n=left) if left else _tr(lang, "member.mall.sold_out")
            if not left:
                refusal = _tr(lang, "member.mall.sold_out")
        elif r.stock_mode == mall.StockMode.STORE:
            stock = _tr(lang, "member.mall.store_stock")
        else:
            stock = ""
        limit = ""
        if r.per_member_limit is not None:
            n = used.get(r.id, 0)
            limit = _tr(lang, "member.mall.limit", limit=r.per_member_limit, used=n)
            if n >= r.per_member_limit and not refusal:
                refusal = _tr(lang, "member.mall.limit_reached")
        affordable = balance >= r.points_cost
        if not affordable and not refusal:
            refusal = _tr(lang, "member.mall.short", n=f"{r.points_cost - balance:,}")
        template = templates.get(r.coupon_template_id or 0)
        cards.append(
            RewardCard(
                code=r.code,
                name=r.name,
                kind=r.kind,
                kind_label=_tr(lang, f"member.mall.kind.{r.kind}"),
                points=r.points_cost,
                cash_fen=r.cash_fen,
                gives=coupon_gives(template, None, lang) if template is not None else "",
                online=mall.online_redeemable(r),
                stock=stock,
                limit=limit,
                affordable=affordable,
                refusal=refusal,
            )
        )
    return cards


def _balance_of(session: Session, member: Member) -> int:
    account = _account(session, member)
    return account.balance if account else 0


def _mall_page(
    request: Request,
    session: Session,
    member: Member,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    balance = _balance_of(session, member)
    return render(
        request,
        "member/mall.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "balance": balance,
            "cards": reward_cards(session, member, balance, request.state.lang),
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/mall")
def member_mall(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The points mall: rewards the member can get for points, what each costs and whether it can be had
    now; coupon rewards are redeemed here, everything else at a store."""
    return _mall_page(request, session, member)


def _my_reward(session: Session, member: Member, code: str) -> Reward:
    """An active reward of the member's org (an inactive one looks like a missing one)."""
    reward = mall.reward_by_code(session, member.org_id, code)
    if not reward.active:
        raise mall.RewardNotFound()
    return reward


@router.get("/m/mall/{code}/redeem")
def member_mall_confirm(request: Request, member: MemberDep, session: SessionDep, code: str) -> HTMLResponse:
    """The confirm step: the points to spend and the balance afterwards, with a fresh key so that a
    double submit redeems once."""
    reward = _my_reward(session, member, code)
    balance = _balance_of(session, member)
    [card] = [c for c in reward_cards(session, member, balance, request.state.lang) if c.code == reward.code]
    return render(
        request,
        "member/mall_confirm.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "c": card,
            "balance": balance,
            "after": balance - reward.points_cost,
            "idem": secrets.token_urlsafe(18),
        },
    )


def _problem_text(request: Request, body: dict[str, Any]) -> str:
    return str(body.get("message_en" if request.state.lang == "en" else "message_zh", ""))


@router.post("/m/mall/{code}/redeem", dependencies=Csrf)
def member_mall_redeem(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    idem: Annotated[str, Form()] = "",
) -> Response:
    """Redeem a coupon reward as the member (``mall.redeem_online``: the member's own account, no store);
    the form's key makes a double submit answer with the first redemption."""
    principal = privacy.member_principal(member, client_ip(request))

    def work() -> dict[str, Any]:
        reward = mall.reward_by_code(session, member.org_id, code)
        redemption = mall.redeem_online(session, principal, member, reward)
        coupon = mall.coupon_of(session, redemption)
        return {"redemption_id": redemption.id, "coupon_code": coupon.code if coupon else None}

    try:
        outcome = idempotency.run(
            session,
            principal,
            idem or None,
            "member.mall_redeem",
            {"reward_code": code},
            work,
            status=201,
            lang=request.state.lang,
        )
    except DomainError as err:
        session.rollback()
        return _mall_page(request, session, member, error=_error_text(request, err), status_code=err.status)
    if outcome.status >= 400:
        return _mall_page(
            request, session, member, error=_problem_text(request, outcome.body), status_code=outcome.status
        )
    return RedirectResponse(f"/m/mall/redemptions?done={outcome.body['redemption_id']}", status_code=303)


@dataclass
class RedemptionRow:
    id: int
    name: str
    kind_label: str
    status: str
    status_label: str
    place: str
    at: datetime
    points: int
    cash_fen: int
    coupon_code: str | None


@router.get("/m/mall/redemptions")
def member_mall_redemptions(
    request: Request, member: MemberDep, session: SessionDep, done: int | None = None
) -> HTMLResponse:
    """My redemptions, newest first: what, where, when, its status and the coupon it issued."""
    lang = request.state.lang
    rows = mall.redemptions_of(session, member)[:MALL_LIMIT]
    coupon_codes = {
        c.source_ref: c.code
        for c in session.scalars(
            select(Coupon).where(
                Coupon.org_id == member.org_id,
                Coupon.source_ref.in_({coupon_issuance.mall_source_ref(r.id) for r, _ in rows} or {""}),
            )
        )
    }
    stores = _store_names(session, member.org_id, {r.store_id for r, _ in rows if r.store_id is not None})
    history = [
        RedemptionRow(
            id=r.id,
            name=w.name,
            kind_label=_tr(lang, f"member.mall.kind.{w.kind}"),
            status=r.status,
            status_label=_tr(lang, f"member.mall.status.{r.status}"),
            place=stores.get(r.store_id, "") if r.store_id else _tr(lang, "member.mall.online_place"),
            at=r.created_at,
            points=r.points,
            cash_fen=r.cash_fen,
            coupon_code=coupon_codes.get(coupon_issuance.mall_source_ref(r.id)),
        )
        for r, w in rows
    ]
    notice = None
    done_row = next((h for h in history if h.id == done), None)
    if done_row is not None and done_row.coupon_code:
        notice = _tr(lang, "member.mall.done", name=done_row.name, code=done_row.coupon_code)
    return render(
        request,
        "member/mall_redemptions.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "rows": history,
            "notice": notice,
            "balance": _balance_of(session, member),
        },
    )
