"""Console section "Coupons & packages" (卡券与次卡): coupon templates with their numbers and charts, one
template's redemptions by store and its issued coupons, issuing a coupon to a member (by staff or as
compensation) and gifting it, service package (次卡) templates, and a member's packages with sale, grant,
use and refund.

Every change a form makes goes through the JSON API's own endpoint functions (coupons/api.py,
packages/api.py) called in-process, so roles, store scope, validation, audit and events are exactly the
API's. Each rendered form carries a fresh ``Idempotency-Key``: a double-click issues one coupon or takes one
use, and a resubmitted form shows the first answer again. Stopping or resuming a template, which the API
does not offer, calls the domain service's ``set_active`` with its own role check. Numbers follow the
user's scope: store staff see what their stores issued, redeemed, sold and served.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common.types import IdentityKind
from onemember.coupons import api as coupons_api
from onemember.coupons import service as coupons
from onemember.coupons.calculations import ITEM_VOUCHERS, Kind
from onemember.coupons.models import Coupon, CouponRedemption, CouponTemplate
from onemember.coupons.service import issuance
from onemember.coupons.service import templates as coupon_templates
from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.errors import DomainError, Invalid
from onemember.members import service as members
from onemember.members import views as member_views
from onemember.members.errors import InvalidIdentity
from onemember.members.models import Member
from onemember.org.models import Brand, Region, Store
from onemember.packages import api as packages_api
from onemember.packages import service as packages
from onemember.packages.calculations import per_use_values
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.points.calculations import end_of_local_day
from onemember.web import charts, i18n
from onemember.web.common import ConsoleUser, Csrf, page_error_text
from onemember.web.console import choose_scope, scope_context
from onemember.web.console_org import HTMX_CONFIG, Paged, linker, page_number, read_params, texts
from onemember.web.console_points import (
    ERROR_TEXTS,
    FormErrors,
    Posted,
    PostedForm,
    done,
    grouped_bar,
    org_tz,
    writable_stores,
    yuan_to_fen,
)
from onemember.web.export import xlsx_response
from onemember.web.forms import label_sep
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "ben.title": ("卡券与次卡", "Coupons & packages"),
        "ben.tab.coupons": ("优惠券", "Coupons"),
        "ben.tab.issue": ("发券", "Issue coupons"),
        "ben.tab.packages": ("次卡", "Service packages"),
        "ben.tab.holders": ("会员次卡", "Member packages"),
        "ben.readonly": ("只读：您的角色可以查看但不能修改", "Read only: your role may look but not change"),
        "ben.readonly_templates": (
            "只有总部管理员可以新建、停发或恢复模板；您可以查看",
            "Only HQ admins create, stop or resume templates; you may look",
        ),
        "ben.form_invalid": ("请更正标出的字段", "Please correct the fields marked below"),
        "ben.bad_money": ("须为金额，如 12.50", "must be an amount such as 12.50"),
        "ben.bad_date": ("日期格式不正确", "is not a valid date"),
        "ben.bad_number": ("须为整数", "must be a whole number"),
        "ben.scope_numbers": ("本范围", "Your scope"),
        "ben.all_stores_numbers": ("全部门店", "All stores"),
        "ben.yes": ("是", "Yes"),
        "ben.no": ("否", "No"),
        "ben.all": ("全部", "All"),
        # kinds and what a template does
        "ben.kind.amount_off": ("满减券", "Amount off"),
        "ben.kind.percent_off": ("折扣券", "Percent off"),
        "ben.kind.fixed_price": ("一口价券", "Fixed price"),
        "ben.kind.free_item": ("免费商品券", "Free item"),
        "ben.kind.exchange": ("兑换券", "Exchange voucher"),
        "ben.kind.service": ("服务券", "Service voucher"),
        "ben.v.amount_off": ("满{threshold}减{amount}", "{amount} off from {threshold}"),
        "ben.v.amount_off_plain": ("立减{amount}", "{amount} off"),
        "ben.v.percent_off": ("{zhe}折（减{pct}%）", "{pct}% off"),
        "ben.v.threshold": ("满{threshold}可用", "from {threshold}"),
        "ben.v.cap": ("最多减{cap}", "at most {cap} off"),
        "ben.v.fixed_price": ("一口价{price}", "one item for {price}"),
        "ben.v.face_value": ("面值{face}", "face value {face}"),
        "ben.v.cover_at_issue": ("抵扣发券时的商品价格", "covers the item's price when issued"),
        "ben.v.whole_item": ("整件抵扣", "covers the whole item"),
        "ben.products.all": ("全部商品", "All products"),
        "ben.products.skus": ("商品：{list}", "SKUs: {list}"),
        "ben.products.categories": ("品类：{list}", "Categories: {list}"),
        "ben.valid.days": ("领取后 {n} 天内有效", "{n} days from issue"),
        "ben.valid.range": ("{start} 至 {end}", "{start} to {end}"),
        "ben.valid.until": ("至 {end}", "until {end}"),
        "ben.valid.from": ("{start} 起", "from {start}"),
        "ben.valid.open": ("长期有效", "No end"),
        "ben.scope.all": ("全部门店", "All stores"),
        "ben.scope.brand": ("品牌：{name}", "Brand: {name}"),
        "ben.scope.region": ("区域：{name}", "Region: {name}"),
        "ben.scope.stores": ("门店：{name}", "Stores: {name}"),
        "ben.scope.issuing_store": ("仅发券门店", "Issuing store only"),
        "ben.cross.yes": ("可在其他门店核销", "Usable at other stores"),
        "ben.cross.no": ("仅限发券门店核销", "Only at the issuing store"),
        "ben.diff.yes": ("跨店价格更高时会员补差价", "Member pays the difference where the item costs more"),
        "ben.diff.no": ("不补差价，整件抵扣", "No price difference: the whole item is covered"),
        "ben.stack.exclusive": ("不与其他券同用", "Not combined with other coupons"),
        "ben.stack.group": ("叠加分组 {g}（同组每单一张）", "Stack group {g} (one per order)"),
        "ben.stack.free": ("可与其他券叠加", "Combines with other coupons"),
        "ben.stack.tier_yes": ("可与会员价同享", "Combines with the member price"),
        "ben.stack.tier_no": ("不与会员价同享", "Not with the member price"),
        "ben.stack.per_order": ("每单限用 {n} 张", "{n} per order"),
        "ben.limit.per_member": ("每人限领 {n} 张", "{n} per member"),
        "ben.limit.per_member_none": ("每人不限", "No per-member limit"),
        "ben.limit.total": ("总量 {n} 张", "{n} in total"),
        "ben.limit.total_none": ("总量不限", "No total limit"),
        "ben.limit.left": ("剩余 {n} 张", "{n} left"),
        "ben.bearer.hq": ("总部承担", "HQ bears the cost"),
        "ben.bearer.issuing_store": ("发券门店承担", "The issuing store bears the cost"),
        "ben.bearer.redeeming_store": ("核销门店承担", "The redeeming store bears the cost"),
        "ben.bearer.split": (
            "发券门店承担 {pct}%，其余核销门店",
            "Issuing store {pct}%, redeeming store the rest",
        ),
        "ben.return.restore": ("整单退货后退回会员", "Given back on a full return"),
        "ben.return.void": ("退货后作废", "Voided on a return"),
        "ben.giftable": ("可转赠", "Giftable"),
        "ben.not_giftable": ("不可转赠", "Not giftable"),
        "ben.status.active": ("发放中", "Issuing"),
        "ben.status.stopped": ("已停发", "Stopped"),
        "ben.stop": ("停发", "Stop issuing"),
        "ben.resume": ("恢复发放", "Resume"),
        "ben.stop_confirm": (
            "停发后不再发放该券，已发出的券仍可使用。确定停发？",
            "No more coupons will be issued; those issued stay usable. Stop issuing?",
        ),
        "ben.stopped_notice": ("已停发", "Stopped issuing"),
        "ben.resumed_notice": ("已恢复发放", "Issuing again"),
        # coupon list
        "ben.c.title": ("优惠券模板", "Coupon templates"),
        "ben.col.template": ("模板", "Template"),
        "ben.col.kind_value": ("类型与面值", "Kind and value"),
        "ben.col.products": ("适用商品", "Products"),
        "ben.col.validity": ("有效期", "Validity"),
        "ben.col.stores": ("适用门店 · 跨店 · 补差价", "Stores · cross-store · price difference"),
        "ben.col.stacking": ("叠加", "Stacking"),
        "ben.col.limits": ("限量", "Limits"),
        "ben.col.issued_redeemed": ("发放 / 核销", "Issued / redeemed"),
        "ben.col.budget": ("预算已用", "Budget used"),
        "ben.col.settle": ("成本 · 退货 · 转赠", "Cost · returns · gifting"),
        "ben.col.status": ("状态", "Status"),
        "ben.col.issued": ("发放", "Issued"),
        "ben.col.redeemed": ("核销", "Redeemed"),
        "ben.no_budget": ("不限预算", "No budget"),
        "ben.chart.issued_redeemed": ("各模板发放与核销（张）", "Issued and redeemed per template"),
        "ben.chart.budget": ("优惠预算使用（元）", "Discount budget use (yuan)"),
        "ben.chart.used": ("已用", "Used"),
        "ben.chart.left": ("剩余", "Left"),
        "ben.chart.no_budget": ("没有设置预算的模板", "No template has a budget"),
        "ben.filter.status": ("状态", "Status"),
        "ben.filter.kind": ("类型", "Kind"),
        # coupon template form
        "ben.c.create": ("新建优惠券模板", "New coupon template"),
        "ben.c.created": ("已创建优惠券模板 {code}", "Coupon template {code} created"),
        "ben.g.basic": ("基本信息", "Basics"),
        "ben.g.value": ("面值与门槛", "Value and threshold"),
        "ben.g.products": ("适用商品", "Products"),
        "ben.g.stores": ("适用门店与跨店", "Stores and cross-store use"),
        "ben.g.validity": ("有效期", "Validity"),
        "ben.g.limits": ("叠加与限量", "Stacking and limits"),
        "ben.g.settle": ("成本、退货与转赠", "Cost, returns and gifting"),
        "ben.f.code": ("模板编码", "Code"),
        "ben.f.name": ("名称", "Name"),
        "ben.f.kind": ("类型", "Kind"),
        "ben.f.threshold": ("使用门槛（元）", "Threshold (yuan)"),
        "ben.f.amount": ("减免金额（元）", "Amount off (yuan)"),
        "ben.f.percent_off": ("折扣（减免 %）", "Percent off"),
        "ben.f.cap": ("最多优惠（元）", "Most it takes off (yuan)"),
        "ben.f.price": ("一口价（元）", "Fixed price (yuan)"),
        "ben.f.face_value": ("面值（元）", "Face value (yuan)"),
        "ben.f.pay_difference": (
            "跨店价格更高时会员补差价",
            "Member pays the difference where the item costs more",
        ),
        "ben.f.skus": ("适用商品编码", "SKUs"),
        "ben.f.categories": ("适用品类", "Categories"),
        "ben.f.accept_scope": ("适用门店", "Accepted at"),
        "ben.f.accept_brand_code": ("品牌", "Brand"),
        "ben.f.accept_region_code": ("区域", "Region"),
        "ben.f.accept_store_codes": ("门店", "Stores"),
        "ben.f.cross_store": ("允许在发券门店以外核销", "Usable at stores other than the issuing one"),
        "ben.f.valid_from": ("开始日期", "Start date"),
        "ben.f.valid_to": ("结束日期（含）", "End date (inclusive)"),
        "ben.f.valid_days": ("领取后有效天数", "Days valid after issue"),
        "ben.f.exclusive": ("不与其他券同用", "Not combined with other coupons"),
        "ben.f.stack_group": ("叠加分组", "Stack group"),
        "ben.f.combines_with_tier_discount": ("可与会员价同享", "Combines with the member price"),
        "ben.f.per_order_limit": ("每单限用（张）", "Per order (coupons)"),
        "ben.f.per_member_limit": ("每人限领（张）", "Per member (coupons)"),
        "ben.f.total_quantity": ("发行总量（张）", "Total quantity"),
        "ben.f.budget": ("优惠预算（元）", "Discount budget (yuan)"),
        "ben.f.return_policy": ("退货处理", "On a return"),
        "ben.f.giftable": ("允许会员转赠", "Members may give it to another member"),
        "ben.f.bearer": ("成本承担", "Who bears the cost"),
        "ben.f.issuer_pct": ("发券门店承担比例（%）", "Issuing store's share (%)"),
        "ben.hint.code": ("如 M300-50，创建后不可修改", "e.g. M300-50; cannot change later"),
        "ben.hint.threshold": ("0 表示无门槛", "0: no threshold"),
        "ben.hint.percent_off": ("20 表示减 20%（八折）", "20 means 20% off"),
        "ben.hint.cap": ("留空不封顶", "Empty: no cap"),
        "ben.hint.face_value": (
            "留空：按发券时填写的商品价格抵扣，未填则整件抵扣",
            "Empty: covers the price given at issue, or the whole item",
        ),
        "ben.hint.skus": (
            "逗号或空格分隔；一口价券和商品券须填写商品或品类",
            "Comma or space separated; item coupons need SKUs or categories",
        ),
        "ben.hint.accept_scope": (
            "按品牌、区域或门店时在右侧选择",
            "For a brand, region or store list choose it alongside",
        ),
        "ben.hint.valid_to": (
            "填写结束日期或领取后天数；都填时取较早者",
            "Give an end date or days after issue; with both the earlier applies",
        ),
        "ben.hint.stack_group": (
            "同一分组的券每单只能用一张；留空不限",
            "One coupon per group per order; empty: none",
        ),
        "ben.hint.per_member_limit": ("留空不限", "Empty: no limit"),
        "ben.hint.total_quantity": ("留空不限", "Empty: no limit"),
        "ben.hint.budget": (
            "所有核销的优惠合计上限；留空不限",
            "Cap on the total discount given; empty: none",
        ),
        "ben.hint.issuer_pct": ("仅按比例分摊时填写", "Only for a split"),
        "ben.opt.scope.all": ("全部门店", "All stores"),
        "ben.opt.scope.brand": ("指定品牌", "A brand"),
        "ben.opt.scope.region": ("指定区域", "A region"),
        "ben.opt.scope.stores": ("指定门店", "Chosen stores"),
        "ben.opt.scope.issuing_store": ("仅发券门店", "The issuing store only"),
        "ben.opt.bearer.hq": ("总部", "HQ"),
        "ben.opt.bearer.issuing_store": ("发券门店", "Issuing store"),
        "ben.opt.bearer.redeeming_store": ("核销门店", "Redeeming store"),
        "ben.opt.bearer.split": ("按比例分摊", "Split"),
        "ben.opt.return.restore": ("整单退货后退回会员", "Give it back on a full return"),
        "ben.opt.return.void": ("退货后作废", "Void it on a return"),
        # one template
        "ben.d.title": ("优惠券详情", "Coupon template"),
        "ben.d.rules": ("规则", "Rules"),
        "ben.d.by_store": ("各门店核销", "Redemptions by store"),
        "ben.d.chart_store": (
            "各核销门店的核销张数与优惠金额",
            "Redemptions and discount by redeeming store",
        ),
        "ben.d.chart_status": ("券状态", "Coupons by status"),
        "ben.d.count": ("核销张数", "Redeemed"),
        "ben.d.discount": ("优惠金额", "Discount"),
        "ben.d.discount_yuan": ("优惠金额（元）", "Discount (yuan)"),
        "ben.d.difference": ("会员补差价", "Price difference paid"),
        "ben.d.coupons": ("已发放的券", "Issued coupons"),
        "ben.d.scope_note": (
            "仅显示在您门店发放或核销的券",
            "Only coupons issued or redeemed at your stores are shown",
        ),
        "ben.d.kpi.issued": ("已发放", "Issued"),
        "ben.d.kpi.redeemed": ("已核销", "Redeemed"),
        "ben.d.kpi.rate": ("核销率", "Redemption rate"),
        "ben.d.kpi.budget": ("预算已用", "Budget used"),
        "ben.d.created_by": ("创建人", "Created by"),
        "ben.cs.available": ("可使用", "Available"),
        "ben.cs.redeemed": ("已使用", "Redeemed"),
        "ben.cs.expired": ("已过期", "Expired"),
        "ben.cs.void": ("已作废", "Void"),
        "ben.src.staff": ("员工发放", "By staff"),
        "ben.src.compensation": ("补偿", "Compensation"),
        "ben.src.mall": ("积分商城", "Points mall"),
        "ben.src.campaign": ("营销活动", "Campaign"),
        "ben.cc.code": ("券码", "Coupon code"),
        "ben.cc.member": ("持有会员", "Holder"),
        "ben.cc.source": ("来源", "Source"),
        "ben.cc.issuing_store": ("发券门店", "Issuing store"),
        "ben.cc.issued_at": ("发放时间", "Issued"),
        "ben.cc.issued_by": ("发放人", "Issued by"),
        "ben.cc.valid_to": ("有效至", "Valid until"),
        "ben.cc.status": ("状态", "Status"),
        "ben.cc.redeemed_store": ("核销门店", "Redeemed at"),
        "ben.cc.redeemed_at": ("核销时间", "Redeemed"),
        "ben.cc.discount": ("优惠", "Discount"),
        "ben.cc.reason": ("原因", "Reason"),
        "ben.cc.gifted_from": ("转赠自", "Given by"),
        "ben.cc.template": ("优惠券", "Coupon"),
        # issuing
        "ben.i.title": ("发放优惠券", "Issue a coupon"),
        "ben.i.find": ("查找会员", "Find a member"),
        "ben.i.lookup": ("会员号或手机号", "Member no. or phone"),
        "ben.i.lookup_go": ("查找", "Find"),
        "ben.i.lookup_empty": ("请输入会员号或手机号", "Enter a member number or phone"),
        "ben.i.member_store": ("注册门店", "Joined at"),
        "ben.i.source": ("发放方式", "How"),
        "ben.i.source.staff": ("门店发放", "By staff"),
        "ben.i.source.compensation": ("补偿发放（须填原因）", "As compensation (needs a reason)"),
        "ben.i.member": ("会员", "Member"),
        "ben.i.template_code": ("优惠券", "Coupon"),
        "ben.i.store_code": ("发券门店", "Issuing store"),
        "ben.i.store_optional": ("（总部可不选）", "(optional for HQ)"),
        "ben.i.cover": ("抵扣价值（元）", "Value covered (yuan)"),
        "ben.i.cover_hint": (
            "仅商品券：该商品在发券门店的售价；留空按模板面值",
            "Item vouchers only: the item's price at the issuing store; empty: the face value",
        ),
        "ben.i.reason": ("原因 / 备注", "Reason / note"),
        "ben.i.submit": ("发放", "Issue"),
        "ben.i.issued": ("已发放优惠券 {code}", "Issued coupon {code}"),
        "ben.i.gifted": ("已转赠优惠券 {code}", "Gave coupon {code}"),
        "ben.i.coupons": ("该会员的优惠券", "The member's coupons"),
        "ben.i.no_coupons": ("该会员还没有优惠券", "This member has no coupons yet"),
        "ben.i.gift": ("转赠", "Give"),
        "ben.i.gift_to": ("转赠给（会员号或手机号）", "To (member no. or phone)"),
        "ben.i.gift_reason": ("转赠备注", "Note"),
        "ben.i.no_templates": ("没有发放中的优惠券模板", "No coupon template is being issued"),
        "ben.i.roles_note": (
            "门店员工在本店发放；补偿发券须填写原因并记入审计日志。",
            "Store staff issue at their store; a compensation coupon needs a reason and is audited.",
        ),
        "ben.i.paths_note": (
            "积分商城兑换和营销活动发券由对应功能自动完成。",
            "The points mall and campaigns issue their coupons themselves.",
        ),
        # packages
        "ben.p.title": ("次卡模板", "Service package templates"),
        "ben.p.create": ("新建次卡", "New service package"),
        "ben.p.created": ("已创建次卡 {code}", "Service package {code} created"),
        "ben.p.status.active": ("在售", "On sale"),
        "ben.p.status.inactive": ("已停售", "Withdrawn"),
        "ben.p.withdraw": ("停售", "Stop selling"),
        "ben.p.relist": ("恢复售卖", "Sell again"),
        "ben.p.withdraw_confirm": (
            "停售后不能再售卖或赠送，已售出的次卡仍可使用。确定停售？",
            "It can no longer be sold or granted; packages held keep working. Stop selling?",
        ),
        "ben.p.withdrawn_notice": ("已停售", "Withdrawn"),
        "ben.p.relisted_notice": ("已恢复售卖", "On sale again"),
        "ben.p.col.package": ("次卡", "Package"),
        "ben.p.col.service": ("服务", "Service"),
        "ben.p.col.uses": ("次数", "Uses"),
        "ben.p.col.price": ("售价", "Price"),
        "ben.p.col.per_use": ("每次价值", "Value per use"),
        "ben.p.col.validity": ("有效期", "Validity"),
        "ben.p.col.refund": ("退款规则", "Refund rule"),
        "ben.p.col.stores": ("服务门店", "Performed at"),
        "ben.p.col.bearer": ("跨店结算", "Cross-store cost"),
        "ben.p.col.sold": ("售出", "Sold"),
        "ben.p.col.granted": ("赠送", "Granted"),
        "ben.p.col.revenue": ("销售额", "Sales"),
        "ben.p.col.used": ("已核销次数", "Uses taken"),
        "ben.p.col.refunded": ("已退款", "Refunded"),
        "ben.p.validity_days": ("购买当日起 {n} 天", "{n} days from sale"),
        "ben.p.never": ("长期有效", "Never expires"),
        "ben.p.refund.none": ("不可退款", "Not refundable"),
        "ben.p.refund.unused_pro_rata": ("未使用次数按比例退款", "Unused uses refunded pro rata"),
        "ben.p.refund.full_if_unused": ("未使用时可全额退款", "Full refund while unused"),
        "ben.p.bearer.hq": ("总部承担", "HQ bears it"),
        "ben.p.bearer.issuing_store": ("售卡门店承担", "The selling store bears it"),
        "ben.p.bearer.redeeming_store": ("服务门店承担", "The performing store bears it"),
        "ben.p.bearer.split": (
            "售卡门店承担 {pct}%，其余服务门店",
            "Selling store {pct}%, performing store the rest",
        ),
        "ben.p.chart_templates": ("各次卡售出、赠送与核销", "Sold, granted and uses taken per package"),
        "ben.p.chart_stores": ("各服务门店核销次数", "Uses by performing store"),
        "ben.pf.code": ("次卡编码", "Code"),
        "ben.pf.name": ("名称", "Name"),
        "ben.pf.service_code": ("服务编码", "Service code"),
        "ben.pf.uses": ("次数", "Uses"),
        "ben.pf.price": ("售价（元）", "Price (yuan)"),
        "ben.pf.validity_days": ("有效天数", "Days valid"),
        "ben.pf.refund_rule": ("退款规则", "Refund rule"),
        "ben.pf.store_scope": ("服务门店", "Performed at"),
        "ben.pf.brand_code": ("品牌", "Brand"),
        "ben.pf.region_code": ("区域", "Region"),
        "ben.pf.store_codes": ("门店", "Stores"),
        "ben.pf.bearer": ("跨店使用的成本承担", "Who bears a use at another store"),
        "ben.pf.issuer_pct": ("售卡门店承担比例（%）", "Selling store's share (%)"),
        "ben.phint.service_code": ("如 CARWASH；门店按此判断能否提供服务", "e.g. CARWASH"),
        "ben.phint.validity_days": ("留空表示长期有效", "Empty: never expires"),
        "ben.phint.issuer_pct": ("仅按比例分摊时填写", "Only for a split"),
        # member packages
        "ben.m.title": ("会员次卡", "Member packages"),
        "ben.m.sell": ("售卖次卡", "Sell a package"),
        "ben.m.grant": ("赠送次卡", "Grant a package"),
        "ben.m.member": ("会员", "Member"),
        "ben.m.package_code": ("次卡", "Package"),
        "ben.m.store_code": ("门店", "Store"),
        "ben.m.payment_method": ("付款方式", "Payment method"),
        "ben.m.amount": ("实收金额（元）", "Amount collected (yuan)"),
        "ben.m.grant_source": ("赠送类型", "Kind of grant"),
        "ben.m.grant_reason": ("原因", "Reason"),
        "ben.m.sell_submit": ("确认售卖", "Sell"),
        "ben.m.grant_submit": ("确认赠送", "Grant"),
        "ben.m.use": ("核销", "Record a use"),
        "ben.m.use_store": ("服务门店", "Performed at"),
        "ben.m.use_count": ("次数", "Uses"),
        "ben.m.use_note": ("备注", "Note"),
        "ben.m.refund": ("退款", "Refund"),
        "ben.m.refund_reason": ("退款原因", "Reason for the refund"),
        "ben.m.refund_confirm": (
            "确认按规则退款并关闭该次卡？",
            "Refund by the rule and close this package?",
        ),
        "ben.m.refundable": ("按规则可退 {amount}（{n} 次）", "Refundable by its rule: {amount} ({n} uses)"),
        "ben.m.uses_left": ("剩余 {left} / {total} 次", "{left} of {total} uses left"),
        "ben.m.expires": ("有效至", "Expires"),
        "ben.m.expired": ("已过期", "Expired"),
        "ben.m.refunded": ("已退款 {amount}（{n} 次）", "Refunded {amount} ({n} uses)"),
        "ben.m.status.active": ("使用中", "Active"),
        "ben.m.status.refunded": ("已退款", "Refunded"),
        "ben.m.sold_at": ("售出门店", "Sold at"),
        "ben.m.granted_at": ("赠送门店", "Granted at"),
        "ben.m.hq": ("总部", "HQ"),
        "ben.m.sold_by": ("经办人", "By"),
        "ben.m.paid": ("实付", "Paid"),
        "ben.m.value": ("价值", "Value"),
        "ben.m.history": ("使用记录", "Uses"),
        "ben.m.no_uses": ("尚未使用", "Not used yet"),
        "ben.m.h.at": ("时间", "Time"),
        "ben.m.h.store": ("门店", "Store"),
        "ben.m.h.staff": ("员工", "Staff"),
        "ben.m.h.uses": ("次数", "Uses"),
        "ben.m.h.numbers": ("第几次", "Use no."),
        "ben.m.h.value": ("价值", "Value"),
        "ben.m.h.note": ("备注", "Note"),
        "ben.m.none": ("该会员没有次卡", "This member has no packages"),
        "ben.m.sold": ("已售出次卡", "Package sold"),
        "ben.m.granted": ("已赠送次卡", "Package granted"),
        "ben.m.used": ("已核销", "Use recorded"),
        "ben.m.refunded_notice": ("已退款并关闭次卡", "Refunded and closed"),
        "ben.m.no_store": ("您范围内没有提供该服务的门店", "No store in your scope offers this service"),
        "ben.src.sale": ("购买", "Bought"),
        "ben.src.tier_benefit": ("等级权益", "Tier benefit"),
        "ben.src.goodwill": ("关怀赠送", "Goodwill"),
        "ben.pay.wechat_pay": ("微信支付", "WeChat Pay"),
        "ben.pay.alipay": ("支付宝", "Alipay"),
        "ben.pay.cash": ("现金", "Cash"),
        "ben.pay.bank_card": ("银行卡", "Bank card"),
    }
)

PAGE_SIZE = 20
EXPORT_LIMIT = 10_000
CHART_TEMPLATES = 12
TABS = ("coupons", "issue", "packages", "holders")
TAB_URLS = {
    "coupons": "/console/coupons",
    "issue": "/console/coupons/issue",
    "packages": "/console/packages",
    "holders": "/console/packages/members",
}
TEMPLATE_ROLES = coupon_templates.TEMPLATE_ROLES
PAYMENT_METHODS = ("wechat_pay", "alipay", "cash", "bank_card")
GRANT_SOURCES = ("compensation", "tier_benefit", "campaign", "goodwill")
COUPON_STATUSES = ("available", "redeemed", "expired", "void")
PROBLEM_KEYS = frozenset({"type", "title", "status", "code", "detail", "message_zh", "message_en"})


# --- shared plumbing -----------------------------------------------------------------------------------


def base_context(user: Principal, tab: str, tz: str, **extra: Any) -> dict[str, Any]:
    return {
        "user": user,
        "section": "benefits",
        "tab": tab,
        "tabs": [(name, TAB_URLS[name]) for name in TABS],
        "tz": tz,
        "htmx_config": HTMX_CONFIG,
        "new_key": new_key,
        "until": until_text,
        "kinds": list(Kind),
        **extra,
    }


def new_key() -> str:
    """A fresh Idempotency-Key for one rendered form."""
    return secrets.token_urlsafe(18)


def fmt(text: str, **values: object) -> str:
    """Fill ``{name}`` placeholders of a page text (``str.format`` would choke on other braces)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def api_answer(response: JSONResponse) -> dict[str, Any]:
    """What an API endpoint answered. A problem answer (an error stored or replayed under the form's
    Idempotency-Key) is raised again as the domain error it was, so the page shows it like any other."""
    body = json.loads(bytes(response.body))
    if response.status_code >= 400:
        extra = {k: v for k, v in body.items() if k not in PROBLEM_KEYS}
        raise DomainError(
            str(body.get("message_zh", "")),
            str(body.get("message_en", "")),
            code=str(body.get("code", "error")),
            status=response.status_code,
            **extra,
        )
    return dict(body)


