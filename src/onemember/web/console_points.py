"""Console section "Points" (积分): HQ's points overview, the program settings, the typed earn rules with
their versions and a simulation, the tier set, and manual adjustments with their second-person approval.

The pages read through the points and tiers services and change things through the same calls as the JSON
API (points/program_api.py, points/admin_api.py), so permissions, validation and audit are the same:
HQ changes the program, rules and tiers; store managers add store bonuses for their own store inside HQ's
caps; everyone else reads. A simulation prices a basket with ``orders.checkout.quote(lock=False)`` and
rolls back, so nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import annotated_types
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError, Forbidden, Invalid
from onemember.members import service as members
from onemember.orders.checkout import explanation_of, quote
from onemember.orders.schemas import CheckoutIn
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import adjustments as adjust_service
from onemember.points import overview as points_overview
from onemember.points import program_api, rules
from onemember.points import service as points
from onemember.points.admin_api import AdjustmentOut, adjustment_out
from onemember.points.earning import RuleKind, label
from onemember.points.models import EarnRule, PointsProgram
from onemember.tiers import service as tiers
from onemember.tiers.models import MemberTier, TierLevel, TierSet
from onemember.web import charts, i18n
from onemember.web.charts import grouped_bar
from onemember.web.common import ConsoleUser, Csrf, page_error_text
from onemember.web.console import ScopeChoice, choose_scope, scope_context
from onemember.web.console_org import HTMX_CONFIG, Paged, linker, page_number, read_params, texts
from onemember.web.export import xlsx_response
from onemember.web.forms import (
    FormErrors,
    Posted,
    PostedForm,
    done,
    error_text,
    is_htmx,
    label_sep,
    org_tz,
    writable_stores,
    yuan_to_fen,
)
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "nav.points": ("积分", "Points"),  # the console nav item (templates/console/_layout.html)
        "pts.title": ("积分", "Points"),
        "pts.tab.overview": ("积分概览", "Overview"),
        "pts.tab.program": ("积分计划", "Program"),
        "pts.tab.rules": ("积分规则", "Earn rules"),
        "pts.tab.tiers": ("会员等级", "Tiers"),
        "pts.tab.adjustments": ("积分调整", "Adjustments"),
        "pts.tab.mall": ("积分商城", "Points mall"),
        "pts.readonly": ("只读：您的角色可以查看但不能修改", "Read only: your role may look but not change"),
        "pts.saved": ("已保存", "Saved"),
        "pts.form_invalid": ("请更正标出的字段", "Please correct the fields marked below"),
        "pts.bad_datetime": ("日期时间格式不正确", "is not a valid date and time"),
        "pts.bad_number": ("须为整数", "must be a whole number"),
        "pts.bad_money": ("须为金额，如 12.50", "must be an amount such as 12.50"),
        # overview
        "pts.ov.title": ("积分概览", "Points overview"),
        "pts.kpi.outstanding": ("未使用积分", "Outstanding points"),
        "pts.kpi.liability": ("积分负债", "Points liability"),
        "pts.kpi.issued": ("近 12 个月发放", "Issued, last 12 months"),
        "pts.kpi.redeemed": ("近 12 个月使用", "Redeemed, last 12 months"),
        "pts.kpi.expired": ("近 12 个月过期", "Expired, last 12 months"),
        "pts.kpi.breakage": ("过期率", "Breakage"),
        "pts.kpi.value_note": ("每 100 积分价值", "Value of 100 points"),
        "pts.kpi.breakage_note": ("过期 ÷ 发放", "Expired ÷ issued"),
        "pts.chart.expiring": ("未来各月到期积分", "Points expiring per month ahead"),
        "pts.chart.by_store": (
            "各门店发放、使用与过期（近 12 个月）",
            "Issued, redeemed and expired by store (last 12 months)",
        ),
        "pts.col.store": ("门店", "Store"),
        "pts.col.store_code": ("门店编号", "Store code"),
        "pts.col.issued": ("发放", "Issued"),
        "pts.col.redeemed": ("使用", "Redeemed"),
        "pts.col.expired": ("过期", "Expired"),
        "pts.ov.by_store": ("门店积分流水（近 12 个月）", "Points by store (last 12 months)"),
        "pts.ov.adjustments": (
            "最大人工调整（近 12 个月，全部门店）",
            "Biggest manual adjustments (12 months, all stores)",
        ),
        "pts.ov.no_expiry": (
            "未来 12 个月没有到期积分（积分计划为永不过期，或积分尚未到期）",
            "No points expire in the next 12 months (the program never expires points, or none are due)",
        ),
        "pts.col.member_no": ("会员号", "Member no."),
        "pts.col.points": ("积分", "Points"),
        "pts.col.reason": ("原因", "Reason"),
        "pts.col.requested_by": ("申请人", "Requested by"),
        "pts.col.decided_by": ("审批人", "Approved by"),
        "pts.col.at": ("时间", "Time"),
        "pts.col.status": ("状态", "Status"),
        "pts.col.balance": ("当前余额", "Balance now"),
        # program
        "pts.prog.title": ("积分计划设置", "Points program settings"),
        "pts.prog.group.rates": ("积分与成长值", "Points and growth value"),
        "pts.prog.group.expiry": ("积分有效期与提醒", "Expiry and reminders"),
        "pts.prog.group.stores": ("门店自设规则（总部上限）", "Store rules (HQ's caps)"),
        "pts.prog.group.limits": ("转赠与人工调整", "Transfers and manual adjustments"),
        "pts.prog.audit_note": (
            "修改会记录在审计日志中（修改前后的值）",
            "Changes are audited with old and new values",
        ),
        "pts.f.earn_points_per_yuan": ("每消费 1 元得积分", "Points per yuan spent"),
        "pts.f.redeem_points_per_yuan": ("多少积分抵 1 元", "Points worth one yuan"),
        "pts.f.growth_per_yuan": ("每消费 1 元得成长值", "Growth value per yuan"),
        "pts.f.pending_days": ("积分冻结天数（退货期）", "Days points stay pending (return window)"),
        "pts.f.expiry_policy": ("过期方式", "Expiry policy"),
        "pts.f.expiry_months": ("滚动有效期（月）", "Rolling validity (months)"),
        "pts.f.expiry_fixed_month": ("固定过期月", "Fixed expiry month"),
        "pts.f.expiry_fixed_day": ("固定过期日", "Fixed expiry day"),
        "pts.f.expiry_years_after": ("获得后第几年过期", "Years after earning"),
        "pts.f.reminder_days": ("到期前几天提醒", "Remind days before expiry"),
        "pts.f.allow_store_rules": ("允许门店自设限时加倍", "Stores may add limited-time bonuses"),
        "pts.f.store_bonus_max_multiplier_pct": ("门店加倍上限（%）", "Store bonus cap (%)"),
        "pts.f.store_bonus_max_budget": ("门店积分预算上限", "Store bonus budget cap (points)"),
        "pts.f.transfer_max_per_month": ("每月转赠上限（积分）", "Transfers per month at most (points)"),
        "pts.f.adjust_approval_threshold": ("人工调整超过多少需审批", "Adjustments above this need approval"),
        "pts.policy.never": ("永不过期", "Never"),
        "pts.policy.rolling": ("滚动有效期（获得后 N 个月）", "Rolling (N months after earning)"),
        "pts.policy.fixed_yearly": ("每年固定日期", "Fixed date each year"),
        "pts.h.redeem_points_per_yuan": (
            "如 100 表示 100 积分抵 1 元",
            "e.g. 100 means 100 points pay one yuan",
        ),
        "pts.h.store_bonus_max_multiplier_pct": ("200 表示最多 2 倍", "200 means at most 2×"),
        "pts.h.expiry_months": ("滚动有效期时使用", "Used by the rolling policy"),
        "pts.h.expiry_fixed_month": ("每年固定日期时使用", "Used by the fixed-date policy"),
        # rules
        "pts.rules.title": ("积分规则", "Earn rules"),
        "pts.rules.in_force_at": ("生效时间点", "In force at"),
        "pts.rules.now": ("现在", "Now"),
        "pts.rules.show": ("查看", "Show"),
        "pts.rules.viewing_past": (
            "正在查看该时间点生效的规则版本",
            "Showing the versions in force at that time",
        ),
        "pts.rules.kind": ("规则类型", "Kind"),
        "pts.rules.terms": ("规则内容", "Terms"),
        "pts.rules.version": ("版本", "Version"),
        "pts.rules.valid": ("有效期", "Valid"),
        "pts.rules.open_end": ("长期", "open-ended"),
        "pts.rules.budget": ("预算已用", "Budget used"),
        "pts.rules.created_by": ("创建人", "Created by"),
        "pts.rules.revise": ("修订", "Revise"),
        "pts.rules.end": ("结束", "End"),
        "pts.rules.end_confirm": (
            "立即结束该规则？已发生的订单不受影响。",
            "End this rule now? Past orders keep it.",
        ),
        "pts.rules.program_base": (
            "未设置基础积分规则，使用积分计划的基础比例",
            "No base-rate rule: the program's base rate applies",
        ),
        "pts.rules.create": ("新建规则", "New rule"),
        "pts.rules.created": ("已创建规则", "Rule created"),
        "pts.rules.revised": ("已修订规则（新版本已生效）", "Rule revised (the new version is in force)"),
        "pts.rules.ended": ("已结束规则", "Rule ended"),
        "pts.rules.revise_title": ("修订规则", "Revise rule"),
        "pts.rules.revise_note": (
            "修订会立即结束当前版本并生效新版本；历史订单仍按当时的版本解释。",
            "A revision ends the current version now and opens the next; past orders keep their version.",
        ),
        "pts.rules.history": ("版本历史", "Versions"),
        "pts.rules.store_caps": (
            "门店限时加倍须在总部上限内：最多 {pct}% ，预算最多 {budget} 积分，且须设结束时间。",
            "Store bonuses stay inside HQ's caps: at most {pct}%, a budget of at most {budget} points, "
            "and an end time.",
        ),
        "pts.rules.store_rules_off": ("总部未允许门店自设规则", "HQ does not allow store rules"),
        "pts.rules.all_kinds": ("全部类型", "All kinds"),
        "pts.rules.sort.kind": ("按类型", "By kind"),
        "pts.rules.sort.newest": ("最新在前", "Newest first"),
        "pts.rules.sort.name": ("按名称", "By name"),
        "pts.how.title": ("规则如何叠加", "How rules combine"),
        "pts.how.base": (
            "每个时间点只有一条基础积分规则：每行按实付金额 × 每元积分计算，向下取整；",
            "Exactly one base rate at a time: each line earns paid amount × points per yuan, rounded down;",
        ),
        "pts.how.exclude": (
            "排除的品类或商品整行不积分；",
            "Excluded categories or SKUs earn nothing on that line;",
        ),
        "pts.how.multipliers": (
            "所有适用的加倍（品类、商品、等级、生日月、会员日、门店限时）各自在基础积分上"
            "加上 基础 ×（倍数 − 1），相加而不相乘：品类 2 倍遇上会员日 2 倍 = 3 倍基础积分；",
            "Every multiplier that applies (category, SKU, tier, birthday month, member day, store bonus) "
            "adds base × (multiplier − 1): they add up, they do not compound, so 2× category on a 2× member "
            "day earns 3× base;",
        ),
        "pts.how.bonus": (
            "首单奖励等整单奖励按实付金额分摊到各行，部分退货时退回对应份额；",
            "Order bonuses (first purchase) are spread over the lines by amount paid, so a partial return "
            "takes back its exact share;",
        ),
        "pts.how.budget": (
            "门店限时加倍在预算用完后停止；",
            "A store bonus stops when its points budget is spent;",
        ),
        "pts.how.caps": (
            "上限（每单、每人每天）按比例压缩整单积分，同样分摊到各行。所有数字都是整数，同样的输入总得到同样的积分。",
            "Caps (per order, per member per day) scale the order's points down, spread over the lines. "
            "Every number is an integer; the same inputs always give the same points.",
        ),
        "pts.kind.base_rate": ("基础积分", "Base rate"),
        "pts.kind.category_multiplier": ("品类加倍", "Category multiplier"),
        "pts.kind.sku_multiplier": ("商品加倍", "SKU multiplier"),
        "pts.kind.exclude_category": ("品类不积分", "Excluded category"),
        "pts.kind.exclude_sku": ("商品不积分", "Excluded SKU"),
        "pts.kind.tier_multiplier": ("等级加倍", "Tier multiplier"),
        "pts.kind.birthday_month_multiplier": ("生日月加倍", "Birthday month multiplier"),
        "pts.kind.member_day_multiplier": ("会员日加倍", "Member day multiplier"),
        "pts.kind.store_bonus_multiplier": ("门店限时加倍", "Store bonus"),
        "pts.kind.first_purchase_bonus": ("首单奖励", "First purchase bonus"),
        "pts.kind.registration_bonus": ("注册奖励", "Registration bonus"),
        "pts.kind.order_cap": ("每单上限", "Per-order cap"),
        "pts.kind.daily_cap": ("每日上限", "Daily cap"),
        "pts.f.kind": ("规则类型", "Kind"),
        "pts.f.quantity": ("数量", "Quantity"),
        "pts.f.unit_price_fen": ("单价", "Unit price"),
        "pts.f.lines": ("商品行", "Basket lines"),
        "pts.f.member_no": ("会员号", "Member no."),
        "pts.f.name": ("名称", "Name"),
        "pts.f.points_per_yuan": ("每元积分", "Points per yuan"),
        "pts.f.multiplier_pct": ("倍数（%）", "Multiplier (%)"),
        "pts.f.category": ("品类", "Category"),
        "pts.f.sku": ("商品编码", "SKU"),
        "pts.f.tier_code": ("等级代码", "Tier code"),
        "pts.f.bonus_points": ("奖励积分", "Bonus points"),
        "pts.f.weekday": ("每周几", "Weekday"),
        "pts.f.month_day": ("每月几号", "Day of month"),
        "pts.f.store_code": ("门店", "Store"),
        "pts.f.cap_points": ("积分上限", "Points cap"),
        "pts.f.budget_points": ("积分预算", "Points budget"),
        "pts.f.valid_from": ("开始时间", "Starts"),
        "pts.f.valid_to": ("结束时间", "Ends"),
        "pts.h.multiplier_pct": ("200 表示 2 倍", "200 means 2×"),
        "pts.h.weekday": ("与每月几号二选一", "Either a weekday or a day of month"),
        "pts.h.valid_from": ("留空表示立即生效", "Empty: from now"),
        "pts.h.valid_to": ("留空表示长期有效", "Empty: open-ended"),
        "pts.weekday.1": ("周一", "Monday"),
        "pts.weekday.2": ("周二", "Tuesday"),
        "pts.weekday.3": ("周三", "Wednesday"),
        "pts.weekday.4": ("周四", "Thursday"),
        "pts.weekday.5": ("周五", "Friday"),
        "pts.weekday.6": ("周六", "Saturday"),
        "pts.weekday.7": ("周日", "Sunday"),
        # simulation
        "pts.sim.title": ("积分模拟", "Simulate points"),
        "pts.sim.note": (
            "输入会员号和购物篮，按现行规则逐行计算积分并说明原因，不会写入任何数据。",
            "Enter a member number and a basket: see the points line by line under the rules in force, "
            "with the reasons. Nothing is written.",
        ),
        "pts.sim.member_no": ("会员号", "Member no."),
        "pts.sim.store": ("门店", "Store"),
        "pts.sim.sku": ("商品编码", "SKU"),
        "pts.sim.category": ("品类", "Category"),
        "pts.sim.quantity": ("数量", "Qty"),
        "pts.sim.price": ("单价（元）", "Unit price (yuan)"),
        "pts.sim.run": ("计算积分", "Calculate"),
        "pts.sim.line": ("行", "Line"),
        "pts.sim.amount": ("金额", "Amount"),
        "pts.sim.discount": ("会员价优惠", "Member discount"),
        "pts.sim.paid": ("实付", "Paid"),
        "pts.sim.points": ("积分", "Points"),
        "pts.sim.total_points": ("合计得积分", "Points earned"),
        "pts.sim.growth": ("成长值", "Growth value"),
        "pts.sim.tier": ("会员等级", "Tier"),
        "pts.sim.why": ("积分明细", "Why"),
        "pts.sim.line_n": ("第 {n} 行", "line {n}"),
        "pts.sim.no_lines": ("请至少填写一行商品", "Enter at least one basket line"),
        "pts.sim.need_member": ("请输入会员号", "Enter a member number"),
        "pts.sim.nothing_written": ("模拟结果，未写入任何数据", "Simulation only: nothing was written"),
        # tiers
        "pts.tiers.title": ("会员等级", "Member tiers"),
        "pts.tiers.none": ("尚未设置会员等级体系", "No tier set yet"),
        "pts.tiers.create": ("创建等级体系", "Set up tiers"),
        "pts.tiers.created": ("已创建等级体系", "Tier set created"),
        "pts.tiers.basis": ("定级依据", "Basis"),
        "pts.tiers.grace_days": ("保级宽限天数", "Grace days"),
        "pts.tiers.basis.growth": ("成长值", "Growth value"),
        "pts.tiers.basis.spend_12m": ("近 12 个月消费（分）", "Spend in the last 12 months (fen)"),
        "pts.tiers.basis.orders_12m": ("近 12 个月订单数", "Orders in the last 12 months"),
        "pts.tiers.levels": ("等级", "Levels"),
        "pts.tiers.level_n": ("第 {n} 级", "Level {n}"),
        "pts.tiers.members": ("会员数", "Members"),
        "pts.tiers.distribution": ("各等级会员分布", "Members per level"),
        "pts.tiers.distribution_note": (
            "按已定级会员统计；等级体系建立后尚未消费的会员仍处于入门等级，不在此计数中。",
            "Counts members with a tier standing; members who have not bought since the tier set began are "
            "at the entry level and are not counted here.",
        ),
        "pts.tiers.levels_hint": (
            "第一级门槛须为 0，门槛逐级升高；保级门槛不高于升级门槛。留空的行会被忽略。",
            "The first threshold is 0 and thresholds rise level by level; a keep threshold is at most the "
            "threshold. Empty rows are ignored.",
        ),
        "pts.f.code": ("代码", "Code"),
        "pts.f.level_name": ("名称", "Name"),
        "pts.f.threshold": ("升级门槛", "Threshold"),
        "pts.f.keep_threshold": ("保级门槛", "Keep threshold"),
        "pts.f.points_multiplier_pct": ("积分倍数（%）", "Points multiplier (%)"),
        "pts.f.discount_pct": ("会员价折扣（%）", "Member discount (%)"),
        "pts.f.birthday_gift_points": ("生日礼积分", "Birthday gift points"),
        "pts.f.free_service_uses": ("免费服务次数", "Free service uses"),
        "pts.f.tier_set_name": ("体系名称", "Tier set name"),
        "pts.f.basis": ("定级依据", "Basis"),
        "pts.f.grace_days": ("保级宽限天数", "Grace days"),
        "pts.f.levels": ("等级", "Levels"),
        # adjustments
        "pts.adj.title": ("积分调整", "Points adjustments"),
        "pts.adj.pending": ("待审批", "Waiting for approval"),
        "pts.adj.request": ("申请积分调整", "Request an adjustment"),
        "pts.adj.points_hint": ("正数为增加，负数为扣减", "Positive adds points, negative takes them"),
        "pts.adj.threshold_note": (
            "超过 {n} 积分的调整需由另一位总部管理员审批后生效。",
            "Adjustments of more than {n} points apply only after another HQ admin approves them.",
        ),
        "pts.adj.store_optional": ("（可选）", "(optional)"),
        "pts.adj.approve": ("批准", "Approve"),
        "pts.adj.reject": ("驳回", "Reject"),
        "pts.adj.note": ("审批意见", "Note"),
        "pts.adj.own": ("需另一位总部管理员审批", "Needs another HQ admin"),
        "pts.adj.applied": ("调整已生效", "Adjustment applied"),
        "pts.adj.waiting": ("调整已提交，等待审批", "Adjustment requested; it waits for approval"),
        "pts.adj.approved": ("已批准并生效", "Approved and applied"),
        "pts.adj.rejected": ("已驳回", "Rejected"),
        "pts.adj.history": ("调整记录", "Adjustments"),
        "pts.adj.status.pending": ("待审批", "Pending"),
        "pts.adj.status.applied": ("已生效", "Applied"),
        "pts.adj.status.rejected": ("已驳回", "Rejected"),
        "pts.adj.status.all": ("全部", "All"),
        "pts.adj.store_note": (
            "门店员工只看到自己提交的调整",
            "Store staff see the adjustments they asked for",
        ),
    }
)

PAGE_SIZE = 20
EXPORT_LIMIT = 5000
HQ_ONLY = frozenset({Role.HQ_ADMIN})
RULE_WRITERS = frozenset({Role.HQ_ADMIN, Role.STORE_MANAGER})
TABS = ("overview", "program", "rules", "tiers", "adjustments", "mall")
TAB_URLS = {
    "overview": "/console/points",
    "program": "/console/points/program",
    "rules": "/console/points/rules",
    "tiers": "/console/points/tiers",
    "adjustments": "/console/points/adjustments",
    "mall": "/console/mall",  # web/console_mall.py
}
SIM_LINES = 4
TIER_ROWS = 5


# --- shared plumbing -----------------------------------------------------------------------------------


def base_context(user: Principal, tab: str, tz: str, **extra: Any) -> dict[str, Any]:
    return {
        "user": user,
        "section": "points",
        "tab": tab,
        "tabs": [(name, TAB_URLS[name]) for name in TABS],
        "tz": tz,
        "htmx_config": HTMX_CONFIG,
        **extra,
    }


def local_input(value: datetime | None, tz: str) -> str:
    """A UTC time as the value of an ``<input type=datetime-local>`` in the org's time zone."""
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M") if value else ""


