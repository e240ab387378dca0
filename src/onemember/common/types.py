"""Enumerations shared across domains."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    HQ_ADMIN = "hq_admin"
    REGIONAL_MANAGER = "regional_manager"
    STORE_MANAGER = "store_manager"
    CLERK = "clerk"
    CS_AGENT = "cs_agent"
    AUDITOR = "auditor"
    MEMBER = "member"  # a member acting on their own data (member page)


class IdentityKind(StrEnum):
    PHONE = "phone"
    CARD = "card"
    WECHAT_OPENID = "wechat_openid"
    WECHAT_UNIONID = "wechat_unionid"
    ALIPAY_UID = "alipay_uid"


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"
    UNKNOWN = "unknown"


class MemberStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"
    ERASED = "erased"


class EntryKind(StrEnum):
    EARN = "earn"
    REDEEM = "redeem"
    EARN_REVERSAL = "earn_reversal"
    REDEEM_REFUND = "redeem_refund"
    DEBT_OFFSET = "debt_offset"  # spendable points cancel a debt (after a merge)
    DEBT_CASH_SETTLE = "debt_cash_settle"  # a debt settled by reducing a cash refund
    WRITE_OFF = "write_off"  # a debt the chain forgives
    EXPIRE = "expire"
    ADJUST = "adjust"
    IMPORT_OPENING = "import_opening"
    MERGE_IN = "merge_in"
    MERGE_OUT = "merge_out"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


class ShortfallPolicy(StrEnum):
    """What a return does when the points it must take back were already spent."""

    DEBT = "debt"  # the member owes the points; later earnings repay them
    DEDUCT_REFUND = "deduct_refund"  # the cash refund is reduced by the points' value
    WRITE_OFF = "write_off"  # the chain forgives them (recorded as a write-off)
