"""Historical order import, so analytics have history from day one.

One row per order line; rows with the same store and ``order_ref`` form one order (``order_ref`` is the
old system's receipt number, unique per store). An order with any bad row is left out whole, with each
of its rows in the report. Orders are written with ``source = "import"`` and
``client_order_id = order_ref``, so importing the same file again finds them and changes nothing. The
member's running stats are updated as a checkout would; points are earned only on request
(``earn_points=True``), as ledger entries dated when the order happened. No outbox events are written:
journeys and webhooks should not fire for last year's shopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit import service as audit
from onemember.auth.principal import system_principal
from onemember.common.counters import is_valid_member_no
from onemember.common.crypto import get_cipher, mask
from onemember.common.types import IdentityKind, MemberStatus
from onemember.db import utcnow
from onemember.imports.batches import commit_chunk
from onemember.imports.fields import parse_datetime, parse_int, too_long
from onemember.imports.reader import FileProblem, Row, Sheet, read_table
from onemember.imports.result import ImportResult, Problem, progress_bar, write_report
from onemember.members import service as members_service
from onemember.members.errors import InvalidIdentity, MemberNotFound
from onemember.members.models import Member, MemberIdentity
from onemember.orders.checkout import plan_lines
from onemember.orders.models import Order, OrderLine, OrderPayment
from onemember.orders.numbers import public_no
from onemember.orders.schemas import EarnLineOut, EarnRuleOut
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import earning
from onemember.points import service as points
from onemember.points.models import PointsProgram
from onemember.segments import stats
from onemember.tiers import service as tiers

ACTOR = "import"
PAYMENT_METHOD = "import"  # the old system's tender is not known; the payment row keeps totals whole
MAX_LINES = 500

ALIASES: dict[str, tuple[str, ...]] = {
    "order_ref": ("ref", "order_no", "receipt_no", "订单号", "单号", "小票号"),
    "store_code": ("store", "门店编码", "门店代码", "门店"),
    "phone": ("member_phone", "mobile", "手机号", "会员手机号"),
    "member_no": ("会员号", "会员编号"),
    "occurred_at": ("time", "datetime", "order_time", "下单时间", "交易时间", "时间"),
    "sku": ("barcode", "商品编码", "条码"),
    "name": ("product_name", "商品名称", "品名"),
    "category": ("品类", "类别"),
    "quantity": ("qty", "数量"),
    "unit_price_fen": ("price_fen", "单价分", "单价（分）"),
}
REQUIRED = ("order_ref", "store_code", "occurred_at", "sku", "quantity", "unit_price_fen")


@dataclass
class LineRow:
    row: int
    sku: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int


@dataclass
class OrderGroup:
    store_code: str
    ref: str
    rows: list[Row] = field(default_factory=list)
    store_id: int = 0
    occurred_at: datetime | None = None
    phone: str = ""
    member_no: str = ""
    lines: list[LineRow] = field(default_factory=list)


def _check_row(row: Row, stores: dict[str, int], tz: ZoneInfo, now: datetime) -> list[Problem]:
    v = row.values
    problems: list[Problem] = []
    if not v["order_ref"]:
        problems.append(Problem("ref_missing", "缺少订单号 order_ref", "order_ref is missing"))
    elif len(v["order_ref"]) > 80:
        problems.append(too_long("order_ref", "订单号", 80))
    if v["store_code"] not in stores:
        problems.append(
            Problem("store_unknown", f"找不到门店 {v['store_code']}", f"No store with code {v['store_code']}")
        )
    occurred = parse_datetime(v["occurred_at"], tz) if v["occurred_at"] else None
    if occurred is None:
        problems.append(
            Problem(
                "occurred_invalid",
                f"下单时间格式无效：{v['occurred_at']}（应为 ISO 格式，如 2025-03-01 14:30:00）",
                f"occurred_at is not an ISO date-time (e.g. 2025-03-01 14:30:00): {v['occurred_at']}",
            )
        )
    elif occurred > now + timedelta(minutes=5):
        problems.append(
            Problem(
                "occurred_future",
                f"下单时间晚于当前时间：{v['occurred_at']}",
                f"occurred_at is in the future: {v['occurred_at']}",
            )
        )
    if v["phone"]:
        try:
            members_service.normalize_identity(IdentityKind.PHONE, v["phone"])
        except InvalidIdentity as err:
            problems.append(Problem("phone_invalid", f"{err.zh}：{v['phone']}", f"{err.en}: {v['phone']}"))
    if v["member_no"] and not is_valid_member_no(v["member_no"]):
        problems.append(
            Problem(
                "member_no_invalid",
                f"会员号无效：{v['member_no']}",
                f"Not a valid member number: {v['member_no']}",
            )
        )
    if not v["sku"]:
        problems.append(Problem("sku_missing", "缺少商品编码 sku", "sku is missing"))
    elif len(v["sku"]) > 64:
        problems.append(too_long("sku", "商品编码", 64))
    if len(v["name"]) > 200:
        problems.append(too_long("name", "商品名称", 200))
    if len(v["category"]) > 60:
        problems.append(too_long("category", "品类", 60))
    quantity = parse_int(v["quantity"])
    if quantity is None or not 1 <= quantity <= 100000:
        problems.append(
            Problem(
                "quantity_invalid",
                f"数量须为正整数：{v['quantity']}",
                f"quantity must be a whole number of 1 or more: {v['quantity']}",
            )
        )
    price = parse_int(v["unit_price_fen"])
    if price is None or not 0 <= price <= 10**10:
        problems.append(
            Problem(
                "price_invalid",
                f"单价（分）须为非负整数：{v['unit_price_fen']}",
                f"unit_price_fen must be a whole number of fen, 0 or more: {v['unit_price_fen']}",
            )
        )
    return problems


def group_orders(
    sheet: Sheet, stores: dict[str, int], tz: ZoneInfo, now: datetime, result: ImportResult
) -> list[OrderGroup]:
    """Orders whose every row is good; every row of any other order goes to ``result.rejected``."""
    groups: dict[tuple[str, str], OrderGroup] = {}
    bad: dict[int, list[Problem]] = {}
    for row in sheet.rows:
        key = (row.values["store_code"], row.values["order_ref"])
        groups.setdefault(key, OrderGroup(store_code=key[0], ref=key[1])).rows.append(row)
        problems = _check_row(row, stores, tz, now)
        if problems:
            bad[row.number] = problems
    good: list[OrderGroup] = []
    for group in groups.values():
        numbers = [r.number for r in group.rows]
        if not any(n in bad for n in numbers):
            first = group.rows[0].values
            phone = (
                members_service.normalize_identity(IdentityKind.PHONE, first["phone"])
                if first["phone"]
                else ""
            )
            at = parse_datetime(first["occurred_at"], tz)
            for r in group.rows[1:]:
                other_phone = r.values["phone"] and members_service.normalize_identity(
                    IdentityKind.PHONE, r.values["phone"]
                )
                if (
                    (other_phone or "") != phone
                    or r.values["member_no"] != first["member_no"]
                    or (parse_datetime(r.values["occurred_at"], tz) != at)
                ):
                    bad[r.number] = [
                        Problem(
                            "order_inconsistent",
                            f"与第 {group.rows[0].number} 行同属订单 {group.ref}，但会员或下单时间不一致",
                            f"Same order {group.ref} as row {group.rows[0].number}, "
                            "but a different member or time",
                        )
                    ]
            if len(group.rows) > MAX_LINES:
                for n in numbers:
                    bad[n] = [
                        Problem(
                            "order_too_long",
                            f"订单 {group.ref} 超过 {MAX_LINES} 行",
                            f"Order {group.ref} has more than {MAX_LINES} lines",
                        )
                    ]
        if any(n in bad for n in numbers):
            for n in numbers:
                result.reject(
                    n,
                    bad.get(n)
                    or [
                        Problem(
                            "order_has_bad_rows",
                            f"订单 {group.ref} 的其他行有错误，整单未导入",
                            f"Another row of order {group.ref} is invalid; the whole order was left out",
                        )
                    ],
                )
            continue
        first = group.rows[0].values
        group.store_id = stores[group.store_code]
        group.occurred_at = parse_datetime(first["occurred_at"], tz)
        group.phone = (
            members_service.normalize_identity(IdentityKind.PHONE, first["phone"]) if first["phone"] else ""
        )
        group.member_no = first["member_no"]
        group.lines = [
            LineRow(
                r.number,
                r.values["sku"],
                r.values["name"] or r.values["sku"],
                r.values["category"],
                parse_int(r.values["quantity"]) or 0,
                parse_int(r.values["unit_price_fen"]) or 0,
            )
            for r in group.rows
        ]
        good.append(group)
    return good


@dataclass
class _Outcome:
    created: int = 0
    existing: int = 0
    rejected: list[tuple[int, Problem]] = field(default_factory=list)
    lines: int = 0
    member_orders: int = 0
    points_earned: int = 0


def _resolve_members(session: Session, org_id: int, groups: list[OrderGroup]) -> dict[str, int | None]:
    """Member id per phone / member number named in ``groups`` (None: no such active member)."""
    found: dict[str, int | None] = {}
    cipher = get_cipher()
    phones = {g.phone for g in groups if g.phone}
    by_bidx = {cipher.blind_index(IdentityKind.PHONE, p): p for p in phones}
    if by_bidx:
        rows = session.execute(
            select(MemberIdentity.value_bidx, Member.id, Member.status)
            .join(Member, Member.id == MemberIdentity.member_id)
            .where(
                MemberIdentity.org_id == org_id,
                MemberIdentity.kind == IdentityKind.PHONE,
                MemberIdentity.value_bidx.in_(list(by_bidx)),
            )
        ).all()
        for bidx, member_id, status in rows:
            found["phone:" + by_bidx[bidx]] = int(member_id) if status == MemberStatus.ACTIVE else None
    numbers = {g.member_no for g in groups if g.member_no}
    if numbers:
        by_no = session.execute(
            select(Member.member_no, Member.id, Member.status, Member.merged_into_id).where(
                Member.org_id == org_id, Member.member_no.in_(list(numbers))
            )
        ).all()
        for number, member_id, status, merged_into in by_no:
            if merged_into is not None:  # a merged member's number resolves to the survivor
                try:
                    found["no:" + number] = members_service.by_member_no(session, org_id, number).id
                except MemberNotFound:
                    found["no:" + number] = None
            else:
                found["no:" + number] = int(member_id) if status == MemberStatus.ACTIVE else None
    return found


def _order_numbers(session: Session, org_id: int, groups: list[OrderGroup], tz: str) -> list[str]:
    """Fresh public order numbers; they are random, so check them against the database before use."""
    numbers: list[str] = []
    for g in groups:
        assert g.occurred_at is not None
        numbers.append(public_no("S", g.occurred_at, tz))
    while True:
        taken = set(
            session.scalars(select(Order.order_no).where(Order.org_id == org_id, Order.order_no.in_(numbers)))
        )
        seen: set[str] = set()
        clashes = 0
        for i, g in enumerate(groups):
            if numbers[i] in taken or numbers[i] in seen:
                assert g.occurred_at is not None
                numbers[i] = public_no("S", g.occurred_at, tz)
                clashes += 1
            seen.add(numbers[i])
        if not clashes:
            return numbers


def _apply_chunk(
    session: Session,
    org_id: int,
    tz: str,
    program: PointsProgram,
    groups: list[OrderGroup],
    earn_points: bool,
    source: str,
) -> _Outcome:
    out = _Outcome()
    refs = list({g.ref for g in groups})
    existing = {
        (int(store_id), str(ref))
        for store_id, ref in session.execute(
            select(Order.store_id, Order.client_order_id).where(
                Order.org_id == org_id, Order.client_order_id.in_(refs)
            )
        )
    }
    members = _resolve_members(session, org_id, groups)
    todo: list[tuple[OrderGroup, int | None]] = []
    for g in groups:
        if (g.store_id, g.ref) in existing:
            out.existing += 1
            continue
        by_phone = members.get("phone:" + g.phone) if g.phone else None
        by_no = members.get("no:" + g.member_no) if g.member_no else None
        problem: Problem | None = None
        if g.phone and by_phone is None:
            problem = Problem(
                "member_not_found",
                f"找不到手机号为 {mask('phone', g.phone)} 的会员",
                f"No member with phone {mask('phone', g.phone)}",
            )
        elif g.member_no and by_no is None:
            problem = Problem(
                "member_not_found", f"找不到会员号 {g.member_no}", f"No member number {g.member_no}"
            )
        elif g.phone and g.member_no and by_phone != by_no:
            problem = Problem(
                "member_conflict",
                "手机号与会员号不属于同一会员",
                "The phone and the member number belong to different members",
            )
        if problem is not None:
            out.rejected.extend((r.number, problem) for r in g.rows)
            continue
        todo.append((g, by_phone or by_no))
    if not todo:
        return out
    now = utcnow()
    actor = f"system:{ACTOR}"
    numbers = _order_numbers(session, org_id, [g for g, _ in todo], tz)
    zone = ZoneInfo(tz)
    # History earns at the program's base rate (the campaigns of the new system did not exist then).
    base = [
        earning.Rule(
            id=0, version=0, kind=earning.RuleKind.BASE_RATE, points_per_yuan=program.earn_points_per_yuan
        )
    ]
    plans = []
    explanations: list[list[dict[str, Any]]] = []
    growths: list[list[int]] = []
    for g, member_id in todo:
        assert g.occurred_at is not None
        plan = plan_lines([line.quantity * line.unit_price_fen for line in g.lines], 0, program)
        earns = earn_points and member_id is not None
        explanation: list[dict[str, Any]] = []
        if earns:
            outcome = earning.compute(
                [
                    earning.BasketLine(i, line.sku, line.category, p.paid_fen)
                    for i, (line, p) in enumerate(zip(g.lines, plan, strict=True), start=1)
                ],
                base,
                earning.EarnContext(local_date=g.occurred_at.astimezone(zone).date(), store_id=g.store_id),
            )
            for i, p in enumerate(plan, start=1):
                p.points_earned = outcome.per_line[i]
            explanation = [
                EarnRuleOut(
                    rule=a.kind,
                    rule_id=a.rule_id or None,
                    version=a.version or None,
                    label_zh=a.label_zh,
                    label_en=a.label_en,
                    points=a.points,
                    lines=[
                        EarnLineOut(
                            line_no=n, sku=g.lines[n - 1].sku, eligible_fen=plan[n - 1].paid_fen, points=pts
                        )
                        for n, pts in sorted(a.lines.items())
                    ],
                ).model_dump()
                for a in outcome.applications
            ]
        else:
            for p in plan:
                p.points_earned = 0
        growths.append([p.paid_fen * program.growth_per_yuan // 100 if earns else 0 for p in plan])
        explanations.append(explanation)
        plans.append((plan, sum(p.points_earned for p in plan)))
    order_ids = list(
        session.scalars(
            insert(Order).returning(Order.id, sort_by_parameter_order=True),
            [
                {
                    "org_id": org_id,
                    "order_no": no,
                    "store_id": g.store_id,
                    "member_id": member_id,
                    "client_order_id": g.ref,
                    "status": "completed",
                    "source": "import",
                    "total_fen": sum(p.amount_fen for p in plan),
                    "points_redeemed": 0,
                    "points_value_fen": 0,
                    "paid_fen": sum(p.amount_fen for p in plan),
                    "points_earned": earned,
                    "growth_earned": sum(growth),
                    "refunded_fen": 0,
                    "earn_explanation": explanation,
                    "actor": actor,
                    "occurred_at": g.occurred_at,
                    "created_at": now,
                }
                for (g, member_id), no, (plan, earned), explanation, growth in zip(
                    todo, numbers, plans, explanations, growths, strict=True
                )
            ],
        )
    )
    line_rows: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    for (g, _), order_id, (plan, _earned), growth in zip(todo, order_ids, plans, growths, strict=True):
        for i, (line, p, gv) in enumerate(zip(g.lines, plan, growth, strict=True), start=1):
            line_rows.append(
                {
                    "org_id": org_id,
                    "order_id": order_id,
                    "line_no": i,
                    "sku": line.sku,
                    "name": line.name,
                    "category": line.category,
                    "quantity": line.quantity,
                    "unit_price_fen": line.unit_price_fen,
                    "amount_fen": p.amount_fen,
                    "points_redeemed": 0,
                    "points_value_fen": 0,
                    "paid_fen": p.paid_fen,
                    "points_earned": p.points_earned,
                    "growth_earned": gv,
                    "returned_quantity": 0,
                }
            )
        total = sum(p.amount_fen for p in plan)
        if total:
            payments.append(
                {"org_id": org_id, "order_id": order_id, "method": PAYMENT_METHOD, "amount_fen": total}
            )
    session.execute(insert(OrderLine), line_rows)
    if payments:
        session.execute(insert(OrderPayment), payments)
    for (g, member_id), order_id, no, (plan, earned), growth in zip(
        todo, order_ids, numbers, plans, growths, strict=True
    ):
        out.created += 1
        out.lines += len(g.lines)
        if member_id is None:
            continue
        out.member_orders += 1
        assert g.occurred_at is not None
        stats.apply_order(
            session,
            org_id=org_id,
            member_id=member_id,
            store_id=g.store_id,
            at=g.occurred_at,
            spend_fen=sum(p.amount_fen for p in plan),
            lines=[
                stats.LineFact(line.category, line.quantity, p.amount_fen)
                for line, p in zip(g.lines, plan, strict=True)
            ],
            month=tiers.month_key(g.occurred_at, tz),
        )
        if earned or sum(growth):
            account = points.ensure_account(session, org_id, member_id, program.id)
            account = points.lock_account(session, account.id)
        if earned:
            points.earn(
                session,
                account,
                earned,
                points.EntryContext(
                    store_id=g.store_id,
                    order_id=order_id,
                    reason=f"导入订单 {no} 消费得积分 (imported order {g.ref})",
                    actor=actor,
                    at=g.occurred_at,
                ),
                expires_at=points.expiry_of(program, g.occurred_at, tz),
                available_at=g.occurred_at + timedelta(days=program.pending_days),
            )
            out.points_earned += earned
        if sum(growth):
            points.add_growth(session, account, sum(growth), "order", order_id=order_id, at=g.occurred_at)
    session.flush()
    audit.record(
        session,
        system_principal(org_id, ACTOR),
        "import.orders",
        target_type="file",
        target_id=source,
        details={"created": out.created, "lines": out.lines, "points_earned": out.points_earned},
    )
    return out


def import_orders_file(
    factory: sessionmaker[Session],
    org_id: int,
    path: Path,
    *,
    console: Console | None = None,
    report_path: Path | None = None,
    earn_points: bool = False,
    chunk_size: int = 500,
) -> ImportResult:
    """Import historical orders (one row per line) from CSV or XLSX; returns counts and rejected rows."""
    result = ImportResult("orders", path, report_path=report_path)
    sheet: Sheet | None = None
    try:
        sheet = read_table(path, ALIASES, REQUIRED)
    except FileProblem as err:
        result.reject(1, [Problem(err.code, err.zh, err.en)])
    if sheet is not None:
        result.rows = len(sheet.rows)
        _import(factory, org_id, path.name, sheet, result, console, earn_points, chunk_size)
    result.rejected.sort(key=lambda r: r.row)
    if report_path is not None:
        write_report(report_path, sheet, result.rejected)
    return result


def _import(
    factory: sessionmaker[Session],
    org_id: int,
    source: str,
    sheet: Sheet,
    result: ImportResult,
    console: Console | None,
    earn_points: bool,
    chunk_size: int,
) -> None:
    with factory() as session:
        org = org_service.get_org(session, org_id)
        tz_name = org.timezone
        stores = {
            code: int(sid)
            for code, sid in session.execute(select(Store.code, Store.id).where(Store.org_id == org_id)).all()
        }
        program = points.default_program(session, org_id)
        session.expunge(program)
    groups = group_orders(sheet, stores, ZoneInfo(tz_name), utcnow(), result)
    groups.sort(key=lambda g: (g.occurred_at or utcnow(), g.rows[0].number))
    details = {"lines": 0, "member_orders": 0, "walk_in_orders": 0, "points_earned": 0}
    with (
        progress_bar(console, f"导入订单 importing orders ({source})", len(sheet.rows)) as (progress, task),
        factory() as session,
    ):
        progress.advance(task, len(sheet.rows) - sum(len(g.rows) for g in groups))
        for start in range(0, len(groups), chunk_size):
            chunk = groups[start : start + chunk_size]
            out = commit_chunk(
                session,
                partial(_apply_chunk, session, org_id, tz_name, program, chunk, earn_points, source),
            )
            result.created += out.created
            result.existing += out.existing
            for number, problem in out.rejected:
                result.reject(number, [problem])
            details["lines"] += out.lines
            details["member_orders"] += out.member_orders
            details["walk_in_orders"] += out.created - out.member_orders
            details["points_earned"] += out.points_earned
            progress.advance(task, sum(len(g.rows) for g in chunk))
    result.details = details