def parse_local(value: str, tz: str) -> datetime:
    """A local date-time typed on a page (org time zone) as UTC; ``ValueError`` if it is not one."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.astimezone(UTC)


def field_label(loc: Sequence[str | int], t: Callable[[str], str]) -> str:
    """ "第 2 级 · 保级门槛" for ``("levels", 1, "keep_threshold")``: row numbers, then the field's label."""
    rows = "pts.tiers.level_n" if loc and loc[0] == "levels" else "pts.sim.line_n"
    parts = [t(rows).replace("{n}", str(p + 1)) for p in loc if isinstance(p, int)]
    names = [p for p in loc if isinstance(p, str)]
    if names:
        name = "level_name" if names[-1] == "name" and loc[0] == "levels" else names[-1]
        parts.append(t(f"pts.f.{name}"))
    return " · ".join(parts)


def validation_errors(exc: ValidationError, lang: str, errors: FormErrors | None = None) -> FormErrors:
    """Pydantic's errors as zh/en messages next to the fields they belong to."""
    errors = FormErrors() if errors is None else errors
    t = texts(lang)
    for err in exc.errors():
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        name = ".".join(str(p) for p in loc)
        errors.add(name, f"{field_label(loc, t)}{label_sep(lang)}{error_text(err, lang)}")
    return errors


