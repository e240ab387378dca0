"""Console section "Settlement" (门店结算): each month's statements per store (and the HQ pool) netted per
counterparty and by kind, the entries behind a counterparty traced to their orders, returns and package
uses, Excel export, HQ's period close and corrections, and the points cost policy.

Every read and write goes through the settlement JSON API's own endpoint functions (settlement/api.py),
so a page shows exactly what the API shows the same person (HQ and auditors every party, a regional
manager their region's stores, a store manager their store) and changes things with the same checks,
idempotency and audit. The close and correction forms carry a one-time idempotency key, so a double
click or a resent form records once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.auth.principal import Principal
from onemember.deps import SessionDep
from onemember.errors import DomainError, Forbidden, Invalid
from onemember.members.models import Member
from onemember.orders.models import Order
from onemember.packages.models import PackageUse
from onemember.settlement import api as settlement_api
from onemember.settlement import service, statements
from onemember.settlement.errors import PartyNotFound
from onemember.settlement.models import HQ, SettlementEntry, SettlementPolicy
from onemember.web import charts, i18n
from onemember.web.common import ConsoleUser, Csrf
from onemember.web.console_org import Paged, linker, page_number, texts
from onemember.web.export import XLSX
from onemember.web.forms import FormErrors, PostedForm, error_text, label_sep, org_tz, yuan_to_fen
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)

i18n.register(
    {
        "stl.title": ("门店结算", "Inter-store settlement"),
        "stl.tab.statements": ("结算对账", "Statements"),
        "stl.tab.policy": ("积分结算规则", "Points policy"),
        "stl.period": ("结算期间", "Period"),
        "stl.show": ("查看", "Show"),
        "stl.status.open": ("未关账", "Open"),
        "stl.status.closed": ("已关账", "Closed"),
        "stl.readonly": ("只读：您的角色可以查看但不能修改", "Read only: your role may look but not change"),
        "stl.form_invalid": ("请更正标出的字段", "Please correct the fields marked below"),
        # overview
        "stl.ov.title": ("各门店结算", "Statements by store"),
        "stl.ov.scope_all": ("全部结算方（含总部资金池）", "Every party (HQ pool included)"),
        "stl.ov.scope_mine": ("您权限内的门店", "The stores in your scope"),
        "stl.kpi.volume": ("结算总额", "Settled in total"),
        "stl.kpi.entries": ("结算笔数", "Entries"),
        "stl.kpi.parties": ("结算方", "Parties"),
        "stl.kpi.receivable": ("应收", "Owed to"),
        "stl.kpi.payable": ("应付", "Owes"),
        "stl.kpi.net": ("净额", "Net"),
        "stl.kpi.net_note": ("正数为应收，负数为应付", "Positive: is owed; negative: owes"),
        "stl.chart.net": ("各结算方净额（元）", "Net per party (yuan)"),
        "stl.chart.by_kind": ("各结算方净额按类型（元）", "Net per party by kind (yuan)"),
        "stl.chart.counterparty": ("对各结算方净额（元）", "Net per counterparty (yuan)"),
        "stl.chart.kinds": ("按类型应收与应付（元）", "Owed to and owes by kind (yuan)"),
        "stl.col.party": ("结算方", "Party"),
        "stl.col.counterparty": ("对方", "Counterparty"),
        "stl.col.receivable": ("应收", "Owed to"),
        "stl.col.payable": ("应付", "Owes"),
        "stl.col.net": ("净额", "Net"),
        "stl.col.entries": ("笔数", "Entries"),
        "stl.col.frozen": ("关账净额", "Net at close"),
        "stl.col.kind": ("类型", "Kind"),
        "stl.col.total": ("合计", "Total"),
        "stl.col.status": ("状态", "Status"),
        "stl.col.closed_by": ("关账人", "Closed by"),
        "stl.col.closed_at": ("关账时间", "Closed at"),
        "stl.col.id": ("编号", "No."),
        "stl.col.occurred": ("发生时间", "When"),
        "stl.col.direction": ("应付方 → 应收方", "Debtor → creditor"),
        "stl.col.amount": ("金额", "Amount"),
        "stl.col.points": ("积分", "Points"),
        "stl.col.source": ("来源", "Source"),
        "stl.col.reason": ("说明", "Reason"),
        "stl.ov.table": ("各结算方对账", "Statements"),
        "stl.ov.kind_table": ("按类型分解（净额）", "Breakdown by kind (net)"),
        "stl.ov.periods": ("结算期间", "Periods"),
        "stl.ov.open_statement": ("对账单", "Statement"),
        "stl.ov.more_parties": (
            "图中为净额绝对值最大的 {n} 个结算方；表格列出全部。",
            "The chart shows the {n} parties with the largest nets; the table lists them all.",
        ),
        "stl.kind.points_redeemed": ("积分抵扣", "Points redeemed"),
        "stl.kind.coupon_redeemed": ("优惠券核销", "Coupons redeemed"),
        "stl.kind.package_used": ("次卡使用", "Packages used"),
        "stl.kind.cross_store_return": ("跨店退货", "Cross-store returns"),
        "stl.kind.correction": ("调整", "Corrections"),
        "stl.kind.all": ("全部类型", "All kinds"),
        # period state
        "stl.closed_note": (
            "{period} 已于 {at} 由 {by} 关账，{n} 笔、合计 {total} 已冻结。之后记入该月的条目（迟到的核销、"
            "总部调整）落入下一个未关账期间。",
            "{period} was closed at {at} by {by}: {n} entries, {total} in all, are frozen. Anything recorded "
            "for that month from now on lands in the next open period.",
        ),
        "stl.open_note": (
            "{period} 未关账：新的条目仍会记入。月份结束后由总部关账。",
            "{period} is open: new entries still land in it. HQ closes it once the month has ended.",
        ),
        "stl.close": ("关账", "Close period"),
        "stl.close_not_ended": ("本月结束后才能关账", "It can be closed once the month has ended"),
        "stl.closed_notice": ("{period} 已关账，条目已冻结", "{period} is closed; its entries are frozen"),
        # close confirmation
        "stl.close.title": ("确认关账", "Confirm the close"),
        "stl.close.intro": (
            "关账后 {period} 的结算条目将被冻结，之后属于该月的条目记入下一个未关账期间。以下数字将被冻结：",
            "Closing freezes the entries of {period}; anything for that month recorded later lands in the "
            "next open period. These numbers will be frozen:",
        ),
        "stl.close.reason": ("关账说明", "Reason for the close"),
        "stl.close.reason_hint": (
            "例如：10 月对账完成，各门店已确认",
            "e.g. October reconciled, stores agreed",
        ),
        "stl.close.need_reason": ("请填写关账说明", "Give a reason for the close"),
        "stl.close.submit": ("确认关账", "Close the period"),
        "stl.close.already": ("该期间已关账", "This period is already closed"),
        # corrections
        "stl.corr.title": ("记录调整", "Record a correction"),
        "stl.corr.note": (
            "调整记入业务月份；若该月已关账，则记入之后第一个未关账期间。调整会写入审计日志。",
            "A correction belongs to its business month; if that month is closed it lands in the next open "
            "period. Corrections are audited.",
        ),
        "stl.f.debtor": ("应付方", "Debtor (owes)"),
        "stl.f.creditor": ("应收方", "Creditor (is owed)"),
        "stl.f.choose": ("请选择", "Choose"),
        "stl.f.amount": ("金额（元）", "Amount (yuan)"),
        "stl.f.amount_fen": ("金额", "Amount"),
        "stl.f.reason": ("原因", "Reason"),
        "stl.f.business_month": ("业务月份", "Business month"),
        "stl.f.corrects_entry_id": ("更正的结算编号（可选）", "Corrects entry no. (optional)"),
        "stl.f.business_month_hint": ("留空为本月", "Empty: this month"),
        "stl.corr.submit": ("记录调整", "Record correction"),
        "stl.corr.bad_amount": (
            "须为大于 0 的金额，最多两位小数，如 12.50",
            "must be an amount above 0 with at most 2 decimals, such as 12.50",
        ),
        "stl.corr.required": ("必填", "is required"),
        "stl.corr.bad_entry": ("须为结算编号（整数）", "must be an entry number (a whole number)"),
        "stl.corr.bad_month": ("格式应为 YYYY-MM", "should look like YYYY-MM"),
        "stl.corr.done": (
            "已记录调整 #{id}：{debtor} 应付 {creditor} {amount}，业务月份 {month}，记入 {period} 期间。",
            "Correction #{id} recorded: {debtor} owes {creditor} {amount}, business month {month}, in "
            "period {period}.",
        ),
        "stl.corr.late": (
            "{month} 已关账，调整记入下一个未关账期间 {period}。",
            "{month} is closed, so the correction lands in the next open period, {period}.",
        ),
        # statement
        "stl.st.title": ("对账单", "Statement"),
        "stl.st.counterparties": ("按对方轧差", "Netted per counterparty"),
        "stl.st.kinds": ("按类型", "By kind"),
        "stl.st.drill": ("明细", "Entries"),
        "stl.st.back": ("返回各门店结算", "Back to all statements"),
        "stl.st.none": ("本期间没有结算条目", "No settlement entries in this period"),
        # entries
        "stl.en.title": ("结算明细", "Settlement entries"),
        "stl.en.back": ("返回对账单", "Back to the statement"),
        "stl.en.late": ("属于 {month}（迟到）", "belongs to {month} (late)"),
        "stl.en.order": ("订单", "Order"),
        "stl.en.return": ("退货单", "Return"),
        "stl.en.package": ("次卡使用", "Package use"),
        "stl.en.coupon": ("优惠券", "Coupon"),
        "stl.en.corrects": ("更正 #{id}", "corrects #{id}"),
        "stl.en.reverses": ("冲回 #{id}", "reverses #{id}"),
        "stl.en.same_party": ("对方不能是本方", "The counterparty must be another party"),
        # policy
        "stl.pol.title": ("积分结算规则", "Points settlement policy"),
        "stl.pol.intro": (
            "会员在 B 店使用 A 店发放的积分时，由谁承担这些积分的价值：",
            "When a member spends points issued at store A in store B, who bears their value:",
        ),
        "stl.pol.bearer": ("承担方", "Who bears the cost"),
        "stl.bearer.hq": ("总部资金池", "HQ pool"),
        "stl.bearer.issuing_store": ("发放门店", "Issuing store"),
        "stl.bearer.redeeming_store": ("使用门店（不结算）", "Redeeming store (nothing settled)"),
        "stl.bearer.split": ("按比例分摊", "Split by percentage"),
        "stl.bearer_hint.hq": (
            "总部资金池向使用门店支付全部积分价值",
            "The HQ pool repays the redeeming store for every point",
        ),
        "stl.bearer_hint.issuing_store": (
            "发放积分的门店向使用门店支付其积分价值",
            "The store that issued the points repays the redeeming store",
        ),
        "stl.bearer_hint.redeeming_store": (
            "使用门店自行承担，不产生结算",
            "The redeeming store bears it; nothing is settled",
        ),
        "stl.bearer_hint.split": (
            "发放门店支付下方比例，其余由使用门店承担",
            "The issuing store repays the percentage below; the redeeming store bears the rest",
        ),
        "stl.f.issuer_pct": ("发放门店承担比例（%）", "Issuing store's share (%)"),
        "stl.f.issuer_pct_hint": ("仅在按比例分摊时使用", "Used with the split only"),
        "stl.f.value_points": ("积分数", "Points"),
        "stl.f.value_yuan": ("价值（元）", "Worth (yuan)"),
        "stl.f.value_fen": ("积分价值", "Point value"),
        "stl.pol.value": ("积分价值", "What points are worth"),
        "stl.pol.follow": (
            "按积分计划的抵扣比例（{n} 积分抵 1 元）",
            "The program's redeem rate ({n} points pay one yuan)",
        ),
        "stl.pol.custom": ("自定义：", "Custom:"),
        "stl.pol.per_point": ("每积分 {fen} 分", "{fen} fen per point"),
        "stl.pol.example": (
            "示例：会员在 B 店使用 A 店发放的 1,000 积分，{outcome}",
            "Example: a member spends 1,000 points issued at A in store B: {outcome}",
        ),
        "stl.pol.example_owes": ("{debtor}应付 B 店 {amount}", "{debtor} owes B {amount}"),
        "stl.pol.example_none": ("不产生结算", "nothing is settled"),
        "stl.pol.example_hq": ("总部", "HQ"),
        "stl.pol.example_a": ("A 店", "store A"),
        "stl.pol.saved": (
            "已保存；已有的结算条目保持当时的规则",
            "Saved; existing entries keep their policy",
        ),
        "stl.pol.audit_note": (
            "修改会记录在审计日志中，只影响之后的积分使用",
            "Changes are audited and apply to redemptions from now on",
        ),
        "stl.pol.bad_number": ("须为整数", "must be a whole number"),
        "stl.pol.bad_money": ("须为金额，最多两位小数，如 1.00", "must be an amount such as 1.00"),
    }
)

ENTRY_PAGE = 20
STATEMENT_PAGE = 50
CHART_PARTIES = 30
KINDS = [str(k) for k in service.Kind]
BEARERS = [str(b) for b in service.Bearer]
TABS = (("statements", "/console/settlement"), ("policy", "/console/settlement/policy"))
POSITIVE, NEGATIVE = "#198754", "#dc3545"


# --- plumbing ------------------------------------------------------------------------------------------


def fill(template: str, **values: object) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def signed(value: int) -> str:
    """+¥12.50 / -¥3.00 / ¥0.00: a net with its direction."""
    return f"+{fen(value)}" if value > 0 else fen(value)


def yuan(value: int) -> float:
    return round(value / 100, 2)


def may_close(user: Principal) -> bool:
    return user.role in service.SETTLEMENT_ADMIN_ROLES and user.is_hq


def require_hq_admin(user: Principal, what_zh: str, what_en: str, only_zh: str, only_en: str) -> None:
    """The same refusals, with the same words, as the service gives (a page may refuse before asking)."""
    user.require_role(service.SETTLEMENT_ADMIN_ROLES, what_zh, what_en)
    if not user.is_hq:
        raise Forbidden(only_zh, only_en, code="auth.hq_only")


def api_answer(response: JSONResponse) -> tuple[int, dict[str, Any]]:
    return response.status_code, dict(json.loads(bytes(response.body)))


def api_call(session: Session, lang: str, call: Callable[[], JSONResponse]) -> tuple[int, dict[str, Any]]:
    """Status and body of one JSON API call; a refusal it raises is rolled back and answered as a problem."""
    try:
        return api_answer(call())
    except DomainError as err:
        session.rollback()
        return err.status, err.to_problem(lang)


def problem_error(problem: dict[str, Any]) -> DomainError:
    """An API problem answer as the domain error it was (its code, status, words and extras)."""
    known = {"type", "title", "status", "code", "detail", "message_zh", "message_en"}
    extra = {k: v for k, v in problem.items() if k not in known}
    return DomainError(
        str(problem.get("message_zh", "")),
        str(problem.get("message_en", "")),
        code=str(problem.get("code", "error")),
        status=int(problem.get("status", 400)),
        **extra,
    )


def error_page(request: Request, err: DomainError) -> HTMLResponse:
    return render(request, "error.html", {"error": err}, status_code=err.status)


def is_number(text: str, digits: int = 18) -> bool:
    """ASCII digits only, few enough for a 64-bit id ("²".isdigit() is true, yet int("²") fails)."""
    return text.isascii() and text.isdigit() and len(text) <= digits


def form_key() -> str:
    """A one-time idempotency key carried by a form: resending the same form records once."""
    return f"web-{secrets.token_urlsafe(18)}"


def chosen_period(session: Session, user: Principal, value: str | None) -> str:
    """The period asked for (checked), else this month in the org's time zone."""
    if not value:
        return service.current_month(session, user.org_id)
    return service.check_period(value.strip())


