"""API shapes for checkout, returns and order views. Money is integer fen; points are integers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Fen = Annotated[int, Field(ge=0, le=10**12)]


class MemberRefIn(BaseModel):
    """Exactly one way to name the member: number, dynamic member code, or an identifier kind + value."""

    model_config = ConfigDict(extra="forbid")

    member_no: str | None = Field(default=None, max_length=20)
    member_code: str | None = Field(default=None, max_length=64)
    kind: str | None = Field(default=None, max_length=20)
    value: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def exactly_one(self) -> MemberRefIn:
        given = [self.member_no is not None, self.member_code is not None, self.kind is not None]
        if sum(given) != 1 or (self.kind is not None and self.value is None):
            raise ValueError("give exactly one of member_no, member_code, or kind with value")
        return self


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(default="", max_length=60)
    quantity: int = Field(ge=1, le=100000)
    unit_price_fen: Fen


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=30)
    amount_fen: Fen


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member: MemberRefIn | None = None
    store_code: str | None = Field(
        default=None, description="Only for HQ or regional staff; tills use their own store."
    )
    client_order_id: str | None = Field(default=None, max_length=80)
    occurred_at: AwareDatetime | None = None
    lines: list[LineIn] = Field(min_length=1, max_length=500)
    redeem_points: int = Field(default=0, ge=0, le=10**9)
    coupon_codes: list[str] = Field(default_factory=list, max_length=20)
    payments: list[PaymentIn] = Field(default_factory=list, max_length=20)


class EarnLineOut(BaseModel):
    line_no: int
    sku: str
    eligible_fen: int
    points: int


class EarnRuleOut(BaseModel):
    rule: str
    rule_id: int | None = None
    version: int | None = None
    label_zh: str
    label_en: str
    points: int
    lines: list[EarnLineOut]


class OrderLineOut(BaseModel):
    line_no: int
    sku: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int
    amount_fen: int
    discount_fen: int = 0
    points_redeemed: int
    points_value_fen: int
    paid_fen: int
    points_earned: int
    returned_quantity: int


class PaymentOut(BaseModel):
    method: str
    amount_fen: int


class CheckoutOut(BaseModel):
    order_no: str
    store_code: str
    member_no: str | None
    occurred_at: datetime
    total_fen: int
    discount_fen: int = 0
    coupon_discount_fen: int = 0
    tier_code: str | None = None
    points_redeemed: int
    points_value_fen: int
    paid_fen: int
    points_earned: int
    growth_earned: int = 0
    debt_repaid: int
    points_balance: int | None
    points_debt: int | None
    explanation: list[EarnRuleOut]
    lines: list[OrderLineOut]


class ReturnLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1)
    quantity: int = Field(ge=1, le=100000)


class ReturnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[ReturnLineIn] = Field(min_length=1, max_length=500)
    store_code: str | None = None
    client_return_id: str | None = Field(default=None, max_length=80)
    reason: str = Field(default="", max_length=300)
    occurred_at: AwareDatetime | None = None


class ReturnLineOut(BaseModel):
    line_no: int
    sku: str
    quantity: int
    amount_fen: int
    refund_fen: int
    points_reversed: int
    points_refunded: int


class ReturnCouponOut(BaseModel):
    """What a return did to a coupon used on the order."""

    code: str
    returned_fen: int  # the coupon's discount on the returned units (already out of the refund)
    action: str  # kept (still used) | restored (back with the member) | voided


class ReturnOut(BaseModel):
    return_no: str
    order_no: str
    store_code: str
    original_store_code: str
    member_no: str | None
    amount_fen: int
    refund_fen: int
    refund_deducted_fen: int
    points_reversed: int
    points_refunded: int
    points_shortfall: int
    shortfall_policy: str
    points_balance: int | None
    points_debt: int | None
    lines: list[ReturnLineOut]
    created_at: datetime
    coupons: list[ReturnCouponOut] = []  # in the return's own answer; not kept on the return


class OrderOut(BaseModel):
    order_no: str
    store_code: str
    store_name: str
    member_no: str | None
    status: str
    source: str
    client_order_id: str | None
    occurred_at: datetime
    total_fen: int
    points_redeemed: int
    points_value_fen: int
    paid_fen: int
    points_earned: int
    refunded_fen: int
    explanation: list[dict[str, Any]]
    lines: list[OrderLineOut]
    payments: list[PaymentOut]
    returns: list[ReturnOut]


class BatchOrderIn(CheckoutIn):
    client_order_id: str = Field(min_length=1, max_length=80)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders: list[BatchOrderIn] = Field(min_length=1, max_length=1000)


class BatchItemOut(BaseModel):
    client_order_id: str
    status: int
    replayed: bool
    result: dict[str, Any]


class BatchOut(BaseModel):
    applied: int
    replayed: int
    failed: int
    results: list[BatchItemOut]
