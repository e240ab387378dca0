"""Console members section: the member list (search, filters, sort, paging, Excel export), the 360° member
page, the audited phone reveal and the member merge (preview first, then confirm with a reason).

Who sees what follows the foundation's rules: HQ sees every member; store and regional staff list only the
members registered at or shopping in their stores, though an exact phone or member-number search finds any
member of the org and then shows the masked cross-store view. Pages call the domain services for every
change; they only read tables themselves, always through indexed lookups or the running member stats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import ColumnElement, exists, func, or_, select, true
from sqlalchemy.orm import Session

from onemember.auth.principal import MERGE_ROLES, Principal
from onemember.common.types import IdentityKind, MemberStatus
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError, Forbidden, Invalid, NotFound
from onemember.members import service as members
from onemember.members import views
from onemember.members.errors import InvalidIdentity, MemberNotFound
from onemember.members.models import Member, MemberIdentity, MemberMerge
from onemember.orders import returns as order_lookup
from onemember.orders.models import Order
from onemember.orders.views import order_out
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats, MemberTag
from onemember.web import charts, i18n
from onemember.web.common import ConsoleUser, Csrf, page_error_text
from onemember.web.console import choose_scope, scope_context
from onemember.web.export import xlsx_response
from onemember.web.forms import is_htmx, org_tz
from onemember.web.i18n import translate
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 20
ORDERS_PAGE_SIZE = 10
LEDGER_ROWS = 20
EXPORT_LIMIT = 20_000
STATUSES = ("active", "merged", "erased", "all")
SORTS = ("created", "name", "last_purchase", "spend", "orders")

i18n.register(
    {
        "members.title": ("会员", "Members"),
        "members.search_placeholder": ("手机号 / 会员号 / 姓名开头", "Phone / member no. / start of name"),
        "members.search_label": ("查找会员", "Find a member"),
        "members.status": ("状态", "Status"),
        "members.status.active": ("有效", "Active"),
        "members.status.merged": ("已合并", "Merged"),
        "members.status.erased": ("已注销", "Erased"),
        "members.status.all": ("全部", "All"),
        "members.sort": ("排序", "Sort by"),
        "members.sort.created": ("注册时间", "Joined"),
        "members.sort.name": ("姓名", "Name"),
        "members.sort.last_purchase": ("最近消费", "Last purchase"),
        "members.sort.spend": ("累计消费", "Total spend"),
        "members.sort.orders": ("订单数", "Orders"),
        "members.dir.desc": ("降序", "Descending"),
        "members.dir.asc": ("升序", "Ascending"),
        "members.col.member_no": ("会员号", "Member no."),
        "members.col.name": ("姓名", "Name"),
        "members.col.phone": ("手机号", "Phone"),
        "members.col.store": ("注册门店", "Registered store"),
        "members.col.spend_yuan": ("累计消费（元）", "Total spend (yuan)"),
        "members.filter_note": (
            "门店/区域筛选按注册门店；列表含在本范围门店注册或消费过的会员",
            "The store/region filter is by registered store; the list holds members registered "
            "or shopping in your stores",
        ),
        "members.exact_note": (
            "精确查找（手机号/会员号）可找到全连锁的会员，不受筛选限制；范围外的会员信息已脱敏",
            "An exact phone or member-number search finds any member of the chain regardless of filters; "
            "members outside your stores are shown masked",
        ),
        "members.not_found": ("没有找到该手机号或会员号的会员", "No member has that phone or member number"),
        "members.page_of": ("第 {p} / {n} 页", "Page {p} of {n}"),
        "members.rows": ("条", "rows"),
        "members.export_capped": (
            "导出最多 {n} 行，请缩小筛选范围",
            "The export holds at most {n} rows; narrow the filter",
        ),
        "members.cross_store": ("跨店视图（已脱敏）", "Cross-store view (masked)"),
        "members.back": ("返回会员列表", "Back to members"),
        "members.merged_notice": (
            "会员号 {no} 已合并到本会员",
            "Member no. {no} has been merged into this one",
        ),
        "members.profile": ("基本资料", "Profile"),
        "members.gender": ("性别", "Gender"),
        "members.gender.male": ("男", "Male"),
        "members.gender.female": ("女", "Female"),
        "members.gender.unknown": ("未知", "Unknown"),
        "members.birthday": ("生日", "Birthday"),
        "members.channel": ("注册渠道", "Channel"),
        "members.joined": ("注册时间", "Joined"),
        "members.identities": ("身份标识", "Identities"),
        "members.tags": ("标签", "Tags"),
        "members.merged_from": ("合并来源", "Merged from"),
        "members.hidden": ("仅本店会员可见", "Shown only for members of your stores"),
        "members.id.phone": ("手机号", "Phone"),
        "members.id.card": ("会员卡号", "Card no."),
        "members.id.wechat_openid": ("微信 openid", "WeChat openid"),
        "members.id.wechat_unionid": ("微信 unionid", "WeChat unionid"),
        "members.id.alipay_uid": ("支付宝用户号", "Alipay user id"),
        "members.reveal": ("显示完整号码", "Show full number"),
        "members.reveal_reason": ("查看原因", "Reason"),
        "members.reveal_hint": (
            "显示完整号码会记入审计日志",
            "Showing the full number is written to the audit log",
        ),
        "members.reveal_need_reason": ("请填写查看原因", "Give a reason for showing the number"),
        "members.revealed_note": ("已记入审计日志", "Written to the audit log"),
        "members.reveal_forbidden": (
            "您无权查看该会员的完整个人信息",
            "You may not see this member's full personal data",
        ),
        "members.stats": ("消费概况", "Shopping summary"),
        "members.orders": ("订单数", "Orders"),
        "members.spend": ("累计消费", "Total spend"),
        "members.avg_ticket": ("客单价", "Average ticket"),
        "members.returns": ("退货", "Returns"),
        "members.store_count": ("到店数", "Stores visited"),
        "members.first_purchase": ("首次消费", "First purchase"),
        "members.last_purchase": ("最近消费", "Last purchase"),
        "members.home_store": ("常去门店", "Home store"),
        "members.registered_store": ("注册门店", "Registered store"),
        "members.visited_stores": ("到访门店", "Stores visited"),
        "members.chart_stores": ("各门店消费（元）", "Spend by store (yuan)"),
        "members.chart_categories": ("品类偏好（消费额）", "Category preferences (spend)"),
        "members.categories": ("品类偏好", "Category preferences"),
        "members.category": ("品类", "Category"),
        "members.quantity": ("件数", "Units"),
        "members.store": ("门店", "Store"),
        "members.recent_orders": ("全渠道订单", "Orders across stores"),
        "members.order_no": ("订单号", "Order no."),
        "members.time": ("时间", "Time"),
        "members.total": ("金额", "Amount"),
        "members.paid": ("实付", "Paid"),
        "members.points_used": ("用积分", "Points used"),
        "members.points_earned": ("得积分", "Points earned"),
        "members.refunded": ("已退款", "Refunded"),
        "members.order_detail": ("订单详情", "Order detail"),
        "members.sku": ("商品", "Item"),
        "members.unit_price": ("单价", "Unit price"),
        "members.amount": ("小计", "Subtotal"),
        "members.returned_qty": ("已退", "Returned"),
        "members.payments": ("支付方式", "Payments"),
        "members.return_no": ("退货单", "Return"),
        "members.points": ("积分", "Points"),
        "members.balance": ("可用积分", "Balance"),
        "members.debt": ("欠分", "Debt"),
        "members.lifetime_earned": ("累计获得", "Earned to date"),
        "members.lifetime_redeemed": ("累计使用", "Redeemed to date"),
        "members.ledger": ("积分流水（最近）", "Points ledger (recent)"),
        "members.kind": ("类型", "Kind"),
        "members.change": ("变动", "Change"),
        "members.balance_after": ("变动后", "Balance after"),
        "members.reason": ("说明", "Note"),
        "members.lots": ("未用积分批次", "Open point lots"),
        "members.lot_amount": ("获得", "Earned"),
        "members.lot_remaining": ("剩余", "Remaining"),
        "members.expires": ("到期", "Expires"),
        "members.never": ("永久有效", "Never"),
        "members.entry.earn": ("消费获得", "Earned"),
        "members.entry.redeem": ("抵扣使用", "Redeemed"),
        "members.entry.earn_reversal": ("退货扣回", "Return reversal"),
        "members.entry.redeem_refund": ("退货退还", "Return refund"),
        "members.entry.debt_offset": ("抵扣欠分", "Debt offset"),
        "members.entry.debt_cash_settle": ("退款抵欠分", "Debt settled in cash"),
        "members.entry.write_off": ("欠分核销", "Write-off"),
        "members.entry.expire": ("过期", "Expired"),
        "members.entry.adjust": ("调整", "Adjustment"),
        "members.entry.import_opening": ("期初导入", "Opening import"),
        "members.entry.merge_in": ("合并转入", "Merged in"),
        "members.entry.merge_out": ("合并转出", "Merged out"),
        "members.entry.transfer_out": ("转赠他人", "Transferred out"),
        "members.entry.transfer_in": ("他人转赠", "Transferred in"),
        "members.merge": ("合并会员", "Merge members"),
        "members.merge_help": (
            "把同一人的另一个会员账号并入当前会员：订单、身份标识、积分和标签都会转入，原会员号仍可查到本会员。",
            "Fold another account of the same person into this member: orders, identities, points and tags "
            "move here, and the old member number keeps finding this member.",
        ),
        "members.merge_other": ("要并入的会员号或手机号", "Member no. or phone to merge in"),
        "members.merge_preview": ("预览", "Preview"),
        "members.merge_what": (
            "会员 {merged} 将并入当前会员 {survivor}，以下内容将转入，操作不可撤销：",
            "Member {merged} will be merged into this member {survivor}; this moves the following "
            "and cannot be undone:",
        ),
        "members.merge_orders": ("订单", "Orders"),
        "members.merge_identities": ("身份标识", "Identities"),
        "members.merge_points": ("积分余额", "Points balance"),
        "members.merge_debt": ("欠分", "Points debt"),
        "members.merge_tags": ("标签", "Tags"),
        "members.merge_reason": ("合并原因", "Reason for the merge"),
        "members.merge_confirm": ("确认合并", "Merge"),
        "members.merge_need_other": ("请输入会员号或手机号", "Enter a member number or a phone number"),
        "members.merge_need_reason": ("请填写合并原因", "Give a reason for the merge"),
        "members.scope_forbidden": (
            "该会员不属于您的门店，不能在此操作",
            "That member is not a member of your stores",
        ),
    }
)


# --- shared helpers --------------------------------------------------------------------------------


def _stores(session: Session, org_id: int) -> dict[int, Store]:
    return {s.id: s for s in session.scalars(select(Store).where(Store.org_id == org_id))}


def _store_label(stores: dict[int, Store], store_id: int | None) -> str:
    store = stores.get(store_id) if store_id is not None else None
    return f"{store.code} {store.name}" if store else "-"


def _visible_to(user: Principal) -> ColumnElement[bool]:
    """SQL form of ``members.views.in_scope``: registered at or shopping in one of the user's stores."""
    if user.store_ids is None:
        return true()
    shops_here = exists(
        select(MemberStoreStats.member_id).where(
            MemberStoreStats.member_id == Member.id, MemberStoreStats.store_id.in_(user.store_ids)
        )
    )
    return or_(Member.registered_store_id.in_(user.store_ids), shops_here)


