"""Service package errors: each with a stable code, an HTTP status and zh-CN / English messages."""

from __future__ import annotations

from onemember.errors import Conflict, DomainError, NotFound


class InvalidPackage(DomainError):
    status = 422
    code = "packages.invalid_template"
    zh = "次卡设置无效"
    en = "The service package is invalid"


class PackageCodeTaken(Conflict):
    code = "packages.code_taken"
    zh = "次卡编码已存在"
    en = "A service package with that code already exists"


class PackageNotFound(NotFound):
    code = "packages.not_found"
    zh = "找不到该次卡"
    en = "Service package not found"


class PackageInactive(Conflict):
    code = "packages.inactive"
    zh = "该次卡已停售"
    en = "This service package is no longer sold"


class PaymentMismatch(DomainError):
    status = 422
    code = "packages.payment_mismatch"
    zh = "实收金额与次卡售价不符"
    en = "The amount paid does not match the package price"


class InvalidGrant(DomainError):
    status = 422
    code = "packages.invalid_grant"
    zh = "赠送次卡的来源或原因无效"
    en = "The grant's source or reason is invalid"


class MemberPackageNotFound(NotFound):
    code = "packages.member_package_not_found"
    zh = "找不到该会员次卡"
    en = "The member's package was not found"


class PackageClosed(Conflict):
    code = "packages.closed"
    zh = "该次卡已退款关闭"
    en = "This package has been refunded and closed"


class PackageExpired(Conflict):
    code = "packages.expired"
    zh = "该次卡已过期"
    en = "This package has expired"


class InsufficientUses(Conflict):
    code = "packages.insufficient_uses"
    zh = "次卡剩余次数不足"
    en = "Not enough uses left on this package"


class InvalidUses(DomainError):
    status = 422
    code = "packages.invalid_uses"
    zh = "使用次数须为正整数"
    en = "The number of uses must be a positive number"


class ServiceNotOfferedHere(Conflict):
    code = "packages.not_offered_here"
    zh = "该门店不提供此次卡的服务"
    en = "This store does not offer the package's service"


class NotRefundable(Conflict):
    code = "packages.not_refundable"
    zh = "该次卡按规则不可退款"
    en = "This package cannot be refunded under its refund rule"
