"""The member page (/m, mobile first): log in with phone and a one-time code, the member code as a QR
that refreshes itself, points and what expires when, the ledger, orders from every store, profile and
marketing consents, and the PIPL requests to export or erase one's data.

Every read is an indexed lookup by the member's id (ledger, lots, orders) with a LIMIT; the domain
services in ``members.privacy`` do every write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
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

from onemember.common.types import EntryKind, Gender
from onemember.deps import SessionDep, client_ip
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members import service as members
from onemember.members.errors import InvalidIdentity, MemberNotFound
from onemember.members.models import Member
from onemember.messaging import service as messaging
from onemember.messaging.channels import Channel, default_sms_channel
from onemember.orders.models import Order
from onemember.orders.views import order_out
from onemember.org.models import Org, Store
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.segments.models import MemberStoreStats
from onemember.settings import get_settings
from onemember.web import i18n
from onemember.web.common import LoginRequired, check_csrf
from onemember.web.export import xlsx_response
from onemember.web.templating import render

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
    """The member's home: member code, points and what expires when."""
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