def base_context(user: Principal, tab: str, tz: str, **extra: Any) -> dict[str, Any]:
    return {
        "user": user,
        "section": "settlement",
        "tab": tab,
        "tabs": TABS,
        "tz": tz,
        "kinds": KINDS,
        "signed": signed,
        "fill": fill,
        **extra,
    }


def kind_label(kind: str, t: Callable[[str], str]) -> str:
    return t(f"stl.kind.{kind}")


def party_label(party: settlement_api.PartyOut) -> str:
    return party.code if party.code == service.HQ_CODE else f"{party.code} {party.name}"


# --- charts --------------------------------------------------------------------------------------------


def net_chart(title: str, names: list[str], nets_fen: list[int]) -> str:
    """Horizontal bars of nets: green when the party is owed, red when it owes."""
    option = charts.bar_frame(title)
    option["grid"] = {"left": 8, "right": 24, "top": 40, "bottom": 24, "containLabel": True}
    option["xAxis"] = {"type": "value"}
    option["yAxis"] = {"type": "category", "data": names[::-1]}
    option["series"] = [
        {
            "type": "bar",
            "barMaxWidth": 22,
            "data": [
                {"value": yuan(v), "itemStyle": {"color": POSITIVE if v >= 0 else NEGATIVE}}
                for v in nets_fen[::-1]
            ],
        }
    ]
    return json.dumps(option, ensure_ascii=False)


