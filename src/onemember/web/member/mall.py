"""The points mall: rewards priced against the member's balance, coupon rewards redeemed online
(``points.mall.redeem_online``), and the member's redemptions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.common import idempotency
from onemember.coupons.models import CouponTemplate
from onemember.deps import SessionDep, client_ip
from onemember.errors import DomainError
from onemember.members import privacy
from onemember.members.models import Member
from onemember.points import mall
from onemember.points.models import Reward, RewardStock
from onemember.web import i18n
from onemember.web.member.base import Csrf, MemberDep, _account, _error_text, _org_of, _store_names, _tr
from onemember.web.member.coupons import coupon_gives
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "member.mall.title": ("积分商城", "Points mall"),
        "member.mall.entry": ("积分商城 ›", "Points mall ›"),
        "member.mall.rewards": ("可兑礼品", "Rewards"),
        "member.mall.entry_lead": ("用积分兑换礼品和优惠券", "Spend points on gifts and coupons"),
        "member.mall.balance": ("可用积分 {n}", "{n} points to spend"),
        "member.mall.none": ("暂无可兑换的礼品", "No rewards on offer right now"),
        "member.mall.points": ("{n} 积分", "{n} points"),
        "member.mall.cash": ("+ {amount}", "+ {amount}"),
        "member.mall.kind.gift": ("礼品", "Gift"),
        "member.mall.kind.coupon": ("优惠券", "Coupon"),
        "member.mall.kind.service": ("服务", "Service"),
        "member.mall.kind.points_cash": ("积分+现金", "Points + cash"),
        "member.mall.at_store": ("到店兑换", "Redeem at a store"),
        "member.mall.at_store_hint": (
            "请到门店出示会员码，由店员为您兑换",
            "Show your member code at a store and the clerk redeems it for you",
        ),
        "member.mall.online": ("立即兑换", "Redeem now"),
        "member.mall.online_hint": (
            "兑换后优惠券立即发放到“我的优惠券”",
            "The coupon goes straight to My coupons",
        ),
        "member.mall.short": ("还差 {n} 积分", "{n} more points needed"),
        "member.mall.sold_out": ("已兑完", "Sold out"),
        "member.mall.left": ("剩余 {n} 件", "{n} left"),
        "member.mall.store_stock": ("各门店备货", "Stocked at each store"),
        "member.mall.limit": ("每人限兑 {limit} 次，已兑 {used} 次", "{used} of {limit} per member redeemed"),
        "member.mall.limit_reached": ("已达兑换上限", "Limit reached"),
        "member.mall.confirm_title": ("确认兑换", "Confirm the redemption"),
        "member.mall.confirm_spend": ("使用积分", "Points to spend"),
        "member.mall.confirm_after": ("兑换后余额", "Balance afterwards"),
        "member.mall.confirm_now": ("当前积分", "Points now"),
        "member.mall.confirm": ("确认兑换", "Redeem"),
        "member.mall.done": (
            "已兑换「{name}」，优惠券 {code} 已放入“我的优惠券”",
            "“{name}” redeemed: coupon {code} is in My coupons",
        ),
        "member.mall.history": ("我的兑换", "My redemptions"),
        "member.mall.history_none": ("还没有兑换记录", "No redemptions yet"),
        "member.mall.status.pending": ("待领取", "To collect"),
        "member.mall.status.fulfilled": ("已完成", "Done"),
        "member.mall.status.cancelled": ("已取消", "Cancelled"),
        "member.mall.online_place": ("线上兑换", "Online"),
        "member.mall.coupon_code": ("券码", "Coupon code"),
        "member.mall.refunded": ("积分已退回", "Points returned"),
    }
)

MALL_LIMIT = 200  # rewards or redemptions a member page shows at once


@dataclass
class RewardCard:
    """One reward as the member sees it: the price, whether it can be had, and how."""

    code: str
    name: str
    kind: str
    kind_label: str
    points: int
    cash_fen: int
    gives: str  # a coupon reward: what its coupon gives
    online: bool  # redeemable here (a coupon reward); otherwise at a store
    stock: str
    limit: str
    affordable: bool
    refusal: str  # why it cannot be redeemed now (sold out, limit reached, points short); "" when it can


def reward_cards(session: Session, member: Member, balance: int, lang: str) -> list[RewardCard]:
    """Active rewards of the member's org, cheapest first, priced against the member's balance."""
    rewards = list(
        session.scalars(
            select(Reward)
            .where(Reward.org_id == member.org_id, Reward.active.is_(True))
            .order_by(Reward.points_cost, Reward.id)
            .limit(MALL_LIMIT)
        )
    )
    ids = {r.id for r in rewards}
    central = {
        int(reward_id): int(quantity)
        for reward_id, quantity in session.execute(
            select(RewardStock.reward_id, RewardStock.quantity).where(
                RewardStock.org_id == member.org_id,
                RewardStock.reward_id.in_(ids or {-1}),
                RewardStock.store_key == mall.CENTRAL_STOCK,
            )
        ).all()
    }
    template_ids = {r.coupon_template_id for r in rewards if r.coupon_template_id is not None}
    templates = {
        t.id: t
        for t in session.scalars(
            select(CouponTemplate).where(
                CouponTemplate.org_id == member.org_id, CouponTemplate.id.in_(template_ids or {-1})
            )
        )
    }
    used = mall.redemptions_counted(session, member.id, list(ids))
    cards = []
    for r in rewards:
        refusal = ""
        if r.stock_mode == mall.StockMode.CENTRAL:
            left = central.get(r.id, 0)
            stock = _tr(lang, "member.mall.left", n=left) if left else _tr(lang, "member.mall.sold_out")
            if not left:
                refusal = _tr(lang, "member.mall.sold_out")
        elif r.stock_mode == mall.StockMode.STORE:
            stock = _tr(lang, "member.mall.store_stock")
        else:
            stock = ""
        limit = ""
        if r.per_member_limit is not None:
            n = used.get(r.id, 0)
            limit = _tr(lang, "member.mall.limit", limit=r.per_member_limit, used=n)
            if n >= r.per_member_limit and not refusal:
                refusal = _tr(lang, "member.mall.limit_reached")
        affordable = balance >= r.points_cost
        if not affordable and not refusal:
            refusal = _tr(lang, "member.mall.short", n=f"{r.points_cost - balance:,}")
        template = templates.get(r.coupon_template_id or 0)
        cards.append(
            RewardCard(
                code=r.code,
                name=r.name,
                kind=r.kind,
                kind_label=_tr(lang, f"member.mall.kind.{r.kind}"),
                points=r.points_cost,
                cash_fen=r.cash_fen,
                gives=coupon_gives(template, None, lang) if template is not None else "",
                online=mall.online_redeemable(r),
                stock=stock,
                limit=limit,
                affordable=affordable,
                refusal=refusal,
            )
        )
    return cards


def _balance_of(session: Session, member: Member) -> int:
    account = _account(session, member)
    return account.balance if account else 0


def _mall_page(
    request: Request,
    session: Session,
    member: Member,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    balance = _balance_of(session, member)
    return render(
        request,
        "member/mall.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "balance": balance,
            "cards": reward_cards(session, member, balance, request.state.lang),
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/m/mall")
def member_mall(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The points mall: rewards the member can get for points, what each costs and whether it can be had
    now; coupon rewards are redeemed here, everything else at a store."""
    return _mall_page(request, session, member)


