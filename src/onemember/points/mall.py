"""The points mall: rewards HQ offers for points (or points + cash), their stock, and redemptions.

A reward's stock is central (``store_key`` 0), kept per store (``store_key`` = the store id) or
unlimited. A redemption locks the member's account, checks the member's limit, takes one unit with an
atomic conditional ``UPDATE`` (two tills can never hand out the same last unit) and spends the points
soonest-expiring first. It stays ``pending`` until the gift is handed over or the coupon or service is
delivered (``fulfilled``); cancelling a pending one gives the points back into the lots they came from
and puts the unit back in stock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Table, func, select, update
from sqlalchemy.orm import Session

from onemember.audit import service as audit
from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common.types import MemberStatus, Role
from onemember.common.upsert import upsert
from onemember.coupons.models import Coupon, CouponTemplate
from onemember.coupons.service import issuance as coupon_issuance
from onemember.coupons.service import templates as coupon_templates
from onemember.db import utcnow
from onemember.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from onemember.events import service as events
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.models import Reward, RewardRedemption, RewardStock
from onemember.settlement import service as settlement


class RewardKind(StrEnum):
    GIFT = "gift"
    COUPON = "coupon"
    SERVICE = "service"
    POINTS_CASH = "points_cash"


class StockMode(StrEnum):
    CENTRAL = "central"
    STORE = "store"
    NONE = "none"


class RedemptionStatus(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


CENTRAL_STOCK = 0
MALL_ADMIN_ROLES = frozenset({Role.HQ_ADMIN})
REDEEM_ROLES = TILL_ROLES | {Role.CS_AGENT}


class InvalidReward(DomainError):
    status = 422
    code = "points.invalid_reward"
    zh = "积分商城礼品设置无效"
    en = "The reward is invalid"


class RewardCodeTaken(Conflict):
    code = "points.reward_code_taken"
    zh = "礼品编码已存在"
    en = "A reward with that code already exists"


class RewardNotFound(NotFound):
    code = "points.reward_not_found"
    zh = "找不到该礼品"
    en = "Reward not found"


class RewardInactive(Conflict):
    code = "points.reward_inactive"
    zh = "该礼品已下架"
    en = "This reward is no longer offered"


class RewardOutOfStock(Conflict):
    code = "points.reward_out_of_stock"
    zh = "礼品库存不足"
    en = "The reward is out of stock"


class RewardLimitReached(Conflict):
    code = "points.reward_limit_reached"
    zh = "已达到该礼品的每人兑换上限"
    en = "The member has reached this reward's limit"


class RewardNotAvailableHere(Conflict):
    code = "points.reward_not_available_here"
    zh = "该礼品在此门店不可兑换"
    en = "This reward is not available at this store"


class RewardAtStoreOnly(Conflict):
    code = "points.reward_at_store_only"
    zh = "该礼品须到店兑换"
    en = "This reward is redeemed at a store"


class RewardCashMismatch(DomainError):
    status = 422
    code = "points.reward_cash_mismatch"
    zh = "收取的现金与礼品所需现金不符"
    en = "The cash collected does not match the reward's cash price"


class RedemptionNotFound(NotFound):
    code = "points.redemption_not_found"
    zh = "找不到该兑换记录"
    en = "Redemption not found"


class RedemptionNotPending(Conflict):
    code = "points.redemption_not_pending"
    zh = "该兑换已完成或已取消"
    en = "This redemption is no longer pending"


@dataclass
class RewardSpec:
    code: str
    name: str
    kind: str
    points_cost: int
    cash_fen: int = 0
    per_member_limit: int | None = None
    stock_mode: str = StockMode.CENTRAL
    coupon_template_code: str | None = None  # a coupon reward: the template each redemption issues


def validate_spec(spec: RewardSpec) -> None:
    """Each kind has its price shape: points + cash needs both, every other kind points only."""

    def bad(zh: str, en: str, name: str) -> InvalidReward:
        return InvalidReward(zh, en, field=name)

    if not spec.code.strip() or len(spec.code) > 40:
        raise bad("礼品编码须为 1 到 40 个字符", "The code must be 1 to 40 characters", "code")
    if not spec.name.strip() or len(spec.name) > 120:
        raise bad("礼品名称须为 1 到 120 个字符", "The name must be 1 to 120 characters", "name")
    if spec.kind not in set(RewardKind):
        raise bad(f"未知的礼品类型 {spec.kind}", f"Unknown reward kind {spec.kind}", "kind")
    if spec.stock_mode not in set(StockMode):
        raise bad(f"未知的库存方式 {spec.stock_mode}", f"Unknown stock mode {spec.stock_mode}", "stock_mode")
    if not 0 < spec.points_cost <= 10**9:
        raise bad("所需积分须为正整数", "points_cost must be a positive number", "points_cost")
    if spec.kind == RewardKind.POINTS_CASH and not 0 < spec.cash_fen <= 10**9:
        raise bad("积分+现金礼品须设置现金部分（分）", "A points + cash reward needs cash_fen", "cash_fen")
    if spec.kind != RewardKind.POINTS_CASH and spec.cash_fen != 0:
        raise bad("只有积分+现金礼品可以收取现金", "Only a points + cash reward takes cash", "cash_fen")
    if spec.per_member_limit is not None and spec.per_member_limit < 1:
        raise bad("每人限兑数量须至少为 1", "per_member_limit must be at least 1", "per_member_limit")
    if spec.coupon_template_code is not None and spec.kind != RewardKind.COUPON:
        raise bad(
            "只有优惠券礼品可以指定券模板",
            "Only a coupon reward names a coupon template",
            "coupon_template_code",
        )


def _mall_template(session: Session, org_id: int, code: str) -> CouponTemplate:
    """The coupon template a mall reward issues: it must exist and not be limited to the issuing store
    (mall coupons are issued by HQ)."""
    try:
        template = coupon_templates.template_by_code(session, org_id, code)
    except DomainError as err:
        raise InvalidReward(
            f"券模板 {code} 不存在", f"Coupon template {code} does not exist", field="coupon_template_code"
        ) from err
    if template.accept_scope == coupon_templates.AcceptScope.ISSUING_STORE:
        raise InvalidReward(
            "积分商城的券由总部发放，不能使用“仅限发券门店”的券模板",
            "Mall coupons are issued by HQ, so the template cannot be for the issuing store only",
            field="coupon_template_code",
        )
    return template


def create_reward(session: Session, principal: Principal, spec: RewardSpec) -> Reward:
    principal.require_role(MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    validate_spec(spec)
    program = points.default_program(session, principal.org_id)
    template = (
        _mall_template(session, principal.org_id, spec.coupon_template_code)
        if spec.coupon_template_code is not None
        else None
    )
    if session.scalar(select(Reward.id).where(Reward.org_id == principal.org_id, Reward.code == spec.code)):
        raise RewardCodeTaken(
            f"礼品编码 {spec.code} 已存在", f"A reward with code {spec.code} already exists"
        )
    reward = Reward(
        org_id=principal.org_id,
        program_id=program.id,
        code=spec.code,
        name=spec.name,
        kind=spec.kind,
        points_cost=spec.points_cost,
        cash_fen=spec.cash_fen,
        per_member_limit=spec.per_member_limit,
        stock_mode=spec.stock_mode,
        active=True,
        created_at=utcnow(),
        coupon_template_id=template.id if template is not None else None,
    )
    session.add(reward)
    session.flush()
    audit.record(
        session,
        principal,
        "points.reward_created",
        target_type="reward",
        target_id=reward.code,
        details={
            "name": reward.name,
            "kind": reward.kind,
            "points_cost": reward.points_cost,
            "cash_fen": reward.cash_fen,
            "per_member_limit": reward.per_member_limit,
            "stock_mode": reward.stock_mode,
            "coupon_template_code": spec.coupon_template_code,
        },
    )
    return reward


def set_active(session: Session, principal: Principal, reward: Reward, active: bool) -> Reward:
    """Take a reward off the shelf (or put it back); past redemptions stay as they are."""
    principal.require_role(MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    if reward.active != active:
        reward.active = active
        audit.record(
            session,
            principal,
            "points.reward_listed" if active else "points.reward_withdrawn",
            target_type="reward",
            target_id=reward.code,
        )
        session.flush()
    return reward


def reward_by_code(session: Session, org_id: int, code: str) -> Reward:
    reward = session.scalar(select(Reward).where(Reward.org_id == org_id, Reward.code == code))
    if reward is None:
        raise RewardNotFound()
    return reward


def stock_key(reward: Reward, store_id: int | None) -> int | None:
    """The stock row a redemption at ``store_id`` takes from; ``None`` for a reward without stock."""
    if reward.stock_mode == StockMode.NONE:
        return None
    if reward.stock_mode == StockMode.CENTRAL:
        return CENTRAL_STOCK
    if store_id is None:
        raise RewardNotAvailableHere(
            "该礼品按门店备货，请指定兑换门店", "This reward is stocked per store; name the store"
        )
    return store_id


def stock_quantity(session: Session, reward_id: int, key: int) -> int | None:
    quantity = session.scalar(
        select(RewardStock.quantity).where(RewardStock.reward_id == reward_id, RewardStock.store_key == key)
    )
    return int(quantity) if quantity is not None else None


def set_stock(
    session: Session, principal: Principal, reward: Reward, store: Store | None, quantity: int
) -> int:
    """Set the units on hand (after a stock count or a delivery); returns the new quantity."""
    principal.require_role(MALL_ADMIN_ROLES, "管理积分商城", "manage the points mall")
    if not 0 <= quantity <= 10**9:
        raise InvalidReward("库存须为非负整数", "The quantity must not be negative", field="quantity")
    if reward.stock_mode == StockMode.NONE:
        raise InvalidReward("该礼品不限库存", "This reward has no stock to set", field="stock_mode")
    if reward.stock_mode == StockMode.CENTRAL and store is not None:
        raise InvalidReward(
            "该礼品为总部集中库存，不按门店设置",
            "This reward is stocked centrally, not per store",
            field="store_code",
        )
    key = stock_key(reward, store.id if store else None)
    assert key is not None
    before = session.scalar(
        select(RewardStock.quantity)
        .where(RewardStock.reward_id == reward.id, RewardStock.store_key == key)
        .with_for_update()
    )
    table: Table = RewardStock.__table__  # type: ignore[assignment]
    upsert(
        session,
        table,
        {"org_id": reward.org_id, "reward_id": reward.id, "store_key": key, "quantity": quantity},
        ["reward_id", "store_key"],
        {"quantity": quantity},
    )
    audit.record(
        session,
        principal,
        "points.reward_stock_set",
        target_type="reward",
        target_id=reward.code,
        store_id=store.id if store else None,
        details={"store_key": key, "before": before, "after": quantity},
    )
    return quantity


@dataclass
class Offer:
    reward: Reward
    quantity: int | None  # units on hand for this store; None when the reward has no stock


def offers_at_store(session: Session, org_id: int, store_id: int) -> list[Offer]:
    """Active rewards a member can redeem at this store now (in stock there or centrally, or unlimited)."""
    rewards = list(
        session.scalars(
            select(Reward)
            .where(Reward.org_id == org_id, Reward.active.is_(True))
            .order_by(Reward.points_cost, Reward.id)
        )
    )
    stocks = {
        (reward_id, key): int(quantity)
        for reward_id, key, quantity in session.execute(
            select(RewardStock.reward_id, RewardStock.store_key, RewardStock.quantity).where(
                RewardStock.org_id == org_id, RewardStock.store_key.in_([CENTRAL_STOCK, store_id])
            )
        ).all()
    }
    offers = []
    for reward in rewards:
        key = stock_key(reward, store_id)
        quantity = None if key is None else stocks.get((reward.id, key), 0)
        if quantity is None or quantity > 0:
            offers.append(Offer(reward, quantity))
    return offers


def _take_stock(session: Session, reward: Reward, key: int) -> None:
    """One unit, atomically: the row only changes while a unit is left, so the last one goes once."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(RewardStock)
            .where(
                RewardStock.reward_id == reward.id, RewardStock.store_key == key, RewardStock.quantity >= 1
            )
            .values(quantity=RewardStock.quantity - 1)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount == 1:
        return
    if reward.stock_mode == StockMode.STORE and stock_quantity(session, reward.id, key) is None:
        raise RewardNotAvailableHere()
    raise RewardOutOfStock(reward_code=reward.code)


