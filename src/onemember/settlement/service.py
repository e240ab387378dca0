"""Recording settlement entries: who owes whom, how much, and why.

Callers (checkout, returns, coupons, packages) call one ``record_*`` function inside their own
transaction after the source row exists; each is idempotent per source (a retry returns the entries
already written). An entry lands in the earliest open period at or after its event's business month
(the org's time zone), so anything recorded after HQ closed that month goes to the next open one.

Points: the redeemed points' lots say which store issued them (``PointLot.store_id``; none = HQ). The
program's policy says who bears the cost: ``hq`` (the HQ pool repays the redeeming store for every
point), ``issuing_store`` (each issuing store repays it for its points), ``redeeming_store`` (no one,
no entries) or ``split`` (the issuing store repays ``issuer_pct`` percent). The policy and point value
in force are stored on each entry, so a later refund reverses exactly what was charged, proportionally
to the points given back to each lot, even if HQ changed the policy in between.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from onemember.audit import service as audit
from onemember.auth.principal import Principal
from onemember.common.types import EntryKind, Role
from onemember.coupons.models import CouponRedemption
from onemember.db import utcnow
from onemember.errors import Forbidden
from onemember.events import service as events
from onemember.orders.models import OrderReturn
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import calculations as calc
from onemember.points.models import PointAccount, PointEntry, PointLot, PointLotMovement, PointsProgram
from onemember.settlement.errors import (
    EarlierPeriodOpen,
    InvalidPeriod,
    InvalidPolicy,
    InvalidSettlement,
    PartyNotFound,
    PeriodClosed,
    PeriodNotEnded,
    SettlementEntryNotFound,
)
from onemember.settlement.models import HQ, SettlementEntry, SettlementPeriod, SettlementPolicy


class Kind(StrEnum):
    POINTS_REDEEMED = "points_redeemed"
    COUPON_REDEEMED = "coupon_redeemed"
    PACKAGE_USED = "package_used"
    CROSS_STORE_RETURN = "cross_store_return"
    CORRECTION = "correction"


class Bearer(StrEnum):
    HQ = "hq"
    ISSUING_STORE = "issuing_store"
    REDEEMING_STORE = "redeeming_store"
    SPLIT = "split"


class PeriodStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


SETTLEMENT_ADMIN_ROLES = frozenset({Role.HQ_ADMIN})
HQ_CODE = "HQ"
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")  # fullmatch: "$" would let "2026-01\n" through


# --- pure helpers ------------------------------------------------------------------------------------


def party(store_id: int | None) -> int:
    """The party key of a store; ``None`` (no store: HQ-issued points, an HQ coupon) is the HQ pool."""
    return HQ if store_id is None else store_id


def month_of(at: datetime, tz: str) -> str:
    local = at.astimezone(ZoneInfo(tz))
    return f"{local.year:04d}-{local.month:02d}"


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def check_period(period: str) -> str:
    if not _PERIOD.fullmatch(period):
        raise InvalidPeriod(
            f"结算期间 {period} 格式应为 YYYY-MM", f"Period {period} should look like YYYY-MM"
        )
    return period


@dataclass(frozen=True)
class PointsPolicy:
    """Who bears redeemed points and what a point is worth (``value_fen`` fen per ``value_points``)."""

    bearer: Bearer
    issuer_pct: int
    value_fen: int
    value_points: int

    def details(self) -> dict[str, Any]:
        return {
            "bearer": str(self.bearer),
            "issuer_pct": self.issuer_pct,
            "value_fen": self.value_fen,
            "value_points": self.value_points,
        }

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> PointsPolicy:
        return cls(
            Bearer(details["bearer"]),
            int(details["issuer_pct"]),
            int(details["value_fen"]),
            int(details["value_points"]),
        )


def cost_debtor(bearer: Bearer, issuer: int, redeemer: int) -> int | None:
    """Who repays the redeeming store for a benefit issued by ``issuer``; ``None`` when no one does."""
    if bearer == Bearer.HQ:
        debtor = HQ
    elif bearer in (Bearer.ISSUING_STORE, Bearer.SPLIT):
        debtor = issuer
    else:
        return None
    return None if debtor == redeemer else debtor


def cost_share(bearer: Bearer, issuer_pct: int, value_fen: int) -> int:
    """The part of ``value_fen`` the debtor repays (all of it, or the issuer's percentage with ``split``)."""
    return value_fen * issuer_pct // 100 if bearer == Bearer.SPLIT else value_fen


@dataclass(frozen=True)
class Share:
    debtor: int
    points: int
    amount_fen: int


def redemption_shares(per_issuer: dict[int, int], redeemer: int, policy: PointsPolicy) -> list[Share]:
    """Split a redemption's value over the issuers of its points (largest remainder, exact in fen), then
    charge each issuer's part to whoever bears it. ``per_issuer`` maps issuer party -> points spent."""
    issuers = sorted(k for k, v in per_issuer.items() if v > 0)
    total = sum(per_issuer[k] for k in issuers)
    value = total * policy.value_fen // policy.value_points
    values = calc.allocate(value, [per_issuer[k] for k in issuers])
    buckets: dict[int, list[int]] = {}
    for issuer, fen in zip(issuers, values, strict=True):
        debtor = cost_debtor(policy.bearer, issuer, redeemer)
        if debtor is None:
            continue
        bucket = buckets.setdefault(debtor, [0, 0])
        bucket[0] += per_issuer[issuer]
        bucket[1] += fen
    shares = []
    for debtor in sorted(buckets):
        pts, fen = buckets[debtor]
        amount = cost_share(policy.bearer, policy.issuer_pct, fen)
        if amount > 0:
            shares.append(Share(debtor, pts, amount))
    return shares


def refund_share(original_amount: int, original_points: int, done_points: int, restored_points: int) -> int:
    """The fen a refund of ``restored_points`` reverses, cumulatively rounded so that giving back every
    point in any number of steps reverses exactly ``original_amount``."""
    restored_points = min(restored_points, original_points - done_points)
    if restored_points <= 0:
        return 0
    return calc.proportional_part(original_amount, done_points, restored_points, original_points)


# --- policy ------------------------------------------------------------------------------------------


def program_of(session: Session, org_id: int, program_id: int | None = None) -> PointsProgram:
    query = select(PointsProgram).where(PointsProgram.org_id == org_id)
    if program_id is None:
        query = query.where(PointsProgram.is_default.is_(True))
    else:
        query = query.where(PointsProgram.id == program_id)
    program = session.scalar(query)
    if program is None:
        raise LookupError(f"org {org_id} has no points program {program_id or '(default)'}")
    return program


def points_policy(session: Session, program: PointsProgram) -> PointsPolicy:
    """The program's policy, or the default: the issuing store bears, a point is worth the redeem rate."""
    row = session.scalar(
        select(SettlementPolicy).where(
            SettlementPolicy.org_id == program.org_id, SettlementPolicy.program_id == program.id
        )
    )
    rate = (100, program.redeem_points_per_yuan)
    if row is None:
        return PointsPolicy(Bearer.ISSUING_STORE, 100, *rate)
    if row.value_fen is not None and row.value_points is not None:
        rate = (row.value_fen, row.value_points)
    return PointsPolicy(Bearer(row.bearer), row.issuer_pct, *rate)


def set_points_policy(
    session: Session,
    principal: Principal,
    *,
    bearer: str,
    issuer_pct: int = 100,
    value_fen: int | None = None,
    value_points: int | None = None,
    program_id: int | None = None,
) -> PointsPolicy:
    """HQ sets who bears redeemed points; audited. Entries already written keep the policy they had."""
    principal.require_role(SETTLEMENT_ADMIN_ROLES, "设置结算规则", "set settlement policies")
    if not principal.is_hq:
        raise Forbidden("只有总部可以设置结算规则", "Only HQ sets settlement policies", code="auth.hq_only")
    if bearer not in set(Bearer):
        raise InvalidPolicy(f"未知的承担方 {bearer}", f"Unknown bearer {bearer}", field="bearer")
    if not 0 <= issuer_pct <= 100:
        raise InvalidPolicy(
            "发放门店承担比例须在 0 到 100 之间", "issuer_pct must be 0 to 100", field="issuer_pct"
        )
    if (value_fen is None) != (value_points is None):
        raise InvalidPolicy(
            "积分价值须同时给出 value_fen 和 value_points",
            "Give both value_fen and value_points (or neither)",
            field="value_points",
        )
    if (
        value_fen is not None
        and value_points is not None
        and not (0 <= value_fen <= 10**6 and 0 < value_points <= 10**6)
    ):
        raise InvalidPolicy("积分价值无效", "The point value is invalid", field="value_fen")
    program = program_of(session, principal.org_id, program_id)
    row = session.scalar(
        select(SettlementPolicy)
        .where(SettlementPolicy.org_id == principal.org_id, SettlementPolicy.program_id == program.id)
        .with_for_update()
    )
    before = points_policy(session, program).details()
    if row is None:
        row = SettlementPolicy(org_id=principal.org_id, program_id=program.id)
        session.add(row)
    row.bearer = bearer
    row.issuer_pct = issuer_pct if bearer == Bearer.SPLIT else 100
    row.value_fen = value_fen
    row.value_points = value_points
    row.updated_by = principal.actor
    row.updated_at = utcnow()
    session.flush()
    after = points_policy(session, program)
    audit.record(
        session,
        principal,
        "settlement.policy_set",
        target_type="points_program",
        target_id=program.code,
        details={"before": before, "after": after.details()},
    )
    return after


# --- periods -----------------------------------------------------------------------------------------


def _ensure_period_row(session: Session, org_id: int, period: str) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(SettlementPeriod).values(
        org_id=org_id,
        period=period,
        status=str(PeriodStatus.OPEN),
        closed_by="",
        entry_count=0,
        total_fen=0,
        closing_nets={},
        created_at=utcnow(),
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["org_id", "period"]))


