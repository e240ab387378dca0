"""Console sections "Stores" (org tree, staff accounts, store terminal API keys) and "Audit log".

What a user sees follows their scope (``Principal.store_ids``): store staff their store, a regional manager
the region's stores, HQ, customer service and auditors every store. What a user may change follows the
same rules as the REST API (org/api.py, auth/api.py); auditors read everything and change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.auth import service as auth_service
from onemember.auth.models import ApiKey
from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.deps import SessionDep
from onemember.errors import DomainError, Forbidden, Invalid, NotFound
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Brand, Region, Staff, Store
from onemember.segments.models import MemberStoreStats
from onemember.web import i18n
from onemember.web.common import ConsoleUser, check_csrf, page_error_text
from onemember.web.console import ScopeChoice, choose_scope, scope_context
from onemember.web.export import xlsx_response
from onemember.web.forms import is_htmx, org_tz
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "org.tree.title": ("门店与组织", "Stores and organisation"),
        "org.tree.stores": ("门店数", "Stores"),
        "org.tree.staff": ("员工数", "Staff"),
        "org.tree.keys": ("有效 API 密钥", "Active API keys"),
        "org.tree.region_managers": ("区域经理", "Regional managers"),
        "org.store.code": ("编号", "Code"),
        "org.store.name": ("门店", "Store"),
        "org.store.city": ("城市", "City"),
        "org.store.address": ("地址", "Address"),
        "org.store.brand": ("品牌", "Brand"),
        "org.store.region": ("区域", "Region"),
        "org.store.inactive": ("已停用", "Inactive"),
        "org.staff.title": ("员工账号", "Staff accounts"),
        "org.staff.org_title": ("总部与区域员工", "HQ and regional staff"),
        "org.staff.username": ("用户名", "Username"),
        "org.staff.display_name": ("姓名", "Name"),
        "org.staff.password": ("初始密码", "Initial password"),
        "org.staff.role": ("角色", "Role"),
        "org.staff.region": ("区域", "Region"),
        "org.staff.status": ("状态", "Status"),
        "org.staff.active": ("在职", "Active"),
        "org.staff.inactive": ("已停用", "Disabled"),
        "org.staff.created_at": ("创建时间", "Created"),
        "org.staff.search": ("用户名或姓名", "Username or name"),
        "org.staff.create": ("新建员工", "New staff account"),
        "org.staff.created": ("已创建员工账号", "Staff account created"),
        "org.key.title": ("门店终端 API 密钥", "Store terminal API keys"),
        "org.key.prefix": ("前缀", "Prefix"),
        "org.key.name": ("名称", "Name"),
        "org.key.created_by": ("创建人", "Created by"),
        "org.key.created_at": ("创建时间", "Created"),
        "org.key.last_used": ("最近使用", "Last used"),
        "org.key.status": ("状态", "Status"),
        "org.key.active": ("有效", "Active"),
        "org.key.revoked": ("已吊销", "Revoked"),
        "org.key.revoke": ("吊销", "Revoke"),
        "org.key.revoked_at": ("吊销时间", "Revoked at"),
        "org.key.revoke_confirm": (
            "吊销后使用该密钥的终端将立即无法访问，确定吊销？",
            "Terminals using this key lose access at once. Revoke it?",
        ),
        "org.key.revoked_notice": ("已吊销密钥", "Revoked key"),
        "org.key.create": ("新建 API 密钥", "New API key"),
        "org.key.name_hint": ("如：1 号收银台", "e.g. till 1"),
        "org.key.secret_title": ("新密钥已创建", "New key created"),
        "org.key.secret_note": (
            "请立即复制并妥善保存，此密钥只显示这一次，刷新或离开页面后将无法再次查看。",
            "Copy it now and keep it safe: it will not be shown again once you reload or leave this page.",
        ),
        "org.filter.status": ("状态", "Status"),
        "org.filter.sort": ("排序", "Sort"),
        "org.sort.newest": ("最新在前", "Newest first"),
        "org.sort.oldest": ("最早在前", "Oldest first"),
        "org.sort.name": ("按名称", "By name"),
        "org.readonly": ("只读：您的角色可以查看但不能修改", "Read only: your role may look but not change"),
        "org.role.hq_admin": ("总部管理员", "HQ admin"),
        "org.role.regional_manager": ("区域经理", "Regional manager"),
        "org.role.store_manager": ("店长", "Store manager"),
        "org.role.clerk": ("店员", "Clerk"),
        "org.role.cs_agent": ("客服", "CS agent"),
        "org.role.auditor": ("审计员", "Auditor"),
        "org.page": ("第 {n} 页", "Page {n}"),
        "audit.title": ("审计日志", "Audit log"),
        "audit.at": ("时间", "Time"),
        "audit.actor": ("操作人", "Who"),
        "audit.actor_role": ("角色", "Role"),
        "audit.action": ("操作", "Action"),
        "audit.target": ("对象", "Target"),
        "audit.target_type": ("对象类型", "Target type"),
        "audit.target_id": ("对象编号", "Target id"),
        "audit.member": ("会员号", "Member no."),
        "audit.store": ("门店", "Store"),
        "audit.ip": ("IP", "IP"),
        "audit.reason": ("原因", "Reason"),
        "audit.details": ("详情", "Details"),
        "audit.date_from": ("开始日期", "From"),
        "audit.date_to": ("结束日期", "To"),
        "audit.sort.action": ("按操作", "By action"),
        "audit.bad_date": ("日期格式应为 YYYY-MM-DD，已忽略", "Dates look like YYYY-MM-DD; ignored"),
        "audit.no_member": ("找不到该会员号", "No member with that number"),
        "audit.tz_note": ("时区", "Time zone"),
        "audit.reset": ("重置", "Reset"),
        "audit.scope_note": ("仅显示您门店范围内的记录", "Only entries within your stores are shown"),
    }
)

STAFF_PAGE = 20
KEYS_PAGE = 20
AUDIT_PAGE = 50
EXPORT_LIMIT = 10_000

KEY_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER})
STORE_STAFF_ROLES = (Role.CLERK, Role.STORE_MANAGER)
ORG_STAFF_ROLES = (Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.CS_AGENT, Role.AUDITOR)
SHOW_SECRET_HEADERS = {"Cache-Control": "no-store"}
# Let htmx swap 4xx answers too: forms come back with the domain error's message in place.
HTMX_CONFIG = json.dumps(
    {
        "defaultSettleDelay": 0,  # as in base.html: autofocus in the same tick as the swap
        "responseHandling": [
            {"code": "204", "swap": False},
            {"code": "[23]..", "swap": True},
            {"code": "4..", "swap": True, "error": True},
            {"code": "...", "swap": False, "error": True},
        ],
    }
)

Sorts = dict[str, Sequence[InstrumentedAttribute[Any]]]
STAFF_SORTS: Sorts = {
    "username": (Staff.username,),
    "role": (Staff.role, Staff.username),
    "created": (Staff.created_at, Staff.id),
}
KEY_SORTS: Sorts = {"created": (ApiKey.created_at, ApiKey.id), "name": (ApiKey.name, ApiKey.id)}
AUDIT_SORTS: Sorts = {"at": (AuditLog.at, AuditLog.id), "action": (AuditLog.action, AuditLog.at, AuditLog.id)}

STAFF_PARAMS = ("q", "role", "sort", "page")
KEY_PARAMS = ("kstatus", "ksort", "kpage")
SCOPE_PARAMS = ("region", "store")
AUDIT_COLUMNS = "at actor actor_role action target_type target_id member store ip reason details".split()
AUDIT_PARAMS = ("actor", "action", "member", "store", "region", "date_from", "date_to", "sort", "page")


# --- list plumbing -------------------------------------------------------------------------------------


def read_params(request: Request, names: Sequence[str]) -> dict[str, str]:
    """The page's list parameters that are set, trimmed."""
    found = {name: request.query_params.get(name, "").strip() for name in names}
    return {k: v for k, v in found.items() if v}


