"""Coupon behaviour, split by use case; the names below are what other domains call.

* ``templates``: create and look up coupon templates.
* ``issuance``: issue (staff, compensation, points mall, campaigns), gift, list, expire.
* ``till``: usable coupons and the best combination for a basket, apply, redeem, undo on a return.
"""

from onemember.coupons.service.issuance import (
    Source,
    Status,
    coupon_by_code,
    coupons_of,
    expire_coupons,
    gift_coupon,
    issue_by_staff,
    issue_compensation,
    issue_coupon,
    issue_for_campaign,
    issue_from_mall,
    move_on_merge,
    shown_status,
)
from onemember.coupons.service.templates import TemplateSpec, create_template, template_by_code, templates_of
from onemember.coupons.service.till import (
    Application,
    AppliedCoupon,
    CouponReturn,
    Line,
    Suggestion,
    Usability,
    apply_coupons,
    best_for_basket,
    on_return,
    redeem_applied,
    usable_coupons,
)

__all__ = [
    "Application",
    "AppliedCoupon",
    "CouponReturn",
    "Line",
    "Source",
    "Status",
    "Suggestion",
    "TemplateSpec",
    "Usability",
    "apply_coupons",
    "best_for_basket",
    "coupon_by_code",
    "coupons_of",
    "create_template",
    "expire_coupons",
    "gift_coupon",
    "issue_by_staff",
    "issue_compensation",
    "issue_coupon",
    "issue_for_campaign",
    "issue_from_mall",
    "move_on_merge",
    "on_return",
    "redeem_applied",
    "shown_status",
    "template_by_code",
    "templates_of",
    "usable_coupons",
]