def landing_period(session: Session, org_id: int, business_month: str) -> str:
    """The earliest open period at or after ``business_month``, share-locked so that HQ cannot close it
    before this transaction commits (a close waits for writers; writers after it see it closed)."""
    while True:
        closed = set(
            session.scalars(
                select(SettlementPeriod.period).where(
                    SettlementPeriod.org_id == org_id,
                    SettlementPeriod.period >= business_month,
                    SettlementPeriod.status == PeriodStatus.CLOSED,
                )
            )
        )
        period = business_month
        while period in closed:
            period = next_period(period)
        _ensure_period_row(session, org_id, period)
        status = session.scalar(
            select(SettlementPeriod.status)
            .where(SettlementPeriod.org_id == org_id, SettlementPeriod.period == period)
            .with_for_update(read=True, key_share=True)  # FOR KEY SHARE: writers never block writers
        )
        if status == PeriodStatus.OPEN:
            return period


def current_month(session: Session, org_id: int) -> str:
    return month_of(utcnow(), org_service.get_org(session, org_id).timezone)


# --- recording ---------------------------------------------------------------------------------------


def _check_party(session: Session, org_id: int, key: int) -> None:
    if key == HQ:
        return
    store = session.get(Store, key)
    if store is None or store.org_id != org_id:
        raise PartyNotFound(f"门店 {key} 不存在", f"Store {key} does not exist")