def _return_stock(session: Session, reward: Reward, key: int) -> None:
    session.execute(
        update(RewardStock)
        .where(RewardStock.reward_id == reward.id, RewardStock.store_key == key)
        .values(quantity=RewardStock.quantity + 1)
        .execution_options(synchronize_session=False)
    )


def redemptions_counted(
    session: Session, member_id: int, reward_ids: Sequence[int] | None = None
) -> dict[int, int]:
    """Per reward, the member's redemptions that count toward its per-member limit (all but cancelled
    ones); every reward, or those given."""
    query = select(RewardRedemption.reward_id, func.count()).where(
        RewardRedemption.member_id == member_id, RewardRedemption.status != RedemptionStatus.CANCELLED
    )
    if reward_ids is not None:
        query = query.where(RewardRedemption.reward_id.in_(list(reward_ids)))
    rows = session.execute(query.group_by(RewardRedemption.reward_id)).all()
    return {int(reward_id): int(n) for reward_id, n in rows}


def redeem_reward(
    session: Session,
    principal: Principal,
    member: Member,
    reward: Reward,
    store: Store | None,
    *,
    cash_fen: int = 0,
) -> RewardRedemption:
    """Redeem one unit of ``reward`` for ``member`` at ``store``; a failure changes nothing (the caller
    rolls back the transaction)."""
    principal.require_role(REDEEM_ROLES, "兑换积分商城礼品", "redeem rewards")
    if store is not None:
        principal.require_store(store.id)
    elif not principal.is_hq:
        raise Invalid(
            "请指定兑换门店 store_code", "Name the store (store_code)", code="points.store_required"
        )
    return _redeem(session, principal, member, reward, store, cash_fen=cash_fen)