def exact_lookup(session: Session, org_id: int, text: str) -> tuple[bool, Member | None]:
    """(is this an exact phone / member-number search, the member it finds)."""
    compact = re.sub(r"[\s\-()]", "", text)
    phone: str | None
    try:
        phone = members.normalize_identity(IdentityKind.PHONE, compact)
    except InvalidIdentity:
        phone = None
    if phone is not None:
        found = members.find_by_identity(session, org_id, IdentityKind.PHONE, phone)
        if found is not None and found.status != MemberStatus.ERASED:
            return True, found
    if compact.isdigit() and len(compact) >= 9:
        try:
            return True, members.by_member_no(session, org_id, compact)
        except MemberNotFound:
            return True, None
    return phone is not None, None


# --- the member list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListParams:
    q: str = ""
    status: str = "active"
    sort: str = "created"
    dir: str = "desc"
    page: int = 1
    store: str = ""
    region: str = ""

    def url(self, path: str = "/console/members", **changes: Any) -> str:
        p = replace(self, **changes)
        defaults = ListParams()
        pairs = {k: v for k, v in vars(p).items() if v not in ("", None) and v != getattr(defaults, k)}
        return f"{path}?{urlencode(pairs)}" if pairs else path


def parse_list_params(
    q: str, status: str, sort: str, direction: str, page: str, store: str | None, region: str | None
) -> ListParams:
    return ListParams(
        q=q.strip()[:60],
        status=status if status in STATUSES else "active",
        sort=sort if sort in SORTS else "created",
        dir=direction if direction in ("asc", "desc") else "desc",
        page=max(1, int(page)) if page.isdigit() else 1,
        store=store or "",
        region=region or "",
    )