def page_number(value: str | None) -> int:
    try:
        return max(1, min(int(value or "1"), 100_000))
    except ValueError:
        return 1


def ordering(sort: str, sorts: Sorts, default: str) -> tuple[str, list[Any]]:
    """``sort`` is a key of ``sorts``, "-" in front for descending; unknown keys fall back to the default."""
    if sort.removeprefix("-") not in sorts:
        sort = default
    columns = sorts[sort.removeprefix("-")]
    desc = sort.startswith("-")
    return sort, [c.desc() if desc else c.asc() for c in columns]


def linker(path: str, params: dict[str, str]) -> Callable[..., str]:
    """``link(sort="-at", page=None)``: this page's URL with some parameters changed (None drops one)."""

    def link(**changes: Any) -> str:
        merged = dict(params)
        for key, value in changes.items():
            if value is None or value == "":
                merged.pop(key, None)
            else:
                merged[key] = str(value)
        return f"{path}?{urlencode(merged)}" if merged else path

    return link


@dataclass
class Paged:
    rows: list[Any]
    page: int
    size: int
    has_next: bool
    param: str = "page"

    @property
    def first(self) -> int:
        return (self.page - 1) * self.size + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return (self.page - 1) * self.size + len(self.rows)


def fetch_page(session: Session, stmt: Select[Any], page: int, size: int, param: str = "page") -> Paged:
    """One page of rows without counting the whole result: ask for one row more to know if there is a next."""
    rows = list(session.scalars(stmt.limit(size + 1).offset((page - 1) * size)))
    return Paged(rows[:size], page, size, len(rows) > size, param)