def stacked_chart(title: str, names: list[str], series: dict[str, list[int]], *, stack: bool = True) -> str:
    """Bars per party, one series per kind (stacked) or side by side; values in yuan."""
    option = charts.bar_frame(title)
    option["legend"] = {"bottom": 0, "left": "center"}
    option["grid"] = {"left": 8, "right": 16, "top": 48, "bottom": 48, "containLabel": True}
    option["xAxis"] = {"type": "category", "data": names}
    option["yAxis"] = {"type": "value"}
    option["series"] = [
        {
            "name": name,
            "type": "bar",
            "barMaxWidth": 28,
            **({"stack": "net"} if stack else {}),
            "data": [yuan(v) for v in values],
        }
        for name, values in series.items()
    ]
    return json.dumps(option, ensure_ascii=False)


# --- periods -------------------------------------------------------------------------------------------


def period_views(session: Session, user: Principal, *also: str) -> list[settlement_api.PeriodOut]:
    """Periods used so far (the API's list, same role check), plus this month and the one shown."""
    found = {p.period: p for p in settlement_api.read_periods(user, session)}
    for period in also:
        found.setdefault(
            period,
            settlement_api.PeriodOut(
                period=period,
                status=str(service.PeriodStatus.OPEN),
                closed_by="",
                closed_at=None,
                entry_count=0,
                total_fen=0,
            ),
        )
    return sorted(found.values(), key=lambda p: p.period, reverse=True)