def record(
    session: Session,
    org_id: int,
    kind: str,
    debtor: int,
    creditor: int,
    amount_fen: int,
    *,
    source_ref: str | None,
    at: datetime | None = None,
    order_id: int | None = None,
    return_id: int | None = None,
    point_entry_id: int | None = None,
    reverses_id: int | None = None,
    points: int | None = None,
    reason: str = "",
    actor: str = "",
    details: dict[str, Any] | None = None,
) -> SettlementEntry:
    """``debtor`` owes ``creditor`` ``amount_fen`` (parties are store ids, ``HQ`` = 0 for the HQ pool).

    ``source_ref`` names what the entry settles (``coupon:<id>``, ``package_use:<id>``); recording the
    same source for the same pair again returns the entry already written. ``at`` is when the business
    event happened (default now): the entry lands in that month or, if it is closed, the next open one.
    """
    if kind not in set(Kind):
        raise InvalidSettlement(f"未知的结算类型 {kind}", f"Unknown settlement kind {kind}", field="kind")
    if amount_fen <= 0:
        raise InvalidSettlement(
            "结算金额须为正数（分）", "The amount must be positive fen", field="amount_fen"
        )
    if debtor == creditor:
        raise InvalidSettlement("应付方与应收方不能相同", "Debtor and creditor must differ", field="creditor")
    if source_ref is not None:
        existing = session.scalar(
            select(SettlementEntry).where(
                SettlementEntry.org_id == org_id,
                SettlementEntry.kind == kind,
                SettlementEntry.source_ref == source_ref,
                SettlementEntry.debtor_key == debtor,
                SettlementEntry.creditor_key == creditor,
            )
        )
        if existing is not None:
            return existing
    _check_party(session, org_id, debtor)
    _check_party(session, org_id, creditor)
    org = org_service.get_org(session, org_id)
    now = utcnow()
    occurred = at or now
    month = month_of(occurred, org.timezone)
    entry = SettlementEntry(
        org_id=org_id,
        period=landing_period(session, org_id, month),
        business_month=month,
        kind=str(kind),
        debtor_key=debtor,
        creditor_key=creditor,
        amount_fen=amount_fen,
        points=points,
        order_id=order_id,
        return_id=return_id,
        point_entry_id=point_entry_id,
        reverses_id=reverses_id,
        source_ref=source_ref,
        reason=reason[:300],
        actor=actor[:120],
        details=details or {},
        occurred_at=occurred,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    return entry


def record_benefit_use(
    session: Session,
    org_id: int,
    kind: str,
    *,
    bearer: str,
    issuer_store_id: int | None,
    redeeming_store_id: int,
    value_fen: int,
    source_ref: str,
    issuer_pct: int = 100,
    at: datetime | None = None,
    order_id: int | None = None,
    reason: str = "",
    actor: str = "",
) -> SettlementEntry | None:
    """A coupon or package funded by ``issuer_store_id`` (``None`` = HQ) used at ``redeeming_store_id``:
    charge ``value_fen`` to whoever the template's ``bearer`` names. ``None`` when no one owes anything."""
    policy = Bearer(bearer)
    debtor = cost_debtor(policy, party(issuer_store_id), redeeming_store_id)
    amount = cost_share(policy, issuer_pct, value_fen)
    if debtor is None or amount <= 0:
        return None
    return record(
        session,
        org_id,
        kind,
        debtor,
        redeeming_store_id,
        amount,
        source_ref=source_ref,
        at=at,
        order_id=order_id,
        reason=reason,
        actor=actor,
        details={"bearer": str(policy), "issuer_pct": issuer_pct, "value_fen": value_fen},
    )


def per_issuer(session: Session, point_entry_id: int, sign: int) -> dict[int, int]:
    """Points the entry took from (``sign`` -1) or gave back to (+1) lots, by the lots' issuing party."""
    rows = session.execute(
        select(PointLot.store_id, func.sum(PointLotMovement.amount))
        .join(PointLot, PointLot.id == PointLotMovement.lot_id)
        .where(PointLotMovement.entry_id == point_entry_id)
        .group_by(PointLot.store_id)
    ).all()
    out: dict[int, int] = {}
    for store_id, amount in rows:
        pts = int(amount or 0) * sign
        if pts > 0:
            out[party(store_id)] = out.get(party(store_id), 0) + pts
    return out


def _points_entries(session: Session, org_id: int, point_entry_id: int) -> list[SettlementEntry]:
    return list(
        session.scalars(
            select(SettlementEntry)
            .where(
                SettlementEntry.org_id == org_id,
                SettlementEntry.kind == Kind.POINTS_REDEEMED,
                SettlementEntry.point_entry_id == point_entry_id,
            )
            .order_by(SettlementEntry.id)
        )
    )


def _store_label(session: Session, key: int) -> str:
    if key == HQ:
        return "总部"
    store = session.get(Store, key)
    return store.code if store is not None else str(key)


def record_points_redemption(
    session: Session, org_id: int, redeem_entry_id: int, redeeming_store_id: int, at: datetime | None = None
) -> list[SettlementEntry]:
    """Settle a points redemption at ``redeeming_store_id``: each party bearing the cost of the spent
    points (by the lots' issuing stores and the program's policy) owes the redeeming store their value.

    Call it right after ``points.redeem`` in the same transaction; calling it again returns the entries
    already written.
    """
    session.flush()  # the redemption's lot movements may still be pending in the session
    entry = session.get(PointEntry, redeem_entry_id)
    if entry is None or entry.org_id != org_id or entry.kind != EntryKind.REDEEM:
        raise SettlementEntryNotFound(
            f"积分抵扣记录 {redeem_entry_id} 不存在", f"Redemption entry {redeem_entry_id} not found"
        )
    existing = _points_entries(session, org_id, redeem_entry_id)
    if existing:
        return existing
    account = session.get(PointAccount, entry.account_id)
    assert account is not None
    policy = points_policy(session, program_of(session, org_id, account.program_id))
    shares = redemption_shares(per_issuer(session, redeem_entry_id, -1), redeeming_store_id, policy)
    redeemer = _store_label(session, redeeming_store_id)
    return [
        record(
            session,
            org_id,
            Kind.POINTS_REDEEMED,
            share.debtor,
            redeeming_store_id,
            share.amount_fen,
            source_ref=f"pe:{redeem_entry_id}",
            at=at or entry.created_at,
            order_id=entry.order_id,
            point_entry_id=redeem_entry_id,
            points=share.points,
            reason=(
                f"{redeemer} 兑用 {_store_label(session, share.debtor)} 承担的积分 {share.points} 分，"
                f"结算 {share.amount_fen} 分"
            ),
            actor=entry.actor,
            details=policy.details(),
        )
        for share in shares
    ]


def refund_reversals(
    originals: list[SettlementEntry],
    done: dict[int, int],
    restored_per_issuer: dict[int, int],
) -> list[tuple[SettlementEntry, int, int]]:
    """For a refund of redeemed points: (original entry, points, fen) to reverse, by the original's
    policy and the lots the refund gave points back to. ``done`` holds points already reversed per
    original entry id."""
    if not originals:
        return []
    policy = PointsPolicy.from_details(originals[0].details)
    redeemer = originals[0].creditor_key
    restored: dict[int, int] = {}
    for issuer, pts in restored_per_issuer.items():
        debtor = cost_debtor(policy.bearer, issuer, redeemer)
        if debtor is not None:
            restored[debtor] = restored.get(debtor, 0) + pts
    out = []
    for original in originals:
        total_points = original.points or 0
        already = done.get(original.id, 0)
        pts = min(restored.get(original.debtor_key, 0), total_points - already)
        fen = refund_share(original.amount_fen, total_points, already, pts)
        if pts > 0 and fen > 0:
            out.append((original, pts, fen))
    return out


def record_points_refund(
    session: Session, org_id: int, refund_entry_id: int, at: datetime | None = None
) -> list[SettlementEntry]:
    """Reverse the settlement of redeemed points given back by ``refund_entry_id`` (a return's
    ``redeem_refund`` entry), in proportion to the points restored to each issuing store's lots."""
    session.flush()
    refund = session.get(PointEntry, refund_entry_id)
    if (
        refund is None
        or refund.org_id != org_id
        or refund.kind != EntryKind.REDEEM_REFUND
        or refund.reverses_entry_id is None
    ):
        raise SettlementEntryNotFound(
            f"积分退还记录 {refund_entry_id} 不存在", f"Refund entry {refund_entry_id} not found"
        )
    existing = _points_entries(session, org_id, refund_entry_id)
    if existing:
        return existing
    originals = [
        e for e in _points_entries(session, org_id, refund.reverses_entry_id) if e.reverses_id is None
    ]
    if not originals:
        return []
    done = _reversed_points(session, [e.id for e in originals])
    plan = refund_reversals(originals, done, per_issuer(session, refund_entry_id, +1))
    return [
        record(
            session,
            org_id,
            Kind.POINTS_REDEEMED,
            original.creditor_key,
            original.debtor_key,
            fen,
            source_ref=f"pe:{refund_entry_id}",
            at=at or refund.created_at,
            order_id=refund.order_id,
            return_id=refund.return_id,
            point_entry_id=refund_entry_id,
            reverses_id=original.id,
            points=pts,
            reason=f"退还抵扣积分 {pts} 分，冲回结算 {fen} 分",
            actor=refund.actor,
            details=original.details,
        )
        for original, pts, fen in plan
    ]


def _reversed_points(session: Session, original_ids: list[int]) -> dict[int, int]:
    if not original_ids:
        return {}
    rows = session.execute(
        select(SettlementEntry.reverses_id, func.coalesce(func.sum(SettlementEntry.points), 0))
        .where(SettlementEntry.reverses_id.in_(original_ids))
        .group_by(SettlementEntry.reverses_id)
    ).all()
    return {int(k): int(v or 0) for k, v in rows if k is not None}


def coupon_ref(redemption_id: int) -> str:
    """How settlement entries name the coupon redemption they settle."""
    return f"coupon:{redemption_id}"


def coupon_owed(redemption: CouponRedemption, kept_fen: int | None = None) -> tuple[int, int] | None:
    """``(debtor, fen)`` the funding party owes the redeeming store for a redemption: the template's
    bearer rule (recorded on the redemption) applied to the discount the order kept (by default the
    discount less the share returns took back). ``None`` when no one owes anything."""
    bearer = Bearer(redemption.bearer)
    debtor = cost_debtor(bearer, party(redemption.issuing_store_id), redemption.redeeming_store_id)
    if debtor is None:
        return None
    if kept_fen is None:
        kept_fen = redemption.discount_fen - redemption.returned_fen
    fen = cost_share(bearer, redemption.issuer_pct, kept_fen)
    return (debtor, fen) if fen > 0 else None


def record_coupon_redemption(
    session: Session, redemption: CouponRedemption, *, code: str, at: datetime, actor: str = ""
) -> SettlementEntry | None:
    """A coupon issued by one store (or HQ) redeemed at another: its funder repays the redeeming store
    the discount given, per the template's bearer. The member's price difference (补差价) is cash the
    redeeming store took itself, so it is not settled."""
    if coupon_owed(redemption, redemption.discount_fen) is None:
        return None  # decided before the reason's store labels, which may cost a query each
    return record_benefit_use(
        session,
        redemption.org_id,
        Kind.COUPON_REDEEMED,
        bearer=redemption.bearer,
        issuer_store_id=redemption.issuing_store_id,
        redeeming_store_id=redemption.redeeming_store_id,
        value_fen=redemption.discount_fen,
        source_ref=coupon_ref(redemption.id),
        issuer_pct=redemption.issuer_pct,
        at=at,
        order_id=redemption.order_id,
        reason=(
            f"优惠券 {code} 由 {_store_label(session, party(redemption.issuing_store_id))} 发放，"
            f"在 {_store_label(session, redemption.redeeming_store_id)} 核销，"
            f"优惠 {redemption.discount_fen} 分"
        ),
        actor=actor,
    )


def record_coupon_returns(
    session: Session,
    redemptions: Sequence[CouponRedemption],
    return_id: int,
    *,
    at: datetime,
    actor: str = "",
) -> list[SettlementEntry]:
    """After a return took back part of these redemptions' discounts (``returned_fen`` already updated,
    as ``coupons.on_return`` leaves them): reverse what the funders now owe less, so the entries of a
    redemption always net to ``coupon_owed`` (a full return reverses the whole entry). Reversals land in
    the open period of the return."""
    out = []
    for redemption in redemptions:
        if coupon_owed(redemption, redemption.discount_fen) is None:
            continue  # the sale settled nothing, so there is nothing to reverse
        owed = coupon_owed(redemption)
        reversal = aliased(SettlementEntry)
        reversed_fen = (
            select(func.coalesce(func.sum(reversal.amount_fen), 0))
            .where(reversal.reverses_id == SettlementEntry.id)
            .scalar_subquery()
        )
        rows = session.execute(
            select(SettlementEntry, reversed_fen)
            .where(
                SettlementEntry.org_id == redemption.org_id,
                SettlementEntry.kind == Kind.COUPON_REDEEMED,
                SettlementEntry.source_ref == coupon_ref(redemption.id),
                SettlementEntry.reverses_id.is_(None),
            )
            .order_by(SettlementEntry.id)
        ).all()
        for original, already in rows:
            still = owed[1] if owed is not None and owed[0] == original.debtor_key else 0
            due = original.amount_fen - int(already or 0) - still
            if due <= 0:
                continue
            out.append(
                record(
                    session,
                    redemption.org_id,
                    Kind.COUPON_REDEEMED,
                    original.creditor_key,
                    original.debtor_key,
                    due,
                    source_ref=f"coupon_return:{return_id}:{redemption.id}",
                    at=at,
                    order_id=redemption.order_id,
                    return_id=return_id,
                    reverses_id=original.id,
                    reason=f"退货退回优惠券优惠，冲回结算 {due} 分",
                    actor=actor,
                    details=original.details,
                )
            )
    return out


def record_cross_store_return(session: Session, return_id: int) -> SettlementEntry | None:
    """A return at store C of an order bought at store A: A keeps the sale's cash, C paid the refund,
    so A owes C the cash refunded. Nothing when the return is at the selling store or refunds no cash."""
    ret = session.get(OrderReturn, return_id)
    if ret is None:
        raise SettlementEntryNotFound(f"退货单 {return_id} 不存在", f"Return {return_id} not found")
    if ret.store_id == ret.original_store_id or ret.refund_fen <= 0:
        return None
    return record(
        session,
        ret.org_id,
        Kind.CROSS_STORE_RETURN,
        ret.original_store_id,
        ret.store_id,
        ret.refund_fen,
        source_ref=f"ret:{ret.id}",
        at=ret.occurred_at,
        order_id=ret.order_id,
        return_id=ret.id,
        reason=(
            f"退货 {ret.return_no}：{_store_label(session, ret.store_id)} 代 "
            f"{_store_label(session, ret.original_store_id)} 退款 {ret.refund_fen} 分"
        ),
        actor=ret.actor,
    )


def record_correction(
    session: Session,
    principal: Principal,
    *,
    debtor: int,
    creditor: int,
    amount_fen: int,
    reason: str,
    business_month: str | None = None,
    corrects_entry_id: int | None = None,
) -> SettlementEntry:
    """HQ's manual correction (audited). It belongs to ``business_month`` (default: the corrected
    entry's month, else this month) and lands in the earliest open period from there."""
    principal.require_role(SETTLEMENT_ADMIN_ROLES, "调整结算", "correct settlement")
    if not principal.is_hq:
        raise Forbidden("只有总部可以调整结算", "Only HQ corrects settlement", code="auth.hq_only")
    if not reason.strip():
        raise InvalidSettlement("请填写调整原因", "Give a reason for the correction", field="reason")
    corrected = None
    if corrects_entry_id is not None:
        corrected = session.get(SettlementEntry, corrects_entry_id)
        if corrected is None or corrected.org_id != principal.org_id:
            raise SettlementEntryNotFound()
    org = org_service.get_org(session, principal.org_id)
    month = business_month or (corrected.business_month if corrected else month_of(utcnow(), org.timezone))
    check_period(month)
    # The correction's event time is its business month's first instant, so ``record`` keeps the month.
    year, mon = int(month[:4]), int(month[5:])
    at = datetime(year, mon, 1, tzinfo=ZoneInfo(org.timezone)).astimezone(UTC)
    entry = record(
        session,
        principal.org_id,
        Kind.CORRECTION,
        debtor,
        creditor,
        amount_fen,
        source_ref=None,
        at=at,
        order_id=corrected.order_id if corrected else None,
        reverses_id=corrected.id if corrected else None,
        reason=reason,
        actor=principal.actor,
        details={"corrects_entry_id": corrects_entry_id} if corrects_entry_id else {},
    )
    audit.record(
        session,
        principal,
        "settlement.corrected",
        target_type="settlement_entry",
        target_id=entry.id,
        reason=reason,
        details={
            "debtor": debtor,
            "creditor": creditor,
            "amount_fen": amount_fen,
            "business_month": month,
            "period": entry.period,
            "corrects_entry_id": corrects_entry_id,
        },
    )
    return entry


# --- closing -----------------------------------------------------------------------------------------


def party_nets(session: Session, org_id: int, period: str) -> tuple[dict[int, int], int, int]:
    """Each party's net (owed to it minus owed by it) in a period, the entry count and total fen."""
    nets: dict[int, int] = {}
    rows = session.execute(
        select(
            SettlementEntry.debtor_key,
            SettlementEntry.creditor_key,
            func.sum(SettlementEntry.amount_fen),
            func.count(),
        )
        .where(SettlementEntry.org_id == org_id, SettlementEntry.period == period)
        .group_by(SettlementEntry.debtor_key, SettlementEntry.creditor_key)
    ).all()
    count = total = 0
    for debtor, creditor, amount, n in rows:
        fen = int(amount or 0)
        nets[int(debtor)] = nets.get(int(debtor), 0) - fen
        nets[int(creditor)] = nets.get(int(creditor), 0) + fen
        count += int(n)
        total += fen
    return nets, count, total


def close_period(session: Session, principal: Principal, period: str, reason: str = "") -> SettlementPeriod:
    """HQ closes a month that has ended: its entries are frozen and anything recorded for it later lands
    in the next open period. Audited; the close stores each party's net for ``verify_settlement``."""
    principal.require_role(SETTLEMENT_ADMIN_ROLES, "结算关账", "close settlement periods")
    if not principal.is_hq:
        raise Forbidden("只有总部可以关账", "Only HQ closes settlement periods", code="auth.hq_only")
    check_period(period)
    org_id = principal.org_id
    if period >= current_month(session, org_id):
        raise PeriodNotEnded(f"{period} 尚未结束，不能关账", f"{period} has not ended yet", period=period)
    earlier = session.scalar(
        select(SettlementEntry.period)
        .join(
            SettlementPeriod,
            (SettlementPeriod.org_id == SettlementEntry.org_id)
            & (SettlementPeriod.period == SettlementEntry.period),
        )
        .where(
            SettlementEntry.org_id == org_id,
            SettlementEntry.period < period,
            SettlementPeriod.status == PeriodStatus.OPEN,
        )
        .order_by(SettlementEntry.period)
        .limit(1)
    )
    if earlier is not None:
        raise EarlierPeriodOpen(
            f"请先关闭 {earlier} 结算期间", f"Close period {earlier} first", open_period=earlier
        )
    _ensure_period_row(session, org_id, period)
    row = session.scalar(
        select(SettlementPeriod)
        .where(SettlementPeriod.org_id == org_id, SettlementPeriod.period == period)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    if row.status == PeriodStatus.CLOSED:
        raise PeriodClosed(f"{period} 已关账", f"{period} is already closed", period=period)
    nets, count, total = party_nets(session, org_id, period)
    row.status = str(PeriodStatus.CLOSED)
    row.closed_by = principal.actor
    row.closed_at = utcnow()
    row.entry_count = count
    row.total_fen = total
    row.closing_nets = {str(k): v for k, v in sorted(nets.items()) if v}
    session.flush()
    audit.record(
        session,
        principal,
        "settlement.period_closed",
        target_type="settlement_period",
        target_id=period,
        reason=reason,
        details={"entry_count": count, "total_fen": total, "nets": row.closing_nets},
    )
    events.emit(
        session,
        org_id,
        "settlement.period_closed",
        {"period": period, "entry_count": count, "total_fen": total},
    )
    return row


def periods(session: Session, org_id: int) -> list[SettlementPeriod]:
    return list(
        session.scalars(
            select(SettlementPeriod)
            .where(SettlementPeriod.org_id == org_id)
            .order_by(SettlementPeriod.period.desc())
        )
    )


def period_status(session: Session, org_id: int, period: str) -> SettlementPeriod | None:
    return session.scalar(
        select(SettlementPeriod).where(SettlementPeriod.org_id == org_id, SettlementPeriod.period == period)
    )