def domain_errors(err: DomainError, lang: str, errors: FormErrors | None = None) -> FormErrors:
    """A domain error: its message on top, and next to its field when it names one."""
    errors = FormErrors() if errors is None else errors
    message = page_error_text(err, lang)
    errors.general.append(message)
    name = err.extra.get("field")
    if isinstance(name, str):
        errors.add("store_code" if name == "store_id" else name, message)
    return errors


def int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


# --- overview ------------------------------------------------------------------------------------------

STORE_SORTS = ("store", "issued", "redeemed", "expired")


def sorted_stores(
    flows: list[points_overview.StoreFlow], sort: str
) -> tuple[list[points_overview.StoreFlow], str]:
    if sort.removeprefix("-") not in STORE_SORTS:
        sort = "-issued"
    key = sort.removeprefix("-")
    rows = sorted(
        flows,
        key=lambda f: (f.store_code, 0) if key == "store" else (getattr(f, key), f.store_code),
        reverse=sort.startswith("-"),
    )
    return rows, sort


def overview_data(
    request: Request, session: Session, user: Principal, params: dict[str, str]
) -> tuple[points_overview.Overview, ScopeChoice]:
    choice = choose_scope(session, user, request.state.lang, params.get("store"), params.get("region"))
    data = points_overview.compute(session, user.org_id, choice.store_ids, utcnow(), months=12)
    return data, choice


