"""Coupon errors: each with a stable code a till can branch on and a zh-CN and English message."""

from __future__ import annotations

from onemember.errors import Conflict, DomainError, NotFound


class InvalidTemplate(DomainError):
    status = 422
    code = "coupons.invalid_template"
    zh = "优惠券模板设置无效"
    en = "The coupon template is invalid"


class TemplateCodeTaken(Conflict):
    code = "coupons.template_code_taken"
    zh = "优惠券模板编码已存在"
    en = "A coupon template with that code already exists"


class TemplateNotFound(NotFound):
    code = "coupons.template_not_found"
    zh = "找不到该优惠券模板"
    en = "Coupon template not found"


class CouponNotFound(NotFound):
    code = "coupons.not_found"
    zh = "找不到该优惠券"
    en = "Coupon not found"


class TemplateInactive(Conflict):
    code = "coupons.template_inactive"
    zh = "该优惠券已停止发放"
    en = "This coupon is no longer issued"


class NotUsable(Conflict):
    code = "coupons.not_usable"
    zh = "该优惠券当前不可使用"
    en = "This coupon cannot be used now"


class NotUsableHere(Conflict):
    code = "coupons.not_usable_here"
    zh = "该优惠券不能在本门店使用"
    en = "This coupon is not accepted at this store"


class NotYetValid(Conflict):
    code = "coupons.not_yet_valid"
    zh = "该优惠券尚未到使用时间"
    en = "This coupon is not valid yet"


class Expired(Conflict):
    code = "coupons.expired"
    zh = "该优惠券已过期"
    en = "This coupon has expired"


class AlreadyUsed(Conflict):
    code = "coupons.already_used"
    zh = "该优惠券已使用或已作废"
    en = "This coupon has already been used or voided"


class LimitReached(Conflict):
    code = "coupons.limit_reached"
    zh = "已达到该优惠券的每人领取上限"
    en = "The member has reached this coupon's limit"


class SoldOut(Conflict):
    code = "coupons.sold_out"
    zh = "该优惠券已发完"
    en = "This coupon has run out"


class BudgetExhausted(Conflict):
    code = "coupons.budget_exhausted"
    zh = "该优惠券的预算已用完"
    en = "This coupon's budget is used up"


class NotStackable(Conflict):
    code = "coupons.not_stackable"
    zh = "这些优惠不能同时使用"
    en = "These discounts cannot be combined"


class ThresholdNotMet(Conflict):
    code = "coupons.threshold_not_met"
    zh = "未达到优惠券的使用门槛"
    en = "The basket does not reach the coupon's threshold"


class NotApplicable(Conflict):
    code = "coupons.not_applicable"
    zh = "购物车中没有该优惠券适用的商品"
    en = "Nothing in the basket qualifies for this coupon"


class NotGiftable(Conflict):
    code = "coupons.not_giftable"
    zh = "该优惠券不可转赠"
    en = "This coupon cannot be given to another member"
