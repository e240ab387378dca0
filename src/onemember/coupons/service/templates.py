"""Coupon templates: what a coupon does, where and when it is accepted, how it stacks, its limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import Principal
from onemember.common.types import Role
from onemember.coupons.calculations import ITEM_VOUCHERS, Kind
from onemember.coupons.errors import InvalidTemplate, TemplateCodeTaken, TemplateNotFound
from onemember.coupons.models import CouponTemplate
from onemember.db import utcnow
from onemember.org import service as org_service
from onemember.org.models import Brand, Region

TEMPLATE_ROLES = frozenset({Role.HQ_ADMIN})
MAX_FEN = 10**10


class AcceptScope(StrEnum):
    ALL = "all"
    BRAND = "brand"
    REGION = "region"
    STORES = "stores"
    ISSUING_STORE = "issuing_store"


class ReturnPolicy(StrEnum):
    RESTORE = "restore"
    VOID = "void"


class Bearer(StrEnum):
    HQ = "hq"
    ISSUING_STORE = "issuing_store"
    REDEEMING_STORE = "redeeming_store"
    SPLIT = "split"


@dataclass
class TemplateSpec:
    code: str
    name: str
    kind: str
    threshold_fen: int = 0
    amount_fen: int = 0
    percent_off: int = 0
    cap_fen: int | None = None
    price_fen: int = 0
    face_value_fen: int | None = None
    pay_difference: bool = True
    skus: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    accept_scope: str = AcceptScope.ALL
    accept_brand_code: str | None = None
    accept_region_code: str | None = None
    accept_store_codes: list[str] = field(default_factory=list)
    cross_store: bool = True
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    valid_days: int | None = None
    exclusive: bool = False
    stack_group: str | None = None
    combines_with_tier_discount: bool = True
    per_order_limit: int = 1
    per_member_limit: int | None = None
    total_quantity: int | None = None
    budget_fen: int | None = None
    return_policy: str = ReturnPolicy.RESTORE
    giftable: bool = False
    bearer: str = Bearer.HQ
    issuer_pct: int = 0


# Codes appear in URLs (/console/coupons/{code}); these words are pages of their own there.
CODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
RESERVED_CODES = frozenset({"issue", "gift"})


def _bad(zh: str, en: str, name: str) -> InvalidTemplate:
    return InvalidTemplate(zh, en, field=name)


def validate_spec(spec: TemplateSpec) -> None:
    """Each kind has its own shape; amounts are whole fen within sane bounds."""
    if not CODE_RE.fullmatch(spec.code):
        raise _bad(
            "模板编码须为 1 到 40 个字母、数字、点、横线或下划线",
            "The code must be 1 to 40 letters, digits, dots, dashes or underscores",
            "code",
        )
    if spec.code in RESERVED_CODES:
        raise _bad(f"编码 {spec.code} 为系统保留", f"The code {spec.code} is reserved", "code")
    if not spec.name.strip() or len(spec.name) > 120:
        raise _bad("模板名称须为 1 到 120 个字符", "The name must be 1 to 120 characters", "name")
    if spec.kind not in set(Kind):
        raise _bad(f"未知的优惠券类型 {spec.kind}", f"Unknown coupon kind {spec.kind}", "kind")
    for name in ("threshold_fen", "amount_fen", "price_fen"):
        if not 0 <= getattr(spec, name) <= MAX_FEN:
            raise _bad(f"{name} 须为非负整数（分）", f"{name} must be a non-negative number of fen", name)
    for name in ("cap_fen", "face_value_fen", "budget_fen"):
        value = getattr(spec, name)
        if value is not None and not 0 < value <= MAX_FEN:
            raise _bad(f"{name} 须为正整数（分）", f"{name} must be a positive number of fen", name)
    if spec.kind == Kind.AMOUNT_OFF and spec.amount_fen <= 0:
        raise _bad("满减券须设置减免金额 amount_fen", "An amount-off coupon needs amount_fen", "amount_fen")
    if spec.kind == Kind.PERCENT_OFF and not 0 < spec.percent_off < 100:
        raise _bad("折扣券的折扣须在 1 到 99 之间", "percent_off must be 1 to 99", "percent_off")
    if spec.kind != Kind.PERCENT_OFF and (spec.percent_off or spec.cap_fen is not None):
        raise _bad(
            "只有折扣券可以设置折扣和封顶", "Only a percent-off coupon has a percentage and cap", "kind"
        )
    if spec.kind != Kind.AMOUNT_OFF and spec.amount_fen:
        raise _bad("只有满减券可以设置减免金额", "Only an amount-off coupon has amount_fen", "amount_fen")
    if spec.kind != Kind.FIXED_PRICE and spec.price_fen:
        raise _bad("只有一口价券可以设置价格", "Only a fixed-price coupon has price_fen", "price_fen")
    if spec.kind not in ITEM_VOUCHERS and spec.face_value_fen is not None:
        raise _bad("只有商品券可以设置面值", "Only item vouchers have a face value", "face_value_fen")
    if spec.kind in {Kind.FIXED_PRICE, *ITEM_VOUCHERS} and not (spec.skus or spec.categories):
        raise _bad(
            "商品类优惠券须指定适用商品或品类",
            "An item coupon must name its products or categories",
            "skus",
        )
    if len(spec.skus) > 500 or len(spec.categories) > 100:
        raise _bad("适用商品或品类过多", "Too many products or categories", "skus")
    if spec.accept_scope not in set(AcceptScope):
        raise _bad(
            f"未知的适用门店范围 {spec.accept_scope}", f"Unknown scope {spec.accept_scope}", "accept_scope"
        )
    if spec.accept_scope == AcceptScope.BRAND and not spec.accept_brand_code:
        raise _bad("请指定品牌 accept_brand_code", "Name the brand (accept_brand_code)", "accept_brand_code")
    if spec.accept_scope == AcceptScope.REGION and not spec.accept_region_code:
        raise _bad(
            "请指定区域 accept_region_code", "Name the region (accept_region_code)", "accept_region_code"
        )
    if spec.accept_scope == AcceptScope.STORES and not spec.accept_store_codes:
        raise _bad("请指定适用门店", "Name the stores (accept_store_codes)", "accept_store_codes")
    if spec.valid_to is None and spec.valid_days is None:
        raise _bad(
            "请设置固定有效期 valid_to 或领取后有效天数 valid_days",
            "Give fixed dates (valid_to) or days after issue (valid_days)",
            "valid_to",
        )
    if spec.valid_days is not None and not 1 <= spec.valid_days <= 3650:
        raise _bad("有效天数须在 1 到 3650 之间", "valid_days must be 1 to 3650", "valid_days")
    for name in ("valid_from", "valid_to"):
        value = getattr(spec, name)
        if value is not None and value.tzinfo is None:
            raise _bad("时间须带时区", "Times must carry a time zone", name)
    if spec.valid_from and spec.valid_to and spec.valid_from >= spec.valid_to:
        raise _bad("有效期开始须早于结束", "valid_from must be before valid_to", "valid_from")
    if spec.stack_group is not None and not 0 < len(spec.stack_group) <= 40:
        raise _bad("叠加分组须为 1 到 40 个字符", "stack_group must be 1 to 40 characters", "stack_group")
    if not 1 <= spec.per_order_limit <= 50:
        raise _bad("每单限用须在 1 到 50 之间", "per_order_limit must be 1 to 50", "per_order_limit")
    if spec.per_member_limit is not None and spec.per_member_limit < 1:
        raise _bad("每人限领须至少为 1", "per_member_limit must be at least 1", "per_member_limit")
    if spec.total_quantity is not None and not 1 <= spec.total_quantity <= 10**9:
        raise _bad("发行总量须为正整数", "total_quantity must be positive", "total_quantity")
    if spec.return_policy not in set(ReturnPolicy):
        raise _bad("退货处理须为 restore 或 void", "return_policy must be restore or void", "return_policy")
    if spec.bearer not in set(Bearer):
        raise _bad(f"未知的成本承担方 {spec.bearer}", f"Unknown bearer {spec.bearer}", "bearer")
    if spec.bearer == Bearer.SPLIT and not 0 < spec.issuer_pct < 100:
        raise _bad("按比例分摊须设置发券门店比例 1-99", "A split needs issuer_pct 1 to 99", "issuer_pct")
    if spec.bearer != Bearer.SPLIT and spec.issuer_pct:
        raise _bad("只有按比例分摊可以设置比例", "Only a split bearer takes issuer_pct", "issuer_pct")


def create_template(session: Session, principal: Principal, spec: TemplateSpec) -> CouponTemplate:
    """A new coupon template (HQ); audited."""
    principal.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")
    validate_spec(spec)
    if spec.valid_to is not None and spec.valid_to <= utcnow():
        raise _bad("固定有效期已经结束", "The fixed validity window has already ended", "valid_to")
    org_id = principal.org_id
    if session.scalar(
        select(CouponTemplate.id).where(CouponTemplate.org_id == org_id, CouponTemplate.code == spec.code)
    ):
        raise TemplateCodeTaken(
            f"优惠券模板编码 {spec.code} 已存在", f"A coupon template with code {spec.code} already exists"
        )
    brand_id = region_id = None
    if spec.accept_scope == AcceptScope.BRAND:
        brand_id = session.scalar(
            select(Brand.id).where(Brand.org_id == org_id, Brand.code == spec.accept_brand_code)
        )
        if brand_id is None:
            raise _bad(
                f"找不到品牌 {spec.accept_brand_code}",
                f"No brand {spec.accept_brand_code}",
                "accept_brand_code",
            )
    if spec.accept_scope == AcceptScope.REGION:
        region_id = session.scalar(
            select(Region.id).where(Region.org_id == org_id, Region.code == spec.accept_region_code)
        )
        if region_id is None:
            raise _bad(
                f"找不到区域 {spec.accept_region_code}",
                f"No region {spec.accept_region_code}",
                "accept_region_code",
            )
    store_ids = (
        sorted({org_service.store_by_code(session, org_id, c).id for c in spec.accept_store_codes})
        if spec.accept_scope == AcceptScope.STORES
        else []
    )
    template = CouponTemplate(
        org_id=org_id,
        code=spec.code,
        name=spec.name,
        kind=spec.kind,
        threshold_fen=spec.threshold_fen,
        amount_fen=spec.amount_fen,
        percent_off=spec.percent_off,
        cap_fen=spec.cap_fen,
        price_fen=spec.price_fen,
        face_value_fen=spec.face_value_fen,
        pay_difference=spec.pay_difference,
        skus=sorted(set(spec.skus)),
        categories=sorted(set(spec.categories)),
        accept_scope=spec.accept_scope,
        accept_brand_id=brand_id,
        accept_region_id=region_id,
        accept_store_ids=store_ids,
        cross_store=spec.cross_store,
        valid_from=spec.valid_from,
        valid_to=spec.valid_to,
        valid_days=spec.valid_days,
        exclusive=spec.exclusive,
        stack_group=spec.stack_group,
        combines_with_tier_discount=spec.combines_with_tier_discount,
        per_order_limit=spec.per_order_limit,
        per_member_limit=spec.per_member_limit,
        total_quantity=spec.total_quantity,
        budget_fen=spec.budget_fen,
        issued_count=0,
        redeemed_count=0,
        budget_used=0,
        return_policy=spec.return_policy,
        giftable=spec.giftable,
        bearer=spec.bearer,
        issuer_pct=spec.issuer_pct,
        active=True,
        created_by=principal.actor,
        created_at=utcnow(),
    )
    session.add(template)
    session.flush()
    audit.record(
        session,
        principal,
        "coupons.template_created",
        target_type="coupon_template",
        target_id=template.code,
        details={
            "kind": template.kind,
            "threshold_fen": template.threshold_fen,
            "amount_fen": template.amount_fen,
            "percent_off": template.percent_off,
            "total_quantity": template.total_quantity,
            "budget_fen": template.budget_fen,
            "bearer": template.bearer,
        },
    )
    session.flush()
    return template


def set_active(
    session: Session, principal: Principal, template: CouponTemplate, active: bool
) -> CouponTemplate:
    """Stop issuing a template (or resume); coupons already issued stay usable."""
    principal.require_role(TEMPLATE_ROLES, "管理优惠券模板", "manage coupon templates")
    if template.active != active:
        template.active = active
        audit.record(
            session,
            principal,
            "coupons.template_resumed" if active else "coupons.template_stopped",
            target_type="coupon_template",
            target_id=template.code,
        )
        session.flush()
    return template


def template_by_code(session: Session, org_id: int, code: str) -> CouponTemplate:
    template = session.scalar(
        select(CouponTemplate).where(CouponTemplate.org_id == org_id, CouponTemplate.code == code)
    )
    if template is None:
        raise TemplateNotFound()
    return template


def templates_of(session: Session, org_id: int, *, active: bool | None = None) -> list[CouponTemplate]:
    query = select(CouponTemplate).where(CouponTemplate.org_id == org_id)
    if active is not None:
        query = query.where(CouponTemplate.active.is_(active))
    return list(session.scalars(query.order_by(CouponTemplate.id)))