def texts(lang: str) -> Callable[[str], str]:
    def t(key: str) -> str:
        return i18n.translate(key, lang)

    return t


def role_label(role: str, lang: str) -> str:
    return i18n.translate(f"org.role.{role}", lang)


# --- staff lists ---------------------------------------------------------------------------------------


@dataclass
class StaffRow:
    username: str
    display_name: str
    role: str
    region: str
    active: bool
    created_at: datetime


def staff_query(org_id: int, store_id: int | None, params: dict[str, str]) -> tuple[Select[Any], str]:
    """Staff of one store, or (``store_id`` None) the staff without a store: HQ, CS, auditors, regions."""
    stmt = select(Staff).where(Staff.org_id == org_id)
    stmt = stmt.where(Staff.store_id == store_id if store_id is not None else Staff.store_id.is_(None))
    q = params.get("q", "")
    if q:
        stmt = stmt.where(
            or_(Staff.username.contains(q, autoescape=True), Staff.display_name.contains(q, autoescape=True))
        )
    if params.get("role") in set(Role):
        stmt = stmt.where(Staff.role == params["role"])
    sort, order = ordering(params.get("sort", ""), STAFF_SORTS, "username")
    return stmt.order_by(*order), sort


def staff_rows(session: Session, staff: Sequence[Staff]) -> list[StaffRow]:
    region_ids = {s.region_id for s in staff if s.region_id}
    regions = (
        {r.id: r.name for r in session.scalars(select(Region).where(Region.id.in_(region_ids)))}
        if region_ids
        else {}
    )
    return [
        StaffRow(
            s.username,
            s.display_name,
            s.role,
            regions.get(s.region_id, "") if s.region_id else "",
            s.active,
            s.created_at,
        )
        for s in staff
    ]


def store_staff_roles(user: Principal, store: Store) -> tuple[Role, ...]:
    """The roles this user may create at this store (the rules of org/api.py create_staff)."""
    if user.role == Role.HQ_ADMIN:
        return STORE_STAFF_ROLES
    if user.role == Role.STORE_MANAGER and user.store_id == store.id:
        return (Role.CLERK,)
    return ()


def org_staff_roles(user: Principal) -> tuple[Role, ...]:
    return ORG_STAFF_ROLES if user.role == Role.HQ_ADMIN else ()


@dataclass
class StaffSection:
    """What ``_staff.html`` draws: a paged list and, when allowed, the create form."""

    title_key: str
    listing: Paged
    rows: list[StaffRow]
    sort: str
    roles: tuple[Role, ...]
    filter_roles: tuple[Role, ...]
    post_url: str
    export_url: str
    show_region: bool = False
    regions: list[Region] = field(default_factory=list)
    notice: str = ""
    error: str = ""
    form: dict[str, str] = field(default_factory=dict)