def idem_of(form: Posted) -> str | None:
    return form.get("idem") or None


def validation_errors(
    exc: ValidationError,
    lang: str,
    prefix: str,
    rename: dict[str, str] | None = None,
    errors: FormErrors | None = None,
) -> FormErrors:
    """Pydantic's errors next to the form fields they belong to, with the field's label in zh/en."""
    errors = FormErrors() if errors is None else errors
    t = texts(lang)
    for err in exc.errors():
        names = [p for p in err["loc"] if isinstance(p, str)]
        name = (rename or {}).get(names[0], names[0]) if names else ""
        zh, en = ERROR_TEXTS.get(err["type"], ("格式不正确", "is not valid"))
        ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
        message = fmt(en if lang == "en" else zh, **ctx)
        errors.add(name, f"{t(f'{prefix}.{name}')}{label_sep(lang)}{message}")
    return errors


def domain_errors(
    err: DomainError, lang: str, rename: dict[str, str] | None = None, errors: FormErrors | None = None
) -> FormErrors:
    """A domain error's message on top, and next to its field when it names one."""
    errors = FormErrors() if errors is None else errors
    message = page_error_text(err, lang)
    errors.general.append(message)
    name = err.extra.get("field")
    if isinstance(name, str):
        errors.add((rename or {}).get(name, name), message)
    return errors