def _my_reward(session: Session, member: Member, code: str) -> Reward:
    """An active reward of the member's org (an inactive one looks like a missing one)."""
    reward = mall.reward_by_code(session, member.org_id, code)
    if not reward.active:
        raise mall.RewardNotFound()
    return reward


@router.get("/m/mall/{code}/redeem")
def member_mall_confirm(request: Request, member: MemberDep, session: SessionDep, code: str) -> HTMLResponse:
    """The confirm step: the points to spend and the balance afterwards, with a fresh key so that a
    double submit redeems once."""
    reward = _my_reward(session, member, code)
    balance = _balance_of(session, member)
    [card] = [c for c in reward_cards(session, member, balance, request.state.lang) if c.code == reward.code]
    return render(
        request,
        "member/mall_confirm.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "c": card,
            "balance": balance,
            "after": balance - reward.points_cost,
            "idem": secrets.token_urlsafe(18),
        },
    )


def _problem_text(request: Request, body: dict[str, Any]) -> str:
    return str(body.get("message_en" if request.state.lang == "en" else "message_zh", ""))


@router.post("/m/mall/{code}/redeem", dependencies=Csrf)
def member_mall_redeem(
    request: Request,
    member: MemberDep,
    session: SessionDep,
    code: str,
    idem: Annotated[str, Form()] = "",
) -> Response:
    """Redeem a coupon reward as the member (``mall.redeem_online``: the member's own account, no store);
    the form's key makes a double submit answer with the first redemption."""
    principal = privacy.member_principal(member, client_ip(request))

    def work() -> dict[str, Any]:
        reward = mall.reward_by_code(session, member.org_id, code)
        redemption = mall.redeem_online(session, principal, member, reward)
        coupon = mall.coupon_of(session, redemption)
        return {"redemption_id": redemption.id, "coupon_code": coupon.code if coupon else None}

    try:
        outcome = idempotency.run(
            session,
            principal,
            idem or None,
            "member.mall_redeem",
            {"reward_code": code},
            work,
            status=201,
            lang=request.state.lang,
        )
    except DomainError as err:
        session.rollback()
        return _mall_page(request, session, member, error=_error_text(request, err), status_code=err.status)
    if outcome.status >= 400:
        return _mall_page(
            request, session, member, error=_problem_text(request, outcome.body), status_code=outcome.status
        )
    return RedirectResponse(f"/m/mall/redemptions?done={outcome.body['redemption_id']}", status_code=303)


