"""The member page (/m, mobile first): log in with phone and a one-time code, the member code as a QR
that refreshes itself, points and what expires when, the ledger, orders from every store, profile and
marketing consents, the PIPL requests to export or erase one's data, and the member's coupons (each
with its code as a QR, given to another member by phone number), service packages with their uses, and
the points mall (coupon rewards redeemed online through ``points.mall.redeem_online``; gifts, services
and points + cash at a store's till) with the member's redemptions.

Every read is an indexed lookup by the member's id (ledger, lots, orders, coupons, packages) with a
LIMIT; the domain services (``members.privacy``, ``coupons``, ``packages``) do every write and every
check, the same calls the JSON API makes.

One module per use case: ``base`` (the member session, shared texts and helpers), ``login``, ``home``,
``ledger``, ``orders``, ``profile``, ``privacy``, ``benefits`` (what coupons and packages share),
``coupons``, ``gifts``, ``packages`` and ``mall``.
"""

from __future__ import annotations

from fastapi import APIRouter

from onemember.web.member import coupons, gifts, home, ledger, login, mall, orders, packages, privacy, profile

router = APIRouter(include_in_schema=False)
# FastAPI matches routes in the order they are registered: this order is the old module's.
for feature in (login, home, ledger, orders, profile, privacy, coupons, gifts, packages, mall):
    router.include_router(feature.router)