def staff_section(
    session: Session,
    user: Principal,
    store: Store | None,
    params: dict[str, str],
    export_url: str,
) -> StaffSection:
    stmt, sort = staff_query(user.org_id, store.id if store else None, params)
    listing = fetch_page(session, stmt, page_number(params.get("page")), STAFF_PAGE)
    rows = staff_rows(session, listing.rows)
    if store is not None:
        return StaffSection(
            "org.staff.title",
            listing,
            rows,
            sort,
            store_staff_roles(user, store),
            STORE_STAFF_ROLES,
            f"/console/stores/{store.code}/staff",
            export_url,
        )
    regions = list(session.scalars(select(Region).where(Region.org_id == user.org_id).order_by(Region.code)))
    return StaffSection(
        "org.staff.org_title",
        listing,
        rows,
        sort,
        org_staff_roles(user),
        ORG_STAFF_ROLES,
        "/console/staff",
        export_url,
        show_region=True,
        regions=regions,
    )


def staff_xlsx(
    session: Session, user: Principal, store: Store | None, params: dict[str, str], lang: str
) -> Response:
    """The staff list as Excel: every row of the page's filter, in the page's order."""
    stmt, _ = staff_query(user.org_id, store.id if store else None, params)
    rows = staff_rows(session, list(session.scalars(stmt.limit(EXPORT_LIMIT))))
    t, tz = texts(lang), ZoneInfo(org_tz(session, user))
    headers = [
        t(f"org.staff.{k}") for k in ("username", "display_name", "role", "region", "status", "created_at")
    ]
    data = [
        (
            r.username,
            r.display_name,
            role_label(r.role, lang),
            r.region,
            t("org.staff.active") if r.active else t("org.staff.inactive"),
            r.created_at.astimezone(tz),
        )
        for r in rows
    ]
    return xlsx_response(f"staff-{store.code if store else 'hq'}.xlsx", headers, data, sheet="staff")


def allowed_role(role: str, allowed: tuple[Role, ...]) -> Role:
    """The role asked for, if this user may create it (the form only offers those)."""
    chosen = next((r for r in allowed if r == role), None)
    if chosen is None:
        raise Forbidden(
            "您的角色无权创建该员工账号", "Your role may not create that staff account", code="auth.role"
        )
    return chosen


def check_credentials(username: str, password: str) -> str:
    """The checks of the API's StaffIn model; returns the trimmed username."""
    username = username.strip()
    if not 2 <= len(username) <= 80:
        raise Invalid("用户名需 2 到 80 个字符", "A username has 2 to 80 characters", code="org.bad_username")
    if not 8 <= len(password) <= 200:
        raise Invalid(
            "密码至少 8 位", "The password needs at least 8 characters", code="org.password_too_short"
        )
    return username


def add_staff_account(
    session: Session,
    user: Principal,
    lang: str,
    form: dict[str, str],
    role: Role,
    *,
    store_id: int | None = None,
    region_id: int | None = None,
) -> tuple[str, str, int]:
    """Creates and audits (as the API does) a staff account; returns (username, error text, HTTP status)."""
    try:
        username = check_credentials(form["username"], form["password"])
        staff = org_service.add_staff(
            session,
            user.org_id,
            username,
            form["password"],
            role,
            display_name=form["display_name"].strip(),
            store_id=store_id,
            region_id=region_id,
        )
        audit.record(
            session,
            user,
            "staff.created",
            target_type="staff",
            target_id=staff.username,
            store_id=staff.store_id,
            details={"role": staff.role},
        )
        session.commit()
    except DomainError as err:
        session.rollback()
        return "", page_error_text(err, lang), err.status
    return staff.username, "", 200


def staff_answer(
    request: Request, context: dict[str, Any], page: str, outcome: tuple[str, str, int], form: dict[str, str]
) -> HTMLResponse:
    """htmx gets the staff section back, a plain form post the whole page; both carry notice or error."""
    section: StaffSection = context["staff"]
    section.notice, section.error, status = outcome
    if section.error:
        section.form = {k: v for k, v in form.items() if k != "password"}
    return render(
        request, "console/org/_staff.html" if is_htmx(request) else page, context, status_code=status
    )


# --- API keys ------------------------------------------------------------------------------------------


def keys_query(store: Store, params: dict[str, str]) -> tuple[Select[Any], str]:
    stmt = select(ApiKey).where(ApiKey.org_id == store.org_id, ApiKey.store_id == store.id)
    status = params.get("kstatus", "")
    if status == "active":
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    elif status == "revoked":
        stmt = stmt.where(ApiKey.revoked_at.is_not(None))
    sort, order = ordering(params.get("ksort", ""), KEY_SORTS, "-created")
    return stmt.order_by(*order), sort


