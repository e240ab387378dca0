"""Imports every domain's tables so that metadata (Alembic, tests) sees them all."""

from onemember.audit.models import AuditLog
from onemember.auth.models import ApiKey, StaffSession
from onemember.common.models import Counter, IdempotencyRecord
from onemember.coupons import models as coupon_models  # noqa: F401  (templates, coupons, redemptions)
from onemember.db import Base
from onemember.events.models import Event, WebhookDelivery, WebhookEndpoint
from onemember.jobs.models import JobRun
from onemember.members import privacy_models as privacy_models  # consents, OTPs, member sessions, outbox
from onemember.members.models import Member, MemberIdentity, MemberMerge
from onemember.orders.models import Order, OrderLine, OrderPayment, OrderReturn, ReturnLine
from onemember.org.models import Brand, Org, Region, Staff, Store
from onemember.packages import models as package_models  # noqa: F401  (templates, member packages, uses)
from onemember.points import models as points_models  # rules, rewards, transfers, adjustments, growth
from onemember.points.models import PointAccount, PointEntry, PointLot, PointLotMovement, PointsProgram
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats, MemberTag
from onemember.settlement import models as settlement_models  # noqa: F401  (policies, periods, entries)
from onemember.tiers import models as tier_models  # tier sets, levels, member standings

__all__ = [
    "ApiKey",
    "AuditLog",
    "Base",
    "Brand",
    "Counter",
    "Event",
    "IdempotencyRecord",
    "JobRun",
    "Member",
    "MemberCategoryStats",
    "MemberIdentity",
    "MemberMerge",
    "MemberStats",
    "MemberStoreStats",
    "MemberTag",
    "Order",
    "OrderLine",
    "OrderPayment",
    "OrderReturn",
    "Org",
    "PointAccount",
    "PointEntry",
    "PointLot",
    "PointLotMovement",
    "PointsProgram",
    "Region",
    "ReturnLine",
    "Staff",
    "StaffSession",
    "Store",
    "WebhookDelivery",
    "WebhookEndpoint",
    "points_models",
    "privacy_models",
    "tier_models",
]
