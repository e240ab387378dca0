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

One module per page, on a shared ``base`` (texts, form plumbing, member lookup) and ``coupon_rules`` (a
template in words, for the list and the detail page).
"""

from __future__ import annotations

from fastapi import APIRouter

from onemember.web.console_benefits import (
    coupon_detail,
    coupon_issue,
    coupon_templates,
    member_packages,
    package_templates,
)

router = APIRouter(include_in_schema=False)

# Routes match in the order they are included: /console/coupons/form/values and /console/coupons/issue
# (and /gift) must come before coupon_detail's /console/coupons/{code}, which would take them as a code.
router.include_router(coupon_templates.router)
router.include_router(coupon_issue.router)
router.include_router(coupon_detail.router)
router.include_router(package_templates.router)
router.include_router(member_packages.router)
