"""What the sale screen shows beside the basket for the member being served: their coupons for this
basket (the best combination, what each saves, why the others cannot be used), their service packages
and the packages this store sells, and the rewards offered at this store. The feature pages use the
same rows (``sale`` for the coupon choice, ``packages``, ``mall``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.coupons import calculations as coupon_calc
from onemember.coupons import service as coupon_service
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service.till import UnusableCoupon, candidate
from onemember.db import utcnow
from onemember.members.models import Member
from onemember.org.models import Store
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, ServicePackage
from onemember.points import mall
from onemember.points.models import Reward
from onemember.tiers import service as tiers
from onemember.web import i18n
from onemember.web.pos.base import Basket, Till
from onemember.web.templating import fen, local_time

# --- coupons for this basket ------------------------------------------------------------------------

i18n.register(
    {
        "pos.coupons": ("优惠券", "Coupons"),
        "pos.coupon_scan": ("券码", "Coupon code"),
        "pos.coupon_scan_placeholder": ("扫码或输入券码", "Scan or type a coupon code"),
        "pos.coupon_apply": ("使用", "Apply"),
        "pos.coupon_best": ("推荐组合", "Best combination"),
        "pos.coupon_none": ("不用券", "No coupons"),
        "pos.coupon_best_badge": ("推荐", "Best"),
        "pos.coupon_is_best": ("已选推荐组合，共减", "Best combination selected, saving"),
        "pos.coupon_not_best": ("推荐组合可减", "The best combination would save"),
        "pos.coupon_alone": ("单用可减", "Alone saves"),
        "pos.coupon_until": ("有效期至", "Valid until"),
        "pos.coupon_unusable": ("暂不可用", "Not usable for this basket"),
        "pos.coupon_needs_lines": ("添加商品后显示可用优惠券", "Add items to see the usable coupons"),
        "pos.coupon_empty": ("该会员没有可用的优惠券", "The member has no coupons to use"),
        "pos.coupon_toggle": ("选择或取消", "Select or unselect"),
        "pos.tier_discount": ("会员折扣", "Member discount"),
        "pos.coupon_discount": ("优惠券抵扣", "Coupon discount"),
        "pos.price_difference": ("含补差价", "Incl. price difference paid"),
        "pos.price_difference_short": ("补差价", "Price difference"),
        "pos.to_earn": ("本单可得积分", "Points to earn"),
        "pos.keys_coupon": ("Alt+Q 券码", "Alt+Q coupon"),
        "pos.coupon.rule.amount_off": ("满 {threshold} 减 {amount}", "{amount} off {threshold}+"),
        "pos.coupon.rule.amount_off_flat": ("立减 {amount}", "{amount} off"),
        "pos.coupon.rule.percent_off": ("{zhe} 折", "{pct}% off"),
        "pos.coupon.rule.cap": ("，最多减 {cap}", ", up to {cap}"),
        "pos.coupon.rule.threshold": ("满 {threshold} 可用 · ", "On {threshold}+ · "),
        "pos.coupon.rule.fixed_price": ("特价 {price}", "Special price {price}"),
        "pos.coupon.rule.free_item": ("免费商品券", "Free item"),
        "pos.coupon.rule.exchange": ("兑换券", "Exchange voucher"),
        "pos.coupon.rule.service": ("服务券", "Service voucher"),
        "pos.coupon.rule.cover": (
            "，抵 {cover}，超出部分补差价",
            ", covers {cover}; the member pays any difference",
        ),
        "pos.coupon.rule.only": ("（限 {items}）", " ({items} only)"),
        "pos.coupon.why.threshold_not_met": (
            "未达到使用门槛：满 {threshold}，还差 {short}",
            "Below its threshold: {threshold} needed, {short} short",
        ),
        "pos.coupon.why.not_usable_here": ("不能在本门店使用", "Not accepted at this store"),
        "pos.coupon.why.not_applicable": ("购物篮中没有适用的商品", "Nothing in the basket qualifies"),
        "pos.coupon.why.expired": ("已过期", "Expired"),
        "pos.coupon.why.not_yet_valid": ("{date} 起可用", "Valid from {date}"),
        "pos.coupon.why.not_stackable": (
            "不能与会员折扣同时使用",
            "Does not combine with the member discount",
        ),
        "pos.coupon.why.budget_exhausted": ("活动预算已用完", "Its budget is used up"),
        "pos.coupon.why.already_used": ("已使用或已作废", "Already used or voided"),
        "pos.coupon.why.other": ("暂不可用", "Cannot be used now"),
        "pos.coupon_code_note": ("券码 {code}", "coupon {code}"),
        "pos.err.coupon_member": ("请先识别会员再使用优惠券", "Identify the member before using coupons"),
        "pos.err.coupon_lines": ("请先添加商品再选择优惠券", "Add items before choosing coupons"),
        "pos.err.coupon_code": ("请输入或扫描券码", "Type or scan a coupon code"),
        "pos.err.coupon_unusable": (
            "优惠券 {code} 暂不可用：{reason}",
            "Coupon {code} cannot be used: {reason}",
        ),
        "pos.err.due_changed": (
            "应付金额已变化，请核对后重新结账",
            "The amount due has changed; check it and check out again",
        ),
    }
)

COUPON_WHY = {
    "coupons.threshold_not_met",
    "coupons.not_usable_here",
    "coupons.not_applicable",
    "coupons.expired",
    "coupons.not_yet_valid",
    "coupons.not_stackable",
    "coupons.budget_exhausted",
    "coupons.already_used",
}


def coupon_rule(template: CouponTemplate, cover_fen: int | None, lang: str) -> str:
    """What a coupon does in a few words: 满 ¥300.00 减 ¥50.00, 9 折，最多减 ¥20.00, 特价 ¥9.90..."""

    def tr(key: str, **values: str) -> str:
        return i18n.translate(f"pos.coupon.rule.{key}", lang).format(**values)

    kind = template.kind
    threshold = fen(template.threshold_fen)
    if kind == coupon_calc.Kind.AMOUNT_OFF:
        amount = fen(template.amount_fen)
        if template.threshold_fen:
            text = tr("amount_off", threshold=threshold, amount=amount)
        else:
            text = tr("amount_off_flat", amount=amount)
    elif kind == coupon_calc.Kind.PERCENT_OFF:
        paid = 100 - template.percent_off  # 20 % off is 8 折; 15 % off is 8.5 折
        zhe = f"{paid // 10}.{paid % 10}" if paid % 10 else str(paid // 10)
        text = tr("percent_off", zhe=zhe, pct=str(template.percent_off))
        if template.cap_fen is not None:
            text += tr("cap", cap=fen(template.cap_fen))
        if template.threshold_fen:
            text = tr("threshold", threshold=threshold) + text
    elif kind == coupon_calc.Kind.FIXED_PRICE:
        text = tr("fixed_price", price=fen(template.price_fen))
    else:
        text = tr(kind) if kind in coupon_calc.ITEM_VOUCHERS else template.kind
        if template.pay_difference and cover_fen is not None:
            text += tr("cover", cover=fen(cover_fen))
        if template.threshold_fen:
            text = tr("threshold", threshold=threshold) + text
    items = [*(template.categories or []), *(template.skus or [])]
    if items:
        text += tr(
            "only", items=("、" if lang != "en" else ", ").join(items[:4]) + ("…" if len(items) > 4 else "")
        )
    return text


def unusable_reason(u: UnusableCoupon, lines: list[coupon_service.Line], tz: str, lang: str) -> str:
    """Why a coupon cannot be used for this basket, in the clerk's language."""
    key = u.reason.removeprefix("coupons.") if u.reason in COUPON_WHY else "other"
    text = i18n.translate(f"pos.coupon.why.{key}", lang)
    if u.reason == "coupons.threshold_not_met":
        rule = candidate(u.coupon, u.template)
        counted = (
            lines if u.template.kind in coupon_calc.UNIT_KINDS else [x for x in lines if rule.qualifies(x)]
        )
        short = max(0, u.template.threshold_fen - sum(x.amount_fen for x in counted))
        return text.format(threshold=fen(u.template.threshold_fen), short=fen(short))
    if u.reason == "coupons.not_yet_valid":
        return text.format(date=local_time(u.coupon.valid_from, tz))
    return text