@dataclass
class MemberRow:
    member_no: str
    name: str
    phone: str
    store: str
    status: str
    created_at: datetime
    last_purchase_at: datetime | None
    order_count: int
    spend_fen: int
    full: bool


@dataclass
class Found:
    rows: list[MemberRow]
    total: int
    exact: bool


def _rows(
    session: Session, org_id: int, pairs: list[tuple[Member, MemberStats | None]], full: bool
) -> list[MemberRow]:
    stores = _stores(session, org_id)
    phones: dict[int, str] = {}
    ids = [m.id for m, _ in pairs]
    if ids:
        for member_id, masked in session.execute(
            select(MemberIdentity.member_id, MemberIdentity.value_masked)
            .where(MemberIdentity.member_id.in_(ids), MemberIdentity.kind == IdentityKind.PHONE)
            .order_by(MemberIdentity.id)
        ):
            phones.setdefault(member_id, masked)
    return [
        MemberRow(
            member_no=m.member_no,
            name=m.name if full else views.mask_name(m.name),
            phone=phones.get(m.id, ""),
            store=_store_label(stores, m.registered_store_id),
            status=m.status,
            created_at=m.created_at,
            last_purchase_at=st.last_purchase_at if st else None,
            order_count=st.order_count if st else 0,
            spend_fen=st.total_spend_fen if st else 0,
            full=full,
        )
        for m, st in pairs
    ]


