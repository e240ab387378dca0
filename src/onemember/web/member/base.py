"""What every member page shares: the member session (cookie, ``MemberDep``), the page texts of the
member centre, and small read helpers (the member's org, points account and store names, paging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members.models import Member
from onemember.org.models import Org, Store
from onemember.points.models import PointAccount
from onemember.web import i18n
from onemember.web.common import LoginRequired, check_csrf

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


def _tr(lang: str, key: str, **values: Any) -> str:
    text = i18n.translate(key, lang)
    return text.format(**values) if values else text


def _t(request: Request, key: str, **values: Any) -> str:
    return _tr(request.state.lang, key, **values)


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


def _error_text(request: Request, err: DomainError) -> str:
    return err.en if request.state.lang == "en" else err.zh


def _logged_out(location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    response.delete_cookie(MEMBER_COOKIE, path="/m")
    return response


def _account(session: Session, member: Member) -> PointAccount | None:
    return session.scalar(
        select(PointAccount).where(PointAccount.member_id == member.id).order_by(PointAccount.id).limit(1)
    )


def _store_names(session: Session, org_id: int, ids: set[int] | None = None) -> dict[int, str]:
    query = select(Store.id, Store.name).where(Store.org_id == org_id)
    if ids is not None:
        query = query.where(Store.id.in_(ids or {-1}))
    return {int(i): str(n) for i, n in session.execute(query).all()}


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