def redeem_online(session: Session, principal: Principal, member: Member, reward: Reward) -> RewardRedemption:
    """A member redeems a coupon reward for themselves on the member page: no store, no cash, and the
    coupon is issued at once. Gifts, services and points + cash are handed over at a till instead."""
    if principal.role != Role.MEMBER or principal.kind != "member" or principal.id != member.id:
        raise Forbidden("会员只能为自己兑换", "A member redeems for themselves only", code="auth.role")
    if not online_redeemable(reward):
        raise RewardAtStoreOnly(reward_code=reward.code)
    return _redeem(session, principal, member, reward, None, cash_fen=0)


def online_redeemable(reward: Reward) -> bool:
    """A coupon reward that issues its coupon at once and is not stocked per store."""
    return (
        reward.kind == RewardKind.COUPON
        and reward.coupon_template_id is not None
        and reward.stock_mode != StockMode.STORE
    )


def _redeem(
    session: Session,
    principal: Principal,
    member: Member,
    reward: Reward,
    store: Store | None,
    *,
    cash_fen: int,
) -> RewardRedemption:
    if member.status != MemberStatus.ACTIVE or member.org_id != principal.org_id:
        raise MemberNotFound()
    if reward.org_id != principal.org_id:
        raise RewardNotFound()
    if not reward.active:
        raise RewardInactive()
    if cash_fen != reward.cash_fen:
        raise RewardCashMismatch(
            f"该礼品需收取现金 {reward.cash_fen} 分，实收 {cash_fen} 分",
            f"The reward takes {reward.cash_fen} fen in cash, {cash_fen} fen given",
            cash_fen=reward.cash_fen,
        )
    key = stock_key(reward, store.id if store else None)
    account = points.ensure_account(session, principal.org_id, member.id, reward.program_id)
    account = points.lock_account(session, account.id)
    if reward.per_member_limit is not None:
        used = redemptions_counted(session, member.id, [reward.id]).get(reward.id, 0)
        if used >= reward.per_member_limit:
            raise RewardLimitReached(
                f"该礼品每人限兑 {reward.per_member_limit} 次，已兑 {used} 次",
                f"This reward is limited to {reward.per_member_limit} per member; {used} redeemed",
                limit=reward.per_member_limit,
                used=used,
            )
    if key is not None:
        _take_stock(session, reward, key)
    now = utcnow()
    redemption = RewardRedemption(
        org_id=principal.org_id,
        reward_id=reward.id,
        member_id=member.id,
        store_id=store.id if store else None,
        points=reward.points_cost,
        cash_fen=reward.cash_fen,
        status=RedemptionStatus.PENDING,
        actor=principal.actor,
        created_at=now,
        fulfilled_by="",
    )
    session.add(redemption)
    session.flush()
    ctx = points.EntryContext(
        store_id=redemption.store_id,
        reason=f"积分商城兑换 {reward.name}（{reward.code}）",
        actor=principal.actor,
        ref=f"reward:{redemption.id}",
        at=now,
    )
    entry = points.redeem(session, account, reward.points_cost, ctx)
    redemption.entry_id = entry.id
    if reward.coupon_template_id is not None:
        # The mall issues the coupon at once (the redemption is then fulfilled). Its discount is settled
        # by the template's bearer when the coupon is used, so the points spent settle nothing here.
        template = session.get(CouponTemplate, reward.coupon_template_id)
        assert template is not None
        reason = f"积分商城兑换 {reward.name}（{reward.code}）"
        coupon_issuance.issue_from_mall(session, principal, template, member, redemption.id, reason)
        redemption.status = RedemptionStatus.FULFILLED
        redemption.fulfilled_at = now
        redemption.fulfilled_by = principal.actor
    else:
        # The store (or HQ) hands over the gift or service: whoever bears the points repays it.
        settlement.record_points_redemption(
            session, principal.org_id, entry.id, settlement.party(redemption.store_id), at=now
        )
    audit.record(
        session,
        principal,
        "points.reward_redeemed",
        target_type="reward_redemption",
        target_id=redemption.id,
        member_id=member.id,
        store_id=redemption.store_id,
        details={"reward_code": reward.code, "points": redemption.points, "cash_fen": redemption.cash_fen},
    )
    store_ids = [store.id] if store else []
    events.emit(
        session,
        principal.org_id,
        "reward.redeemed",
        {
            "redemption_id": redemption.id,
            "reward_code": reward.code,
            "reward_kind": reward.kind,
            "member_no": member.member_no,
            "store_code": store.code if store else None,
            "points": redemption.points,
            "cash_fen": redemption.cash_fen,
        },
        member_id=member.id,
        store_ids=store_ids,
    )
    _points_changed(
        session, account.org_id, member, account.balance, account.debt, -reward.points_cost, "reward"
    )
    session.flush()
    return redemption


