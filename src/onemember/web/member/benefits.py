"""What the coupon and service package pages share: their texts, how days and places are named, and
the counts the home page and the benefit tabs show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onemember.coupons import service as coupons
from onemember.coupons.models import Coupon
from onemember.db import utcnow
from onemember.members.models import Member
from onemember.org.models import Brand, Region, Store
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage
from onemember.web import i18n
from onemember.web.member.base import _tr

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


LIST_LIMIT = 500  # coupons or packages a member page shows at once
NAME_LIST = 6  # stores, SKUs or categories named before "…"


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


def _package_open(package: MemberPackage, now: datetime) -> bool:
    return (
        package.status == packages.PackageStatus.ACTIVE
        and package.uses_left > 0
        and (package.expires_at is None or now < package.expires_at)
    )


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
