"""Console pages of the points mall (积分商城), a tab of the points section: the rewards with their stock
and a chart of the last 30 days' redemptions, HQ's reward form, stock and shelf controls, and the
redemptions list where store staff hand over gifts (fulfil) or cancel pending redemptions.

Every change goes through ``points.mall`` exactly as the JSON API (points/admin_api.py) does, so roles,
store scope, validation, audit and settlement are the same: HQ manages rewards and stock; till roles and
customer service fulfil or cancel redemptions of the stores in their scope (those made without a store
belong to HQ); everyone else reads. Lists show only the stores in the viewer's scope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.coupons.models import CouponTemplate
from onemember.coupons.service import templates as coupon_templates
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import mall
from onemember.points.admin_api import RewardIn
from onemember.points.models import Reward, RewardRedemption, RewardStock
from onemember.web import charts, i18n
from onemember.web.common import ConsoleUser, Csrf, page_error_text
from onemember.web.console_org import fetch_page, linker, page_number, read_params, texts
from onemember.web.console_points import base_context, domain_errors, int_or_none
from onemember.web.export import xlsx_response
from onemember.web.forms import (
    FormErrors,
    PostedForm,
    done,
    error_text,
    label_sep,
    org_tz,
    writable_stores,
    yuan_to_fen,
)
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "mallc.title": ("积分商城", "Points mall"),
        "mallc.sub.rewards": ("礼品", "Rewards"),
        "mallc.sub.redemptions": ("兑换记录", "Redemptions"),
        "mallc.readonly": (
            "只读：只有总部管理员可以设置礼品和库存",
            "Read only: only HQ admins set up rewards and stock",
        ),
        "mallc.chart": ("近 30 天各礼品兑换量", "Redemptions per reward, last 30 days"),
        "mallc.chart_none": ("近 30 天没有兑换", "No redemptions in the last 30 days"),
        "mallc.rewards": ("礼品列表", "Rewards"),
        "mallc.col.code": ("编码", "Code"),
        "mallc.col.name": ("名称", "Name"),
        "mallc.col.kind": ("类型", "Kind"),
        "mallc.col.points": ("所需积分", "Points"),
        "mallc.col.cash": ("现金部分", "Cash part"),
        "mallc.col.limit": ("每人限兑", "Limit per member"),
        "mallc.col.stock_mode": ("库存方式", "Stock"),
        "mallc.col.stock": ("库存", "On hand"),
        "mallc.col.active": ("状态", "Status"),
        "mallc.col.template": ("券模板", "Coupon template"),
        "mallc.col.id": ("编号", "No."),
        "mallc.col.at": ("兑换时间", "Redeemed at"),
        "mallc.col.member": ("会员号", "Member no."),
        "mallc.col.reward": ("礼品", "Reward"),
        "mallc.col.store": ("门店", "Store"),
        "mallc.col.status": ("状态", "Status"),
        "mallc.col.handled": ("处理", "Handled"),
        "mallc.col.actor": ("兑换操作人", "Redeemed by"),
        "mallc.no_limit": ("不限", "No limit"),
        "mallc.active": ("上架中", "On the shelf"),
        "mallc.inactive": ("已下架", "Withdrawn"),
        "mallc.withdraw": ("下架", "Take off the shelf"),
        "mallc.list": ("上架", "Put on the shelf"),
        "mallc.withdraw_confirm": (
            "下架后会员不能再兑换该礼品，已有兑换不受影响。确定下架？",
            "Members can no longer redeem it; past redemptions stay. Take it off the shelf?",
        ),
        "mallc.kind.gift": ("实物礼品", "Gift"),
        "mallc.kind.coupon": ("优惠券", "Coupon"),
        "mallc.kind.service": ("服务", "Service"),
        "mallc.kind.points_cash": ("积分+现金", "Points + cash"),
        "mallc.mode.central": ("总部集中库存", "Central"),
        "mallc.mode.store": ("按门店库存", "Per store"),
        "mallc.mode.none": ("不限库存", "Unlimited"),
        "mallc.hq": ("总部", "HQ"),
        "mallc.set_stock": ("设置库存", "Set stock"),
        "mallc.quantity": ("数量", "Quantity"),
        "mallc.create": ("新建礼品", "New reward"),
        "mallc.f.code": ("礼品编码", "Code"),
        "mallc.f.name": ("礼品名称", "Name"),
        "mallc.f.kind": ("礼品类型", "Kind"),
        "mallc.f.points_cost": ("所需积分", "Points cost"),
        "mallc.f.cash": ("现金部分（元）", "Cash part (yuan)"),
        "mallc.f.per_member_limit": ("每人限兑（次）", "Limit per member"),
        "mallc.f.stock_mode": ("库存方式", "Stock mode"),
        "mallc.f.coupon_template_code": ("券模板", "Coupon template"),
        "mallc.f.quantity": ("数量", "Quantity"),
        "mallc.f.store_code": ("门店", "Store"),
        "mallc.h.cash": ("仅积分+现金礼品填写", "Points + cash rewards only"),
        "mallc.h.limit": ("留空表示不限", "Empty: no limit"),
        "mallc.h.template": (
            "优惠券礼品兑换时立即发券；只列出启用中且不限于发券门店的模板",
            "A coupon reward issues the coupon at once; active templates not limited to the issuing store",
        ),
        "mallc.err.number": ("须为整数", "must be a whole number"),
        "mallc.err.money": ("须为金额，如 12.50", "must be an amount such as 12.50"),
        "mallc.err.template_needed": ("优惠券礼品须选择券模板", "A coupon reward needs a coupon template"),
        "mallc.err.template_inactive": (
            "请选择启用中的券模板",
            "Choose one of the active coupon templates",
        ),
        "mallc.err.reason_needed": ("请填写取消原因", "Give a reason for cancelling"),
        "mallc.no_templates": ("暂无可用的券模板", "No coupon template available"),
        "mallc.done.created": ("已创建礼品", "Reward created"),
        "mallc.done.stock": ("库存已更新", "Stock updated"),
        "mallc.done.withdrawn": ("礼品已下架", "Reward taken off the shelf"),
        "mallc.done.listed": ("礼品已上架", "Reward back on the shelf"),
        "mallc.done.fulfilled": ("已完成兑换", "Redemption fulfilled"),
        "mallc.done.cancelled": (
            "已取消兑换，积分与库存已退回",
            "Redemption cancelled; points and stock returned",
        ),
        "mallc.status.all": ("全部状态", "All statuses"),
        "mallc.status.pending": ("待处理", "Pending"),
        "mallc.status.fulfilled": ("已完成", "Fulfilled"),
        "mallc.status.cancelled": ("已取消", "Cancelled"),
        "mallc.store.all": ("全部门店", "All stores"),
        "mallc.store.hq": ("总部（未指定门店）", "HQ (no store)"),
        "mallc.fulfil": ("完成兑换", "Fulfil"),
        "mallc.cancel": ("取消兑换", "Cancel"),
        "mallc.cancel_reason": ("取消原因", "Reason"),
        "mallc.cancel_confirm": (
            "取消后积分退回会员、礼品退回库存。确定取消？",
            "The points go back to the member and the unit back into stock. Cancel it?",
        ),
        "mallc.scope_note": (
            "门店员工只看到自己门店的兑换",
            "Store staff see their own stores' redemptions",
        ),
    }
)

PAGE_SIZE = 20
EXPORT_LIMIT = 5000
CHART_DAYS = 30
CHART_REWARDS = 15
KINDS = tuple(mall.RewardKind)
MODES = tuple(mall.StockMode)
STATUSES = ("all", *mall.RedemptionStatus)
HQ_STORE = "hq"  # the store filter's value for redemptions made without a store
NOTICES = ("created", "stock", "withdrawn", "listed", "fulfilled", "cancelled")
FORM_FIELDS = (
    "code",
    "name",
    "kind",
    "points_cost",
    "cash",
    "per_member_limit",
    "stock_mode",
    "coupon_template_code",
)


# --- rewards -------------------------------------------------------------------------------------------


@dataclass
class RewardRow:
    reward: Reward
    template: CouponTemplate | None
    central: int | None  # central stock (central mode)
    by_store: list[tuple[str, int]]  # (store code, quantity) of the stores in the viewer's scope


def reward_rows(session: Session, user: Principal) -> list[RewardRow]:
    """Every reward of the org (on the shelf first), with its stock as the viewer may see it."""
    rewards = list(
        session.scalars(
            select(Reward).where(Reward.org_id == user.org_id).order_by(Reward.active.desc(), Reward.code)
        )
    )
    template_ids = {r.coupon_template_id for r in rewards if r.coupon_template_id is not None}
    templates = {
        t.id: t
        for t in session.scalars(
            select(CouponTemplate).where(
                CouponTemplate.org_id == user.org_id, CouponTemplate.id.in_(template_ids)
            )
        )
    }
    codes = store_codes(session, user.org_id)
    stocks: dict[int, dict[int, int]] = {}
    for reward_id, key, quantity in session.execute(
        select(RewardStock.reward_id, RewardStock.store_key, RewardStock.quantity).where(
            RewardStock.org_id == user.org_id
        )
    ).all():
        stocks.setdefault(reward_id, {})[key] = quantity
    rows = []
    for r in rewards:
        held = stocks.get(r.id, {})
        central = held.get(mall.CENTRAL_STOCK, 0) if r.stock_mode == mall.StockMode.CENTRAL else None
        by_store = (
            sorted(
                (codes[k], q)
                for k, q in held.items()
                if k != mall.CENTRAL_STOCK and k in codes and user.can_access_store(k)
            )
            if r.stock_mode == mall.StockMode.STORE
            else []
        )
        template = templates.get(r.coupon_template_id) if r.coupon_template_id is not None else None
        rows.append(RewardRow(r, template, central, by_store))
    return rows


def store_codes(session: Session, org_id: int) -> dict[int, str]:
    found = session.execute(select(Store.id, Store.code).where(Store.org_id == org_id)).all()
    return {store_id: code for store_id, code in found}


def in_scope(user: Principal) -> list[ColumnElement[bool]]:
    """Store staff see the redemptions of their stores; those made without a store belong to HQ."""
    return [] if user.store_ids is None else [RewardRedemption.store_id.in_(user.store_ids)]


def chart_counts(session: Session, user: Principal) -> list[tuple[str, dict[str, int]]]:
    """(reward name, {status: count}) for the rewards redeemed in the last 30 days, most first."""
    since = utcnow() - timedelta(days=CHART_DAYS)
    stmt = (
        select(Reward.code, Reward.name, RewardRedemption.status, func.count())
        .join(Reward, Reward.id == RewardRedemption.reward_id)
        .where(RewardRedemption.org_id == user.org_id, RewardRedemption.created_at >= since, *in_scope(user))
        .group_by(Reward.code, Reward.name, RewardRedemption.status)
    )
    found: dict[tuple[str, str], dict[str, int]] = {}
    for code, name, status, n in session.execute(stmt).all():
        found.setdefault((code, name), {})[status] = int(n)
    ranked = sorted(found.items(), key=lambda kv: (-sum(kv[1].values()), kv[0][0]))[:CHART_REWARDS]
    return [(name, counts) for (_, name), counts in ranked]


def redemptions_chart(title: str, rows: list[tuple[str, dict[str, int]]], names: dict[str, str]) -> str:
    """Horizontal bars per reward, stacked by status (ECharts options for static/app/charts.js)."""
    option = charts.bar_frame(title)
    option["color"] = [charts.PALETTE[5], charts.PALETTE[2], "#adb5bd"]  # fulfilled, pending, cancelled
    option["legend"] = {"bottom": 0, "left": "center"}
    option["grid"] = {"left": 8, "right": 24, "top": 40, "bottom": 40, "containLabel": True}
    option["xAxis"] = {"type": "value", "minInterval": 1}
    option["yAxis"] = {"type": "category", "data": [name for name, _ in rows][::-1]}
    option["series"] = [
        {
            "name": label,
            "type": "bar",
            "stack": "total",
            "barMaxWidth": 22,
            "data": [counts.get(status, 0) for _, counts in rows][::-1],
        }
        for status, label in names.items()
    ]
    return json.dumps(option, ensure_ascii=False)


def mall_templates(session: Session, org_id: int) -> list[CouponTemplate]:
    """The coupon templates a new coupon reward may issue: active, and not for the issuing store only."""
    return [
        t
        for t in coupon_templates.templates_of(session, org_id, active=True)
        if t.accept_scope != coupon_templates.AcceptScope.ISSUING_STORE
    ]


def rewards_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    action_error: str = "",
    status: int = 200,
) -> HTMLResponse:
    t = texts(request.state.lang)
    counts = chart_counts(session, user)
    names = {s: t(f"mallc.status.{s}") for s in ("fulfilled", "pending", "cancelled")}
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/mall/rewards.html",
        base_context(
            user,
            "mall",
            org_tz(session, user),
            sub="rewards",
            rows=reward_rows(session, user),
            chart=redemptions_chart(t("mallc.chart"), counts, names) if counts else "",
            chart_height=max(220, 80 + 32 * len(counts)),
            can_manage=user.role in mall.MALL_ADMIN_ROLES,
            kinds=KINDS,
            modes=MODES,
            templates=mall_templates(session, user.org_id),
            stores=writable_stores(session, user),
            values=values or {"kind": "gift", "stock_mode": "central"},
            errors=errors or FormErrors(),
            action_error=action_error,
            notice=notice if notice in NOTICES else "",
        ),
        status_code=status,
    )


@router.get("/console/mall")
def mall_rewards(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The mall's rewards with their stock, a chart of the last 30 days' redemptions, HQ's controls."""
    return rewards_page(request, session, user)