@dataclass
class RedemptionRow:
    id: int
    name: str
    kind_label: str
    status: str
    status_label: str
    place: str
    at: datetime
    points: int
    cash_fen: int
    coupon_code: str | None


@router.get("/m/mall/redemptions")
def member_mall_redemptions(
    request: Request, member: MemberDep, session: SessionDep, done: int | None = None
) -> HTMLResponse:
    """My redemptions, newest first: what, where, when, its status and the coupon it issued."""
    lang = request.state.lang
    rows = mall.redemptions_of(session, member, limit=MALL_LIMIT)
    coupon_codes = mall.coupon_codes(session, member.org_id, [r for r, _ in rows])
    stores = _store_names(session, member.org_id, {r.store_id for r, _ in rows if r.store_id is not None})
    history = [
        RedemptionRow(
            id=r.id,
            name=w.name,
            kind_label=_tr(lang, f"member.mall.kind.{w.kind}"),
            status=r.status,
            status_label=_tr(lang, f"member.mall.status.{r.status}"),
            place=stores.get(r.store_id, "") if r.store_id else _tr(lang, "member.mall.online_place"),
            at=r.created_at,
            points=r.points,
            cash_fen=r.cash_fen,
            coupon_code=coupon_codes.get(r.id),
        )
        for r, w in rows
    ]
    notice = None
    done_row = next((h for h in history if h.id == done), None)
    if done_row is not None and done_row.coupon_code:
        notice = _tr(lang, "member.mall.done", name=done_row.name, code=done_row.coupon_code)
    return render(
        request,
        "member/mall_redemptions.html",
        {
            "member": member,
            "section": "points",
            "org": _org_of(session, member),
            "rows": history,
            "notice": notice,
            "balance": _balance_of(session, member),
        },
    )