@router.get("/console/points")
def points_overview_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """HQ's view of the points pool: liability, expiry ahead, flows by store, breakage, big adjustments."""
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, ("store", "region", "sort", "page"))
    data, choice = overview_data(request, session, user, params)
    stores, sort = sorted_stores(data.by_store, params.get("sort", ""))
    page = page_number(params.get("page"))
    chunk = stores[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    listing = Paged(chunk[:PAGE_SIZE], page, PAGE_SIZE, len(chunk) > PAGE_SIZE)
    top = sorted(data.by_store, key=lambda f: (-f.issued, f.store_code))[:15]
    expiring = charts.bar(
        t("pts.chart.expiring"),
        [m.month for m in data.expiring_by_month],
        [m.points for m in data.expiring_by_month],
    )
    by_store = grouped_bar(
        t("pts.chart.by_store"),
        [f.store_name for f in top],
        {
            t("pts.col.issued"): [f.issued for f in top],
            t("pts.col.redeemed"): [f.redeemed for f in top],
            t("pts.col.expired"): [f.expired for f in top],
        },
    )
    kpis = [
        ("outstanding", f"{data.outstanding_points:,}", ""),
        (
            "liability",
            fen(data.liability_fen),
            f"{t('pts.kpi.value_note')}: {fen(data.point_value_fen_per_100)}",
        ),
        ("issued", f"{data.issued_12m:,}", ""),
        ("redeemed", f"{data.redeemed_12m:,}", ""),
        ("expired", f"{data.expired_12m:,}", ""),
        ("breakage", f"{data.breakage_pct:.2f}%", t("pts.kpi.breakage_note")),
    ]
    link = linker("/console/points", params)
    return render(
        request,
        "console/points/overview.html",
        base_context(
            user,
            "overview",
            choice.tz,
            data=data,
            kpis=kpis,
            charts={"expiring": expiring, "by_store": by_store},
            has_expiring=any(m.points for m in data.expiring_by_month),
            listing=listing,
            sort=sort,
            link=link,
            params=params,
            export_url=linker("/console/points/stores.xlsx", params)(page=None),
            show_adjustments=user.is_hq,
            **scope_context(choice, {k: v for k, v in params.items() if k == "sort"}),
        ),
    )


@router.get("/console/points/stores.xlsx")
def points_by_store_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The overview's by-store table as Excel: the same scope filter and order as the page, every row."""
    t = texts(request.state.lang)
    params = read_params(request, ("store", "region", "sort"))
    data, _ = overview_data(request, session, user, params)
    stores, _ = sorted_stores(data.by_store, params.get("sort", ""))
    headers = [t(f"pts.col.{k}") for k in ("store_code", "store", "issued", "redeemed", "expired")]
    rows = [(f.store_code, f.store_name, f.issued, f.redeemed, f.expired) for f in stores]
    return xlsx_response("points-by-store.xlsx", headers, rows, sheet="points by store")


# --- program -------------------------------------------------------------------------------------------

PROGRAM_GROUPS: dict[str, tuple[str, ...]] = {
    "rates": ("earn_points_per_yuan", "redeem_points_per_yuan", "growth_per_yuan", "pending_days"),
    "expiry": (
        "expiry_policy",
        "expiry_months",
        "expiry_fixed_month",
        "expiry_fixed_day",
        "expiry_years_after",
        "reminder_days",
    ),
    "stores": ("allow_store_rules", "store_bonus_max_multiplier_pct", "store_bonus_max_budget"),
    "limits": ("transfer_max_per_month", "adjust_approval_threshold"),
}
POLICIES = ("never", "rolling", "fixed_yearly")


def bounds(model: type[BaseModel], name: str) -> dict[str, int]:
    """The ``min``/``max`` of an integer field of an API model, for the input's HTML attributes."""
    found: dict[str, int] = {}
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, annotated_types.Ge):
            found["min"] = int(meta.ge)  # type: ignore[call-overload]
        elif isinstance(meta, annotated_types.Le):
            found["max"] = int(meta.le)  # type: ignore[call-overload]
    return found


def program_values(program: PointsProgram) -> dict[str, str]:
    out = program_api.ProgramOut.model_validate(program, from_attributes=True)
    return {k: ("on" if v is True else "" if v is False else str(v)) for k, v in out.model_dump().items()}