def bad_value(errors: FormErrors, name: str, prefix: str, problem: str, lang: str) -> None:
    t = texts(lang)
    errors.add(name, f"{t(f'{prefix}.{name}')}{label_sep(lang)}{t(problem)}")


def local_day(value: datetime | None, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d") if value else ""


def until_text(value: datetime | None, tz: str) -> str:
    """An end as people read it: a midnight end is the last day it still holds (inclusive)."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(tz))
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return (local.date() - timedelta(days=1)).isoformat()
    return local.strftime("%Y-%m-%d %H:%M")


def parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def split_list(text: str) -> list[str]:
    return [p for p in re.split(r"[,，;；、\s]+", text) if p]


@dataclass
class OrgNames:
    """The org's brands, regions and stores by id, read once per page."""

    brands: dict[int, Brand]
    regions: dict[int, Region]
    stores: dict[int, Store]

    def store(self, store_id: int | None) -> str:
        found = self.stores.get(store_id) if store_id is not None else None
        return found.name if found else ""

    def store_code(self, store_id: int | None) -> str:
        found = self.stores.get(store_id) if store_id is not None else None
        return found.code if found else ""


def org_names(session: Session, org_id: int) -> OrgNames:
    return OrgNames(
        {b.id: b for b in session.scalars(select(Brand).where(Brand.org_id == org_id).order_by(Brand.code))},
        {
            r.id: r
            for r in session.scalars(select(Region).where(Region.org_id == org_id).order_by(Region.code))
        },
        {s.id: s for s in session.scalars(select(Store).where(Store.org_id == org_id).order_by(Store.code))},
    )


def in_stores(column: Any, store_ids: frozenset[int] | None) -> list[ColumnElement[bool]]:
    """A condition keeping rows of the chosen stores (none when the whole chain is chosen)."""
    return [] if store_ids is None else [column.in_(sorted(store_ids))]


def kept(params: dict[str, str], keep: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k in keep}


# --- members -------------------------------------------------------------------------------------------


def lookup_member(session: Session, org_id: int, text: str) -> Member:
    """A member by phone or member number (a merged member's number leads to the survivor)."""
    compact = re.sub(r"[\s\-()]", "", text)
    if not compact:
        raise Invalid("请输入会员号或手机号", "Enter a member number or phone", code="members.lookup_empty")
    try:
        found = members.find_by_identity(session, org_id, IdentityKind.PHONE, compact)
    except InvalidIdentity:
        found = None
    return members.by_member_no(session, org_id, found.member_no if found else compact)


def member_of_query(
    session: Session, user: Principal, query: str, member: Member | None, lang: str, status: int
) -> tuple[Member | None, str, int]:
    """The member a page was asked about: the one given, else the one the query finds; a query that finds
    no one gives the error to show and its status (unless the page already answers with another)."""
    if member is None and query.strip():
        try:
            member = lookup_member(session, user.org_id, query)
        except DomainError as err:
            return None, page_error_text(err, lang), err.status if status == 200 else status
    return member, "", status


@dataclass
class MemberCard:
    member_no: str
    name: str
    phone: str
    store: str


def member_card(session: Session, user: Principal, member: Member, names: OrgNames) -> MemberCard:
    full = member_views.in_scope(session, user, member)
    return MemberCard(
        member_no=member.member_no,
        name=member.name if full else member_views.mask_name(member.name),
        phone=members.masked_phone(session, member.id),
        store=names.store(member.registered_store_id),
    )


def member_context(
    session: Session, user: Principal, query: str, member: Member | None, lookup_error: str, names: OrgNames
) -> dict[str, Any]:
    """The member search box and card a member page shows: what was asked, why no one was found, who was."""
    return {
        "query": query if member is None else member.member_no,
        "lookup_error": lookup_error,
        "member": member_card(session, user, member, names) if member else None,
    }


# --- what a coupon template does, in words ---------------------------------------------------------------


def zhe(percent_off: int) -> str:
    """20 % off reads 8 折 in Chinese; 15 % off 8.5 折."""
    left = 100 - percent_off
    return str(left // 10) if left % 10 == 0 else f"{left / 10:g}"


def value_text(t: Callable[[str], str], tpl: CouponTemplate) -> str:
    threshold = fmt(t("ben.v.threshold"), threshold=fen(tpl.threshold_fen)) if tpl.threshold_fen else ""
    if tpl.kind == Kind.AMOUNT_OFF:
        if tpl.threshold_fen:
            return fmt(t("ben.v.amount_off"), threshold=fen(tpl.threshold_fen), amount=fen(tpl.amount_fen))
        return fmt(t("ben.v.amount_off_plain"), amount=fen(tpl.amount_fen))
    parts: list[str] = []
    if tpl.kind == Kind.PERCENT_OFF:
        parts.append(fmt(t("ben.v.percent_off"), zhe=zhe(tpl.percent_off), pct=tpl.percent_off))
        if tpl.cap_fen is not None:
            parts.append(fmt(t("ben.v.cap"), cap=fen(tpl.cap_fen)))
    elif tpl.kind == Kind.FIXED_PRICE:
        parts.append(fmt(t("ben.v.fixed_price"), price=fen(tpl.price_fen)))
    elif not tpl.pay_difference:
        parts.append(t("ben.v.whole_item"))
    elif tpl.face_value_fen is not None:
        parts.append(fmt(t("ben.v.face_value"), face=fen(tpl.face_value_fen)))
    else:
        parts.append(t("ben.v.cover_at_issue"))
    if threshold:
        parts.append(threshold)
    return " · ".join(parts)


def products_text(t: Callable[[str], str], skus: Sequence[str], categories: Sequence[str]) -> str:
    parts = []
    if categories:
        parts.append(fmt(t("ben.products.categories"), list="、".join(categories)))
    if skus:
        parts.append(fmt(t("ben.products.skus"), list="、".join(skus)))
    return " · ".join(parts) or t("ben.products.all")


def validity_text(t: Callable[[str], str], tpl: CouponTemplate, tz: str) -> str:
    parts = []
    if tpl.valid_from is not None or tpl.valid_to is not None:
        start, end = local_day(tpl.valid_from, tz), until_text(tpl.valid_to, tz)
        key = "ben.valid.range" if start and end else "ben.valid.until" if end else "ben.valid.from"
        parts.append(fmt(t(key), start=start, end=end))
    if tpl.valid_days is not None:
        parts.append(fmt(t("ben.valid.days"), n=tpl.valid_days))
    return " · ".join(parts) or t("ben.valid.open")


def stores_text(
    t: Callable[[str], str],
    names: OrgNames,
    scope: str,
    brand_id: int | None,
    region_id: int | None,
    store_ids: Sequence[int],
) -> str:
    if scope == "brand":
        brand = names.brands.get(brand_id or 0)
        return fmt(t("ben.scope.brand"), name=brand.name if brand else "-")
    if scope == "region":
        region = names.regions.get(region_id or 0)
        return fmt(t("ben.scope.region"), name=region.name if region else "-")
    if scope == "stores":
        return fmt(t("ben.scope.stores"), name="、".join(names.store(s) for s in store_ids))
    if scope == "issuing_store":
        return t("ben.scope.issuing_store")
    return t("ben.scope.all")


@dataclass
class CouponFlow:
    issued: int = 0
    redeemed: int = 0
    discount_fen: int = 0


@dataclass
class TemplateRow:
    template: CouponTemplate
    value: str
    products: str
    validity: str
    stores: str
    cross: list[str]
    stacking: list[str]
    limits: list[str]
    settle: list[str]
    scoped: CouponFlow | None
    budget_pct: int | None

    @property
    def issued(self) -> int:
        return self.scoped.issued if self.scoped is not None else self.template.issued_count

    @property
    def redeemed(self) -> int:
        return self.scoped.redeemed if self.scoped is not None else self.template.redeemed_count


def template_row(
    t: Callable[[str], str], names: OrgNames, tpl: CouponTemplate, tz: str, scoped: CouponFlow | None
) -> TemplateRow:
    cross: list[str] = []
    if tpl.accept_scope != "issuing_store":
        cross.append(t("ben.cross.yes" if tpl.cross_store else "ben.cross.no"))
    if tpl.kind in ITEM_VOUCHERS:
        cross.append(t("ben.diff.yes" if tpl.pay_difference else "ben.diff.no"))
    stacking = [
        t("ben.stack.exclusive")
        if tpl.exclusive
        else fmt(t("ben.stack.group"), g=tpl.stack_group)
        if tpl.stack_group
        else t("ben.stack.free"),
        t("ben.stack.tier_yes" if tpl.combines_with_tier_discount else "ben.stack.tier_no"),
        fmt(t("ben.stack.per_order"), n=tpl.per_order_limit),
    ]
    limits = [
        fmt(t("ben.limit.per_member"), n=tpl.per_member_limit)
        if tpl.per_member_limit is not None
        else t("ben.limit.per_member_none"),
        fmt(t("ben.limit.total"), n=f"{tpl.total_quantity:,}")
        if tpl.total_quantity is not None
        else t("ben.limit.total_none"),
    ]
    if tpl.total_quantity is not None:
        limits.append(fmt(t("ben.limit.left"), n=f"{tpl.total_quantity - tpl.issued_count:,}"))
    bearer = (
        fmt(t("ben.bearer.split"), pct=tpl.issuer_pct)
        if tpl.bearer == "split"
        else t(f"ben.bearer.{tpl.bearer}")
    )
    settle = [
        bearer,
        t(f"ben.return.{tpl.return_policy}"),
        t("ben.giftable" if tpl.giftable else "ben.not_giftable"),
    ]
    budget_pct = min(100, tpl.budget_used * 100 // tpl.budget_fen) if tpl.budget_fen else None
    return TemplateRow(
        template=tpl,
        value=value_text(t, tpl),
        products=products_text(t, tpl.skus or [], tpl.categories or []),
        validity=validity_text(t, tpl, tz),
        stores=stores_text(
            t, names, tpl.accept_scope, tpl.accept_brand_id, tpl.accept_region_id, tpl.accept_store_ids or []
        ),
        cross=cross,
        stacking=stacking,
        limits=limits,
        settle=settle,
        scoped=scoped,
        budget_pct=budget_pct,
    )


def coupon_flows(
    session: Session, org_id: int, store_ids: frozenset[int] | None
) -> dict[int, CouponFlow] | None:
    """Per template: coupons the chosen stores issued and redemptions (still standing) at those stores.
    None for the whole chain, where the templates' own counters say it."""
    if store_ids is None:
        return None
    flows: dict[int, CouponFlow] = {}
    issued = session.execute(
        select(Coupon.template_id, func.count())
        .where(Coupon.org_id == org_id, *in_stores(Coupon.issuing_store_id, store_ids))
        .group_by(Coupon.template_id)
    )
    for template_id, n in issued.all():
        flows.setdefault(template_id, CouponFlow()).issued = int(n)
    redeemed = session.execute(
        select(
            CouponRedemption.template_id,
            func.count(),
            func.coalesce(func.sum(CouponRedemption.discount_fen), 0),
        )
        .where(
            CouponRedemption.org_id == org_id,
            CouponRedemption.status == "redeemed",
            *in_stores(CouponRedemption.redeeming_store_id, store_ids),
        )
        .group_by(CouponRedemption.template_id)
    )
    for template_id, n, discount in redeemed.all():
        flow = flows.setdefault(template_id, CouponFlow())
        flow.redeemed, flow.discount_fen = int(n), int(discount)
    return flows


def whole_numbers(option: str) -> str:
    """A chart of counts: no 0.2 ticks on its value axis."""
    parsed = json.loads(option)
    parsed["yAxis"]["minInterval"] = 1
    return json.dumps(parsed, ensure_ascii=False)


def stacked_bar(title: str, x: list[str], series: dict[str, list[float]]) -> str:
    """Horizontal bars stacked per category (ECharts options for static/app/charts.js)."""
    option: dict[str, Any] = {
        "color": [charts.PALETTE[0], "#dee2e6"],
        "title": {"text": title, "left": 0, "textStyle": {"fontSize": 14, "fontWeight": 500}},
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"top": 0, "right": 0},
        "grid": {"left": 120, "right": 24, "top": 48, "bottom": 24},
        "xAxis": {"type": "value"},
        "yAxis": {"type": "category", "data": x},
        "series": [
            {"name": n, "type": "bar", "stack": "budget", "data": v, "barMaxWidth": 22}
            for n, v in series.items()
        ],
        "animation": False,
    }
    return json.dumps(option, ensure_ascii=False)


def count_and_money(
    title: str, x: list[str], count_name: str, counts: list[int], money_name: str, yuan: list[float]
) -> str:
    """Counts as bars on the left axis and yuan as bars on the right axis, per category."""
    option: dict[str, Any] = {
        "color": charts.PALETTE,
        "title": {"text": title, "left": 0, "textStyle": {"fontSize": 14, "fontWeight": 500}},
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"bottom": 0, "left": "center"},
        "grid": {"left": 48, "right": 64, "top": 48, "bottom": 56},
        "xAxis": {"type": "category", "data": x},
        "yAxis": [{"type": "value", "minInterval": 1}, {"type": "value"}],
        "series": [
            {"name": count_name, "type": "bar", "data": counts, "barMaxWidth": 22},
            {"name": money_name, "type": "bar", "yAxisIndex": 1, "data": yuan, "barMaxWidth": 22},
        ],
        "animation": False,
    }
    return json.dumps(option, ensure_ascii=False)


# --- the coupon template form --------------------------------------------------------------------------

MONEY_FIELDS = {
    "threshold": "threshold_fen",
    "amount": "amount_fen",
    "cap": "cap_fen",
    "price": "price_fen",
    "face_value": "face_value_fen",
    "budget": "budget_fen",
}
FORM_NAMES = {api: form for form, api in MONEY_FIELDS.items()}
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.AMOUNT_OFF: ("threshold", "amount"),
    Kind.PERCENT_OFF: ("threshold", "percent_off", "cap"),
    Kind.FIXED_PRICE: ("threshold", "price"),
    Kind.FREE_ITEM: ("threshold", "face_value", "pay_difference"),
    Kind.EXCHANGE: ("threshold", "face_value", "pay_difference"),
    Kind.SERVICE: ("threshold", "face_value", "pay_difference"),
}
CHECKBOXES = ("pay_difference", "cross_store", "exclusive", "combines_with_tier_discount", "giftable")
OPTIONAL_INTS = ("valid_days", "per_member_limit", "total_quantity")
ACCEPT_SCOPES = ("all", "brand", "region", "stores", "issuing_store")
BEARERS = ("hq", "issuing_store", "redeeming_store", "split")
TEMPLATE_DEFAULTS: dict[str, Any] = {
    "kind": "amount_off",
    "threshold": "0",
    "pay_difference": "on",
    "accept_scope": "all",
    "cross_store": "on",
    "valid_days": "30",
    "combines_with_tier_discount": "on",
    "per_order_limit": "1",
    "return_policy": "restore",
    "bearer": "hq",
    "accept_store_codes": [],
}