def period_context(session: Session, user: Principal, period: str) -> dict[str, Any]:
    this_month = service.current_month(session, user.org_id)
    views = period_views(session, user, this_month, period)
    shown = next(p for p in views if p.period == period)
    closable = shown.status == service.PeriodStatus.OPEN and period < this_month
    return {
        "period": period,
        "this_month": this_month,
        "periods": views,
        "shown": shown,
        "can_close": may_close(user) and closable,
        "not_ended": may_close(user) and shown.status == service.PeriodStatus.OPEN and not closable,
        "next_period": service.next_period(period),
    }


# --- overview ------------------------------------------------------------------------------------------


@dataclass
class PartyRow:
    statement: settlement_api.StatementOut
    by_kind: dict[str, int]
    frozen_net: int | None


@dataclass
class CorrectionForm:
    values: dict[str, str]
    errors: FormErrors
    parties: list[statements.PartyInfo]
    key: str


def correction_form(
    session: Session, user: Principal, values: dict[str, str] | None = None, errors: FormErrors | None = None
) -> CorrectionForm:
    info = statements.parties(session, user.org_id)
    ordered = sorted(info.values(), key=lambda p: (p.key != HQ, p.code))
    return CorrectionForm(values or {}, errors or FormErrors(), ordered, form_key())


def party_rows(
    session: Session, user: Principal, found: list[settlement_api.StatementOut], period: str
) -> list[PartyRow]:
    row = service.period_status(session, user.org_id, period)
    frozen: dict[str, int] | None = None
    if row is not None and row.status == service.PeriodStatus.CLOSED:
        codes = {str(k): p.code for k, p in statements.parties(session, user.org_id).items()}
        frozen = {codes.get(k, k): int(v) for k, v in (row.closing_nets or {}).items()}
    out = []
    for st in found:
        by_kind = dict.fromkeys(KINDS, 0)
        for line in st.counterparties:
            for k in line.by_kind:
                by_kind[k.kind] = by_kind.get(k.kind, 0) + k.net_fen
        out.append(PartyRow(st, by_kind, None if frozen is None else frozen.get(st.party.code, 0)))
    return out


def correction_notice(
    session: Session, user: Principal, value: str | None, t: Callable[[str], str]
) -> list[str]:
    """The words under the page after a correction: where it landed, and why when that is a later month."""
    if not value or not is_number(value) or not may_close(user):
        return []
    period = session.scalar(
        select(SettlementEntry.period).where(
            SettlementEntry.org_id == user.org_id, SettlementEntry.id == int(value)
        )
    )
    if period is None:
        return []
    found = statements.entries(session, user.org_id, period, entry_id=int(value))
    if not found:
        return []
    e = found[0]
    lines = [
        fill(
            t("stl.corr.done"),
            id=e.id,
            debtor=e.debtor.code,
            creditor=e.creditor.code,
            amount=fen(e.amount_fen),
            month=e.business_month,
            period=e.period,
        )
    ]
    if e.business_month != e.period:
        lines.append(fill(t("stl.corr.late"), month=e.business_month, period=e.period))
    return lines


