from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from onemember.orders.schemas import MemberRefIn

IdentityKindIn = Literal["phone", "card", "wechat_openid", "wechat_unionid", "alipay_uid"]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(min_length=11, max_length=20)
    name: str = Field(default="", max_length=60)
    birthday: date | None = None
    gender: Literal["male", "female", "unknown"] = "unknown"
    channel: Literal["pos", "wechat", "alipay", "app", "web", "import", "other"] = "pos"
    store_code: str | None = None
    card_no: str | None = Field(default=None, max_length=32)
    wechat_openid: str | None = Field(default=None, max_length=64)
    wechat_unionid: str | None = Field(default=None, max_length=64)
    alipay_uid: str | None = Field(default=None, max_length=64)


class IdentityOut(BaseModel):
    kind: str
    masked: str


class PointsSummary(BaseModel):
    balance: int
    debt: int
    lifetime_earned: int
    lifetime_redeemed: int


class StatsOut(BaseModel):
    first_purchase_at: datetime | None
    first_store_code: str | None
    last_purchase_at: datetime | None
    last_store_code: str | None
    order_count: int
    total_spend_fen: int
    return_count: int
    returned_fen: int
    store_count: int


class MemberOut(BaseModel):
    member_no: str
    name: str
    gender: str
    birthday: date | None
    phone_masked: str
    channel: str
    registered_store_code: str | None
    status: str
    created_at: datetime
    identities: list[IdentityOut]
    points: PointsSummary
    stats: StatsOut | None
    full_profile: bool = Field(description="False when the caller sees a masked cross-store view")


class LookupIn(MemberRefIn):
    pass


class BindIdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: IdentityKindIn
    value: str = Field(min_length=1, max_length=64)
    merge: bool = False
    reason: str = Field(default="", max_length=300)


class BindIdentityOut(BaseModel):
    member_no: str
    bound: IdentityOut | None
    merged_member_no: str | None


class MemberCodeOut(BaseModel):
    member_no: str
    code: str
    expires_at: datetime


class RevealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: IdentityKindIn = "phone"
    reason: str = Field(min_length=2, max_length=300)


class RevealOut(BaseModel):
    member_no: str
    kind: str
    value: str


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    survivor_member_no: str
    merged_member_no: str
    reason: str = Field(min_length=2, max_length=300)


class MergeOut(BaseModel):
    survivor_member_no: str
    merged_member_no: str
    orders: int
    identities: list[str]
    points_balance: int
    points_debt: int
    tags: list[str]