@dataclass
class TemplateForm:
    values: dict[str, Any]
    errors: FormErrors
    kind_fields: tuple[str, ...]
    brands: list[Brand]
    regions: list[Region]
    stores: list[Store]


def template_form(
    session: Session, user: Principal, values: dict[str, Any] | None = None, errors: FormErrors | None = None
) -> TemplateForm:
    chosen = {**TEMPLATE_DEFAULTS, **(values or {})}
    kind = chosen["kind"] if chosen["kind"] in KIND_FIELDS else "amount_off"
    names = org_names(session, user.org_id)
    return TemplateForm(
        values=chosen,
        errors=errors or FormErrors(),
        kind_fields=KIND_FIELDS[kind],
        brands=list(names.brands.values()),
        regions=list(names.regions.values()),
        stores=[s for s in names.stores.values() if s.active],
    )


def parse_template(
    form: Posted, tz: str, lang: str
) -> tuple[dict[str, Any], coupons_api.TemplateIn | None, FormErrors]:
    """The typed form as the API's ``TemplateIn`` (or the errors). Money is typed in yuan; only the value
    fields of the chosen kind and the sub-choice of the chosen store scope are read."""
    errors = FormErrors()
    kind = form.get("kind")
    values: dict[str, Any] = {
        name: form.get(name)
        for name in (
            "code",
            "name",
            "kind",
            "threshold",
            "amount",
            "percent_off",
            "cap",
            "price",
            "face_value",
            "skus",
            "categories",
            "accept_scope",
            "accept_brand_code",
            "accept_region_code",
            "valid_from",
            "valid_to",
            "valid_days",
            "stack_group",
            "per_order_limit",
            "per_member_limit",
            "total_quantity",
            "budget",
            "return_policy",
            "bearer",
            "issuer_pct",
        )
    }
    values["accept_store_codes"] = [c for c in form.getlist("accept_store_codes") if c]
    for name in CHECKBOXES:
        values[name] = "on" if form.get(name) else ""
    data: dict[str, Any] = {"code": values["code"], "name": values["name"], "kind": kind}
    kind_fields = KIND_FIELDS.get(kind, ())
    for name in (*kind_fields, "budget"):
        text = values.get(name, "")
        if name == "pay_difference":
            data[name] = bool(values[name])
        elif name in MONEY_FIELDS and text:
            amount = yuan_to_fen(text)
            if amount is None:
                bad_value(errors, name, "ben.f", "ben.bad_money", lang)
            else:
                data[MONEY_FIELDS[name]] = amount
        elif text:
            data[name] = text
    data["skus"] = split_list(values["skus"])
    data["categories"] = split_list(values["categories"])
    scope = values["accept_scope"] or "all"
    data["accept_scope"] = scope
    if scope == "brand":
        data["accept_brand_code"] = values["accept_brand_code"] or None
    elif scope == "region":
        data["accept_region_code"] = values["accept_region_code"] or None
    elif scope == "stores":
        data["accept_store_codes"] = values["accept_store_codes"]
    data["cross_store"] = bool(values["cross_store"])
    for name, end in (("valid_from", False), ("valid_to", True)):
        if not values[name]:
            continue
        day = parse_day(values[name])
        if day is None or not date(1, 1, 2) <= day <= date(9999, 12, 30):  # its UTC instant must exist
            bad_value(errors, name, "ben.f", "ben.bad_date", lang)
            continue
        data[name] = (
            end_of_local_day(day, tz)
            if end
            else datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)
        )
    for name in OPTIONAL_INTS:
        if values[name]:
            data[name] = values[name]
    data["exclusive"] = bool(values["exclusive"])
    data["stack_group"] = values["stack_group"] or None
    data["combines_with_tier_discount"] = bool(values["combines_with_tier_discount"])
    data["per_order_limit"] = values["per_order_limit"] or "1"
    data["return_policy"] = values["return_policy"] or "restore"
    data["giftable"] = bool(values["giftable"])
    data["bearer"] = values["bearer"] or "hq"
    if data["bearer"] == "split":
        data["issuer_pct"] = values["issuer_pct"] or "0"
    try:
        body = coupons_api.TemplateIn.model_validate(data)
    except ValidationError as exc:
        return values, None, validation_errors(exc, lang, "ben.f", FORM_NAMES, errors)
    if errors:
        return values, None, errors
    return values, body, errors