def overview_page(
    request: Request,
    session: Session,
    user: Principal,
    period: str,
    *,
    form: CorrectionForm | None = None,
    status: int = 200,
) -> HTMLResponse:
    t = texts(request.state.lang)
    listing = settlement_api.read_statements(user, session, period, None)
    rows = party_rows(session, user, listing.statements, period)
    everyone = user.is_hq
    page = page_number(request.query_params.get("page"))
    chunk = rows[(page - 1) * STATEMENT_PAGE : page * STATEMENT_PAGE + 1]
    params = {"period": period}
    top = sorted(rows, key=lambda r: (-abs(r.statement.net_fen), r.statement.party.code))[:CHART_PARTIES]
    top.sort(key=lambda r: (r.statement.party.code != service.HQ_CODE, r.statement.party.code))
    names = [party_label(r.statement.party) for r in top]
    kpis: list[tuple[str, str, str]]
    if everyone:
        kpis = [
            ("volume", fen(sum(r.statement.receivable_fen for r in rows)), ""),
            ("entries", f"{sum(r.statement.entries for r in rows) // 2:,}", ""),
            ("parties", f"{len(rows):,}", ""),
        ]
    else:
        net = sum(r.statement.net_fen for r in rows)
        kpis = [
            ("receivable", fen(sum(r.statement.receivable_fen for r in rows)), ""),
            ("payable", fen(sum(r.statement.payable_fen for r in rows)), ""),
            ("net", signed(net), t("stl.kpi.net_note")),
        ]
    return render(
        request,
        "console/settlement/overview.html",
        base_context(
            user,
            "statements",
            org_tz(session, user),
            **period_context(session, user, period),
            listing=Paged(chunk[:STATEMENT_PAGE], page, STATEMENT_PAGE, len(chunk) > STATEMENT_PAGE),
            link=linker("/console/settlement", params),
            rows=rows,
            everyone=everyone,
            kpis=kpis,
            charts={
                "net": net_chart(t("stl.chart.net"), names, [r.statement.net_fen for r in top]),
                "by_kind": stacked_chart(
                    t("stl.chart.by_kind"),
                    [r.statement.party.code for r in top],
                    {kind_label(k, t): [r.by_kind.get(k, 0) for r in top] for k in KINDS},
                ),
            },
            chart_note=fill(t("stl.ov.more_parties"), n=CHART_PARTIES) if len(rows) > CHART_PARTIES else "",
            export_url=(
                linker("/console/settlement/statements.xlsx", params)()
                if everyone or len(user.store_ids or ()) == 1
                else ""
            ),
            correction=form or (correction_form(session, user) if may_close(user) else None),
            closed_notice=request.query_params.get("closed") == "1",
            corrected=correction_notice(session, user, request.query_params.get("corrected"), t),
        ),
        status_code=status,
    )