def can_manage_keys(user: Principal, store: Store) -> bool:
    return user.kind == "staff" and user.role in KEY_ROLES and user.can_access_store(store.id)


def require_key_manager(user: Principal, store: Store) -> None:
    user.require_store(store.id)
    if not can_manage_keys(user, store):
        raise Forbidden("您的角色无权管理 API 密钥", "Your role may not manage API keys", code="auth.role")


# --- the tree ------------------------------------------------------------------------------------------


@dataclass
class StoreNode:
    store: Store
    staff: int
    keys: int


@dataclass
class RegionNode:
    region: Region
    managers: int
    stores: list[StoreNode]


@dataclass
class BrandNode:
    brand: Brand
    regions: list[RegionNode]


def count_by(
    session: Session, column: InstrumentedAttribute[Any], *where: ColumnElement[bool]
) -> dict[int, int]:
    query = select(column, func.count()).where(*where).group_by(column)
    return {int(key): int(n) for key, n in session.execute(query) if key is not None}


def org_tree(session: Session, org_id: int, stores: list[Store]) -> list[BrandNode]:
    """Brands → regions → the given stores, with active staff and active API key counts per store."""
    ids = [s.id for s in stores]
    staff_counts = count_by(
        session, Staff.store_id, Staff.org_id == org_id, Staff.store_id.in_(ids), Staff.active.is_(True)
    )
    key_counts = count_by(
        session,
        ApiKey.store_id,
        ApiKey.org_id == org_id,
        ApiKey.store_id.in_(ids),
        ApiKey.revoked_at.is_(None),
    )
    managers = count_by(
        session,
        Staff.region_id,
        Staff.org_id == org_id,
        Staff.region_id.in_({s.region_id for s in stores}),
        Staff.role == Role.REGIONAL_MANAGER,
        Staff.active.is_(True),
    )
    regions = session.scalars(select(Region).where(Region.org_id == org_id).order_by(Region.code)).all()
    brands = session.scalars(select(Brand).where(Brand.org_id == org_id).order_by(Brand.code)).all()
    tree: list[BrandNode] = []
    for brand in brands:
        nodes = []
        for region in regions:
            if region.brand_id != brand.id:
                continue
            in_region = [
                StoreNode(s, staff_counts.get(s.id, 0), key_counts.get(s.id, 0))
                for s in stores
                if s.region_id == region.id
            ]
            if in_region:
                nodes.append(RegionNode(region, managers.get(region.id, 0), in_region))
        if nodes:
            tree.append(BrandNode(brand, nodes))
    return tree


def tree_context(session: Session, user: Principal, lang: str, params: dict[str, str]) -> dict[str, Any]:
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    shown = [s for s in choice.stores if choice.store_ids is None or s.id in choice.store_ids]
    tree = org_tree(session, user.org_id, shown)
    nodes = [n for b in tree for r in b.regions for n in r.stores]
    context: dict[str, Any] = {
        "user": user,
        "section": "stores",
        "tree": tree,
        "totals": {
            "stores": len(nodes),
            "staff": sum(n.staff for n in nodes),
            "keys": sum(n.keys for n in nodes),
        },
        "tz": choice.tz,
        "htmx_config": HTMX_CONFIG,
        "link": linker("/console/stores", params),
        "page_path": "/console/stores",
        "params": params,
        **scope_context(choice, {k: v for k, v in params.items() if k not in SCOPE_PARAMS}),
    }
    if user.store_ids is None:
        export = linker("/console/staff.xlsx", {k: v for k, v in params.items() if k in STAFF_PARAMS})
        context["staff"] = staff_section(session, user, None, params, export(page=None))
    return context


# --- store pages ---------------------------------------------------------------------------------------