# --- coupon templates ----------------------------------------------------------------------------------

TEMPLATE_STATUSES = ("active", "stopped")


def coupon_templates_listing(
    session: Session, user: Principal, params: dict[str, str]
) -> list[CouponTemplate]:
    status = params.get("status", "")
    active = True if status == "active" else False if status == "stopped" else None
    found = coupons.templates_of(session, user.org_id, active=active)
    if params.get("kind") in set(Kind):
        found = [t for t in found if t.kind == params["kind"]]
    return found


def coupons_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    form: TemplateForm | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, ("store", "region", "status", "kind", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    found = coupon_templates_listing(session, user, params)
    flows = coupon_flows(session, user.org_id, choice.store_ids)
    rows = [
        template_row(
            t, names, tpl, choice.tz, (flows or {}).get(tpl.id, CouponFlow()) if flows is not None else None
        )
        for tpl in found
    ]
    page = page_number(params.get("page"))
    chunk = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    listing = Paged(chunk[:PAGE_SIZE], page, PAGE_SIZE, len(chunk) > PAGE_SIZE)
    top = sorted(rows, key=lambda r: (-r.issued, r.template.code))[:CHART_TEMPLATES]
    flow_chart = whole_numbers(
        grouped_bar(
            t("ben.chart.issued_redeemed"),
            [r.template.name for r in top],
            {t("ben.col.issued"): [r.issued for r in top], t("ben.col.redeemed"): [r.redeemed for r in top]},
        )
    )
    budgeted = [r.template for r in rows if r.template.budget_fen][:CHART_TEMPLATES][::-1]
    budget_chart = stacked_bar(
        t("ben.chart.budget"),
        [b.name for b in budgeted],
        {
            t("ben.chart.used"): [b.budget_used / 100 for b in budgeted],
            t("ben.chart.left"): [max(0, (b.budget_fen or 0) - b.budget_used) / 100 for b in budgeted],
        },
    )
    editable = user.role in TEMPLATE_ROLES
    if form is None and editable:
        form = template_form(session, user)
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/coupons.html",
        base_context(
            user,
            "coupons",
            choice.tz,
            listing=listing,
            link=linker("/console/coupons", params),
            params=params,
            scoped=choice.store_ids is not None,
            charts={"flows": flow_chart, "budget": budget_chart if budgeted else ""},
            has_rows=bool(rows),
            editable=editable,
            form=form,
            statuses=TEMPLATE_STATUSES,
            accept_scopes=ACCEPT_SCOPES,
            bearers=BEARERS,
            notice=notice if notice in ("created", "stopped", "resumed") else "",
            notice_code=request.query_params.get("code", ""),
            **scope_context(choice, kept(params, ("status", "kind"))),
        ),
        status_code=status,
    )


