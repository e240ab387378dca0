"""Coupons (优惠券): templates, issuance, validation at the till, redemption, returns and gifting."""