def store_context(session: Session, user: Principal, store: Store, params: dict[str, str]) -> dict[str, Any]:
    region = session.get(Region, store.region_id)
    brand = session.get(Brand, store.brand_id)
    org = org_service.get_org(session, user.org_id)
    path = f"/console/stores/{store.code}"
    staff_export_link = linker(f"{path}/staff.xlsx", {k: v for k, v in params.items() if k in STAFF_PARAMS})
    keys_export_link = linker(f"{path}/api-keys.xlsx", {k: v for k, v in params.items() if k in KEY_PARAMS})
    stmt, key_sort = keys_query(store, params)
    keys = fetch_page(session, stmt, page_number(params.get("kpage")), KEYS_PAGE, "kpage")
    return {
        "user": user,
        "section": "stores",
        "store": store,
        "region": region,
        "brand": brand,
        "tz": org.timezone,
        "htmx_config": HTMX_CONFIG,
        "params": params,
        "link": linker(path, params),
        "page_path": path,
        "staff": staff_section(session, user, store, params, staff_export_link(page=None)),
        "keys": keys,
        "key_sort": key_sort,
        "keys_export": keys_export_link(kpage=None),
        "can_manage_keys": can_manage_keys(user, store),
        "readonly": not can_manage_keys(user, store) and not store_staff_roles(user, store),
    }


def visible_store(session: Session, user: Principal, code: str) -> Store:
    store = org_service.store_by_code(session, user.org_id, code)
    user.require_store(store.id)
    return store


@router.get("/console/stores")
def stores_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The org → brand → region → store tree within the user's scope."""
    params = read_params(request, (*SCOPE_PARAMS, *STAFF_PARAMS))
    context = tree_context(session, user, request.state.lang, params)
    return render(request, "console/org/stores.html", context)


@router.get("/console/staff.xlsx")
def org_staff_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """HQ and regional staff (accounts without a store) as Excel, filtered and sorted like the page."""
    if user.store_ids is not None:
        raise Forbidden("无权查看总部员工", "You may not see HQ staff", code="auth.store_scope")
    return staff_xlsx(session, user, None, read_params(request, STAFF_PARAMS), request.state.lang)


@router.post("/console/staff", dependencies=[Depends(check_csrf)])
def create_org_staff(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    region: Annotated[str, Form()] = "",
) -> Response:
    """HQ creates an HQ admin, regional manager, CS agent or auditor account."""
    chosen = allowed_role(role, org_staff_roles(user))
    form = {"username": username, "password": password, "display_name": display_name, "role": role}
    region_row = (
        session.scalar(select(Region).where(Region.org_id == user.org_id, Region.code == region))
        if chosen == Role.REGIONAL_MANAGER
        else None
    )
    region_id = region_row.id if region_row else None
    outcome = add_staff_account(session, user, request.state.lang, form, chosen, region_id=region_id)
    context = tree_context(session, user, request.state.lang, {})
    return staff_answer(request, context, "console/org/stores.html", outcome, {**form, "region": region})