@router.get("/console/settlement")
def settlement_overview(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """A month's statements: each party's owed / owes / net, charts by party and kind, the periods."""
    period = chosen_period(session, user, request.query_params.get("period"))
    return overview_page(request, session, user, period)


@router.get("/console/settlement/statements.xlsx")
def overview_xlsx(request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """Every statement in the caller's scope and the entries behind them (the API's own export)."""
    period = chosen_period(session, user, request.query_params.get("period"))
    return settlement_api.export_statements(user, session, period, None)


# --- one party's statement -----------------------------------------------------------------------------


def one_statement(session: Session, user: Principal, period: str, code: str) -> settlement_api.StatementOut:
    """The party's statement through the API (role and scope checks, unknown codes refused)."""
    return settlement_api.read_statements(user, session, period, code).statements[0]


def kind_totals(st: settlement_api.StatementOut) -> dict[str, tuple[int, int]]:
    totals = dict.fromkeys(KINDS, (0, 0))
    for line in st.counterparties:
        for k in line.by_kind:
            recv, pay = totals.get(k.kind, (0, 0))
            totals[k.kind] = (recv + k.receivable_fen, pay + k.payable_fen)
    return totals


@router.get("/console/settlement/stores/{code}")
def store_statement(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """One party's statement: netted per counterparty (HQ pool included) and by kind, with charts."""
    t = texts(request.state.lang)
    period = chosen_period(session, user, request.query_params.get("period"))
    st = one_statement(session, user, period, code)
    totals = kind_totals(st)
    names = [party_label(c.counterparty) for c in st.counterparties]
    return render(
        request,
        "console/settlement/statement.html",
        base_context(
            user,
            "statements",
            org_tz(session, user),
            **period_context(session, user, period),
            st=st,
            totals=totals,
            charts={
                "net": net_chart(t("stl.chart.counterparty"), names, [c.net_fen for c in st.counterparties]),
                "kinds": stacked_chart(
                    t("stl.chart.kinds"),
                    [kind_label(k, t) for k in KINDS],
                    {
                        t("stl.col.receivable"): [totals[k][0] for k in KINDS],
                        t("stl.col.payable"): [totals[k][1] for k in KINDS],
                    },
                    stack=False,
                ),
            },
            export_url=linker(
                f"/console/settlement/stores/{st.party.code}/statement.xlsx", {"period": period}
            )(),
        ),
    )


@router.get("/console/settlement/stores/{code}/statement.xlsx")
def store_statement_xlsx(code: str, request: Request, user: ConsoleUser, session: SessionDep) -> Response:
    """The party's statement and every entry behind it (the API's own export)."""
    period = chosen_period(session, user, request.query_params.get("period"))
    return settlement_api.export_statements(user, session, period, code)


# --- the entries with one counterparty -----------------------------------------------------------------


@dataclass
class Trace:
    label: str
    url: str | None = None


@dataclass
class EntryRow:
    entry: settlement_api.EntryOut
    signed_fen: int  # + owed to the statement's party, - owed by it
    traces: list[Trace] = field(default_factory=list)


def trace_rows(
    session: Session,
    org_id: int,
    party_code: str,
    found: Sequence[settlement_api.EntryOut],
    t: Callable[[str], str],
) -> list[EntryRow]:
    """Each entry with what it settles: its order (and return) on the member's order page, or the member
    whose package was used, or the entry a correction or reversal refers to."""
    order_nos = {e.order_no for e in found if e.order_no}
    holders: dict[str, str] = {}
    if order_nos:
        holders = {
            str(no): str(member_no)
            for no, member_no in session.execute(
                select(Order.order_no, Member.member_no)
                .join(Member, Member.id == Order.member_id)
                .where(Order.org_id == org_id, Order.order_no.in_(order_nos))
            ).all()
        }
    use_ids = {
        int(ref.removeprefix("package_use:"))
        for e in found
        if (ref := e.source_ref or "").startswith("package_use:")
        and ref.removeprefix("package_use:").isdigit()
    }
    users: dict[int, str] = {}
    if use_ids:
        users = {
            int(use_id): str(member_no)
            for use_id, member_no in session.execute(
                select(PackageUse.id, Member.member_no)
                .join(Member, Member.id == PackageUse.member_id)
                .where(PackageUse.org_id == org_id, PackageUse.id.in_(use_ids))
            ).all()
        }
    rows = []
    for e in found:
        row = EntryRow(e, e.amount_fen if e.creditor.code == party_code else -e.amount_fen)
        order_url = None
        if e.order_no:
            member_no = holders.get(e.order_no)
            order_url = f"/console/members/{member_no}/orders/{e.order_no}" if member_no else None
            row.traces.append(Trace(f"{t('stl.en.order')} {e.order_no}", order_url))
        if e.return_no:
            row.traces.append(Trace(f"{t('stl.en.return')} {e.return_no}", order_url))
        ref = e.source_ref or ""
        if ref.startswith("package_use:"):
            use_id = ref.removeprefix("package_use:")
            member_no = users.get(int(use_id)) if use_id.isdigit() else None
            row.traces.append(
                Trace(
                    f"{t('stl.en.package')} #{use_id}", f"/console/members/{member_no}" if member_no else None
                )
            )
        if e.reverses_id:
            key = "stl.en.corrects" if e.kind == service.Kind.CORRECTION else "stl.en.reverses"
            row.traces.append(Trace(fill(t(key), id=e.reverses_id)))
        rows.append(row)
    return rows


def chosen_kind(value: str | None) -> str | None:
    return value if value in KINDS else None


def counterparty(session: Session, user: Principal, code: str, other: str) -> statements.PartyInfo:
    info = statements.party_by_code(session, user.org_id, other)
    if info is None:
        raise PartyNotFound(f"结算方 {other} 不存在", f"No store or party {other}")
    mine = statements.party_by_code(session, user.org_id, code)
    if mine is not None and mine.key == info.key:
        raise Invalid(
            "对方不能是本方", "The counterparty must be another party", code="settlement.same_party"
        )
    return info


@router.get("/console/settlement/stores/{code}/with/{other}")
def counterparty_entries(
    code: str, other: str, request: Request, user: ConsoleUser, session: SessionDep
) -> HTMLResponse:
    """The entries between a party and one counterparty in a period, each traced to its source; paged."""
    t = texts(request.state.lang)
    period = chosen_period(session, user, request.query_params.get("period"))
    kind = chosen_kind(request.query_params.get("kind"))
    page = page_number(request.query_params.get("page"))
    st = one_statement(session, user, period, code)
    them = counterparty(session, user, code, other)
    found = settlement_api.read_entries(
        user,
        session,
        period,
        st.party.code,
        them.code,
        kind,
        limit=ENTRY_PAGE + 1,
        offset=(page - 1) * ENTRY_PAGE,
    ).entries
    rows = trace_rows(session, user.org_id, st.party.code, found[:ENTRY_PAGE], t)
    line = next((c for c in st.counterparties if c.counterparty.code == them.code), None)
    params = {"period": period, **({"kind": kind} if kind else {})}
    base = f"/console/settlement/stores/{st.party.code}/with/{them.code}"
    return render(
        request,
        "console/settlement/entries.html",
        base_context(
            user,
            "statements",
            org_tz(session, user),
            **period_context(session, user, period),
            st=st,
            them=them,
            line=line,
            kind=kind or "",
            listing=Paged(rows, page, ENTRY_PAGE, len(found) > ENTRY_PAGE),
            link=linker(base, params),
            base_url=base,
            export_url=linker(f"{base}/entries.xlsx", params)(),
        ),
    )


@router.get("/console/settlement/stores/{code}/with/{other}/entries.xlsx")
def counterparty_entries_xlsx(
    code: str, other: str, request: Request, user: ConsoleUser, session: SessionDep
) -> Response:
    """The drill-down as Excel: the line with that counterparty and every entry behind it."""
    period = chosen_period(session, user, request.query_params.get("period"))
    kind = chosen_kind(request.query_params.get("kind"))
    st = one_statement(session, user, period, code)  # the same role and scope checks as the API
    them = counterparty(session, user, code, other)
    mine = statements.party_by_code(session, user.org_id, st.party.code)
    assert mine is not None
    [full] = statements.statements(session, user.org_id, period, {mine.key})
    full.lines = [line for line in full.lines if line.counterparty.key == them.key]
    rows = statements.entries(
        session, user.org_id, period, party_key=mine.key, counterparty_key=them.key, kind=kind, limit=None
    )
    name = f"settlement-{period}-{mine.code}-{them.code}.xlsx"
    return Response(
        statements.workbook([full], rows),
        media_type=XLSX,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


# --- closing a period ----------------------------------------------------------------------------------


@dataclass
class NetRow:
    party: statements.PartyInfo
    net_fen: int


def require_closer(user: Principal) -> None:
    require_hq_admin(
        user, "结算关账", "close settlement periods", "只有总部可以关账", "Only HQ closes settlement periods"
    )


def close_page(
    request: Request,
    session: Session,
    user: Principal,
    period: str,
    *,
    reason: str = "",
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    nets, count, total = service.party_nets(session, user.org_id, period)
    info = statements.parties(session, user.org_id)
    rows = [NetRow(info.get(k) or statements.PartyInfo(k, str(k), str(k)), v) for k, v in nets.items() if v]
    rows.sort(key=lambda r: (r.party.key != HQ, r.party.code))
    return render(
        request,
        "console/settlement/close.html",
        base_context(
            user,
            "statements",
            org_tz(session, user),
            **{**period_context(session, user, period), "can_close": False},  # this is the close
            nets=rows,
            entry_count=count,
            total_fen=total,
            reason=reason,
            error=error,
            key=form_key(),
        ),
        status_code=status,
    )


@router.get("/console/settlement/periods/{period}/close")
def close_confirm(period: str, request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """HQ's confirm step: the numbers the close will freeze, and a reason to give."""
    require_closer(user)
    return close_page(request, session, user, service.check_period(period))


@router.post("/console/settlement/periods/{period}/close", dependencies=[Csrf])
def close_settlement_period(
    period: str, request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Close the period through the API (HQ only; an ended month; earlier months first); audited."""
    lang = request.state.lang
    t = texts(lang)
    reason = form.get("reason")
    require_closer(user)  # before the confirm page is shown again with every party's numbers
    period = service.check_period(period)
    if not reason:
        return close_page(request, session, user, period, error=t("stl.close.need_reason"), status=422)
    try:
        body = settlement_api.CloseIn(reason=reason)
    except ValidationError:
        message = "关账说明最多 300 个字符" if lang == "zh" else "The reason has at most 300 characters"
        return close_page(request, session, user, period, reason=reason, error=message, status=422)
    key = form.get("key") or None
    code, answer = api_call(
        session, lang, lambda: settlement_api.close_period(period, user, session, lang, body, key)
    )
    if code >= 400:
        refused = problem_error(answer)
        if code == 403:
            return error_page(request, refused)
        message = refused.en if lang == "en" else refused.zh
        return close_page(request, session, user, period, reason=reason, error=message, status=code)
    return RedirectResponse(f"/console/settlement?period={period}&closed=1", status_code=303)


# --- corrections ---------------------------------------------------------------------------------------

CORRECTION_FIELDS = ("debtor", "creditor", "amount", "reason", "business_month", "corrects_entry_id")
MAX_CORRECTION_FEN = 10**12  # the API's bound


def correction_errors(exc: ValidationError, lang: str) -> FormErrors:
    t = texts(lang)
    errors = FormErrors()
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        name = "amount" if name == "amount_fen" else name
        text = t("stl.corr.bad_month") if err["type"] == "string_pattern_mismatch" else error_text(err, lang)
        errors.add(name, f"{t('stl.f.' + name)}{label_sep(lang)}{text}")
    return errors


@router.post("/console/settlement/corrections", dependencies=[Csrf])
def record_correction(request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm) -> Response:
    """HQ records a correction through the API: it lands in its month, or the next open period."""
    lang = request.state.lang
    t = texts(lang)
    sep = label_sep(lang)
    values = {name: form.get(name) for name in CORRECTION_FIELDS}
    require_hq_admin(
        user, "调整结算", "correct settlement", "只有总部可以调整结算", "Only HQ corrects settlement"
    )
    period = chosen_period(session, user, form.get("period") or None)
    errors = FormErrors()
    amount = yuan_to_fen(values["amount"])
    if not amount or amount > MAX_CORRECTION_FEN:
        errors.add("amount", f"{t('stl.f.amount')}{sep}{t('stl.corr.bad_amount')}")
        amount = None
    for name in ("debtor", "creditor", "reason"):
        if not values[name]:
            errors.add(name, f"{t('stl.f.' + name)}{sep}{t('stl.corr.required')}")
    entry_id: int | None = None
    if values["corrects_entry_id"]:
        if is_number(values["corrects_entry_id"]):
            entry_id = int(values["corrects_entry_id"])
        else:
            errors.add("corrects_entry_id", f"{t('stl.f.corrects_entry_id')}{sep}{t('stl.corr.bad_entry')}")
    body = None
    try:
        # Placeholders where the typed value is already refused, so every other field is checked too.
        body = settlement_api.CorrectionIn(
            debtor=values["debtor"] or "-",
            creditor=values["creditor"] or "-",
            amount_fen=amount or 1,
            reason=values["reason"] or "-",
            business_month=values["business_month"] or None,
            corrects_entry_id=entry_id,
        )
    except ValidationError as exc:
        for name, message in correction_errors(exc, lang).fields.items():
            errors.add(name, message)
    if errors or body is None:
        return overview_page(
            request, session, user, period, form=correction_form(session, user, values, errors), status=422
        )
    key = form.get("key") or None
    code, answer = api_call(
        session, lang, lambda: settlement_api.correct_settlement(body, user, session, lang, key)
    )
    if code >= 400:
        refused = problem_error(answer)
        if code == 403:
            return error_page(request, refused)
        message = refused.en if lang == "en" else refused.zh
        errors.general.append(message)
        named = refused.extra.get("field")
        if isinstance(named, str):
            errors.add(named, message)
        form_view = correction_form(session, user, values, errors)
        return overview_page(request, session, user, period, form=form_view, status=code)
    return RedirectResponse(
        f"/console/settlement?period={answer['period']}&corrected={answer['id']}", status_code=303
    )


# --- the points policy ---------------------------------------------------------------------------------


def follows_program(session: Session, user: Principal) -> bool:
    program = service.program_of(session, user.org_id)
    row = session.scalar(
        select(SettlementPolicy).where(
            SettlementPolicy.org_id == user.org_id, SettlementPolicy.program_id == program.id
        )
    )
    return row is None or row.value_fen is None


def policy_example(policy: settlement_api.PolicyOut, t: Callable[[str], str]) -> str:
    """What 1,000 points issued at A and spent at B settle under the policy (A and B stand in as 1, 2)."""
    rule = service.PointsPolicy(
        service.Bearer(policy.bearer), policy.issuer_pct, policy.value_fen, policy.value_points
    )
    shares = service.redemption_shares({1: 1000}, 2, rule)
    if not shares:
        outcome = t("stl.pol.example_none")
    else:
        who = t("stl.pol.example_hq") if shares[0].debtor == HQ else t("stl.pol.example_a")
        outcome = fill(t("stl.pol.example_owes"), debtor=who, amount=fen(shares[0].amount_fen))
    return fill(t("stl.pol.example"), outcome=outcome)


def policy_values(policy: settlement_api.PolicyOut, follow: bool) -> dict[str, str]:
    return {
        "bearer": policy.bearer,
        "issuer_pct": str(policy.issuer_pct),
        "value_points": str(policy.value_points),
        "value_yuan": fen(policy.value_fen).lstrip("¥").replace(",", ""),
        "follow": "on" if follow else "",
    }


def policy_page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    t = texts(request.state.lang)
    policy = settlement_api.read_policy(user, session)
    program = service.program_of(session, user.org_id)
    return render(
        request,
        "console/settlement/policy.html",
        base_context(
            user,
            "policy",
            org_tz(session, user),
            policy=policy,
            bearers=BEARERS,
            values=values or policy_values(policy, follows_program(session, user)),
            errors=errors or FormErrors(),
            redeem_rate=program.redeem_points_per_yuan,
            example=policy_example(policy, t),
            per_point=f"{policy.value_fen / policy.value_points:.4g}",
            editable=may_close(user),
            saved=request.query_params.get("saved") == "1",
        ),
        status_code=status,
    )


@router.get("/console/settlement/policy")
def settlement_policy(request: Request, user: ConsoleUser, session: SessionDep) -> HTMLResponse:
    """Who bears redeemed points and what a point is worth: HQ edits, statement readers read."""
    return policy_page(request, session, user)


@router.post("/console/settlement/policy", dependencies=[Csrf])
def save_settlement_policy(
    request: Request, user: ConsoleUser, session: SessionDep, form: PostedForm
) -> Response:
    """Save the points policy through the API (HQ only, validated and audited the same way)."""
    lang = request.state.lang
    t = texts(lang)
    sep = label_sep(lang)
    values = {n: form.get(n) for n in ("bearer", "issuer_pct", "value_points", "value_yuan")}
    values["follow"] = "on" if form.get("follow") else ""
    errors = FormErrors()
    pct = int(values["issuer_pct"]) if is_number(values["issuer_pct"]) else None
    if values["bearer"] == service.Bearer.SPLIT and pct is None:
        errors.add("issuer_pct", f"{t('stl.f.issuer_pct')}{sep}{t('stl.pol.bad_number')}")
    value_fen = value_points = None
    if not values["follow"]:
        value_points = int(values["value_points"]) if is_number(values["value_points"]) else None
        value_fen = yuan_to_fen(values["value_yuan"])
        if value_points is None:
            errors.add("value_points", f"{t('stl.f.value_points')}{sep}{t('stl.pol.bad_number')}")
        if value_fen is None:
            errors.add("value_yuan", f"{t('stl.f.value_yuan')}{sep}{t('stl.pol.bad_money')}")
    if errors:
        return policy_page(request, session, user, values=values, errors=errors, status=422)
    body = settlement_api.PolicyIn(
        bearer=values["bearer"][:20],
        issuer_pct=pct if pct is not None else 100,
        value_fen=value_fen,
        value_points=value_points,
    )
    try:
        settlement_api.set_policy(body, user, session, lang)
    except DomainError as err:
        session.rollback()
        if err.status == 403:
            return error_page(request, err)
        message = err.en if lang == "en" else err.zh
        errors.general.append(message)
        name = err.extra.get("field")
        if isinstance(name, str):
            errors.add("value_yuan" if name == "value_fen" else name, message)
        return policy_page(request, session, user, values=values, errors=errors, status=err.status)
    return RedirectResponse("/console/settlement/policy?saved=1", status_code=303)
