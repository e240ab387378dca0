"""The points mall at the till: the rewards offered at this store for the member being served, redeem
one through a confirm step, the redemption slip, and this store's pending handovers (fulfil or cancel).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.common import idempotency
from onemember.deps import SessionDep
from onemember.errors import DomainError
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.org.models import Store
from onemember.points import mall
from onemember.points.models import PointEntry, Reward, RewardRedemption
from onemember.web import i18n
from onemember.web.common import Csrf, PosUser
from onemember.web.pos.base import (
    Basket,
    PageError,
    PosInvalid,
    Till,
    _actor_name,
    _member_or_none,
    _message,
    _see_other,
    _served_member,
    _write_once,
    card_of,
    fen_to_yuan,
    load_basket,
    member_card,
    new_idempotency_key,
    open_till,
    till_page,
    yuan_to_fen,
)
from onemember.web.pos.panels import reward_rows
from onemember.web.pos.screen import sale_page

router = APIRouter(include_in_schema=False)


i18n.register(
    {
        "pos.rewards": ("积分兑换", "Rewards"),
        "pos.rewards_title": ("积分兑换 · 本店可兑礼品", "Rewards offered at this store"),
        "pos.rewards_open": ("积分兑换", "Rewards"),
        "pos.rewards_count": ("本店 {n} 件礼品，可兑 {ok} 件", "{n} rewards here, {ok} redeemable"),
        "pos.rewards_none": ("本店暂无可兑换的礼品", "No rewards are offered at this store now"),
        "pos.rewards_need_member": ("识别会员后可兑换礼品", "Identify a member to redeem rewards"),
        "pos.reward_kind.gift": ("礼品", "Gift"),
        "pos.reward_kind.coupon": ("优惠券", "Coupon"),
        "pos.reward_kind.service": ("服务", "Service"),
        "pos.reward_kind.points_cash": ("积分+现金", "Points + cash"),
        "pos.reward_points": ("所需积分", "Points"),
        "pos.reward_cash": ("另付现金", "Plus cash"),
        "pos.reward_stock": ("本店库存", "In stock here"),
        "pos.reward_stock_central": ("总部库存", "Central stock"),
        "pos.reward_unlimited": ("不限", "Unlimited"),
        "pos.reward_limit": ("每人限兑", "Limit per member"),
        "pos.reward_limit_used": ("已兑 {used}/{limit}", "{used} of {limit} redeemed"),
        "pos.reward_redeem": ("兑换", "Redeem"),
        "pos.reward_ok": ("可兑换", "Can redeem"),
        "pos.reward_why.points": ("积分不足，还差 {short}", "Not enough points: {short} short"),
        "pos.reward_why.limit": ("已达每人限兑 {limit} 次", "Limit of {limit} per member reached"),
        "pos.reward_why.stock": ("本店已兑完", "Out of stock here"),
        "pos.reward_confirm_title": ("确认兑换", "Confirm the redemption"),
        "pos.reward_balance_now": ("当前积分", "Points now"),
        "pos.reward_spend": ("扣除积分", "Points to spend"),
        "pos.reward_collect": ("应收现金", "Cash to collect"),
        "pos.reward_cash_taken": ("实收现金（元）", "Cash collected (¥)"),
        "pos.reward_balance_after": ("兑换后积分", "Points after"),
        "pos.reward_coupon_note": (
            "确认后立即向会员发放优惠券。",
            "Confirming issues the coupon to the member at once.",
        ),
        "pos.reward_handover_note": (
            "确认后请将礼品交给会员，并在积分兑换页的待交付列表中标记已交付。",
            "After confirming, hand the gift over and mark it in the rewards page's pending list.",
        ),
        "pos.reward_confirm": ("确认兑换", "Confirm redemption"),
        "pos.reward_slip": ("积分兑换凭证", "Reward redemption slip"),
        "pos.reward_slip_no": ("兑换单号", "Redemption no."),
        "pos.reward_name": ("礼品", "Reward"),
        "pos.reward_points_spent": ("扣除积分", "Points spent"),
        "pos.reward_cash_paid": ("收取现金", "Cash taken"),
        "pos.reward_balance": ("积分余额", "Points balance"),
        "pos.reward_coupon_code": ("券码", "Coupon code"),
        "pos.reward_status": ("状态", "Status"),
        "pos.reward_status.pending": ("待交付", "To hand over"),
        "pos.reward_status.fulfilled": ("已交付", "Handed over"),
        "pos.reward_status.cancelled": ("已取消（积分已退回）", "Cancelled (points given back)"),
        "pos.reward_back": ("返回积分兑换", "Back to rewards"),
        "pos.reward_pending": ("本店待交付的兑换", "Redemptions to hand over at this store"),
        "pos.reward_pending_none": ("本店没有待交付的兑换", "Nothing waiting to be handed over here"),
        "pos.reward_fulfil": ("已交付", "Handed over"),
        "pos.reward_cancel": ("取消兑换", "Cancel"),
        "pos.reward_cancel_reason": ("取消原因", "Reason"),
        "pos.reward_cancel_placeholder": ("例如：会员不要了", "e.g. the member changed their mind"),
        "pos.reward_done.fulfilled": ("已标记交付：{name}", "Marked handed over: {name}"),
        "pos.reward_done.cancelled": ("已取消兑换并退回积分：{name}", "Cancelled, points given back: {name}"),
        "pos.err.reward_reason": (
            "请填写取消原因（不超过 200 字）",
            "Give a reason for cancelling (200 characters at most)",
        ),
        "pos.err.reward_member": ("请先识别会员", "Identify the member first"),
    }
)


PENDING_SHOWN = 50


@dataclass
class PendingRow:
    id: int
    reward_name: str
    reward_code: str
    member_no: str
    member_name: str
    points: int
    cash_fen: int
    created_at: datetime


def pending_rows(session: Session, store: Store) -> list[PendingRow]:
    """This store's redemptions still waiting for the gift (or service) to be handed over, newest first."""
    rows = session.execute(
        select(RewardRedemption, Reward, Member)
        .join(Reward, Reward.id == RewardRedemption.reward_id)
        .join(Member, Member.id == RewardRedemption.member_id)
        .where(
            RewardRedemption.org_id == store.org_id,
            RewardRedemption.store_id == store.id,
            RewardRedemption.status == mall.RedemptionStatus.PENDING,
        )
        .order_by(RewardRedemption.id.desc())
        .limit(PENDING_SHOWN)
    ).all()
    return [
        PendingRow(
            id=r.id,
            reward_name=w.name,
            reward_code=w.code,
            member_no=m.member_no,
            member_name=mask_name(m.name),
            points=r.points,
            cash_fen=r.cash_fen,
            created_at=r.created_at,
        )
        for r, w, m in rows
    ]