@router.get("/console/stores/{code}")
def store_page(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """One store: its staff accounts and its terminal API keys."""
    store = visible_store(session, user, code)
    params = read_params(request, (*STAFF_PARAMS, *KEY_PARAMS))
    return render(request, "console/org/store.html", store_context(session, user, store, params))


@router.get("/console/stores/{code}/staff.xlsx")
def store_staff_xlsx(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The store's staff list as Excel, filtered and sorted like the page."""
    store = visible_store(session, user, code)
    return staff_xlsx(session, user, store, read_params(request, STAFF_PARAMS), request.state.lang)


@router.get("/console/stores/{code}/api-keys.xlsx")
def store_keys_xlsx(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The store's API keys (never their secrets) as Excel, filtered and sorted like the page."""
    store = visible_store(session, user, code)
    lang = request.state.lang
    t = texts(lang)
    stmt, _ = keys_query(store, read_params(request, KEY_PARAMS))
    headers = [
        t("org.key.prefix"),
        t("org.key.name"),
        t("org.key.created_by"),
        t("org.key.created_at"),
        t("org.key.last_used"),
        t("org.key.status"),
        t("org.key.revoked_at"),
    ]
    tz = ZoneInfo(org_tz(session, user))
    rows = [
        (
            k.prefix,
            k.name,
            k.created_by,
            k.created_at.astimezone(tz),
            k.last_used_at.astimezone(tz) if k.last_used_at else None,
            t("org.key.revoked") if k.revoked_at else t("org.key.active"),
            k.revoked_at.astimezone(tz) if k.revoked_at else None,
        )
        for k in session.scalars(stmt.limit(EXPORT_LIMIT))
    ]
    return xlsx_response(f"api-keys-{store.code}.xlsx", headers, rows, sheet="api keys")


@router.post("/console/stores/{code}/staff", dependencies=[Depends(check_csrf)])
def create_store_staff(
    code: str,
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
) -> Response:
    """HQ creates a clerk or store manager here; a store manager creates clerks of their own store."""
    store = visible_store(session, user, code)
    chosen = allowed_role(role, store_staff_roles(user, store))
    form = {"username": username, "password": password, "display_name": display_name, "role": role}
    outcome = add_staff_account(session, user, request.state.lang, form, chosen, store_id=store.id)
    context = store_context(session, user, store, {})
    return staff_answer(request, context, "console/org/store.html", outcome, form)


@router.post("/console/stores/{code}/api-keys", dependencies=[Depends(check_csrf)])
def create_store_key(
    code: str,
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """Create a terminal API key; its secret is in this answer only."""
    lang = request.state.lang
    store = visible_store(session, user, code)
    require_key_manager(user, store)
    secret, error, status = "", "", 200
    try:
        label = name.strip()
        if not 1 <= len(label) <= 120:
            raise Invalid(
                "请填写 1 到 120 个字符的名称", "Give a name of 1 to 120 characters", code="auth.api_key_name"
            )
        secret, _ = auth_service.create_api_key(session, user, store, label)
        session.commit()
    except DomainError as err:
        session.rollback()
        error, status = page_error_text(err, lang), err.status
    context = store_context(session, user, store, {})
    context.update(new_secret=secret, key_error=error, key_form_name=name if error else "")
    template = "console/org/_apikeys.html" if is_htmx(request) else "console/org/store.html"
    response = render(request, template, context, status_code=status)
    response.headers.update(SHOW_SECRET_HEADERS)
    return response


@router.post("/console/stores/{code}/api-keys/{prefix}/revoke", dependencies=[Depends(check_csrf)])
def revoke_store_key(
    code: str, prefix: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """Revoke a terminal API key at once."""
    store = visible_store(session, user, code)
    require_key_manager(user, store)
    key = session.scalar(select(ApiKey).where(ApiKey.org_id == user.org_id, ApiKey.prefix == prefix))
    if key is None or key.store_id != store.id:
        raise NotFound("找不到该 API 密钥", "API key not found", code="auth.api_key_not_found")
    auth_service.revoke_api_key(session, user, prefix)
    session.commit()
    context = store_context(session, user, store, {})
    context["revoked_prefix"] = prefix
    template = "console/org/_apikeys.html" if is_htmx(request) else "console/org/store.html"
    return render(request, template, context)


# --- the audit log -------------------------------------------------------------------------------------


@dataclass
class AuditRow:
    at: datetime
    actor: str
    actor_role: str
    action: str
    target_type: str
    target_id: str
    member_no: str
    store_code: str
    ip: str
    reason: str
    details: str


def in_user_scope(user: Principal) -> ColumnElement[bool] | None:
    """Store-scoped users see entries at their stores and entries about members in their scope
    (registered at or shopping in one of their stores, as members/views.in_scope decides)."""
    if user.store_ids is None:
        return None
    ids = sorted(user.store_ids)
    registered = select(Member.id).where(Member.org_id == user.org_id, Member.registered_store_id.in_(ids))
    shopped = select(MemberStoreStats.member_id).where(
        MemberStoreStats.org_id == user.org_id, MemberStoreStats.store_id.in_(ids)
    )
    return or_(
        AuditLog.store_id.in_(ids), AuditLog.member_id.in_(registered), AuditLog.member_id.in_(shopped)
    )


def local_day_start(value: str, tz: str) -> datetime | None:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return datetime.combine(day, time(0), ZoneInfo(tz)).astimezone(UTC)


@dataclass
class AuditQuery:
    stmt: Select[Any] | None  # None: nothing can match (an unknown member number)
    sort: str
    warnings: list[str]


def audit_query(session: Session, user: Principal, choice: ScopeChoice, params: dict[str, str]) -> AuditQuery:
    stmt = select(AuditLog).where(AuditLog.org_id == user.org_id)
    warnings: list[str] = []  # i18n keys
    scope = in_user_scope(user)
    if scope is not None:
        stmt = stmt.where(scope)
    if (choice.store_code or choice.region_code) and choice.store_ids is not None:
        stmt = stmt.where(AuditLog.store_id.in_(sorted(choice.store_ids)))
    if params.get("actor"):
        stmt = stmt.where(AuditLog.actor.contains(params["actor"], autoescape=True))
    if params.get("action"):
        stmt = stmt.where(AuditLog.action == params["action"])
    sort, order = ordering(params.get("sort", ""), AUDIT_SORTS, "-at")
    if params.get("member"):
        member_id = session.scalar(
            select(Member.id).where(Member.org_id == user.org_id, Member.member_no == params["member"])
        )
        if member_id is None:
            return AuditQuery(None, sort, ["audit.no_member"])
        stmt = stmt.where(AuditLog.member_id == member_id)
    for key in ("date_from", "date_to"):
        bound = local_day_start(params[key], choice.tz) if key in params else None
        if key in params and bound is None:
            warnings.append("audit.bad_date")
        elif bound is not None and key == "date_from":
            stmt = stmt.where(AuditLog.at >= bound)
        elif bound is not None:
            stmt = stmt.where(AuditLog.at < bound + timedelta(days=1))
    return AuditQuery(stmt.order_by(*order), sort, warnings)


def audit_rows(session: Session, user: Principal, entries: Sequence[AuditLog]) -> list[AuditRow]:
    member_ids = {e.member_id for e in entries if e.member_id}
    found = select(Member.id, Member.member_no).where(Member.id.in_(member_ids))
    numbers = {int(mid): str(no) for mid, no in session.execute(found)} if member_ids else {}
    codes = {
        int(sid): str(code)
        for sid, code in session.execute(select(Store.id, Store.code).where(Store.org_id == user.org_id))
    }
    return [
        AuditRow(
            at=e.at,
            actor=e.actor,
            actor_role=e.actor_role,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            member_no=numbers.get(e.member_id, "") if e.member_id else "",
            store_code=codes.get(e.store_id, "") if e.store_id else "",
            ip=e.ip,
            reason=e.reason,
            details=json.dumps(e.details, ensure_ascii=False, sort_keys=True) if e.details else "",
        )
        for e in entries
    ]


def audit_actions(session: Session, org_id: int) -> list[str]:
    return list(
        session.scalars(
            select(AuditLog.action).where(AuditLog.org_id == org_id).distinct().order_by(AuditLog.action)
        )
    )


@router.get("/console/audit")
def audit_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The audit log: who did what, to which member, at which store, when."""
    lang = request.state.lang
    params = read_params(request, AUDIT_PARAMS)
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    query = audit_query(session, user, choice, params)
    page = page_number(params.get("page"))
    listing = (
        fetch_page(session, query.stmt, page, AUDIT_PAGE)
        if query.stmt is not None
        else Paged([], 1, 0, False)
    )
    export = linker("/console/audit.xlsx", params)
    return render(
        request,
        "console/org/audit.html",
        {
            "user": user,
            "section": "audit",
            "params": params,
            "link": linker("/console/audit", params),
            "page_path": "/console/audit",
            "export_url": export(page=None),
            "listing": listing,
            "rows": audit_rows(session, user, listing.rows),
            "sort": query.sort,
            "warnings": query.warnings,
            "actions": audit_actions(session, user.org_id),
            "tz": choice.tz,
            **scope_context(choice),
        },
    )


@router.get("/console/audit.xlsx")
def audit_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The filtered audit log as Excel (the same rows the page lists, every page of them)."""
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, AUDIT_PARAMS)
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    query = audit_query(session, user, choice, params)
    entries = list(session.scalars(query.stmt.limit(EXPORT_LIMIT))) if query.stmt is not None else []
    headers = [t(f"audit.{key}") for key in AUDIT_COLUMNS]
    tz = ZoneInfo(choice.tz)
    rows = [
        (
            r.at.astimezone(tz),
            r.actor,
            role_label(r.actor_role, lang) if r.actor_role else "",
            r.action,
            r.target_type,
            r.target_id,
            r.member_no,
            r.store_code,
            r.ip,
            r.reason,
            r.details,
        )
        for r in audit_rows(session, user, entries)
    ]
    return xlsx_response("audit-log.xlsx", headers, rows, sheet="audit")