def _points_changed(
    session: Session, org_id: int, member: Member, balance: int, debt: int, change: int, reason: str
) -> None:
    events.emit(
        session,
        org_id,
        "points.changed",
        {
            "member_no": member.member_no,
            "earned": max(change, 0),
            "redeemed": max(-change, 0),
            "balance": balance,
            "debt": debt,
            "reason": reason,
        },
        member_id=member.id,
    )


def _redemption(
    session: Session, principal: Principal, redemption_id: int, *, lock: bool
) -> RewardRedemption:
    q = select(RewardRedemption).where(
        RewardRedemption.id == redemption_id, RewardRedemption.org_id == principal.org_id
    )
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    redemption = session.scalar(q)
    if redemption is None:
        raise RedemptionNotFound()
    return redemption


def _require_scope(principal: Principal, redemption: RewardRedemption) -> None:
    """Store staff handle their own store's redemptions; those made without a store belong to HQ."""
    if redemption.store_id is not None:
        principal.require_store(redemption.store_id)
    elif not principal.is_hq:
        raise Forbidden("该兑换由总部处理", "HQ handles this redemption", code="auth.store_scope")


def _require_pending(redemption: RewardRedemption) -> None:
    if redemption.status != RedemptionStatus.PENDING:
        raise RedemptionNotPending(current_status=redemption.status)


