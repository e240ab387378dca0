"""Points mall, transfers and manual adjustments: thin endpoints over ``mall``, ``transfers`` and
``adjustments``. Every POST takes an ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.coupons.models import CouponTemplate
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import Invalid
from onemember.members import service as members
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import adjustments, mall, transfers
from onemember.points.models import PointAccount, PointAdjustment, PointTransfer, Reward, RewardRedemption

router = APIRouter(prefix="/api/v1", tags=["points mall, transfers and adjustments"])


# --- shapes ------------------------------------------------------------------------------------------


class RewardIn(BaseModel):
    code: str = Field(max_length=40)
    name: str = Field(max_length=120)
    kind: str = Field(max_length=20)
    points_cost: int
    cash_fen: int = 0
    per_member_limit: int | None = None
    stock_mode: str = Field(default="central", max_length=10)
    coupon_template_code: str | None = Field(default=None, max_length=40)  # coupon rewards issue this


class RewardOut(BaseModel):
    code: str
    name: str
    kind: str
    points_cost: int
    cash_fen: int
    per_member_limit: int | None
    stock_mode: str
    active: bool
    quantity: int | None = None  # units on hand for the store asked about; None when unlimited
    coupon_template_code: str | None = None


class RewardListOut(BaseModel):
    store_code: str
    rewards: list[RewardOut]


class StockIn(BaseModel):
    store_code: str | None = Field(default=None, max_length=40)
    quantity: int


class ActiveIn(BaseModel):
    active: bool


class StockOut(BaseModel):
    reward_code: str
    store_code: str | None
    quantity: int


class RedeemIn(BaseModel):
    reward_code: str = Field(max_length=40)
    store_code: str | None = Field(default=None, max_length=40)
    cash_fen: int = 0  # the cash the till collected (a points + cash reward's cash part)


class NoteIn(BaseModel):
    reason: str = Field(default="", max_length=200)


class RedemptionOut(BaseModel):
    id: int
    reward_code: str
    reward_name: str
    reward_kind: str
    member_no: str
    store_code: str | None
    points: int
    cash_fen: int
    status: str
    actor: str
    created_at: datetime
    fulfilled_at: datetime | None
    fulfilled_by: str
    points_balance: int
    coupon_code: str | None = None  # the coupon a coupon reward issued


class RedemptionListOut(BaseModel):
    member_no: str
    redemptions: list[RedemptionOut]


class TransferIn(BaseModel):
    to_member_no: str = Field(max_length=20)
    points: int
    reason: str = Field(default="", max_length=200)
    store_code: str | None = Field(default=None, max_length=40)


class TransferOut(BaseModel):
    id: int
    from_member_no: str
    to_member_no: str
    points: int
    reason: str
    created_at: datetime
    from_balance: int
    to_balance: int
    to_debt: int


class AdjustmentIn(BaseModel):
    points: int
    reason: str = Field(max_length=300)
    store_code: str | None = Field(default=None, max_length=40)


class AdjustmentOut(BaseModel):
    id: int
    member_no: str
    points: int
    reason: str
    status: str
    requested_by: str
    decided_by: str
    created_at: datetime
    decided_at: datetime | None
    store_code: str | None
    points_balance: int


class AdjustmentListOut(BaseModel):
    adjustments: list[AdjustmentOut]


# --- views -------------------------------------------------------------------------------------------


def _store_code(session: Session, store_id: int | None) -> str | None:
    if store_id is None:
        return None
    store = session.get(Store, store_id)
    return store.code if store else None


def _balance(session: Session, member_id: int) -> PointAccount | None:
    return session.scalar(select(PointAccount).where(PointAccount.member_id == member_id))


def _member_no(session: Session, member_id: int) -> str:
    return mall.current_member(session, member_id).member_no


def reward_out(session: Session, reward: Reward, quantity: int | None = None) -> RewardOut:
    template = (
        session.get(CouponTemplate, reward.coupon_template_id)
        if reward.coupon_template_id is not None
        else None
    )
    return RewardOut(
        code=reward.code,
        name=reward.name,
        kind=reward.kind,
        points_cost=reward.points_cost,
        cash_fen=reward.cash_fen,
        per_member_limit=reward.per_member_limit,
        stock_mode=reward.stock_mode,
        active=reward.active,
        quantity=quantity,
        coupon_template_code=template.code if template is not None else None,
    )


def redemption_out(
    session: Session,
    redemption: RewardRedemption,
    reward: Reward,
    coupon_codes: dict[int, str] | None = None,
) -> RedemptionOut:
    """``coupon_codes`` (``mall.coupon_codes``) when shaping many; else a coupon reward's row looks up its
    own coupon and other rewards, which issue none, look up nothing."""
    if coupon_codes is None:
        coupon_codes = (
            mall.coupon_codes(session, redemption.org_id, [redemption])
            if reward.coupon_template_id is not None
            else {}
        )
    member = mall.current_member(session, redemption.member_id)
    account = _balance(session, member.id)
    return RedemptionOut(
        id=redemption.id,
        reward_code=reward.code,
        reward_name=reward.name,
        reward_kind=reward.kind,
        member_no=member.member_no,
        store_code=_store_code(session, redemption.store_id),
        points=redemption.points,
        cash_fen=redemption.cash_fen,
        status=redemption.status,
        actor=redemption.actor,
        created_at=redemption.created_at,
        fulfilled_at=redemption.fulfilled_at,
        fulfilled_by=redemption.fulfilled_by,
        points_balance=account.balance if account else 0,
        coupon_code=coupon_codes.get(redemption.id),
    )


def _redemption_view(session: Session, redemption: RewardRedemption) -> RedemptionOut:
    reward = session.get(Reward, redemption.reward_id)
    assert reward is not None
    return redemption_out(session, redemption, reward)


def transfer_out(session: Session, transfer: PointTransfer, sender: Member, receiver: Member) -> TransferOut:
    source, target = _balance(session, sender.id), _balance(session, receiver.id)
    assert source is not None
    assert target is not None
    return TransferOut(
        id=transfer.id,
        from_member_no=sender.member_no,
        to_member_no=receiver.member_no,
        points=transfer.points,
        reason=transfer.reason,
        created_at=transfer.created_at,
        from_balance=source.balance,
        to_balance=target.balance,
        to_debt=target.debt,
    )


def adjustment_out(
    session: Session, adjustment: PointAdjustment, store_id: int | None = None
) -> AdjustmentOut:
    member = mall.current_member(session, adjustment.member_id)
    account = _balance(session, member.id)
    if store_id is None:
        store_id = adjustments.requested_store(session, adjustment)
    return AdjustmentOut(
        id=adjustment.id,
        member_no=member.member_no,
        points=adjustment.points,
        reason=adjustment.reason,
        status=adjustment.status,
        requested_by=adjustment.requested_by,
        decided_by=adjustment.decided_by,
        created_at=adjustment.created_at,
        decided_at=adjustment.decided_at,
        store_code=_store_code(session, store_id),
        points_balance=account.balance if account else 0,
    )


def _named_store(session: Session, org_id: int, code: str | None) -> Store | None:
    return org_service.store_by_code(session, org_id, code) if code else None


def _run(
    session: Session,
    principal: CurrentPrincipal,
    idem: str | None,
    operation: str,
    body: dict[str, Any],
    work: Callable[[], BaseModel],
    lang: str,
    status: int = 200,
) -> JSONResponse:
    return respond(idempotency.run(session, principal, idem, operation, body, work, status=status, lang=lang))


# --- rewards -----------------------------------------------------------------------------------------


@router.post("/rewards", status_code=201, response_model=RewardOut)
def create_reward(
    body: RewardIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Offer a new reward in the points mall (HQ): a gift, coupon, service, or points + cash."""

    def work() -> RewardOut:
        return reward_out(
            session, mall.create_reward(session, principal, mall.RewardSpec(**body.model_dump()))
        )

    return _run(session, principal, idem, "points.reward_create", body.model_dump(), work, lang, 201)


