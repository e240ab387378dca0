"""Settlement API: statements per store and period, the entries behind them, Excel export, period close,
corrections and the points cost policy. Store staff see their own store; HQ sees every party."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from onemember.auth.principal import Principal
from onemember.common import idempotency
from onemember.common.types import Role
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.errors import Forbidden
from onemember.settlement import service, statements
from onemember.settlement.errors import PartyNotFound
from onemember.settlement.models import HQ, SettlementPeriod
from onemember.web.export import XLSX

router = APIRouter(prefix="/api/v1", tags=["settlement"])

READ_ROLES = frozenset({Role.HQ_ADMIN, Role.AUDITOR, Role.REGIONAL_MANAGER, Role.STORE_MANAGER})
PeriodQuery = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
CodeQuery = Annotated[str | None, Query(max_length=40)]


# --- shapes ------------------------------------------------------------------------------------------


class PartyOut(BaseModel):
    code: str
    name: str


class KindLineOut(BaseModel):
    kind: str
    receivable_fen: int
    payable_fen: int
    net_fen: int


class CounterpartyOut(BaseModel):
    counterparty: PartyOut
    receivable_fen: int
    payable_fen: int
    net_fen: int
    entries: int
    by_kind: list[KindLineOut]


class StatementOut(BaseModel):
    period: str
    status: str
    party: PartyOut
    receivable_fen: int
    payable_fen: int
    net_fen: int
    entries: int
    counterparties: list[CounterpartyOut]


class StatementListOut(BaseModel):
    period: str
    status: str
    statements: list[StatementOut]


class EntryOut(BaseModel):
    id: int
    period: str
    business_month: str
    kind: str
    debtor: PartyOut
    creditor: PartyOut
    amount_fen: int
    points: int | None
    order_no: str | None
    return_no: str | None
    point_entry_id: int | None
    reverses_id: int | None
    source_ref: str | None
    reason: str
    occurred_at: datetime
    created_at: datetime


class EntryListOut(BaseModel):
    period: str
    entries: list[EntryOut]


class CloseIn(BaseModel):
    reason: str = Field(default="", max_length=300)


class PeriodOut(BaseModel):
    period: str
    status: str
    closed_by: str
    closed_at: datetime | None
    entry_count: int
    total_fen: int


class CorrectionIn(BaseModel):
    debtor: str = Field(max_length=40, description="store code, or HQ")
    creditor: str = Field(max_length=40, description="store code, or HQ")
    amount_fen: int = Field(gt=0, le=10**12)
    reason: str = Field(min_length=1, max_length=300)
    business_month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    corrects_entry_id: int | None = None


class PolicyIn(BaseModel):
    bearer: str = Field(max_length=20)
    issuer_pct: int = 100
    value_fen: int | None = None
    value_points: int | None = None


class PolicyOut(BaseModel):
    bearer: str
    issuer_pct: int
    value_fen: int
    value_points: int


# --- helpers -----------------------------------------------------------------------------------------


def _party(info: statements.PartyInfo) -> PartyOut:
    return PartyOut(code=info.code, name=info.name)


def statement_out(st: statements.Statement) -> StatementOut:
    return StatementOut(
        period=st.period,
        status=st.status,
        party=_party(st.party),
        receivable_fen=st.receivable_fen,
        payable_fen=st.payable_fen,
        net_fen=st.net_fen,
        entries=st.entries,
        counterparties=[
            CounterpartyOut(
                counterparty=_party(line.counterparty),
                receivable_fen=line.receivable_fen,
                payable_fen=line.payable_fen,
                net_fen=line.net_fen,
                entries=line.entries,
                by_kind=[
                    KindLineOut(kind=k, receivable_fen=r, payable_fen=p, net_fen=r - p)
                    for k, (r, p) in sorted(line.by_kind.items())
                ],
            )
            for line in st.lines
        ],
    )


def entry_out(e: statements.EntryView) -> EntryOut:
    return EntryOut(
        id=e.id,
        period=e.period,
        business_month=e.business_month,
        kind=e.kind,
        debtor=_party(e.debtor),
        creditor=_party(e.creditor),
        amount_fen=e.amount_fen,
        points=e.points,
        order_no=e.order_no,
        return_no=e.return_no,
        point_entry_id=e.point_entry_id,
        reverses_id=e.reverses_id,
        source_ref=e.source_ref,
        reason=e.reason,
        occurred_at=e.occurred_at,
        created_at=e.created_at,
    )


def _resolve(session: SessionDep, principal: Principal, code: str) -> int:
    info = statements.party_by_code(session, principal.org_id, code)
    if info is None:
        raise PartyNotFound(f"结算方 {code} 不存在", f"No store or party {code}")
    return info.key


def _scope(session: SessionDep, principal: Principal, store_code: str | None) -> set[int] | None:
    """The parties the caller may see: one named party (checked), or all in scope (``None`` = all)."""
    principal.require_role(READ_ROLES, "查看门店结算", "view settlement statements")
    if store_code is not None:
        key = _resolve(session, principal, store_code)
        if key == HQ:
            if not principal.is_hq:
                raise Forbidden(
                    "只有总部可以查看总部结算", "Only HQ sees HQ's statement", code="auth.hq_only"
                )
        else:
            principal.require_store(key)
        return {key}
    if principal.is_hq:
        return None
    return set(principal.store_ids or ())


def _statements(
    session: SessionDep, principal: Principal, period: str, store_code: str | None
) -> StatementListOut:
    keys = _scope(session, principal, store_code)
    found = statements.statements(session, principal.org_id, period, keys)
    row = service.period_status(session, principal.org_id, period)
    return StatementListOut(
        period=period,
        status=row.status if row is not None else str(service.PeriodStatus.OPEN),
        statements=[statement_out(s) for s in found],
    )


# --- endpoints ---------------------------------------------------------------------------------------


@router.get("/settlement/statements", response_model=StatementListOut)
def read_statements(
    principal: CurrentPrincipal, session: SessionDep, period: PeriodQuery, store_code: CodeQuery = None
) -> StatementListOut:
    """Statements for a month: what each store (or HQ) is owed and owes, netted per counterparty."""
    return _statements(session, principal, period, store_code)


@router.get("/settlement/entries", response_model=EntryListOut)
def read_entries(
    principal: CurrentPrincipal,
    session: SessionDep,
    period: PeriodQuery,
    store_code: CodeQuery = None,
    counterparty: CodeQuery = None,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> EntryListOut:
    """The entries behind a statement (store and counterparty filters), each with its order or return."""
    keys = _scope(session, principal, store_code)
    if keys is not None and len(keys) != 1:
        raise Forbidden("请指定门店 store_code", "Name your store (store_code)", code="auth.store_scope")
    other = _resolve(session, principal, counterparty) if counterparty else None
    rows = statements.entries(
        session,
        principal.org_id,
        period,
        party_key=next(iter(keys)) if keys else None,
        counterparty_key=other,
        kind=kind,
        limit=limit,
        offset=offset,
    )
    return EntryListOut(period=period, entries=[entry_out(e) for e in rows])


@router.get("/settlement/statements.xlsx", response_class=Response)
def export_statements(
    principal: CurrentPrincipal, session: SessionDep, period: PeriodQuery, store_code: CodeQuery = None
) -> Response:
    """The statements and every entry behind them as an Excel workbook."""
    keys = _scope(session, principal, store_code)
    if keys is not None and len(keys) != 1:
        raise Forbidden("请指定门店 store_code", "Name your store (store_code)", code="auth.store_scope")
    party_key = next(iter(keys)) if keys else None
    found = statements.statements(session, principal.org_id, period, keys)
    rows = statements.entries(session, principal.org_id, period, party_key=party_key, limit=None)
    name = f"settlement-{period}-{store_code or 'all'}.xlsx"
    return Response(
        statements.workbook(found, rows),
        media_type=XLSX,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


def period_out(row: SettlementPeriod) -> PeriodOut:
    return PeriodOut(
        period=row.period,
        status=row.status,
        closed_by=row.closed_by,
        closed_at=row.closed_at,
        entry_count=row.entry_count,
        total_fen=row.total_fen,
    )


@router.get("/settlement/periods", response_model=list[PeriodOut])
def read_periods(principal: CurrentPrincipal, session: SessionDep) -> list[PeriodOut]:
    """Settlement periods used so far, newest first, with their status and (once closed) totals."""
    principal.require_role(READ_ROLES, "查看门店结算", "view settlement statements")
    return [period_out(row) for row in service.periods(session, principal.org_id)]


@router.post("/settlement/periods/{period}/close", response_model=PeriodOut)
def close_period(
    period: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    body: CloseIn | None = None,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """HQ closes an ended month: its entries are frozen; later entries for it land in the next period."""
    reason = body.reason if body else ""

    def work() -> PeriodOut:
        return period_out(service.close_period(session, principal, period, reason))

    payload = {"period": period, "reason": reason}
    return respond(idempotency.run(session, principal, idem, "settlement.close", payload, work, lang=lang))


@router.post("/settlement/corrections", status_code=201, response_model=EntryOut)
def correct_settlement(
    body: CorrectionIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """HQ records a correction: ``debtor`` owes ``creditor``; it lands in the earliest open period."""

    def work() -> EntryOut:
        entry = service.record_correction(
            session,
            principal,
            debtor=_resolve(session, principal, body.debtor),
            creditor=_resolve(session, principal, body.creditor),
            amount_fen=body.amount_fen,
            reason=body.reason,
            business_month=body.business_month,
            corrects_entry_id=body.corrects_entry_id,
        )
        return entry_out(statements.entries(session, principal.org_id, entry.period, entry_id=entry.id)[0])

    return respond(
        idempotency.run(session, principal, idem, "settlement.correct", body, work, status=201, lang=lang)
    )


@router.get("/settlement/policy", response_model=PolicyOut)
def read_policy(principal: CurrentPrincipal, session: SessionDep) -> PolicyOut:
    """Who bears redeemed points (hq, issuing_store, redeeming_store, split) and a point's value."""
    principal.require_role(READ_ROLES, "查看结算规则", "view settlement policies")
    policy = service.points_policy(session, service.program_of(session, principal.org_id))
    return PolicyOut(**policy.details())


@router.put("/settlement/policy", response_model=PolicyOut)
def set_policy(
    body: PolicyIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """HQ sets who bears redeemed points; entries already written keep the policy they were made under."""

    def work() -> PolicyOut:
        policy = service.set_points_policy(
            session,
            principal,
            bearer=body.bearer,
            issuer_pct=body.issuer_pct,
            value_fen=body.value_fen,
            value_points=body.value_points,
        )
        return PolicyOut(**policy.details())

    return respond(idempotency.run(session, principal, idem, "settlement.policy", body, work, lang=lang))