def current_member(session: Session, member_id: int) -> Member:
    """The member now holding ``member_id``'s points: a merged member's survivor."""
    member = session.get(Member, member_id)
    for _ in range(10):
        if member is None or member.merged_into_id is None:
            break
        member = session.get(Member, member.merged_into_id)
    if member is None:
        raise MemberNotFound()
    return member


def fulfil_redemption(session: Session, principal: Principal, redemption_id: int) -> RewardRedemption:
    """The gift was handed over (or the coupon or service delivered)."""
    principal.require_role(REDEEM_ROLES, "处理礼品兑换", "handle redemptions")
    redemption = _redemption(session, principal, redemption_id, lock=True)
    _require_scope(principal, redemption)
    _require_pending(redemption)
    reward = session.get(Reward, redemption.reward_id)
    assert reward is not None
    redemption.status = RedemptionStatus.FULFILLED
    redemption.fulfilled_at = utcnow()
    redemption.fulfilled_by = principal.actor
    audit.record(
        session,
        principal,
        "points.reward_fulfilled",
        target_type="reward_redemption",
        target_id=redemption.id,
        member_id=redemption.member_id,
        store_id=redemption.store_id,
        details={"reward_code": reward.code},
    )
    member = current_member(session, redemption.member_id)
    events.emit(
        session,
        principal.org_id,
        "reward.fulfilled",
        {"redemption_id": redemption.id, "reward_code": reward.code, "member_no": member.member_no},
        member_id=member.id,
        store_ids=[redemption.store_id] if redemption.store_id else [],
    )
    session.flush()
    return redemption