def find_members(
    session: Session,
    user: Principal,
    params: ListParams,
    filter_store_ids: frozenset[int] | None,
    *,
    limit: int,
    offset: int,
) -> Found:
    """The rows a list page (or its export) shows, filtered, sorted and paged in SQL."""
    if params.q:
        exact, member = exact_lookup(session, user.org_id, params.q)
        if exact:
            if member is None:
                return Found([], 0, True)
            full = views.in_scope(session, user, member)
            rows = _rows(session, user.org_id, [(member, session.get(MemberStats, member.id))], full)
            return Found(rows, 1, True)
    conditions: list[ColumnElement[bool]] = [Member.org_id == user.org_id, _visible_to(user)]
    if filter_store_ids is not None:
        conditions.append(Member.registered_store_id.in_(filter_store_ids))
    if params.status != "all":
        conditions.append(Member.status == params.status)
    if params.q:
        conditions.append(Member.name.startswith(params.q, autoescape=True))
    column: Any = {
        "created": Member.created_at,
        "name": Member.name,
        "last_purchase": MemberStats.last_purchase_at,
        "spend": func.coalesce(MemberStats.total_spend_fen, 0),
        "orders": func.coalesce(MemberStats.order_count, 0),
    }[params.sort]
    desc = params.dir == "desc"
    order = [
        (column.desc() if desc else column.asc()).nulls_last(),
        Member.id.desc() if desc else Member.id.asc(),
    ]
    total = session.scalar(select(func.count()).select_from(Member).where(*conditions)) or 0
    result = session.execute(
        select(Member, MemberStats)
        .outerjoin(MemberStats, MemberStats.member_id == Member.id)
        .where(*conditions)
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    ).all()
    return Found(_rows(session, user.org_id, [(m, st) for m, st in result], True), int(total), False)


def _list_inputs(
    session: Session,
    user: Principal,
    lang: str,
    q: str,
    status: str,
    sort: str,
    direction: str,
    page: str,
    store: str | None,
    region: str | None,
) -> tuple[ListParams, Any, frozenset[int] | None]:
    params = parse_list_params(q, status, sort, direction, page, store, region)
    choice = choose_scope(session, user, lang, params.store, params.region)
    filtered = bool(choice.store_code or choice.region_code)
    params = replace(params, store=choice.store_code, region=choice.region_code)
    return params, choice, (choice.store_ids if filtered else None)


