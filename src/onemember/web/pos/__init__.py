"""The POS page (/pos) for a clerk at a store without its own till integration.

One screen: identify a member (member code, phone, member number or card), build a basket, choose
coupons (the best combination for the basket is pre-selected; why the others cannot be used is said),
redeem points, check out, print the receipt; use or sell the member's service packages (次卡) at this
store; and /pos/orders: look up any order of the chain and return lines of it at this store.

The basket lives in a signed cookie tied to the clerk and the store, so it survives a reload; it also
carries the clerk's coupon choice (none kept means "the best combination"). The checkout and return
forms carry what they act on (the signed basket, the coupon codes and amount shown, the chosen
quantities) and an idempotency key minted when the page was rendered: a double click or a resubmit of
the same form replays the first answer through ``common.idempotency.run`` instead of writing twice.
Every number on the page comes from the services the JSON API calls (``orders.checkout.quote``,
``coupons.best_for_basket``, ``packages.use_package``...), so permissions and validation are the same.

The modules, each layer importing only those above it: ``base`` (texts, money and quantities, the
basket, the till, the member card, page helpers), ``panels`` (the member's coupons, packages and
rewards as the sale screen shows them), ``screen`` (the basket priced and the sale screen), then the
pages: ``login``, ``sale``, ``packages``, ``receipts``, ``returns`` (which reuses the receipts' coupon
rows) and ``mall``. FastAPI matches routes in the order they were included; the routers below keep the
order of the single module this package was split from.
"""

from fastapi import APIRouter

from onemember.web.pos import login, mall, packages, receipts, returns, sale

router = APIRouter(include_in_schema=False)
router.include_router(login.router)
router.include_router(sale.router)
router.include_router(packages.router)
router.include_router(receipts.router)
router.include_router(returns.router)
router.include_router(mall.router)