@router.get("/console/coupons")
def coupon_templates_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Coupon templates with their rules, numbers in the user's scope and charts; HQ's create form."""
    return coupons_page(request, session, user)


@router.get("/console/coupons/form/values")
def coupon_value_fields(
    request: Request, user: ConsoleUser, session: SessionDep, kind: str = ""
) -> HTMLResponse:
    """The value inputs of one coupon kind (htmx swaps them in when the kind changes)."""
    user.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")
    form = template_form(session, user, {"kind": kind})
    return render(
        request,
        "console/benefits/_coupon_values.html",
        base_context(user, "coupons", org_tz(session, user), form=form),
    )


@router.post("/console/coupons", dependencies=[Csrf])
def create_coupon_template(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Create a coupon template through the API's own endpoint (HQ; validated and audited the same way)."""
    user.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")  # before reading the form
    lang = request.state.lang
    values, body, errors = parse_template(form, org_tz(session, user), lang)
    status = 422
    if body is not None:
        try:
            answer = api_answer(coupons_api.create_coupon_template(body, user, session, lang, idem_of(form)))
            return done(request, f"/console/coupons?done=created&code={quote(answer['code'])}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, FORM_NAMES, errors)
            status = err.status
    return coupons_page(
        request, session, user, form=template_form(session, user, values, errors), status=status
    )


def set_template_active(
    request: Request, session: Session, user: Principal, code: str, active: bool, back: str
) -> Response:
    template = coupons.template_by_code(session, user.org_id, code)
    coupon_templates.set_active(session, user, template, active)
    session.commit()
    target = back if back.startswith("/console/coupons") else "/console/coupons"
    sep = "&" if "?" in target else "?"
    return done(request, f"{target}{sep}done={'resumed' if active else 'stopped'}&code={quote(code)}")


@router.post("/console/coupons/{code}/stop", dependencies=[Csrf])
def stop_coupon_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Stop issuing a template (HQ); coupons already issued stay usable. Audited by the service."""
    return set_template_active(request, session, user, code, False, form.get("back"))


@router.post("/console/coupons/{code}/resume", dependencies=[Csrf])
def resume_coupon_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Issue a stopped template again (HQ). Audited by the service."""
    return set_template_active(request, session, user, code, True, form.get("back"))


# --- issuing coupons -----------------------------------------------------------------------------------


@dataclass
class HeldCoupon:
    coupon: Coupon
    template: CouponTemplate
    status: str
    issuing_store: str
    redeemed_store: str
    gifted_from: str


def held_coupons(session: Session, member: Member, names: OrgNames) -> list[HeldCoupon]:
    now = utcnow()
    rows = coupons.coupons_of(session, member)
    givers = {c.gifted_from_member_id for c, _ in rows if c.gifted_from_member_id is not None}
    numbers = (
        dict(
            session.execute(select(Member.id, Member.member_no).where(Member.id.in_(sorted(givers))))
            .tuples()
            .all()
        )
        if givers
        else {}
    )
    return [
        HeldCoupon(
            coupon=c,
            template=tpl,
            status=coupons.shown_status(c, now),
            issuing_store=names.store(c.issuing_store_id),
            redeemed_store=names.store(c.redeemed_store_id),
            gifted_from=numbers.get(c.gifted_from_member_id or 0, ""),
        )
        for c, tpl in rows
    ]


def issue_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    query: str = "",
    member: Member | None = None,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    active_form: str = "issue",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    names = org_names(session, user.org_id)
    member, lookup_error, status = member_of_query(session, user, query, member, lang, status)
    can_staff = user.role in issuance.ISSUE_ROLES
    can_compensate = user.role in issuance.COMPENSATION_ROLES
    sources = [s for s, ok in (("staff", can_staff), ("compensation", can_compensate)) if ok]
    chosen = {
        "member": member.member_no if member else query.strip(),
        "source": sources[0] if sources else "",
    }
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/issue.html",
        base_context(
            user,
            "issue",
            org_tz(session, user),
            **member_context(session, user, query, member, lookup_error, names),
            held=held_coupons(session, member, names) if member else [],
            templates=coupons.templates_of(session, user.org_id, active=True),
            stores=writable_stores(session, user),
            sources=sources,
            can_issue=bool(sources),
            can_gift=user.role in issuance.GIFT_ROLES,
            values={**chosen, **(values or {})},
            errors=errors or FormErrors(),
            active_form=active_form,
            notice=notice if notice in ("issued", "gifted") else "",
            notice_code=request.query_params.get("code", ""),
            item_vouchers=sorted(ITEM_VOUCHERS),
        ),
        status_code=status,
    )


@router.get("/console/coupons/issue")
def coupon_issue_page(
    request: Request, user: ConsoleUser, session: SessionDep, q: Annotated[str, Query(max_length=40)] = ""
) -> HTMLResponse:
    """Find a member by number or phone, see their coupons, issue one or give one to another member."""
    return issue_page(request, session, user, query=q)


ISSUE_FIELDS = ("member", "template_code", "source", "store_code", "cover", "reason")