@dataclass
class CouponRow:
    code: str
    name: str
    rule: str
    valid_to: datetime | None
    discount_fen: int = 0  # what it takes off this basket alone
    price_difference_fen: int = 0
    selected: bool = False
    best: bool = False
    reason: str = ""


@dataclass
class CouponPanel:
    usable: list[CouponRow]
    unusable: list[CouponRow]
    selected: list[str]
    best: list[str]
    best_discount_fen: int
    lines: list[coupon_service.Line]  # the basket as the coupon maths saw it (``coupon_lines``)
    tier_applied: bool

    @property
    def is_best(self) -> bool:
        return sorted(self.selected) == sorted(self.best)


def coupon_lines(
    session: Session, till: Till, member: Member, basket: Basket
) -> tuple[list[coupon_service.Line], bool]:
    """The basket as the coupon maths sees it: each line after the member price (checkout's rule)."""
    level = tiers.current_level(session, till.program, member)
    pct = level.discount_pct if level is not None else 0
    lines = [
        coupon_service.Line(i, x.sku, x.category, x.quantity, x.amount_fen - x.amount_fen * pct // 100)
        for i, x in enumerate(basket.lines, start=1)
    ]
    return lines, pct > 0


def coupon_panel(session: Session, till: Till, member: Member, basket: Basket, lang: str) -> CouponPanel:
    """The member's coupons for this basket at this store (``best_for_basket``, as the JSON API's
    ``/coupons/usable``): the usable ones with what each saves, the others with the reason, the best
    combination, and what is selected (the clerk's choice, or the best combination)."""
    store = till.require_store()
    lines, tier_applied = coupon_lines(session, till, member, basket)
    suggestion = coupon_service.best_for_basket(
        session, member, store, lines, tier_discount_applied=tier_applied
    )
    usable_codes = [u.coupon.code for u in suggestion.usability.usable]
    if basket.coupons is None:
        selected = list(suggestion.codes)
    else:
        selected = [c for c in basket.coupons if c in usable_codes]

    def row(coupon: Coupon, template: CouponTemplate) -> CouponRow:
        rule = coupon_rule(template, coupon.cover_fen, lang)
        return CouponRow(code=coupon.code, name=template.name, rule=rule, valid_to=coupon.valid_to)

    usable = [
        replace(
            row(u.coupon, u.template),
            discount_fen=u.discount_fen,
            price_difference_fen=u.price_difference_fen,
            selected=u.coupon.code in selected,
            best=u.coupon.code in suggestion.codes,
        )
        for u in suggestion.usability.usable
    ]
    unusable = [
        replace(row(u.coupon, u.template), reason=unusable_reason(u, lines, till.org.timezone, lang))
        for u in suggestion.usability.unusable
    ]
    return CouponPanel(
        usable=usable,
        unusable=unusable,
        selected=selected,
        best=list(suggestion.codes),
        best_discount_fen=suggestion.best.discount_fen,
        lines=lines,
        tier_applied=tier_applied,
    )


# --- service packages: the member's, and those on sale here -----------------------------------------


@dataclass
class PackageRow:
    id: int
    name: str
    service_code: str
    uses_left: int
    uses_total: int
    expires_at: datetime | None
    expired: bool
    offered_here: bool
    sold_store: str | None

    @property
    def usable(self) -> bool:
        return self.offered_here and not self.expired and self.uses_left > 0


@dataclass
class PackageOffer:
    code: str
    name: str
    service_code: str
    uses: int
    price_fen: int
    validity_days: int | None
    refund_rule: str


def _store_names(session: Session, org_id: int, ids: set[int | None]) -> dict[int, str]:
    """The names of these stores of the org (None, a package sold by head office, is skipped)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    query = select(Store.id, Store.name).where(Store.org_id == org_id, Store.id.in_(wanted))
    return {int(i): str(n) for i, n in session.execute(query).all()}


def package_row(
    session: Session, package: MemberPackage, template: ServicePackage, store: Store, names: dict[int, str]
) -> PackageRow:
    return PackageRow(
        id=package.id,
        name=template.name,
        service_code=template.service_code,
        uses_left=package.uses_left,
        uses_total=package.uses_total,
        expires_at=package.expires_at,
        expired=package.expires_at is not None and utcnow() >= package.expires_at,
        offered_here=packages.offers_service(session, template, store),
        sold_store=names.get(package.sold_store_id) if package.sold_store_id else None,
    )


def package_rows(session: Session, member: Member, store: Store) -> list[PackageRow]:
    """The member's open packages (``packages.packages_of``), and whether this store performs each."""
    held = packages.packages_of(session, member)
    if not held:
        return []
    names = _store_names(session, member.org_id, {p.sold_store_id for p in held})
    templates = {
        t.id: t
        for t in session.scalars(
            select(ServicePackage).where(ServicePackage.id.in_({p.package_id for p in held}))
        )
    }
    return [package_row(session, p, templates[p.package_id], store, names) for p in held]


def _offer(template: ServicePackage) -> PackageOffer:
    return PackageOffer(
        code=template.code,
        name=template.name,
        service_code=template.service_code,
        uses=template.uses,
        price_fen=template.price_fen,
        validity_days=template.validity_days,
        refund_rule=template.refund_rule,
    )


def package_offers(session: Session, org_id: int, store: Store) -> list[PackageOffer]:
    """The packages on sale whose service this store performs (what a clerk here can sell)."""
    return [_offer(t) for t in packages.templates(session, org_id, store=store)]


# --- rewards offered at this store ------------------------------------------------------------------


@dataclass
class RewardRow:
    code: str
    name: str
    kind: str
    points_cost: int
    cash_fen: int
    stock_mode: str
    quantity: int | None  # units on hand here (or centrally); None when unlimited
    limit: int | None
    used: int
    why: list[str]  # why the member cannot redeem it now (empty: redeemable)

    @property
    def redeemable(self) -> bool:
        return not self.why


def reward_rows(session: Session, store: Store, member: Member, balance: int, lang: str) -> list[RewardRow]:
    """The active rewards: those offered here (``mall.offers_at_store``, as ``GET /rewards`` lists them)
    with whether this member can redeem each and why not; the rest are out of stock here."""
    offers = mall.offers_at_store(session, store.org_id, store.id)
    offered = {o.reward.id for o in offers}
    gone = [
        mall.Offer(r, 0)
        for r in session.scalars(
            select(Reward)
            .where(Reward.org_id == store.org_id, Reward.active.is_(True))
            .order_by(Reward.points_cost, Reward.id)
        )
        if r.id not in offered
    ]
    used = mall.redemptions_counted(session, member.id)
    rows = []
    for offer in [*offers, *gone]:
        reward = offer.reward
        count = used.get(reward.id, 0)
        why = []
        if offer.quantity == 0:
            why.append(i18n.translate("pos.reward_why.stock", lang))
        if reward.per_member_limit is not None and count >= reward.per_member_limit:
            why.append(i18n.translate("pos.reward_why.limit", lang).format(limit=reward.per_member_limit))
        if balance < reward.points_cost:
            why.append(
                i18n.translate("pos.reward_why.points", lang).format(short=reward.points_cost - balance)
            )
        rows.append(
            RewardRow(
                code=reward.code,
                name=reward.name,
                kind=reward.kind,
                points_cost=reward.points_cost,
                cash_fen=reward.cash_fen,
                stock_mode=reward.stock_mode,
                quantity=offer.quantity,
                limit=reward.per_member_limit,
                used=count,
                why=why,
            )
        )
    return rows