@router.get("/console/members")
def member_list(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    q: str = "",
    status: str = "active",
    sort: str = "created",
    dir: str = "desc",
    page: str = "1",
    store: str | None = None,
    region: str | None = None,
) -> HTMLResponse:
    """Members in the user's scope: search, filter, sort and page on the server."""
    lang = request.state.lang
    params, choice, filter_ids = _list_inputs(session, user, lang, q, status, sort, dir, page, store, region)
    found = find_members(
        session, user, params, filter_ids, limit=PAGE_SIZE, offset=(params.page - 1) * PAGE_SIZE
    )
    pages = max(1, -(-found.total // PAGE_SIZE))
    keep = {"q": params.q, "status": params.status, "sort": params.sort, "dir": params.dir}
    return render(
        request,
        "console/members/list.html",
        {
            "user": user,
            "section": "members",
            "params": params,
            "found": found,
            "pages": pages,
            "tz": choice.tz,
            "statuses": STATUSES,
            "sorts": SORTS,
            "page_of": translate("members.page_of", lang).format(p=params.page, n=pages),
            "export_url": params.url("/console/members/export", page=1),
            **scope_context(choice, keep),
        },
    )


@router.get("/console/members/export")
def member_export(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    q: str = "",
    status: str = "active",
    sort: str = "created",
    dir: str = "desc",
    store: str | None = None,
    region: str | None = None,
) -> Response:
    """The list's filtered and sorted rows (all pages) as an Excel file; phones stay masked."""
    lang = request.state.lang
    params, choice, filter_ids = _list_inputs(session, user, lang, q, status, sort, dir, "1", store, region)
    found = find_members(session, user, params, filter_ids, limit=EXPORT_LIMIT + 1, offset=0)
    if len(found.rows) > EXPORT_LIMIT:
        raise Invalid(
            translate("members.export_capped", "zh").format(n=EXPORT_LIMIT),
            translate("members.export_capped", "en").format(n=EXPORT_LIMIT),
            code="members.export_too_large",
        )

    def t(key: str) -> str:
        return translate(key, lang)

    zone = ZoneInfo(choice.tz)
    headers = [
        t("members.col.member_no"),
        t("members.col.name"),
        t("members.col.phone"),
        t("members.col.store"),
        t("members.status"),
        t("members.joined"),
        t("members.last_purchase"),
        t("members.orders"),
        t("members.col.spend_yuan"),
    ]
    rows = [
        [
            r.member_no,
            r.name,
            r.phone,
            r.store,
            t(f"members.status.{r.status}"),
            r.created_at.astimezone(zone),
            r.last_purchase_at.astimezone(zone) if r.last_purchase_at else None,
            r.order_count,
            Decimal(r.spend_fen) / 100,
        ]
        for r in found.rows
    ]
    stamp = utcnow().astimezone(zone).strftime("%Y%m%d-%H%M")
    return xlsx_response(f"members-{stamp}.xlsx", headers, rows, sheet="members")


# --- the 360° member page ----------------------------------------------------------------------------


def _may_reveal(session: Session, user: Principal, member: Member) -> bool:
    """Reveal roles only, and (for store and regional staff) only members of their own stores."""
    return user.can_reveal_pii and views.in_scope(session, user, member)


def _require_merge(session: Session, user: Principal, survivor: Member) -> None:
    user.require_role(MERGE_ROLES, "合并会员", "merge members")
    if not views.in_scope(session, user, survivor):
        raise Forbidden(
            translate("members.scope_forbidden", "zh"),
            translate("members.scope_forbidden", "en"),
            code="auth.store_scope",
        )


def _valid_merged_from(session: Session, org_id: int, member: Member, merged_from: str | None) -> str | None:
    if not merged_from or merged_from == member.member_no:
        return None
    old = session.scalar(select(Member).where(Member.org_id == org_id, Member.member_no == merged_from))
    if old is None or old.merged_into_id is None:
        return None
    try:
        return merged_from if members.by_member_no(session, org_id, merged_from).id == member.id else None
    except MemberNotFound:
        return None


def member_context(
    session: Session, user: Principal, member: Member, lang: str, opage: int = 1
) -> dict[str, Any]:
    """Everything the 360° page shows, from indexed lookups and the running member stats."""

    def t(key: str) -> str:
        return translate(key, lang)

    stores = _stores(session, user.org_id)
    full = views.in_scope(session, user, member)
    st = session.get(MemberStats, member.id)
    store_rows = list(
        session.scalars(
            select(MemberStoreStats)
            .where(MemberStoreStats.member_id == member.id)
            .order_by(
                MemberStoreStats.order_count.desc(),
                MemberStoreStats.spend_fen.desc(),
                MemberStoreStats.store_id,
            )
        )
    )
    categories = list(
        session.scalars(
            select(MemberCategoryStats)
            .where(MemberCategoryStats.member_id == member.id)
            .order_by(MemberCategoryStats.spend_fen.desc(), MemberCategoryStats.category)
        )
    )
    order_total = st.order_count if st else 0
    opage = max(1, opage)
    orders = list(
        session.scalars(
            select(Order)
            .where(Order.member_id == member.id)
            .order_by(Order.occurred_at.desc(), Order.id.desc())
            .limit(ORDERS_PAGE_SIZE + 1)
            .offset((opage - 1) * ORDERS_PAGE_SIZE)
        )
    )
    program = points.default_program(session, user.org_id)
    account = session.scalar(
        select(PointAccount).where(PointAccount.member_id == member.id, PointAccount.program_id == program.id)
    )
    entries: list[tuple[PointEntry, str | None]] = []
    lots: list[PointLot] = []
    if account is not None:
        entries = [
            (e, no)
            for e, no in session.execute(
                select(PointEntry, Order.order_no)
                .outerjoin(Order, Order.id == PointEntry.order_id)
                .where(PointEntry.account_id == account.id)
                .order_by(PointEntry.id.desc())
                .limit(LEDGER_ROWS)
            )
        ]
        lots = list(
            session.scalars(
                select(PointLot)
                .where(PointLot.account_id == account.id, PointLot.remaining > 0)
                .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id)
            )
        )
    merged_from = list(
        session.scalars(
            select(Member.member_no)
            .join(MemberMerge, MemberMerge.merged_id == Member.id)
            .where(MemberMerge.survivor_id == member.id)
            .order_by(MemberMerge.id)
        )
    )
    chart_list = []
    if store_rows:
        chart_list.append(
            charts.bar(
                t("members.chart_stores"),
                [stores[r.store_id].name for r in store_rows][:12][::-1],
                [r.spend_fen / 100 for r in store_rows][:12][::-1],
                horizontal=True,
            )
        )
    if categories:
        chart_list.append(
            charts.pie(
                t("members.chart_categories"),
                [(c.category or "-", c.spend_fen / 100) for c in categories[:10]],
            )
        )
    return {
        "user": user,
        "section": "members",
        "member": member,
        "full": full,
        "display_name": member.name if full else views.mask_name(member.name),
        "phone_masked": members.masked_phone(session, member.id),
        "can_reveal": _may_reveal(session, user, member),
        "can_merge": user.role in MERGE_ROLES and full,
        "identities": members.identities_of(session, member.id),
        "tags": list(
            session.scalars(
                select(MemberTag.tag).where(MemberTag.member_id == member.id).order_by(MemberTag.tag)
            )
        ),
        "merged_from_list": merged_from,
        "stores": stores,
        "store_label": lambda sid: _store_label(stores, sid),
        "registered_store": _store_label(stores, member.registered_store_id),
        "home_store": _store_label(stores, store_rows[0].store_id) if store_rows else "-",
        "st": st,
        "store_rows": store_rows,
        "categories": categories,
        "charts": chart_list,
        "orders": orders[:ORDERS_PAGE_SIZE],
        "order_total": order_total,
        "opage": opage,
        "has_more_orders": len(orders) > ORDERS_PAGE_SIZE,
        "account": account,
        "entries": entries,
        "lots": lots,
        "tz": org_tz(session, user),
    }


def _member_page(
    request: Request, session: Session, user: Principal, member: Member, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    opage = request.query_params.get("opage", "1")
    ctx = member_context(session, user, member, request.state.lang, int(opage) if opage.isdigit() else 1)
    return render(request, "console/members/detail.html", {**ctx, **extra}, status_code=status_code)


@router.get("/console/members/{member_no}")
def member_page(
    request: Request, user: ConsoleUser, session: SessionDep, member_no: str, merged_from: str | None = None
) -> Response:
    """The 360° view of one member; a merged member's number opens the survivor."""
    member = members.by_member_no(session, user.org_id, member_no)
    if member.member_no != member_no:
        return RedirectResponse(
            f"/console/members/{member.member_no}?{urlencode({'merged_from': member_no})}", status_code=303
        )
    notice = _valid_merged_from(session, user.org_id, member, merged_from)
    return _member_page(request, session, user, member, merged_notice=notice)


@router.get("/console/members/{member_no}/orders/{order_no}")
def member_order(
    request: Request, user: ConsoleUser, session: SessionDep, member_no: str, order_no: str
) -> HTMLResponse:
    """One of the member's orders (lines, payments, returns): a fragment for htmx, else the whole page."""
    member = members.by_member_no(session, user.org_id, member_no)
    order = order_lookup.order_by_no(session, user.org_id, order_no)
    if order.member_id != member.id:
        raise NotFound(
            "该订单不属于此会员", "That order does not belong to this member", code="orders.not_found"
        )
    detail = order_out(session, order)
    if is_htmx(request):
        return render(request, "console/members/_order.html", {"order": detail, "tz": org_tz(session, user)})
    return _member_page(request, session, user, member, order_detail=detail)


@router.post("/console/members/{member_no}/reveal", dependencies=[Csrf])
def reveal_phone(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    member_no: str,
    reason: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Show the full phone number to a role allowed to see it; the reveal is audited with its reason."""
    member = members.by_member_no(session, user.org_id, member_no)
    if not _may_reveal(session, user, member):
        raise Forbidden(
            translate("members.reveal_forbidden", "zh"),
            translate("members.reveal_forbidden", "en"),
            code="auth.pii_reveal",
        )
    lang = request.state.lang
    reason = reason.strip()[:500]
    fragment = {
        "member": member,
        "phone_masked": members.masked_phone(session, member.id),
        "can_reveal": True,
    }
    if not reason:
        error = translate("members.reveal_need_reason", lang)
        if is_htmx(request):
            return render(request, "console/members/_phone.html", {**fragment, "reveal_error": error})
        return _member_page(request, session, user, member, 422, reveal_error=error)
    value = members.reveal_identity(session, user, member, IdentityKind.PHONE, reason)
    session.commit()
    if is_htmx(request):
        return render(request, "console/members/_phone.html", {**fragment, "revealed": value})
    return _member_page(request, session, user, member, revealed=value)


@router.get("/console/members/{member_no}/merge-preview")
def merge_preview(
    request: Request, user: ConsoleUser, session: SessionDep, member_no: str, other: str = ""
) -> HTMLResponse:
    """What merging another member into this one would move, for the user to confirm."""
    survivor = members.by_member_no(session, user.org_id, member_no)
    lang = request.state.lang
    ctx: dict[str, Any] = {"survivor": survivor}
    try:
        _require_merge(session, user, survivor)
        exact, merged = exact_lookup(session, user.org_id, other.strip())
        if not exact:
            raise Invalid(
                translate("members.merge_need_other", "zh"),
                translate("members.merge_need_other", "en"),
                code="members.merge_invalid",
            )
        if merged is None:
            raise MemberNotFound()
        preview = members.merge_preview(session, survivor, merged)
        stores = _stores(session, user.org_id)
        full = views.in_scope(session, user, merged)
        ctx.update(
            preview=preview,
            merged=merged,
            merged_name=merged.name if full else views.mask_name(merged.name),
            merged_phone=members.masked_phone(session, merged.id),
            merged_store=_store_label(stores, merged.registered_store_id),
            merged_identities=members.identities_of(session, merged.id),
        )
    except DomainError as err:
        if not is_htmx(request):
            raise
        ctx["merge_error"] = page_error_text(err, lang)
    if is_htmx(request):
        return render(request, "console/members/_merge_preview.html", {"merge": ctx})
    return _member_page(request, session, user, survivor, merge=ctx)


@router.post("/console/members/{member_no}/merge", dependencies=[Csrf])
def merge_member(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    member_no: str,
    other: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Merge another member into this one (after the preview); the old number then opens this member."""
    survivor = members.by_member_no(session, user.org_id, member_no)
    _require_merge(session, user, survivor)
    if not other.strip():
        raise Invalid(
            translate("members.merge_need_other", "zh"),
            translate("members.merge_need_other", "en"),
            code="members.merge_invalid",
        )
    merged = members.by_member_no(session, user.org_id, other.strip())
    reason = reason.strip()[:500]
    if not reason:
        raise Invalid(
            translate("members.merge_need_reason", "zh"),
            translate("members.merge_need_reason", "en"),
            code="members.merge_reason",
        )
    members.merge_members(session, user, survivor, merged, reason)
    session.commit()
    target = f"/console/members/{survivor.member_no}?{urlencode({'merged_from': merged.member_no})}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
