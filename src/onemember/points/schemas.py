from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class EntryOut(BaseModel):
    id: int
    kind: str
    amount: int
    debt_change: int
    balance_after: int
    debt_after: int
    store_code: str | None
    order_no: str | None
    reason: str
    created_at: datetime


class LotOut(BaseModel):
    amount: int
    remaining: int
    store_code: str | None
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None


class LedgerOut(BaseModel):
    member_no: str
    balance: int
    debt: int
    lifetime_earned: int
    lifetime_redeemed: int
    entries: list[EntryOut]
    open_lots: list[LotOut]