def program_page(
    request: Request,
    session: Session,
    user: Principal,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    program = points.default_program(session, user.org_id)
    return render(
        request,
        "console/points/program.html",
        base_context(
            user,
            "program",
            org_tz(session, user),
            program=program,
            values=values or program_values(program),
            errors=errors or FormErrors(),
            groups=PROGRAM_GROUPS,
            policies=POLICIES,
            bounds={
                name: bounds(program_api.ProgramIn, name)
                for group in PROGRAM_GROUPS.values()
                for name in group
                if name not in ("expiry_policy", "allow_store_rules")
            },
            editable=user.role == Role.HQ_ADMIN,
            saved=request.query_params.get("saved") == "1",
        ),
        status_code=status,
    )


@router.get("/console/points/program")
def program_settings(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The points program: rates, pending days, expiry, store-rule caps, limits (HQ edits, others read)."""
    return program_page(request, session, user)


@router.post("/console/points/program", dependencies=[Csrf])
def save_program(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Save the program settings through the API's own update (validated the same way, audited)."""
    user.require_role(HQ_ONLY, "修改积分计划", "change the points program")
    lang = request.state.lang
    names = [n for group in PROGRAM_GROUPS.values() for n in group]
    values = {n: form.get(n) for n in names}
    values["allow_store_rules"] = "on" if form.get("allow_store_rules") else ""
    data: dict[str, Any] = {n: values[n] for n in names}
    data["allow_store_rules"] = bool(values["allow_store_rules"])
    try:
        body = program_api.ProgramIn.model_validate(data)
    except ValidationError as exc:
        return program_page(request, session, user, values, validation_errors(exc, lang), 422)
    try:
        program_api.update_program(body, user, session, lang)
    except DomainError as err:
        session.rollback()
        return program_page(request, session, user, values, domain_errors(err, lang), err.status)
    return done(request, "/console/points/program?saved=1")


# --- rules ---------------------------------------------------------------------------------------------

RULE_FIELDS_ORDER = (
    "points_per_yuan",
    "multiplier_pct",
    "category",
    "sku",
    "tier_code",
    "bonus_points",
    "weekday",
    "month_day",
    "store_code",
    "cap_points",
    "budget_points",
)
RULE_SORTS = ("kind", "newest", "name")


@dataclass
class RuleRow:
    rule_key: str
    version: int
    kind: str
    name: str
    label_zh: str
    label_en: str
    store_code: str
    store_name: str
    valid_from: datetime
    valid_to: datetime | None
    budget_points: int | None
    budget_used: int
    created_by: str
    can_write: bool


@dataclass
class RuleForm:
    """The create or revise form: the kind, the fields that kind uses, the values typed and the errors."""

    kind: RuleKind
    kinds: list[RuleKind]
    fields: list[str]
    required: set[str]
    values: dict[str, str]
    errors: FormErrors
    stores: list[Store]
    tier_codes: list[str]
    action: str
    fixed_kind: bool = False


def kind_fields(kind: RuleKind) -> tuple[list[str], set[str]]:
    """The inputs a kind's form shows (following rules.REQUIRED) and which of them are required."""
    needed = {"store_code" if n == "store_id" else n for n in rules.REQUIRED[kind]}
    shown = set(needed) | ({"weekday", "month_day"} if kind == RuleKind.MEMBER_DAY_MULTIPLIER else set())
    ordered = ["name", *[n for n in RULE_FIELDS_ORDER if n in shown], "valid_from", "valid_to"]
    return ordered, needed


def may_write_rules(user: Principal, program: PointsProgram) -> bool:
    if user.role == Role.HQ_ADMIN:
        return True
    return user.role == Role.STORE_MANAGER and program.allow_store_rules


def writable_kinds(user: Principal) -> list[RuleKind]:
    return list(RuleKind) if user.role == Role.HQ_ADMIN else [RuleKind.STORE_BONUS_MULTIPLIER]


def can_write_row(user: Principal, program: PointsProgram, row: EarnRule) -> bool:
    if user.role == Role.HQ_ADMIN:
        return True
    return (
        may_write_rules(user, program)
        and row.kind == RuleKind.STORE_BONUS_MULTIPLIER
        and row.store_id is not None
        and user.can_access_store(row.store_id)
    )


def rule_rows(
    session: Session, user: Principal, program: PointsProgram, found: Sequence[EarnRule]
) -> list[RuleRow]:
    stores = {s.id: s for s in session.scalars(select(Store).where(Store.org_id == user.org_id))}
    out = []
    for row in found:
        store = stores.get(row.store_id) if row.store_id else None
        zh, en = label(rules.to_rule(row))
        out.append(
            RuleRow(
                rule_key=row.rule_key,
                version=row.version,
                kind=row.kind,
                name=row.name,
                label_zh=zh,
                label_en=en,
                store_code=store.code if store else "",
                store_name=store.name if store else "",
                valid_from=row.valid_from,
                valid_to=row.valid_to,
                budget_points=row.budget_points,
                budget_used=row.budget_used,
                created_by=row.created_by,
                can_write=can_write_row(user, program, row),
            )
        )
    return out


def visible_rule(user: Principal, row: EarnRule) -> bool:
    """Store staff see the org's rules and the store bonuses of their own stores."""
    return row.store_id is None or user.can_access_store(row.store_id)


def tier_codes(session: Session, program: PointsProgram) -> list[str]:
    tier_set = tiers.active_set(session, program.id)
    return [lv.code for lv in tiers.level_rows(session, tier_set.id)] if tier_set else []


def rule_form(
    session: Session,
    user: Principal,
    program: PointsProgram,
    kind: str,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    action: str = "/console/points/rules",
    fixed_kind: bool = False,
) -> RuleForm:
    """The form for ``kind`` (a revision keeps its rule's kind: ``fixed_kind``)."""
    kinds = [RuleKind(kind)] if fixed_kind else writable_kinds(user)
    chosen = next((k for k in kinds if k == kind), kinds[0])
    fields, required = kind_fields(chosen)
    return RuleForm(
        kind=chosen,
        kinds=kinds,
        fields=fields,
        required=required,
        values=values or {},
        errors=errors or FormErrors(),
        stores=writable_stores(session, user),
        tier_codes=tier_codes(session, program),
        action=action,
        fixed_kind=fixed_kind,
    )


def parse_rule(
    form: Posted, kind: RuleKind, tz: str, lang: str
) -> tuple[dict[str, str], program_api.RuleIn | None, FormErrors]:
    """The typed form as a ``RuleIn`` (or the errors); only the fields of the chosen kind are read."""
    fields, _ = kind_fields(kind)
    values = {n: form.get(n) for n in fields}
    errors = FormErrors()
    data: dict[str, Any] = {"kind": str(kind)}
    for name in fields:
        value = values[name]
        if not value:
            continue
        if name in ("valid_from", "valid_to"):
            try:
                data[name] = parse_local(value, tz)
            except ValueError:
                errors.add(
                    name,
                    f"{texts(lang)(f'pts.f.{name}')}{' ' if lang == 'en' else '：'}"
                    f"{texts(lang)('pts.bad_datetime')}",
                )
            continue
        data[name] = value
    try:
        body = program_api.RuleIn.model_validate(data)
    except ValidationError as exc:
        return values, None, validation_errors(exc, lang, errors)
    if errors:
        return values, None, errors
    return values, body, errors


def rules_listing(
    session: Session, user: Principal, program: PointsProgram, params: dict[str, str], tz: str
) -> tuple[list[EarnRule], datetime, bool, str]:
    """The rule versions in force at ``params["at"]`` (local time; now if empty or unreadable) that the user
    may see, filtered by kind and sorted; also the moment, whether it was unreadable, and the sort used."""
    at, bad_at = utcnow(), False
    if params.get("at"):
        try:
            at = parse_local(params["at"], tz)
        except ValueError:
            bad_at = True
    found = [r for r in rules.rows_in_force(session, program.id, at) if visible_rule(user, r)]
    if params.get("kind") in set(RuleKind):
        found = [r for r in found if r.kind == params["kind"]]
    sort = params["sort"] if params.get("sort") in RULE_SORTS else "kind"
    keys: dict[str, Callable[[EarnRule], Any]] = {
        "kind": lambda r: (list(RuleKind).index(RuleKind(r.kind)), r.id),
        "newest": lambda r: (-r.valid_from.timestamp(), -r.id),
        "name": lambda r: (r.name, r.id),
    }
    return sorted(found, key=keys[sort]), at, bad_at, sort


def rules_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    form: RuleForm | None = None,
    simulation: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    tz = org_tz(session, user)
    program = points.default_program(session, user.org_id)
    params = read_params(request, ("at", "kind", "sort", "page"))
    found, at, bad_at, sort = rules_listing(session, user, program, params, tz)
    page = page_number(params.get("page"))
    chunk = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    listing = Paged(
        rule_rows(session, user, program, chunk[:PAGE_SIZE]), page, PAGE_SIZE, len(chunk) > PAGE_SIZE
    )
    has_base = any(r.kind == RuleKind.BASE_RATE for r in rules.rows_in_force(session, program.id, at))
    writer = may_write_rules(user, program)
    if form is None and writer:
        form = rule_form(session, user, program, request.query_params.get("new_kind", ""))
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/points/rules.html",
        base_context(
            user,
            "rules",
            tz,
            program=program,
            listing=listing,
            params=params,
            link=linker("/console/points/rules", params),
            export_url=linker("/console/points/rules.xlsx", params)(page=None),
            at_value=params.get("at", "") if not bad_at else "",
            bad_at=bad_at,
            viewing_past=bool(params.get("at")) and not bad_at,
            has_base=has_base,
            kinds=list(RuleKind),
            sort=sort,
            sorts=RULE_SORTS,
            form=form,
            writer=writer,
            store_manager=user.role == Role.STORE_MANAGER,
            notice=notice if notice in ("created", "revised", "ended") else "",
            sim=simulation or sim_defaults(session, user),
            lang=lang,
        ),
        status_code=status,
    )


@router.get("/console/points/rules")
def earn_rules(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The earn rules in force now or at a chosen moment, the create form and the simulation panel."""
    return rules_page(request, session, user)


@router.get("/console/points/rules.xlsx")
def earn_rules_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The rules listed on the page (same moment, kind filter and order) as Excel."""
    lang = request.state.lang
    t = texts(lang)
    tz = org_tz(session, user)
    program = points.default_program(session, user.org_id)
    params = read_params(request, ("at", "kind", "sort"))
    found, _, _, _ = rules_listing(session, user, program, params, tz)
    zone = ZoneInfo(tz)
    headers = [
        "rule_key",
        t("pts.rules.version"),
        t("pts.rules.kind"),
        t("pts.f.name"),
        t("pts.rules.terms"),
        t("pts.f.store_code"),
        t("pts.f.valid_from"),
        t("pts.f.valid_to"),
        t("pts.f.budget_points"),
        t("pts.rules.budget"),
        t("pts.rules.created_by"),
    ]
    rows = [
        (
            r.rule_key,
            r.version,
            t(f"pts.kind.{r.kind}"),
            r.name,
            r.label_en if lang == "en" else r.label_zh,
            r.store_code,
            r.valid_from.astimezone(zone),
            r.valid_to.astimezone(zone) if r.valid_to else None,
            r.budget_points,
            r.budget_used,
            r.created_by,
        )
        for r in rule_rows(session, user, program, found)
    ]
    return xlsx_response("earn-rules.xlsx", headers, rows, sheet="earn rules")


@router.get("/console/points/rules/fields")
def rule_fields(request: Request, user: ConsoleUser, session: SessionDep, kind: str = "") -> HTMLResponse:
    """The create form's inputs for one kind (htmx swaps them in when the kind changes)."""
    program = points.default_program(session, user.org_id)
    if not may_write_rules(user, program):
        raise Forbidden("您的角色无权修改积分规则", "Your role may not change earn rules", code="auth.role")
    form = rule_form(session, user, program, kind)
    return render(
        request,
        "console/points/_rule_fields.html",
        base_context(user, "rules", org_tz(session, user), form=form, program=program),
    )


def require_rule_writer(user: Principal, program: PointsProgram, kind: RuleKind | None = None) -> None:
    """Refuse before reading the form: clerks, CS and auditors never change rules (403, nothing written)."""
    if user.role not in RULE_WRITERS or (
        user.role == Role.STORE_MANAGER and kind is not None and kind != RuleKind.STORE_BONUS_MULTIPLIER
    ):
        raise Forbidden("您的角色无权修改积分规则", "Your role may not change earn rules", code="auth.role")
    if user.role == Role.STORE_MANAGER and not program.allow_store_rules:
        raise Forbidden(
            "该积分计划不允许门店自设规则",
            "This program does not allow store rules",
            code="points.store_rules_disabled",
        )


def chosen_kind(text: str) -> RuleKind:
    try:
        return RuleKind(text)
    except ValueError as exc:
        raise Invalid(
            "未知的规则类型", "Unknown rule kind", code="points.invalid_rule", field="kind"
        ) from exc


@router.post("/console/points/rules", dependencies=[Csrf])
def create_rule(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Add a typed earn rule (HQ; store managers: store bonuses for their store inside HQ's caps)."""
    lang = request.state.lang
    program = points.default_program(session, user.org_id)
    kind = chosen_kind(form.get("kind"))
    require_rule_writer(user, program, kind)
    tz = org_tz(session, user)
    values, body, errors = parse_rule(form, kind, tz, lang)
    if body is not None:
        try:
            row = rules.create_rule(session, user, program, program_api._spec(session, user.org_id, body))
            session.commit()
            return done(request, f"/console/points/rules?done=created#rule-{row.rule_key}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, errors)
            status = err.status
    else:
        status = 422
    bad = rule_form(session, user, program, kind, values=values, errors=errors)
    return rules_page(request, session, user, form=bad, status=status)


def latest_version(session: Session, user: Principal, rule_key: str) -> EarnRule:
    row = session.scalar(
        select(EarnRule)
        .where(EarnRule.org_id == user.org_id, EarnRule.rule_key == rule_key)
        .order_by(EarnRule.version.desc())
        .limit(1)
    )
    if row is None or not visible_rule(user, row):
        raise rules.RuleNotFound()
    return row


def rule_values(row: EarnRule, session: Session, tz: str) -> dict[str, str]:
    store = org_service.get_store(session, row.org_id, row.store_id) if row.store_id else None
    values = {
        n: str(getattr(row, n))
        for n in RULE_FIELDS_ORDER
        if n != "store_code" and getattr(row, n) is not None
    }
    values["name"] = row.name
    if store is not None:
        values["store_code"] = store.code
    if row.valid_to is not None and row.valid_to > utcnow():
        values["valid_to"] = local_input(row.valid_to, tz)
    return values


def revise_page(
    request: Request,
    session: Session,
    user: Principal,
    row: EarnRule,
    form: RuleForm,
    status: int = 200,
) -> HTMLResponse:
    program = points.default_program(session, user.org_id)
    history = list(
        session.scalars(
            select(EarnRule)
            .where(EarnRule.org_id == user.org_id, EarnRule.rule_key == row.rule_key)
            .order_by(EarnRule.version.desc())
        )
    )
    return render(
        request,
        "console/points/revise.html",
        base_context(
            user,
            "rules",
            org_tz(session, user),
            program=program,
            rule=rule_rows(session, user, program, [row])[0],
            history=rule_rows(session, user, program, history),
            form=form,
        ),
        status_code=status,
    )


def require_row_writer(user: Principal, program: PointsProgram, row: EarnRule) -> None:
    """HQ revises or ends any rule; a store manager only the store bonuses of their own store."""
    require_rule_writer(user, program, RuleKind(row.kind))
    if not can_write_row(user, program, row):
        raise Forbidden(
            "该门店不在您的权限范围内", "That store is outside your scope", code="auth.store_scope"
        )


@router.get("/console/points/rules/{rule_key}/revise")
def revise_form(rule_key: str, request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The revise form, filled with the current version's terms, and the rule's versions."""
    program = points.default_program(session, user.org_id)
    row = latest_version(session, user, rule_key)
    require_row_writer(user, program, row)
    tz = org_tz(session, user)
    action = f"/console/points/rules/{rule_key}/revise"
    form = rule_form(
        session, user, program, row.kind, values=rule_values(row, session, tz), action=action, fixed_kind=True
    )
    return revise_page(request, session, user, row, form)


@router.post("/console/points/rules/{rule_key}/revise", dependencies=[Csrf])
def revise_rule(
    rule_key: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Close the rule's current version now and open the next one with the new terms."""
    lang = request.state.lang
    program = points.default_program(session, user.org_id)
    row = latest_version(session, user, rule_key)
    require_row_writer(user, program, row)
    kind = RuleKind(row.kind)
    tz = org_tz(session, user)
    values, body, errors = parse_rule(form, kind, tz, lang)
    status = 422
    if body is not None:
        try:
            spec = program_api._spec(session, user.org_id, body)
            rules.revise_rule(session, user, program, rule_key, spec)
            session.commit()
            return done(request, f"/console/points/rules?done=revised#rule-{rule_key}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, errors)
            status = err.status
    action = f"/console/points/rules/{rule_key}/revise"
    bad = rule_form(
        session, user, program, kind, values=values, errors=errors, action=action, fixed_kind=True
    )
    row = latest_version(session, user, rule_key)
    return revise_page(request, session, user, row, bad, status)


@router.post("/console/points/rules/{rule_key}/end", dependencies=[Csrf])
def end_rule(rule_key: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """End a rule now; past orders keep being explained by it."""
    program = points.default_program(session, user.org_id)
    row = latest_version(session, user, rule_key)
    require_row_writer(user, program, row)
    rules.end_rule(session, user, program, rule_key)
    session.commit()
    return done(request, "/console/points/rules?done=ended")


# --- simulation ----------------------------------------------------------------------------------------


def sim_defaults(session: Session, user: Principal) -> dict[str, Any]:
    stores = writable_stores(session, user)
    default_store = next((s.code for s in stores if s.id == user.store_id), stores[0].code if stores else "")
    return {
        "stores": stores,
        "values": {"member_no": "", "store_code": default_store},
        "lines": [{"sku": "", "category": "", "quantity": "1", "price": ""} for _ in range(SIM_LINES)],
        "errors": FormErrors(),
        "result": None,
    }


@dataclass
class SimLine:
    line_no: int
    sku: str
    category: str
    quantity: int
    amount_fen: int
    discount_fen: int
    paid_fen: int
    points: int


@router.post("/console/points/rules/simulate", dependencies=[Csrf])
def simulate(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> HTMLResponse:
    """What a basket would earn for a member, line by line and why: ``quote`` without locks, rolled back."""
    lang = request.state.lang
    t = texts(lang)
    sim = sim_defaults(session, user)
    errors: FormErrors = sim["errors"]
    member_no, store_code = form.get("member_no"), form.get("store_code")
    sim["values"] = {"member_no": member_no, "store_code": store_code}
    typed = list(
        zip(
            form.getlist("sku"),
            form.getlist("category"),
            form.getlist("quantity"),
            form.getlist("price"),
            strict=False,
        )
    )
    sim["lines"] = [{"sku": s, "category": c, "quantity": q, "price": p} for s, c, q, p in typed] or sim[
        "lines"
    ]
    lines: list[dict[str, Any]] = []
    for i, (sku, category, qty, price) in enumerate(typed):
        if not sku and not price:
            continue
        fen = yuan_to_fen(price)
        if fen is None:
            errors.add(
                f"lines.{i}.price", f"{t('pts.sim.line_n').replace('{n}', str(i + 1))} · {t('pts.bad_money')}"
            )
        quantity = int_or_none(qty or "1")
        if quantity is None:
            errors.add(
                f"lines.{i}.quantity",
                f"{t('pts.sim.line_n').replace('{n}', str(i + 1))} · {t('pts.bad_number')}",
            )
        lines.append(
            {
                "sku": sku or "-",
                "name": sku or "-",
                "category": category,
                "quantity": quantity or 0,
                "unit_price_fen": fen or 0,
            }
        )
    if not member_no:
        errors.add("member_no", t("pts.sim.need_member"))
    if not lines:
        errors.general.append(t("pts.sim.no_lines"))
    status = 422
    if not errors:
        try:
            body = CheckoutIn.model_validate(
                {"member": {"member_no": member_no}, "store_code": store_code or None, "lines": lines}
            )
            q = quote(session, user, body, lock=False)
            explanation = explanation_of(q, [(i, line.sku) for i, line in enumerate(body.lines, 1)])
            sim["result"] = {
                "quote": q,
                "explanation": explanation,
                "lines": [
                    SimLine(
                        i,
                        line.sku,
                        line.category,
                        line.quantity,
                        plan.amount_fen + disc,
                        disc,
                        plan.paid_fen,
                        plan.points_earned,
                    )
                    for i, (line, plan, disc) in enumerate(
                        zip(body.lines, q.plans, q.line_discounts, strict=True), 1
                    )
                ],
                "member_no": q.member.member_no if q.member else "",
                "store": q.store,
            }
            status = 200
        except ValidationError as exc:
            validation_errors(exc, lang, errors)
        except DomainError as err:
            domain_errors(err, lang, errors)
            status = err.status
        finally:
            session.rollback()  # quote may create an empty points account; a simulation keeps nothing
    if is_htmx(request):
        return render(
            request, "console/points/_simulation.html", {"sim": sim, "user": user}, status_code=status
        )
    return rules_page(request, session, user, simulation=sim, status=status)


# --- tiers ---------------------------------------------------------------------------------------------

LEVEL_FIELDS = (
    "code",
    "name",
    "threshold",
    "keep_threshold",
    "points_multiplier_pct",
    "discount_pct",
    "birthday_gift_points",
    "free_service_uses",
)
LEVEL_DEFAULTS = {
    "points_multiplier_pct": "100",
    "discount_pct": "0",
    "birthday_gift_points": "0",
    "free_service_uses": "0",
}


@dataclass
class LevelView:
    level: TierLevel
    members: int


def tier_levels(session: Session, tier_set: TierSet) -> list[LevelView]:
    """The set's levels with the number of members standing at each (one grouped count on member_tiers)."""
    counts = dict(
        session.execute(
            select(MemberTier.level_id, func.count())
            .where(MemberTier.tier_set_id == tier_set.id)
            .group_by(MemberTier.level_id)
        ).all()
    )
    return [LevelView(lv, int(counts.get(lv.id, 0))) for lv in tiers.level_rows(session, tier_set.id)]


def tiers_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, Any] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    t = texts(request.state.lang)
    program = points.default_program(session, user.org_id)
    tier_set = tiers.active_set(session, program.id)
    levels = tier_levels(session, tier_set) if tier_set else []
    chart = (
        charts.bar(t("pts.tiers.distribution"), [v.level.name for v in levels], [v.members for v in levels])
        if levels
        else ""
    )
    blank = {"code": "", "name": "", "basis": "growth", "grace_days": "30"}
    rows = [{f: LEVEL_DEFAULTS.get(f, "") for f in LEVEL_FIELDS} for _ in range(TIER_ROWS)]
    rows[0]["threshold"] = "0"
    rows[0]["keep_threshold"] = "0"
    return render(
        request,
        "console/points/tiers.html",
        base_context(
            user,
            "tiers",
            org_tz(session, user),
            tier_set=tier_set,
            levels=levels,
            chart=chart,
            can_create=tier_set is None and user.role == Role.HQ_ADMIN,
            values=values or {**blank, "levels": rows},
            errors=errors or FormErrors(),
            bases=tiers.BASES,
            level_fields=LEVEL_FIELDS,
            created=request.query_params.get("done") == "created",
        ),
        status_code=status,
    )


@router.get("/console/points/tiers")
def tier_set_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """The tier set (levels, thresholds, keep thresholds, benefits) and the members per level."""
    return tiers_page(request, session, user)


@router.get("/console/points/tiers.xlsx")
def tier_set_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The levels with their benefits and member counts as Excel."""
    t = texts(request.state.lang)
    program = points.default_program(session, user.org_id)
    tier_set = tiers.active_set(session, program.id)
    levels = tier_levels(session, tier_set) if tier_set else []
    headers = [t(f"pts.f.{'level_name' if f == 'name' else f}") for f in LEVEL_FIELDS] + [
        t("pts.tiers.members")
    ]
    rows = [(*(getattr(v.level, f) for f in LEVEL_FIELDS), v.members) for v in levels]
    return xlsx_response("tiers.xlsx", headers, rows, sheet="tiers")


@router.post("/console/points/tiers", dependencies=[Csrf])
def create_tier_set(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """HQ sets up the program's tier set (validated like POST /api/v1/tiers, audited by the service)."""
    user.require_role(HQ_ONLY, "设置会员等级", "set up tiers")
    lang = request.state.lang
    columns = {f: form.getlist(f"level_{f}") for f in LEVEL_FIELDS}
    count = max((len(v) for v in columns.values()), default=0)
    typed = [{f: (columns[f][i] if i < len(columns[f]) else "") for f in LEVEL_FIELDS} for i in range(count)]
    levels = [row for row in typed if row["code"] or row["name"]]
    values: dict[str, Any] = {
        "code": form.get("code"),
        "name": form.get("name"),
        "basis": form.get("basis"),
        "grace_days": form.get("grace_days"),
        "levels": typed,
    }
    data = {
        "code": values["code"],
        "name": values["name"],
        "basis": values["basis"],
        "grace_days": values["grace_days"],
        "levels": [{f: row[f] or LEVEL_DEFAULTS.get(f, row[f]) for f in LEVEL_FIELDS} for row in levels],
    }
    try:
        body = program_api.TierSetIn.model_validate(data)
    except ValidationError as exc:
        return tiers_page(
            request, session, user, values=values, errors=validation_errors(exc, lang), status=422
        )
    try:
        program = points.default_program(session, user.org_id)
        tiers.create_tier_set(
            session,
            user,
            program,
            body.code,
            body.name,
            body.basis,
            body.grace_days,
            [tiers.LevelSpec(**lv.model_dump()) for lv in body.levels],
        )
        session.commit()
    except DomainError as err:
        session.rollback()
        return tiers_page(
            request, session, user, values=values, errors=domain_errors(err, lang), status=err.status
        )
    return done(request, "/console/points/tiers?done=created")


# --- adjustments ---------------------------------------------------------------------------------------

ADJ_STATUSES = ("all", "pending", "applied", "rejected")
ADJ_NOTICES = ("applied", "waiting", "approved", "rejected")


def adjustment_rows(
    session: Session, user: Principal, status: str, page: int
) -> tuple[Paged, list[AdjustmentOut]]:
    found = adjust_service.adjustments(
        session, user, None if status == "all" else status, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    listing = Paged(found[:PAGE_SIZE], page, PAGE_SIZE, len(found) > PAGE_SIZE)
    return listing, [adjustment_out(session, a) for a in listing.rows]


def adjustments_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    decide_error: str = "",
    status: int = 200,
) -> HTMLResponse:
    params = read_params(request, ("status", "page"))
    chosen = params.get("status", "all") if params.get("status") in ADJ_STATUSES else "all"
    listing, rows = adjustment_rows(session, user, chosen, page_number(params.get("page")))
    pending = [
        adjustment_out(session, a) for a in adjust_service.adjustments(session, user, "pending", limit=50)
    ]
    program = points.default_program(session, user.org_id)
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/points/adjustments.html",
        base_context(
            user,
            "adjustments",
            org_tz(session, user),
            listing=listing,
            rows=rows,
            pending=pending,
            chosen=chosen,
            statuses=ADJ_STATUSES,
            params=params,
            link=linker("/console/points/adjustments", params),
            export_url=linker("/console/points/adjustments.xlsx", params)(page=None),
            can_request=user.role in adjust_service.ADJUST_ROLES,
            can_decide=user.role in adjust_service.APPROVE_ROLES,
            threshold=program.adjust_approval_threshold,
            stores=writable_stores(session, user),
            values=values or {"store_code": ""},
            errors=errors or FormErrors(),
            decide_error=decide_error,
            notice=notice if notice in ADJ_NOTICES else "",
        ),
        status_code=status,
    )


@router.get("/console/points/adjustments")
def adjustments_list(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Adjustments waiting for a second person, the recent ones, and the request form."""
    return adjustments_page(request, session, user)


@router.get("/console/points/adjustments.xlsx")
def adjustments_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The adjustments of the chosen status as Excel (newest first, like the page)."""
    t = texts(request.state.lang)
    status = request.query_params.get("status", "all")
    status = status if status in ADJ_STATUSES else "all"
    found = adjust_service.adjustments(session, user, None if status == "all" else status, limit=EXPORT_LIMIT)
    zone = ZoneInfo(org_tz(session, user))
    headers = [
        "id",
        t("pts.col.member_no"),
        t("pts.col.points"),
        t("pts.col.reason"),
        t("pts.col.status"),
        t("pts.col.requested_by"),
        t("pts.col.decided_by"),
        t("pts.col.at"),
        t("pts.col.store_code"),
    ]
    rows = [
        (
            a.id,
            a.member_no,
            a.points,
            a.reason,
            t(f"pts.adj.status.{a.status}"),
            a.requested_by,
            a.decided_by,
            a.created_at.astimezone(zone),
            a.store_code or "",
        )
        for a in (adjustment_out(session, x) for x in found)
    ]
    return xlsx_response("points-adjustments.xlsx", headers, rows, sheet="adjustments")


@router.post("/console/points/adjustments", dependencies=[Csrf])
def request_adjustment(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Ask for a points adjustment with a reason; above the program's threshold it waits for approval."""
    user.require_role(adjust_service.ADJUST_ROLES, "调整积分", "adjust points")
    lang = request.state.lang
    t = texts(lang)
    values = {n: form.get(n) for n in ("member_no", "points", "reason", "store_code")}
    errors = FormErrors()
    amount = int_or_none(values["points"])
    if amount is None:
        errors.add("points", f"{t('pts.col.points')}{' ' if lang == 'en' else '：'}{t('pts.bad_number')}")
    if not values["member_no"]:
        errors.add("member_no", t("pts.sim.need_member"))
    if not errors and amount is not None:
        try:
            member = members.by_member_no(session, user.org_id, values["member_no"])
            store = (
                org_service.store_by_code(session, user.org_id, values["store_code"])
                if values["store_code"]
                else None
            )
            adjustment = adjust_service.request_adjustment(
                session, user, member, amount, values["reason"], store=store
            )
            waiting = adjustment.status == adjust_service.AdjustmentStatus.PENDING
            session.commit()
            return done(request, f"/console/points/adjustments?done={'waiting' if waiting else 'applied'}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, errors)
            return adjustments_page(request, session, user, values=values, errors=errors, status=err.status)
    return adjustments_page(request, session, user, values=values, errors=errors, status=422)


def decide(
    request: Request,
    session: Session,
    user: Principal,
    adjustment_id: int,
    note: str,
    action: Callable[[Session, Principal, int, str], object],
    notice: str,
) -> Response:
    try:
        action(session, user, adjustment_id, note[:300])
        session.commit()
    except DomainError as err:
        session.rollback()
        return adjustments_page(
            request, session, user, decide_error=page_error_text(err, request.state.lang), status=err.status
        )
    return done(request, f"/console/points/adjustments?done={notice}")


@router.post("/console/points/adjustments/{adjustment_id}/approve", dependencies=[Csrf])
def approve_adjustment(
    adjustment_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """A different HQ admin approves a pending adjustment; it applies at once."""
    user.require_role(adjust_service.APPROVE_ROLES, "审批积分调整", "decide on adjustments")
    return decide(
        request, session, user, adjustment_id, form.get("note"), adjust_service.approve_adjustment, "approved"
    )


@router.post("/console/points/adjustments/{adjustment_id}/reject", dependencies=[Csrf])
def reject_adjustment(
    adjustment_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """A different HQ admin rejects a pending adjustment; no points move."""
    user.require_role(adjust_service.APPROVE_ROLES, "审批积分调整", "decide on adjustments")
    return decide(
        request, session, user, adjustment_id, form.get("note"), adjust_service.reject_adjustment, "rejected"
    )