def parse_reward(form: PostedForm, lang: str) -> tuple[dict[str, str], RewardIn | None, FormErrors]:
    """The typed form as a ``RewardIn`` (the JSON API's shape), or the errors next to their fields."""
    t = texts(lang)
    values = {n: form.get(n) for n in FORM_FIELDS}
    errors = FormErrors()

    def whole(name: str, optional: bool = False) -> int | None:
        if optional and not values[name]:
            return None
        number = int_or_none(values[name])
        if number is None:
            errors.add(name, f"{t('mallc.f.' + name)}{label_sep(lang)}{t('mallc.err.number')}")
        return number

    points_cost = whole("points_cost")
    limit = whole("per_member_limit", optional=True)
    cash_fen = yuan_to_fen(values["cash"]) if values["cash"] else 0
    if cash_fen is None:
        errors.add("cash", f"{t('mallc.f.cash')}{label_sep(lang)}{t('mallc.err.money')}")
    template = values["coupon_template_code"] if values["kind"] == mall.RewardKind.COUPON else ""
    if values["kind"] == mall.RewardKind.COUPON and not template:
        errors.add("coupon_template_code", t("mallc.err.template_needed"))
    if errors:
        return values, None, errors
    data = {
        "code": values["code"],
        "name": values["name"],
        "kind": values["kind"],
        "points_cost": points_cost,
        "cash_fen": cash_fen,
        "per_member_limit": limit,
        "stock_mode": values["stock_mode"],
        "coupon_template_code": template or None,
    }
    try:
        return values, RewardIn.model_validate(data), errors
    except ValidationError as exc:
        for err in exc.errors():
            name = "cash" if err["loc"][0] == "cash_fen" else str(err["loc"][0])
            errors.add(name, f"{t('mallc.f.' + name)}{label_sep(lang)}{error_text(err, lang)}")
        return values, None, errors