@router.get("/rewards", response_model=RewardListOut)
def list_rewards_at_store(
    principal: CurrentPrincipal, session: SessionDep, store_code: str | None = None
) -> RewardListOut:
    """Rewards a member can redeem at a store now, with the units on hand there."""
    store = org_service.acting_store(session, principal, store_code)
    if store is None:
        raise Invalid("请指定门店 store_code", "Name the store (store_code)", code="points.store_required")
    offers = mall.offers_at_store(session, principal.org_id, store.id)
    return RewardListOut(
        store_code=store.code, rewards=[reward_out(session, o.reward, o.quantity) for o in offers]
    )


@router.post("/rewards/{reward_code}/stock", response_model=StockOut)
def set_reward_stock(
    reward_code: str,
    body: StockIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Set a reward's units on hand, centrally or at one store (HQ)."""

    def work() -> StockOut:
        reward = mall.reward_by_code(session, principal.org_id, reward_code)
        store = _named_store(session, principal.org_id, body.store_code)
        quantity = mall.set_stock(session, principal, reward, store, body.quantity)
        return StockOut(reward_code=reward.code, store_code=store.code if store else None, quantity=quantity)

    payload = {"reward_code": reward_code, **body.model_dump()}
    return _run(session, principal, idem, "points.reward_stock", payload, work, lang)


@router.post("/rewards/{reward_code}/active", response_model=RewardOut)
def set_reward_active(
    reward_code: str,
    body: ActiveIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Withdraw a reward from the mall (``active: false``) or offer it again (HQ)."""

    def work() -> RewardOut:
        reward = mall.reward_by_code(session, principal.org_id, reward_code)
        return reward_out(session, mall.set_active(session, principal, reward, body.active))

    payload = {"reward_code": reward_code, **body.model_dump()}
    return _run(session, principal, idem, "points.reward_active", payload, work, lang)


# --- redemptions -------------------------------------------------------------------------------------


@router.post("/members/{member_no}/reward-redemptions", status_code=201, response_model=RedemptionOut)
def redeem_reward(
    member_no: str,
    body: RedeemIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Redeem a reward for a member with points (and the cash part), soonest-expiring points first."""

    def work() -> RedemptionOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        reward = mall.reward_by_code(session, principal.org_id, body.reward_code)
        store = org_service.acting_store(session, principal, body.store_code)
        redemption = mall.redeem_reward(session, principal, member, reward, store, cash_fen=body.cash_fen)
        return redemption_out(session, redemption, reward)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "points.reward_redeem", payload, work, lang, 201)


@router.get("/members/{member_no}/reward-redemptions", response_model=RedemptionListOut)
def list_member_redemptions(
    member_no: str, principal: CurrentPrincipal, session: SessionDep
) -> RedemptionListOut:
    """A member's reward redemptions, newest first, with their fulfilment status."""
    member = members.by_member_no(session, principal.org_id, member_no)
    rows = mall.redemptions_of(session, member)
    codes = mall.coupon_codes(
        session, principal.org_id, [r for r, w in rows if w.coupon_template_id is not None]
    )
    return RedemptionListOut(
        member_no=member.member_no, redemptions=[redemption_out(session, r, w, codes) for r, w in rows]
    )


@router.post("/reward-redemptions/{redemption_id}/fulfil", response_model=RedemptionOut)
def fulfil_redemption(
    redemption_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Mark a pending redemption fulfilled: the gift was handed over, or the coupon or service delivered."""

    def work() -> RedemptionOut:
        return _redemption_view(session, mall.fulfil_redemption(session, principal, redemption_id))

    return _run(session, principal, idem, "points.reward_fulfil", {"id": redemption_id}, work, lang)


@router.post("/reward-redemptions/{redemption_id}/cancel", response_model=RedemptionOut)
def cancel_redemption(
    redemption_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    body: NoteIn | None = None,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Cancel a pending redemption: the points go back to their lots and the unit back into stock."""
    note = body.reason if body else ""

    def work() -> RedemptionOut:
        return _redemption_view(session, mall.cancel_redemption(session, principal, redemption_id, note))

    return _run(
        session, principal, idem, "points.reward_cancel", {"id": redemption_id, "reason": note}, work, lang
    )


# --- transfers ---------------------------------------------------------------------------------------


@router.post("/members/{member_no}/transfers", status_code=201, response_model=TransferOut)
def transfer_points(
    member_no: str,
    body: TransferIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Give points to another member (family); they keep their expiry and count toward a monthly limit."""

    def work() -> TransferOut:
        sender = members.by_member_no(session, principal.org_id, member_no)
        receiver = members.by_member_no(session, principal.org_id, body.to_member_no)
        store = _named_store(session, principal.org_id, body.store_code)
        transfer = transfers.transfer_points(
            session, principal, sender, receiver, body.points, body.reason, store=store
        )
        return transfer_out(session, transfer, sender, receiver)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "points.transfer", payload, work, lang, 201)


# --- adjustments -------------------------------------------------------------------------------------


@router.post("/members/{member_no}/adjustments", status_code=201, response_model=AdjustmentOut)
def request_adjustment(
    member_no: str,
    body: AdjustmentIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Adjust a member's points with a reason; above the program's threshold it waits for approval."""

    def work() -> AdjustmentOut:
        member = members.by_member_no(session, principal.org_id, member_no)
        store = _named_store(session, principal.org_id, body.store_code)
        adjustment = adjustments.request_adjustment(
            session, principal, member, body.points, body.reason, store=store
        )
        return adjustment_out(session, adjustment)

    payload = {"member_no": member_no, **body.model_dump()}
    return _run(session, principal, idem, "points.adjust", payload, work, lang, 201)


@router.post("/adjustments/{adjustment_id}/approve", response_model=AdjustmentOut)
def approve_adjustment(
    adjustment_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    body: NoteIn | None = None,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Approve a pending adjustment (an HQ admin other than the requester); it applies at once."""
    note = body.reason if body else ""

    def work() -> AdjustmentOut:
        return adjustment_out(
            session, adjustments.approve_adjustment(session, principal, adjustment_id, note)
        )

    payload = {"id": adjustment_id, "reason": note}
    return _run(session, principal, idem, "points.adjust_approve", payload, work, lang)


@router.post("/adjustments/{adjustment_id}/reject", response_model=AdjustmentOut)
def reject_adjustment(
    adjustment_id: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    body: NoteIn | None = None,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Reject a pending adjustment (an HQ admin other than the requester); no points move."""
    note = body.reason if body else ""

    def work() -> AdjustmentOut:
        return adjustment_out(session, adjustments.reject_adjustment(session, principal, adjustment_id, note))

    payload = {"id": adjustment_id, "reason": note}
    return _run(session, principal, idem, "points.adjust_reject", payload, work, lang)


@router.get("/adjustments", response_model=AdjustmentListOut)
def list_adjustments(
    principal: CurrentPrincipal,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=12)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AdjustmentListOut:
    """Adjustments newest first, e.g. ``?status=pending`` for the approval queue."""
    rows = adjustments.adjustments(session, principal, status, limit=limit, offset=offset)
    return AdjustmentListOut(adjustments=[adjustment_out(session, a) for a in rows])


@router.get("/adjustments/largest", response_model=AdjustmentListOut)
def list_largest_adjustments(
    principal: CurrentPrincipal,
    session: SessionDep,
    start: date,
    end: date,
    store_code: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> AdjustmentListOut:
    """HQ: the biggest applied adjustments (either direction) between two local dates, inclusive."""
    tz = ZoneInfo(org_service.get_org(session, principal.org_id).timezone)
    since = datetime.combine(start, time(), tz).astimezone(UTC)
    until = datetime.combine(end + timedelta(days=1), time(), tz).astimezone(UTC)
    store = _named_store(session, principal.org_id, store_code)
    rows = adjustments.largest_adjustments(
        session, principal, since, until, store_id=store.id if store else None, limit=limit
    )
    return AdjustmentListOut(adjustments=[adjustment_out(session, r.adjustment, r.store_id) for r in rows])