@router.post("/console/coupons/issue", dependencies=[Csrf])
def issue_coupon(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Issue a coupon to a member through the API's endpoint: by staff at a store, or as compensation."""
    lang = request.state.lang
    t = texts(lang)
    values = {n: form.get(n) for n in ISSUE_FIELDS}
    errors = FormErrors()
    cover_fen = None
    if values["cover"]:
        cover_fen = yuan_to_fen(values["cover"])
        if cover_fen is None:
            errors.add("cover", f"{t('ben.i.cover')}{label_sep(lang)}{t('ben.bad_money')}")
    if not values["member"]:
        errors.add("member", t("ben.i.lookup_empty"))
    member: Member | None = None
    status = 422
    if not errors:
        try:
            member = lookup_member(session, user.org_id, values["member"])
            body = coupons_api.IssueIn.model_validate(
                {
                    "template_code": values["template_code"],
                    "source": values["source"] or "staff",
                    "reason": values["reason"],
                    "store_code": values["store_code"] or None,
                    "cover_fen": cover_fen,
                }
            )
            answer = api_answer(
                coupons_api.issue_member_coupon(member.member_no, body, user, session, lang, idem_of(form))
            )
            query = urlencode({"q": member.member_no, "done": "issued", "code": answer["code"]})
            return done(request, f"/console/coupons/issue?{query}")
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.i", {"cover_fen": "cover"}, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, {"cover_fen": "cover"}, errors)
            status = err.status
    return issue_page(
        request,
        session,
        user,
        query=values["member"],
        member=member,
        values=values,
        errors=errors,
        status=status,
    )


@router.post("/console/coupons/gift", dependencies=[Csrf])
def gift_coupon(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Give a member's unused coupon to another member, through the API's endpoint."""
    lang = request.state.lang
    t = texts(lang)
    member_no, code = form.get("member_no"), form.get("code")
    values = {"gift_to": form.get("to"), "gift_reason": form.get("reason")}
    errors = FormErrors()
    status = 422
    if not values["gift_to"]:
        errors.add("gift_to", t("ben.i.lookup_empty"))
    else:
        try:
            receiver = lookup_member(session, user.org_id, values["gift_to"])
            body = coupons_api.GiftIn(to_member_no=receiver.member_no, reason=values["gift_reason"])
            answer = api_answer(
                coupons_api.gift_member_coupon(member_no, code, body, user, session, lang, idem_of(form))
            )
            query = urlencode({"q": member_no, "done": "gifted", "code": answer["code"]})
            return done(request, f"/console/coupons/issue?{query}")
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.i", {"reason": "gift_reason"}, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, None, errors)
            status = err.status
    return issue_page(
        request,
        session,
        user,
        query=member_no,
        values=values,
        errors=errors,
        active_form=f"gift-{code}",
        status=status,
    )


# --- one coupon template -------------------------------------------------------------------------------


def coupon_conditions(
    template: CouponTemplate, store_ids: frozenset[int] | None, status: str, now: datetime
) -> list[ColumnElement[bool]]:
    """The template's coupons a user sees: in a narrowed scope those issued or redeemed at its stores."""
    where: list[ColumnElement[bool]] = [Coupon.org_id == template.org_id, Coupon.template_id == template.id]
    if store_ids is not None:
        ids = sorted(store_ids)
        where.append(or_(Coupon.issuing_store_id.in_(ids), Coupon.redeemed_store_id.in_(ids)))
    lapsed = and_(Coupon.status == "available", Coupon.valid_to.is_not(None), Coupon.valid_to <= now)
    if status == "available":
        where.append(
            and_(Coupon.status == "available", or_(Coupon.valid_to.is_(None), Coupon.valid_to > now))
        )
    elif status == "expired":
        where.append(or_(Coupon.status == "expired", lapsed))
    elif status in ("redeemed", "void"):
        where.append(Coupon.status == status)
    return where


def coupons_query(
    template: CouponTemplate, store_ids: frozenset[int] | None, status: str, now: datetime
) -> Select[Coupon, str]:
    return (
        select(Coupon, Member.member_no)
        .join(Member, Member.id == Coupon.member_id)
        .where(*coupon_conditions(template, store_ids, status, now))
        .order_by(Coupon.id.desc())
    )


def status_counts(
    session: Session, template: CouponTemplate, store_ids: frozenset[int] | None, now: datetime
) -> dict[str, int]:
    base = coupon_conditions(template, store_ids, "", now)
    counts = {s: 0 for s in COUPON_STATUSES}
    for status, n in session.execute(
        select(Coupon.status, func.count()).where(*base).group_by(Coupon.status)
    ).all():
        counts[status] = counts.get(status, 0) + int(n)
    lapsed = int(
        session.scalar(
            select(func.count()).where(
                *base, Coupon.status == "available", Coupon.valid_to.is_not(None), Coupon.valid_to <= now
            )
        )
        or 0
    )
    counts["available"] -= lapsed
    counts["expired"] += lapsed
    return counts


@dataclass
class StoreRedemptions:
    store_code: str
    store_name: str
    count: int
    discount_fen: int
    difference_fen: int


def redemptions_by_store(
    session: Session, template: CouponTemplate, store_ids: frozenset[int] | None, names: OrgNames
) -> list[StoreRedemptions]:
    found = session.execute(
        select(
            CouponRedemption.redeeming_store_id,
            func.count(),
            func.coalesce(func.sum(CouponRedemption.discount_fen), 0),
            func.coalesce(func.sum(CouponRedemption.price_difference_fen), 0),
        )
        .where(
            CouponRedemption.template_id == template.id,
            CouponRedemption.status == "redeemed",
            *in_stores(CouponRedemption.redeeming_store_id, store_ids),
        )
        .group_by(CouponRedemption.redeeming_store_id)
    ).all()
    rows = [
        StoreRedemptions(names.store_code(sid), names.store(sid), int(n), int(d), int(p))
        for sid, n, d, p in found
    ]
    return sorted(rows, key=lambda r: (-r.count, r.store_code))


@dataclass
class IssuedRow:
    code: str
    member_no: str
    source: str
    issuing_store: str
    issued_at: datetime
    issued_by: str
    valid_to: datetime | None
    status: str
    redeemed_store: str
    redeemed_at: datetime | None
    discount_fen: int
    reason: str


def issued_rows(rows: Sequence[Any], names: OrgNames, now: datetime) -> list[IssuedRow]:
    return [
        IssuedRow(
            code=c.code,
            member_no=member_no,
            source=c.source,
            issuing_store=names.store(c.issuing_store_id),
            issued_at=c.issued_at,
            issued_by=c.issued_by,
            valid_to=c.valid_to,
            status=coupons.shown_status(c, now),
            redeemed_store=names.store(c.redeemed_store_id),
            redeemed_at=c.redeemed_at,
            discount_fen=c.discount_fen,
            reason=c.reason,
        )
        for c, member_no in rows
    ]


@router.get("/console/coupons/{code}")
def coupon_template_detail(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> HTMLResponse:
    """One template: its rules, redemptions by redeeming store, coupons by status and the issued coupons."""
    lang = request.state.lang
    t = texts(lang)
    template = coupons.template_by_code(session, user.org_id, code)
    params = read_params(request, ("store", "region", "status", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    now = utcnow()
    status = params.get("status", "") if params.get("status") in COUPON_STATUSES else ""
    by_store = redemptions_by_store(session, template, choice.store_ids, names)
    counts = status_counts(session, template, choice.store_ids, now)
    page = page_number(params.get("page"))
    found = session.execute(
        coupons_query(template, choice.store_ids, status, now)
        .limit(PAGE_SIZE + 1)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    listing = Paged(issued_rows(found[:PAGE_SIZE], names, now), page, PAGE_SIZE, len(found) > PAGE_SIZE)
    store_chart = count_and_money(
        t("ben.d.chart_store"),
        [r.store_name for r in by_store],
        t("ben.d.count"),
        [r.count for r in by_store],
        t("ben.d.discount_yuan"),
        [r.discount_fen / 100 for r in by_store],
    )
    status_chart = charts.pie(
        t("ben.d.chart_status"), [(t(f"ben.cs.{s}"), counts[s]) for s in COUPON_STATUSES if counts[s]]
    )
    issued = sum(counts.values())
    redeemed = sum(r.count for r in by_store)
    kpis = [
        ("issued", f"{issued:,}"),
        ("redeemed", f"{redeemed:,}"),
        ("rate", f"{redeemed * 100 / issued:.1f}%" if issued else "-"),
        (
            "budget",
            f"{fen(template.budget_used)} / {fen(template.budget_fen)}"
            if template.budget_fen
            else t("ben.no_budget"),
        ),
    ]
    row = template_row(t, names, template, choice.tz, None)
    back = linker(f"/console/coupons/{quote(template.code)}", params)()
    return render(
        request,
        "console/benefits/coupon.html",
        base_context(
            user,
            "coupons",
            choice.tz,
            row=row,
            template=template,
            kpis=kpis,
            by_store=by_store,
            charts={"store": store_chart, "status": status_chart},
            counts=counts,
            listing=listing,
            link=linker(f"/console/coupons/{quote(template.code)}", params),
            export_url=linker(f"/console/coupons/{quote(template.code)}/coupons.xlsx", params)(page=None),
            params=params,
            status=status,
            statuses=COUPON_STATUSES,
            scoped=choice.store_ids is not None,
            editable=user.role in TEMPLATE_ROLES,
            back=back,
            notice=request.query_params.get("done", "")
            if request.query_params.get("done") in ("stopped", "resumed")
            else "",
            **scope_context(choice, kept(params, ("status",))),
        ),
    )


@router.get("/console/coupons/{code}/coupons.xlsx")
def coupon_template_coupons_xlsx(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """The template's issued coupons as Excel: the page's scope and status filter, newest first."""
    lang = request.state.lang
    t = texts(lang)
    template = coupons.template_by_code(session, user.org_id, code)
    params = read_params(request, ("store", "region", "status"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    now = utcnow()
    status = params.get("status", "") if params.get("status") in COUPON_STATUSES else ""
    found = session.execute(coupons_query(template, choice.store_ids, status, now).limit(EXPORT_LIMIT)).all()
    zone = ZoneInfo(choice.tz)
    headers = [
        t(f"ben.cc.{k}")
        for k in (
            "code",
            "member",
            "source",
            "issuing_store",
            "issued_at",
            "issued_by",
            "valid_to",
            "status",
            "redeemed_store",
            "redeemed_at",
            "discount",
            "reason",
        )
    ]
    rows = [
        (
            r.code,
            r.member_no,
            t(f"ben.src.{r.source}"),
            r.issuing_store,
            r.issued_at.astimezone(zone),
            r.issued_by,
            r.valid_to.astimezone(zone) if r.valid_to else None,
            t(f"ben.cs.{r.status}"),
            r.redeemed_store,
            r.redeemed_at.astimezone(zone) if r.redeemed_at else None,
            r.discount_fen / 100,
            r.reason,
        )
        for r in issued_rows(found, names, now)
    ]
    return xlsx_response(f"coupons-{template.code}.xlsx", headers, rows, sheet=f"coupons {template.code}")


# --- service package templates -------------------------------------------------------------------------


@dataclass
class PackageFlow:
    sold: int = 0
    revenue_fen: int = 0
    granted: int = 0
    uses: int = 0
    use_value_fen: int = 0
    refunded: int = 0
    refunded_fen: int = 0


@dataclass
class PackageRow:
    template: ServicePackage
    per_use: str
    validity: str
    refund: str
    stores: str
    bearer: str
    flow: PackageFlow


def package_flows(session: Session, org_id: int, store_ids: frozenset[int] | None) -> dict[int, PackageFlow]:
    """Per template: sales, grants and refunds of the chosen stores and the uses they performed."""
    flows: dict[int, PackageFlow] = {}
    sold = session.execute(
        select(
            MemberPackage.package_id,
            MemberPackage.source,
            func.count(),
            func.coalesce(func.sum(MemberPackage.price_fen), 0),
        )
        .where(MemberPackage.org_id == org_id, *in_stores(MemberPackage.sold_store_id, store_ids))
        .group_by(MemberPackage.package_id, MemberPackage.source)
    ).all()
    for package_id, source, n, paid in sold:
        flow = flows.setdefault(package_id, PackageFlow())
        if source == packages.Source.SALE:
            flow.sold += int(n)
            flow.revenue_fen += int(paid)
        else:
            flow.granted += int(n)
    refunds = session.execute(
        select(MemberPackage.package_id, func.count(), func.coalesce(func.sum(MemberPackage.refunded_fen), 0))
        .where(
            MemberPackage.org_id == org_id,
            MemberPackage.status == "refunded",
            *in_stores(MemberPackage.sold_store_id, store_ids),
        )
        .group_by(MemberPackage.package_id)
    ).all()
    for package_id, n, amount in refunds:
        flow = flows.setdefault(package_id, PackageFlow())
        flow.refunded, flow.refunded_fen = int(n), int(amount)
    used = session.execute(
        select(
            PackageUse.package_id,
            func.coalesce(func.sum(PackageUse.uses), 0),
            func.coalesce(func.sum(PackageUse.value_fen), 0),
        )
        .where(PackageUse.org_id == org_id, *in_stores(PackageUse.used_store_id, store_ids))
        .group_by(PackageUse.package_id)
    ).all()
    for package_id, uses, value in used:
        flow = flows.setdefault(package_id, PackageFlow())
        flow.uses, flow.use_value_fen = int(uses), int(value)
    return flows


def uses_by_store(
    session: Session, org_id: int, store_ids: frozenset[int] | None, names: OrgNames
) -> list[tuple[str, int]]:
    found = session.execute(
        select(PackageUse.used_store_id, func.coalesce(func.sum(PackageUse.uses), 0))
        .where(PackageUse.org_id == org_id, *in_stores(PackageUse.used_store_id, store_ids))
        .group_by(PackageUse.used_store_id)
    ).all()
    return sorted(((names.store(sid), int(n)) for sid, n in found), key=lambda p: (-p[1], p[0]))


def package_bearer_text(t: Callable[[str], str], bearer: str, issuer_pct: int) -> str:
    return fmt(t("ben.p.bearer.split"), pct=issuer_pct) if bearer == "split" else t(f"ben.p.bearer.{bearer}")


def package_row(
    session: Session, t: Callable[[str], str], names: OrgNames, tpl: ServicePackage, flow: PackageFlow
) -> PackageRow:
    values = per_use_values(tpl.price_fen, tpl.uses)
    low, high = min(values), max(values)
    return PackageRow(
        template=tpl,
        per_use=fen(low) if low == high else f"{fen(low)}–{fen(high)}",
        validity=fmt(t("ben.p.validity_days"), n=tpl.validity_days)
        if tpl.validity_days
        else t("ben.p.never"),
        refund=t(f"ben.p.refund.{tpl.refund_rule}"),
        stores=stores_text(
            t,
            names,
            tpl.store_scope,
            tpl.scope_brand_id,
            tpl.scope_region_id,
            packages.template_store_ids(session, tpl.id) if tpl.store_scope == "stores" else [],
        ),
        bearer=package_bearer_text(t, tpl.bearer, tpl.issuer_pct),
        flow=flow,
    )


PACKAGE_FIELDS = (
    "code",
    "name",
    "service_code",
    "uses",
    "price",
    "validity_days",
    "refund_rule",
    "store_scope",
    "brand_code",
    "region_code",
    "bearer",
    "issuer_pct",
)
PACKAGE_DEFAULTS: dict[str, Any] = {
    "uses": "10",
    "validity_days": "365",
    "refund_rule": "unused_pro_rata",
    "store_scope": "all",
    "bearer": "issuing_store",
    "store_codes": [],
}
PACKAGE_SCOPES = ("all", "brand", "region", "stores")
REFUND_RULES = ("unused_pro_rata", "full_if_unused", "none")


def parse_package(
    form: Posted, lang: str
) -> tuple[dict[str, Any], packages_api.TemplateIn | None, FormErrors]:
    """The typed package form as the API's ``TemplateIn`` (or the errors); the price is typed in yuan."""
    errors = FormErrors()
    values: dict[str, Any] = {n: form.get(n) for n in PACKAGE_FIELDS}
    values["store_codes"] = [c for c in form.getlist("store_codes") if c]
    data: dict[str, Any] = {
        "code": values["code"],
        "name": values["name"],
        "service_code": values["service_code"],
        "uses": values["uses"],
        "validity_days": values["validity_days"] or None,
        "refund_rule": values["refund_rule"] or "unused_pro_rata",
        "store_scope": values["store_scope"] or "all",
        "bearer": values["bearer"] or "issuing_store",
    }
    price = yuan_to_fen(values["price"]) if values["price"] else None
    if price is None:
        bad_value(errors, "price", "ben.pf", "ben.bad_money", lang)
    else:
        data["price_fen"] = price
    if data["store_scope"] == "brand":
        data["brand_code"] = values["brand_code"] or None
    elif data["store_scope"] == "region":
        data["region_code"] = values["region_code"] or None
    elif data["store_scope"] == "stores":
        data["store_codes"] = values["store_codes"]
    if data["bearer"] == "split":
        data["issuer_pct"] = values["issuer_pct"] or "0"
    try:
        body = packages_api.TemplateIn.model_validate(data)
    except ValidationError as exc:
        return values, None, validation_errors(exc, lang, "ben.pf", {"price_fen": "price"}, errors)
    if errors:
        return values, None, errors
    return values, body, errors


def packages_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, Any] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    t = texts(lang)
    params = read_params(request, ("store", "region", "status", "page"))
    choice = choose_scope(session, user, lang, params.get("store"), params.get("region"))
    names = org_names(session, user.org_id)
    found = packages.templates(session, user.org_id, active_only=False)
    if params.get("status") in ("active", "inactive"):
        found = [p for p in found if p.active == (params["status"] == "active")]
    flows = package_flows(session, user.org_id, choice.store_ids)
    rows = [package_row(session, t, names, p, flows.get(p.id, PackageFlow())) for p in found]
    page = page_number(params.get("page"))
    chunk = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE + 1]
    listing = Paged(chunk[:PAGE_SIZE], page, PAGE_SIZE, len(chunk) > PAGE_SIZE)
    top = sorted(rows, key=lambda r: (-(r.flow.sold + r.flow.granted), r.template.code))[:CHART_TEMPLATES]
    by_template = whole_numbers(
        grouped_bar(
            t("ben.p.chart_templates"),
            [r.template.name for r in top],
            {
                t("ben.p.col.sold"): [r.flow.sold for r in top],
                t("ben.p.col.granted"): [r.flow.granted for r in top],
                t("ben.p.col.used"): [r.flow.uses for r in top],
            },
        )
    )
    stores = uses_by_store(session, user.org_id, choice.store_ids, names)
    by_store = whole_numbers(
        charts.bar(t("ben.p.chart_stores"), [n for n, _ in stores], [u for _, u in stores])
    )
    editable = user.role in packages.TEMPLATE_ROLES
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/packages.html",
        base_context(
            user,
            "packages",
            choice.tz,
            listing=listing,
            link=linker("/console/packages", params),
            params=params,
            charts={"templates": by_template, "stores": by_store},
            has_rows=bool(rows),
            has_uses=bool(stores),
            editable=editable,
            values={**PACKAGE_DEFAULTS, **(values or {})},
            errors=errors or FormErrors(),
            brands=list(names.brands.values()),
            regions=list(names.regions.values()),
            all_stores=[s for s in names.stores.values() if s.active],
            scopes=PACKAGE_SCOPES,
            refund_rules=REFUND_RULES,
            bearers=BEARERS,
            notice=notice if notice in ("created", "withdrawn", "relisted") else "",
            notice_code=request.query_params.get("code", ""),
            **scope_context(choice, kept(params, ("status",))),
        ),
        status_code=status,
    )


@router.get("/console/packages")
def package_templates_page(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Service package templates with sales, grants, uses and refunds in the user's scope; HQ's form."""
    return packages_page(request, session, user)


@router.post("/console/packages", dependencies=[Csrf])
def create_package_template(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Create a service package template through the API's own endpoint (HQ; audited by the service)."""
    user.require_role(
        packages.TEMPLATE_ROLES, "管理次卡", "manage service packages"
    )  # before reading the form
    lang = request.state.lang
    values, body, errors = parse_package(form, lang)
    status = 422
    if body is not None:
        try:
            answer = api_answer(
                packages_api.create_package_template(body, user, session, lang, idem_of(form))
            )
            return done(request, f"/console/packages?done=created&code={quote(answer['code'])}")
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, {"price_fen": "price"}, errors)
            status = err.status
    return packages_page(request, session, user, values=values, errors=errors, status=status)


def set_package_active(
    request: Request, session: Session, user: Principal, code: str, active: bool
) -> Response:
    template = packages.template_by_code(session, user.org_id, code)
    packages.set_active(session, user, template, active)
    session.commit()
    return done(request, f"/console/packages?done={'relisted' if active else 'withdrawn'}&code={quote(code)}")


@router.post("/console/packages/{code}/withdraw", dependencies=[Csrf])
def withdraw_package_template(
    code: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """Stop selling a package (HQ); packages members hold keep working. Audited by the service."""
    return set_package_active(request, session, user, code, False)


@router.post("/console/packages/{code}/relist", dependencies=[Csrf])
def relist_package_template(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """Sell a withdrawn package again (HQ). Audited by the service."""
    return set_package_active(request, session, user, code, True)


# --- a member's packages -------------------------------------------------------------------------------


@dataclass
class UseRow:
    use: PackageUse
    store: str
    staff: str
    last_no: int


@dataclass
class HeldPackage:
    package: MemberPackage
    template: ServicePackage
    expired: bool
    issuer: str
    uses: list[UseRow]
    refundable_fen: int | None
    refund_blocker: str
    use_stores: list[Store]
    can_refund: bool


def actor_name(actor: str) -> str:
    """``staff:wang`` reads ``wang``; a till key keeps its ``api_key:`` prefix (it is not a person)."""
    return actor.removeprefix("staff:")


def held_packages(
    session: Session, user: Principal, member: Member, names: OrgNames, lang: str
) -> list[HeldPackage]:
    now = utcnow()
    scope_stores = writable_stores(session, user)
    out = []
    for package in packages.packages_of(session, member, include_closed=True):
        template = session.get(ServicePackage, package.package_id)
        assert template is not None
        try:
            refundable: int | None = packages.refund_amount(package, template.refund_rule)
            blocker = ""
        except DomainError as err:
            refundable, blocker = None, page_error_text(err, lang)
        in_scope = (
            user.can_access_store(package.sold_store_id) if package.sold_store_id is not None else user.is_hq
        )
        out.append(
            HeldPackage(
                package=package,
                template=template,
                expired=package.expires_at is not None and now >= package.expires_at,
                issuer=names.store(package.sold_store_id),
                uses=[
                    UseRow(u, names.store(u.used_store_id), actor_name(u.actor), u.first_use_no + u.uses - 1)
                    for u in packages.uses_of(session, package)
                ],
                refundable_fen=refundable,
                refund_blocker=blocker,
                use_stores=[s for s in scope_stores if packages.offers_service(session, template, s)],
                can_refund=user.role in packages.REFUND_ROLES and in_scope,
            )
        )
    return out


def holders_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    query: str = "",
    member: Member | None = None,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    active_form: str = "",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    names = org_names(session, user.org_id)
    member, lookup_error, status = member_of_query(session, user, query, member, lang, status)
    stores = writable_stores(session, user)
    default_store = next((s.code for s in stores if s.id == user.store_id), "")
    notice = request.query_params.get("done", "")
    return render(
        request,
        "console/benefits/holders.html",
        base_context(
            user,
            "holders",
            org_tz(session, user),
            **member_context(session, user, query, member, lookup_error, names),
            held=held_packages(session, user, member, names, lang) if member else [],
            templates=packages.templates(session, user.org_id),
            stores=stores,
            can_sell=user.role in packages.SELL_ROLES,
            can_use=user.role in packages.USE_ROLES,
            can_grant=user.role in packages.GRANT_ROLES,
            any_action=user.role in (packages.SELL_ROLES | packages.GRANT_ROLES | packages.REFUND_ROLES),
            values={"store_code": default_store, **(values or {})},
            errors=errors or FormErrors(),
            active_form=active_form,
            payment_methods=PAYMENT_METHODS,
            grant_sources=GRANT_SOURCES,
            notice=notice if notice in ("sold", "granted", "used", "refunded") else "",
            notice_id=request.query_params.get("id", ""),
        ),
        status_code=status,
    )


@router.get("/console/packages/members")
def member_packages_page(
    request: Request, user: ConsoleUser, session: SessionDep, q: Annotated[str, Query(max_length=40)] = ""
) -> HTMLResponse:
    """A member's packages (uses left, expiry, every use, refunds) with sale, grant, use and refund."""
    return holders_page(request, session, user, query=q)


def holder_done(request: Request, member_no: str, notice: str, package_id: object) -> Response:
    query = urlencode({"q": member_no, "done": notice, "id": package_id})
    return done(request, f"/console/packages/members?{query}#pkg-{package_id}")


def holder_failed(
    request: Request,
    session: Session,
    user: Principal,
    member_text: str,
    values: dict[str, str],
    errors: FormErrors,
    form_id: str,
    status: int,
) -> HTMLResponse:
    return holders_page(
        request,
        session,
        user,
        query=member_text,
        values=values,
        errors=errors,
        active_form=form_id,
        status=status,
    )


@router.post("/console/packages/sell", dependencies=[Csrf])
def sell_package(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Sell a package to a member at a store through the API's endpoint; the amount must be the price."""
    lang = request.state.lang
    values = {n: form.get(n) for n in ("member", "package_code", "store_code", "payment_method", "amount")}
    errors = FormErrors()
    amount = yuan_to_fen(values["amount"]) if values["amount"] else None
    if amount is None:
        bad_value(errors, "amount", "ben.m", "ben.bad_money", lang)
    status = 422
    if amount is not None:
        try:
            member = lookup_member(session, user.org_id, values["member"])
            body = packages_api.SellIn(
                package_code=values["package_code"],
                store_code=values["store_code"] or None,
                payment_method=values["payment_method"],
                amount_fen=amount,
            )
            answer = api_answer(
                packages_api.sell_package(member.member_no, body, user, session, lang, idem_of(form))
            )
            return holder_done(request, member.member_no, "sold", answer["id"])
        except ValidationError as exc:
            errors = validation_errors(exc, lang, "ben.m", SELL_RENAME, errors)
        except DomainError as err:
            session.rollback()
            errors = domain_errors(err, lang, SELL_RENAME, errors)
            status = err.status
    return holder_failed(request, session, user, values["member"], values, errors, "sell", status)


SELL_RENAME = {"amount_fen": "amount", "price_fen": "amount"}
GRANT_RENAME = {"source": "grant_source", "reason": "grant_reason"}


@router.post("/console/packages/grant", dependencies=[Csrf])
def grant_package(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """Give a member a package free, with a reason, through the API's endpoint."""
    lang = request.state.lang
    values = {
        "member": form.get("member"),
        "package_code": form.get("package_code"),
        "store_code": form.get("store_code"),
        "grant_source": form.get("source"),
        "grant_reason": form.get("reason"),
    }
    errors = FormErrors()
    status = 422
    try:
        member = lookup_member(session, user.org_id, values["member"])
        body = packages_api.GrantIn(
            package_code=values["package_code"],
            source=values["grant_source"],
            reason=values["grant_reason"],
            store_code=values["store_code"] or None,
        )
        answer = api_answer(
            packages_api.grant_package(member.member_no, body, user, session, lang, idem_of(form))
        )
        return holder_done(request, member.member_no, "granted", answer["id"])
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", GRANT_RENAME, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, GRANT_RENAME, errors)
        status = err.status
    return holder_failed(request, session, user, values["member"], values, errors, "grant", status)


USE_RENAME = {"store_code": "use_store", "uses": "use_count", "note": "use_note"}


@router.post("/console/member-packages/{package_id}/uses", dependencies=[Csrf])
def use_package(
    package_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Take uses of a member's package at a store offering the service, through the API's endpoint."""
    lang = request.state.lang
    member_no = form.get("member_no")
    values = {
        "use_store": form.get("store_code"),
        "use_count": form.get("uses") or "1",
        "use_note": form.get("note"),
    }
    errors = FormErrors()
    status = 422
    try:
        body = packages_api.UseIn.model_validate(
            {
                "uses": values["use_count"],
                "store_code": values["use_store"] or None,
                "member_no": member_no or None,
                "note": values["use_note"],
            }
        )
        api_answer(packages_api.use_package(package_id, body, user, session, lang, idem_of(form)))
        return holder_done(request, member_no, "used", package_id)
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", USE_RENAME, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, USE_RENAME, errors)
        status = err.status
    return holder_failed(request, session, user, member_no, values, errors, f"use-{package_id}", status)


@router.post("/console/member-packages/{package_id}/refund", dependencies=[Csrf])
def refund_package(
    package_id: int, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Refund a package's unused uses by its rule and close it, through the API's endpoint."""
    lang = request.state.lang
    member_no = form.get("member_no")
    values = {"refund_reason": form.get("reason")}
    errors = FormErrors()
    status = 422
    try:
        body = packages_api.RefundIn(reason=values["refund_reason"])
        api_answer(packages_api.refund_package(package_id, body, user, session, lang, idem_of(form)))
        return holder_done(request, member_no, "refunded", package_id)
    except ValidationError as exc:
        errors = validation_errors(exc, lang, "ben.m", {"reason": "refund_reason"}, errors)
    except DomainError as err:
        session.rollback()
        errors = domain_errors(err, lang, {"reason": "refund_reason"}, errors)
        status = err.status
    return holder_failed(request, session, user, member_no, values, errors, f"refund-{package_id}", status)