@router.post("/console/mall/rewards", dependencies=[Csrf])
def create_reward(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """HQ offers a new reward (validated and audited by ``mall.create_reward``, as POST /api/v1/rewards)."""
    user.require_role(mall.MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    lang = request.state.lang
    values, body, errors = parse_reward(form, lang)
    if body is not None and body.coupon_template_code is not None:
        if body.coupon_template_code not in {x.code for x in mall_templates(session, user.org_id)}:
            errors.add("coupon_template_code", texts(lang)("mallc.err.template_inactive"))
            body = None
    if body is None:
        return rewards_page(request, session, user, values=values, errors=errors, status=422)
    try:
        mall.create_reward(session, user, mall.RewardSpec(**body.model_dump()))
        session.commit()
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang)
        if "cash_fen" in errors.fields:
            errors.fields["cash"] = errors.fields.pop("cash_fen")
        if isinstance(err, mall.RewardCodeTaken):
            errors.add("code", page_error_text(err, lang))
        return rewards_page(request, session, user, values=values, errors=errors, status=err.status)
    return done(request, "/console/mall?done=created")


@router.post("/console/mall/rewards/{reward_code}/stock", dependencies=[Csrf])
def set_reward_stock(
    reward_code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """HQ sets a reward's units on hand, centrally or at one store (as POST /api/v1/rewards/{code}/stock)."""
    user.require_role(mall.MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    lang = request.state.lang
    t = texts(lang)
    quantity = int_or_none(form.get("quantity"))
    store_code = form.get("store_code")
    if quantity is None:
        message = f"{reward_code} · {t('mallc.f.quantity')}{label_sep(lang)}{t('mallc.err.number')}"
        return rewards_page(request, session, user, action_error=message, status=422)
    try:
        reward = mall.reward_by_code(session, user.org_id, reward_code)
        store = org_service.store_by_code(session, user.org_id, store_code) if store_code else None
        mall.set_stock(session, user, reward, store, quantity)
        session.commit()
    except DomainError as err:
        return refused_action(request, session, user, rewards_page, reward_code, err)
    return done(request, "/console/mall?done=stock")


@router.post("/console/mall/rewards/{reward_code}/active", dependencies=[Csrf])
def set_reward_active(
    reward_code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """HQ takes a reward off the shelf or puts it back (as POST /api/v1/rewards/{code}/active)."""
    user.require_role(mall.MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    active = form.get("active") == "true"
    try:
        reward = mall.reward_by_code(session, user.org_id, reward_code)
        mall.set_active(session, user, reward, active)
        session.commit()
    except DomainError as err:
        return refused_action(request, session, user, rewards_page, reward_code, err)
    return done(request, f"/console/mall?done={'listed' if active else 'withdrawn'}")


def refused_action(
    request: Request,
    session: Session,
    user: Principal,
    page: Callable[..., HTMLResponse],
    label: str,
    err: DomainError,
) -> HTMLResponse:
    """A row action the service refused: rolled back, and the list shown again with the row and the reason."""
    session.rollback()
    message = f"{label} · {page_error_text(err, request.state.lang)}"
    return page(request, session, user, action_error=message, status=err.status)


# --- redemptions ---------------------------------------------------------------------------------------


@dataclass
class RedemptionRow:
    redemption: RewardRedemption
    reward: Reward
    member_no: str
    store_code: str
    can_handle: bool


@dataclass
class Filters:
    status: str
    store: str  # a store code in scope, HQ_STORE, or "" for every store in scope
    stores: list[Store]


def read_filters(session: Session, user: Principal, params: dict[str, str]) -> Filters:
    status = params.get("status", "all")
    stores = writable_stores(session, user)
    store = params.get("store", "")
    allowed = {s.code for s in stores} | ({HQ_STORE} if user.is_hq else set())
    return Filters(status if status in STATUSES else "all", store if store in allowed else "", stores)


def redemptions_query(user: Principal, filters: Filters) -> Select[Any]:
    stmt = select(RewardRedemption).where(RewardRedemption.org_id == user.org_id, *in_scope(user))
    if filters.status != "all":
        stmt = stmt.where(RewardRedemption.status == filters.status)
    if filters.store == HQ_STORE:
        stmt = stmt.where(RewardRedemption.store_id.is_(None))
    elif filters.store:
        store_id = next(s.id for s in filters.stores if s.code == filters.store)
        stmt = stmt.where(RewardRedemption.store_id == store_id)
    return stmt.order_by(RewardRedemption.id.desc())


def can_handle(user: Principal, redemption: RewardRedemption) -> bool:
    """What ``mall.fulfil_redemption`` / ``cancel_redemption`` would allow, to show the buttons."""
    if user.role not in mall.REDEEM_ROLES or redemption.status != mall.RedemptionStatus.PENDING:
        return False
    if redemption.store_id is None:
        return user.is_hq
    return user.can_access_store(redemption.store_id)


def redemption_rows(session: Session, user: Principal, found: list[RewardRedemption]) -> list[RedemptionRow]:
    reward_ids = {r.reward_id for r in found}
    rewards = {
        w.id: w
        for w in session.scalars(
            select(Reward).where(Reward.org_id == user.org_id, Reward.id.in_(reward_ids))
        )
    }
    member_ids = {r.member_id for r in found}
    people = {
        m.id: m
        for m in session.scalars(
            select(Member).where(Member.org_id == user.org_id, Member.id.in_(member_ids))
        )
    }
    codes = store_codes(session, user.org_id)
    rows = []
    for r in found:
        person = people[r.member_id]
        member_no = (
            mall.current_member(session, person.id).member_no if person.merged_into_id else person.member_no
        )
        store_code = codes.get(r.store_id, "") if r.store_id is not None else ""
        rows.append(RedemptionRow(r, rewards[r.reward_id], member_no, store_code, can_handle(user, r)))
    return rows


def redemptions_page(
    request: Request, session: Session, user: Principal, *, action_error: str = "", status: int = 200
) -> HTMLResponse:
    params = read_params(request, ("status", "store", "page"))
    filters = read_filters(session, user, params)
    listing = fetch_page(
        session, redemptions_query(user, filters), page_number(params.get("page")), PAGE_SIZE
    )
    notice = request.query_params.get("done", "")
    back = linker("/console/mall/redemptions", params)()
    return render(
        request,
        "console/mall/redemptions.html",
        base_context(
            user,
            "mall",
            org_tz(session, user),
            sub="redemptions",
            listing=listing,
            rows=redemption_rows(session, user, listing.rows),
            filters=filters,
            statuses=STATUSES,
            hq_store=HQ_STORE,
            link=linker("/console/mall/redemptions", params),
            export_url=linker("/console/mall/redemptions.xlsx", params)(page=None),
            back=back,
            action_error=action_error,
            notice=notice if notice in NOTICES else "",
        ),
        status_code=status,
    )


@router.get("/console/mall/redemptions")
def mall_redemptions(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Redemptions in the viewer's scope, newest first, filtered by status and store; pending ones can be
    fulfilled or cancelled."""
    return redemptions_page(request, session, user)


@router.get("/console/mall/redemptions.xlsx")
def mall_redemptions_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The redemptions list as Excel: the same scope, filters and order as the page, every row."""
    t = texts(request.state.lang)
    params = read_params(request, ("status", "store"))
    filters = read_filters(session, user, params)
    found = list(session.scalars(redemptions_query(user, filters).limit(EXPORT_LIMIT)))
    zone = ZoneInfo(org_tz(session, user))

    def local(value: datetime | None) -> datetime | str:
        return value.astimezone(zone) if value is not None else ""

    headers = [
        t("mallc.col.id"),
        t("mallc.col.at"),
        t("mallc.col.member"),
        t("mallc.col.code"),
        t("mallc.col.reward"),
        t("mallc.col.kind"),
        t("mallc.col.store"),
        t("mallc.col.points"),
        t("mallc.col.cash") + " (¥)",
        t("mallc.col.status"),
        t("mallc.col.actor"),
        t("mallc.col.handled"),
        t("mallc.col.handled") + " · " + t("mallc.col.at"),
    ]
    rows = [
        (
            row.redemption.id,
            local(row.redemption.created_at),
            row.member_no,
            row.reward.code,
            row.reward.name,
            t(f"mallc.kind.{row.reward.kind}"),
            row.store_code or t("mallc.hq"),
            row.redemption.points,
            fen(row.redemption.cash_fen).replace("¥", ""),
            t(f"mallc.status.{row.redemption.status}"),
            row.redemption.actor,
            row.redemption.fulfilled_by,
            local(row.redemption.fulfilled_at),
        )
        for row in redemption_rows(session, user, found)
    ]
    return xlsx_response("mall-redemptions.xlsx", headers, rows, sheet="redemptions")


def handled(form: PostedForm) -> str:
    """Back to the list the staff member was on (only a path of this page), with a notice."""
    back = form.get("back")
    if not back.startswith("/console/mall/redemptions"):
        back = "/console/mall/redemptions"
    return back


@router.post("/console/mall/redemptions/{redemption_id}/fulfil", dependencies=[Csrf])
def fulfil_redemption(
    redemption_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """The gift was handed over (or the service delivered): ``mall.fulfil_redemption`` as the API does."""
    try:
        mall.fulfil_redemption(session, user, redemption_id)
        session.commit()
    except DomainError as err:
        return refused_action(request, session, user, redemptions_page, f"#{redemption_id}", err)
    return done(request, with_notice(handled(form), "fulfilled"))


@router.post("/console/mall/redemptions/{redemption_id}/cancel", dependencies=[Csrf])
def cancel_redemption(
    redemption_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Cancel a pending redemption with a reason: points back to their lots, the unit back into stock."""
    lang = request.state.lang
    reason = form.get("reason")
    if not reason:
        message = f"#{redemption_id} · {texts(lang)('mallc.err.reason_needed')}"
        return redemptions_page(request, session, user, action_error=message, status=422)
    try:
        mall.cancel_redemption(session, user, redemption_id, reason[:200])
        session.commit()
    except DomainError as err:
        return refused_action(request, session, user, redemptions_page, f"#{redemption_id}", err)
    return done(request, with_notice(handled(form), "cancelled"))


def with_notice(url: str, notice: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}done={notice}"