def rewards_page(
    request: Request,
    session: Session,
    till: Till,
    basket: Basket,
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> HTMLResponse:
    lang = request.state.lang
    store = till.require_store()
    member = _member_or_none(session, till.org.id, basket.member_no)
    card = card_of(session, member) if member is not None else None
    rows = reward_rows(session, store, member, card.balance, lang) if member and card else []
    return till_page(
        request,
        till,
        "pos/rewards.html",
        "rewards",
        "/pos/rewards",
        {
            "member": card,
            "rows": rows,
            "pending": pending_rows(session, store),
            "idem": new_idempotency_key(),
            "error": error,
            "notice": notice,
        },
        status=status,
    )


def _rewards_refusal(
    request: Request, session: Session, till: Till, basket: Basket, text: str, status: int
) -> HTMLResponse:
    """Back to the rewards page with why; HQ and regional staff without a store go to choose one."""
    if till.store is None:
        return sale_page(request, session, till, basket, error=PageError("identify", text))
    return rewards_page(request, session, till, basket, error=text, status=status)


def _reward_for_member(
    session: Session, till: Till, basket: Basket, code: str
) -> tuple[Store, Member, Reward]:
    """This store, the member being served and the reward with this code."""
    store = till.require_store()
    member = _served_member(session, till, basket, "pos.err.reward_member")
    return store, member, mall.reward_by_code(session, till.org.id, code)


@router.get("/pos/rewards")
def pos_rewards(
    request: Request, session: SessionDep, user: PosUser, done: int | None = None
) -> HTMLResponse:
    """The rewards offered at this store for the member being served, and this store's pending handovers."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    if till.store is None:
        return sale_page(request, session, till, basket)  # HQ and regional staff choose a store first
    notice = ""
    if done is not None:
        found = session.execute(
            select(RewardRedemption.status, Reward.name)
            .join(Reward, Reward.id == RewardRedemption.reward_id)
            .where(RewardRedemption.id == done, RewardRedemption.org_id == user.org_id)
        ).first()
        if found is not None and found[0] != mall.RedemptionStatus.PENDING:
            notice = i18n.translate(f"pos.reward_done.{found[0]}", request.state.lang).format(name=found[1])
    return rewards_page(request, session, till, basket, notice=notice)


def reward_confirm_page(
    request: Request,
    session: Session,
    till: Till,
    member: Member,
    reward: Reward,
    *,
    error: str = "",
    cash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The confirm step: points to spend, cash to collect, the balance after (a new key each time)."""
    card = card_of(session, member)
    return till_page(
        request,
        till,
        "pos/reward_confirm.html",
        "rewards",
        str(request.url.path),
        {
            "member": card,
            "reward": reward,
            "after": card.balance - reward.points_cost,
            "idem": new_idempotency_key(),
            "cash": fen_to_yuan(reward.cash_fen) if cash is None else cash,
            "error": error,
        },
        status=status,
    )


@router.get("/pos/rewards/{reward_code}/redeem")
def pos_reward_confirm(
    reward_code: str, request: Request, session: SessionDep, user: PosUser
) -> HTMLResponse:
    """Confirm redeeming one reward for the member being served."""
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    lang = request.state.lang
    try:
        _, member, reward = _reward_for_member(session, till, basket, reward_code)
        if not reward.active:
            raise mall.RewardInactive()
    except DomainError as err:
        return _rewards_refusal(request, session, till, basket, _message(err, lang), err.status)
    return reward_confirm_page(request, session, till, member, reward)


@router.post("/pos/rewards/{reward_code}/redeem", dependencies=[Csrf])
def pos_reward_redeem(
    reward_code: str,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    cash: Annotated[str, Form()] = "",
) -> Response:
    """Redeem the reward at this store through ``mall.redeem_reward`` (the service the API calls), once
    per rendered form: a double submit replays the first answer."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)
    try:
        store, member, reward = _reward_for_member(session, till, basket, reward_code)
    except DomainError as err:
        return _rewards_refusal(request, session, till, basket, _message(err, lang), err.status)

    def attempt() -> idempotency.Outcome:
        if not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        cash_fen = yuan_to_fen(cash or "0")
        payload = {
            "reward_code": reward.code,
            "member_no": member.member_no,
            "store": store.code,
            "cash_fen": cash_fen,
        }
        return idempotency.run(
            session,
            user,
            idem,
            "pos.reward_redeem",
            payload,
            lambda: {
                "redemption_id": mall.redeem_reward(
                    session, user, member, reward, store, cash_fen=cash_fen
                ).id
            },
            status=201,
            lang=lang,
        )

    def refuse(text: str, status: int) -> Response:
        return reward_confirm_page(
            request, session, till, member, reward, error=text, cash=cash, status=status
        )

    return _write_once(
        session,
        lang,
        attempt,
        refuse,
        lambda done: _see_other(f"/pos/reward-redemptions/{done['redemption_id']}"),
    )


@router.get("/pos/reward-redemptions/{redemption_id}")
def pos_reward_slip(redemption_id: int, request: Request, session: SessionDep, user: PosUser) -> HTMLResponse:
    """A small slip of one redemption: reward, points spent, cash taken, balance, the coupon issued."""
    till = open_till(request, session, user)
    redemption = session.scalar(
        select(RewardRedemption).where(
            RewardRedemption.id == redemption_id, RewardRedemption.org_id == user.org_id
        )
    )
    if redemption is None:
        raise mall.RedemptionNotFound()
    reward = session.get(Reward, redemption.reward_id)
    assert reward is not None
    entry = session.get(PointEntry, redemption.entry_id) if redemption.entry_id is not None else None
    member = mall.current_member(session, redemption.member_id)
    coupon = mall.coupon_of(session, redemption)
    store = session.get(Store, redemption.store_id) if redemption.store_id is not None else None
    return till_page(
        request,
        till,
        "pos/reward_slip.html",
        "rewards",
        f"/pos/reward-redemptions/{redemption_id}",
        {
            "redemption": redemption,
            "reward": reward,
            "balance_after": entry.balance_after if entry is not None else None,
            "member": member_card(session, user.org_id, member.member_no),
            "coupon_code": coupon.code if coupon is not None else None,
            "store_name": store.name if store is not None else "",
            "staff": _actor_name(redemption.actor),
        },
    )


def _handle_pending(
    request: Request,
    session: Session,
    user: Principal,
    redemption_id: int,
    idem: str,
    action: str,
    reason: str = "",
) -> Response:
    """Fulfil or cancel one of this store's pending redemptions through the mall service, once per form."""
    lang = request.state.lang
    till = open_till(request, session, user)
    basket = load_basket(request, till)

    def attempt() -> idempotency.Outcome:
        till.require_store()
        if not idem:
            raise PosInvalid("pos.err.form_stale", "pos.form_stale")
        if action == "cancel" and not 0 < len(reason) <= 200:
            raise PosInvalid("pos.err.reward_reason", "pos.bad_reason")

        def work() -> dict[str, Any]:
            if action == "fulfil":
                done = mall.fulfil_redemption(session, user, redemption_id)
            else:
                done = mall.cancel_redemption(session, user, redemption_id, reason)
            return {"id": done.id, "status": done.status}

        payload: dict[str, Any] = {"id": redemption_id}
        if action == "cancel":
            payload["reason"] = reason
        return idempotency.run(session, user, idem, f"pos.reward_{action}", payload, work, lang=lang)

    def refuse(text: str, status: int) -> Response:
        return _rewards_refusal(request, session, till, basket, text, status)

    return _write_once(
        session, lang, attempt, refuse, lambda done: _see_other(f"/pos/rewards?done={done['id']}")
    )


@router.post("/pos/reward-redemptions/{redemption_id}/fulfil", dependencies=[Csrf])
def pos_reward_fulfil(
    redemption_id: int,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
) -> Response:
    """Mark a pending redemption of this store handed over (``mall.fulfil_redemption``)."""
    return _handle_pending(request, session, user, redemption_id, idem, "fulfil")


@router.post("/pos/reward-redemptions/{redemption_id}/cancel", dependencies=[Csrf])
def pos_reward_cancel(
    redemption_id: int,
    request: Request,
    session: SessionDep,
    user: PosUser,
    idem: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Cancel a pending redemption of this store with a reason: points and stock go back."""
    return _handle_pending(request, session, user, redemption_id, idem, "cancel", reason.strip())