def cancel_redemption(
    session: Session, principal: Principal, redemption_id: int, reason: str = ""
) -> RewardRedemption:
    """Cancel a pending redemption: the points go back into their lots and the unit back into stock."""
    principal.require_role(REDEEM_ROLES, "处理礼品兑换", "handle redemptions")
    found = _redemption(session, principal, redemption_id, lock=False)
    _require_scope(principal, found)
    reward = session.get(Reward, found.reward_id)
    assert reward is not None
    member = current_member(session, found.member_id)
    # The account first, then the redemption: the same order as a redemption takes its locks.
    account = points.ensure_account(session, principal.org_id, member.id, reward.program_id)
    account = points.lock_account(session, account.id)
    redemption = _redemption(session, principal, redemption_id, lock=True)
    _require_pending(redemption)
    if redemption.entry_id is not None and redemption.points > 0:
        ctx = points.EntryContext(
            store_id=principal.store_id,
            reason=(f"取消积分商城兑换 {reward.name}（{reward.code}）" + (f"：{reason}" if reason else ""))[
                :300
            ],
            actor=principal.actor,
            ref=f"reward-cancel:{redemption.id}",
        )
        refund = points.refund_redeemed(session, account, redemption.points, redemption.entry_id, ctx)
        settlement.record_points_refund(session, principal.org_id, refund.id)
    key = stock_key(reward, redemption.store_id)
    if key is not None:
        _return_stock(session, reward, key)
    redemption.status = RedemptionStatus.CANCELLED
    audit.record(
        session,
        principal,
        "points.reward_cancelled",
        target_type="reward_redemption",
        target_id=redemption.id,
        member_id=redemption.member_id,
        store_id=redemption.store_id,
        reason=reason,
        details={"reward_code": reward.code, "points_refunded": redemption.points},
    )
    events.emit(
        session,
        principal.org_id,
        "reward.cancelled",
        {"redemption_id": redemption.id, "reward_code": reward.code, "member_no": member.member_no},
        member_id=member.id,
        store_ids=[redemption.store_id] if redemption.store_id else [],
    )
    _points_changed(
        session,
        principal.org_id,
        member,
        account.balance,
        account.debt,
        redemption.points,
        "reward_cancelled",
    )
    session.flush()
    return redemption


def coupon_of(session: Session, redemption: RewardRedemption) -> Coupon | None:
    """The coupon a coupon reward's redemption issued, if any."""
    return session.scalar(
        select(Coupon).where(
            Coupon.org_id == redemption.org_id,
            Coupon.source_ref == coupon_issuance.mall_source_ref(redemption.id),
        )
    )


def coupon_codes(session: Session, org_id: int, redemptions: Sequence[RewardRedemption]) -> dict[int, str]:
    """The coupons these redemptions issued, in one query: redemption id -> coupon code."""
    refs = {coupon_issuance.mall_source_ref(r.id): r.id for r in redemptions}
    if not refs:
        return {}
    rows = session.execute(
        select(Coupon.source_ref, Coupon.code).where(
            Coupon.org_id == org_id, Coupon.source_ref.in_(list(refs))
        )
    )
    return {refs[str(ref)]: code for ref, code in rows}


def redemptions_of(
    session: Session, member: Member, limit: int | None = None
) -> list[tuple[RewardRedemption, Reward]]:
    """A member's redemptions, newest first (the newest ``limit`` of them, counted in SQL)."""
    query = (
        select(RewardRedemption, Reward)
        .join(Reward, Reward.id == RewardRedemption.reward_id)
        .where(RewardRedemption.member_id == member.id)
        .order_by(RewardRedemption.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return [(r, w) for r, w in session.execute(query).all()]
