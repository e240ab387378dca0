"""Member import from a chain's old system: profiles, card numbers and opening points balances.

Every row is checked first (phone, duplicates inside the file, store, dates, points, card numbers held
by someone else) and rejected rows are reported with their reasons; good rows are written in chunks,
each chunk one transaction. Importing the same file again changes nothing:

* a member whose phone is already registered keeps their profile (a free card number is bound to them);
* the opening balance is an ``IMPORT_OPENING`` ledger entry with ``ref = "import-opening"``, unique per
  account, so it is applied at most once, also to members who registered at a till before the import.

Imported members get no ``member.registered`` events: they are history, not sign-ups to welcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit import service as audit
from onemember.auth.principal import system_principal
from onemember.common.counters import member_no_for, next_value
from onemember.common.crypto import get_cipher, mask
from onemember.common.types import EntryKind, IdentityKind, MemberStatus
from onemember.db import utcnow
from onemember.imports.batches import commit_chunk
from onemember.imports.fields import parse_date, parse_gender, parse_int, too_long
from onemember.imports.reader import FileProblem, Row, Sheet, read_table
from onemember.imports.result import ImportResult, Problem, progress_bar, write_report
from onemember.members.errors import InvalidIdentity
from onemember.members.models import Member, MemberIdentity
from onemember.members.service import normalize_identity
from onemember.org import service as org_service
from onemember.org.models import Store
from onemember.points import service as points
from onemember.points.models import PointAccount, PointEntry, PointLot, PointsProgram

OPENING_REF = "import-opening"
ACTOR = "import"
MAX_POINTS = 10**9

ALIASES: dict[str, tuple[str, ...]] = {
    "phone": ("mobile", "phone_number", "手机号", "手机", "手机号码"),
    "name": ("member_name", "姓名", "会员姓名"),
    "birthday": ("birth_date", "birthdate", "生日", "出生日期"),
    "gender": ("sex", "性别"),
    "card_no": ("card", "card_number", "会员卡号", "卡号"),
    "opening_points": ("points", "points_balance", "期初积分", "积分", "积分余额"),
    "store_code": ("store", "门店编码", "门店代码", "注册门店", "开卡门店"),
}
REQUIRED = ("phone",)


@dataclass
class MemberRow:
    row: int
    phone: str
    name: str
    birthday: date | None
    gender: str
    card: str | None
    points: int
    store_id: int | None


def validate_member_row(row: Row, stores: dict[str, int], today: date) -> MemberRow | list[Problem]:
    """The row's values, or every problem found in it."""
    v = row.values
    problems: list[Problem] = []
    phone = ""
    if not v["phone"]:
        problems.append(Problem("phone_missing", "缺少手机号", "Phone number is missing"))
    else:
        try:
            phone = normalize_identity(IdentityKind.PHONE, v["phone"])
        except InvalidIdentity as err:
            problems.append(Problem("phone_invalid", f"{err.zh}：{v['phone']}", f"{err.en}: {v['phone']}"))
    card: str | None = None
    if v["card_no"]:
        try:
            card = normalize_identity(IdentityKind.CARD, v["card_no"])
        except InvalidIdentity as err:
            problems.append(Problem("card_invalid", f"{err.zh}：{v['card_no']}", f"{err.en}: {v['card_no']}"))
    if len(v["name"]) > 120:
        problems.append(too_long("name", "姓名", 120))
    birthday: date | None = None
    if v["birthday"]:
        birthday = parse_date(v["birthday"])
        if birthday is None:
            problems.append(
                Problem(
                    "birthday_invalid",
                    f"生日格式无效：{v['birthday']}（应为 YYYY-MM-DD）",
                    f"Birthday is not a date (YYYY-MM-DD): {v['birthday']}",
                )
            )
        elif not date(1900, 1, 1) <= birthday <= today:
            problems.append(
                Problem(
                    "birthday_out_of_range",
                    f"生日不在合理范围内：{v['birthday']}",
                    f"Birthday is in the future or before 1900: {v['birthday']}",
                )
            )
    gender = parse_gender(v["gender"])
    if gender is None:
        problems.append(
            Problem(
                "gender_invalid",
                f"性别无效：{v['gender']}（可填 男/女/male/female）",
                f"Unknown gender (use male/female): {v['gender']}",
            )
        )
    points_value = 0
    if v["opening_points"]:
        parsed = parse_int(v["opening_points"])
        if parsed is None or parsed < 0 or parsed > MAX_POINTS:
            problems.append(
                Problem(
                    "points_invalid",
                    f"期初积分须为非负整数：{v['opening_points']}",
                    f"Opening points must be a whole number of 0 or more: {v['opening_points']}",
                )
            )
        else:
            points_value = parsed
    store_id: int | None = None
    if v["store_code"]:
        store_id = stores.get(v["store_code"])
        if store_id is None:
            problems.append(
                Problem(
                    "store_unknown", f"找不到门店 {v['store_code']}", f"No store with code {v['store_code']}"
                )
            )
    if problems:
        return problems
    return MemberRow(
        row.number, phone, v["name"], birthday, gender or "unknown", card, points_value, store_id
    )


@dataclass
class _Outcome:
    """What one chunk did; merged into the result only once its transaction has committed."""

    created: int = 0
    existing: int = 0
    rejected: list[tuple[int, Problem]] = field(default_factory=list)
    opening_entries: int = 0
    opening_points: int = 0
    opening_already: int = 0
    cards_bound: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.opening_entries or self.cards_bound)


def _identity(org_id: int, member_id: int, kind: str, value: str, at: datetime) -> dict[str, object]:
    cipher = get_cipher()
    return {
        "org_id": org_id,
        "member_id": member_id,
        "kind": kind,
        "value_enc": cipher.encrypt(value),
        "value_bidx": cipher.blind_index(kind, value),
        "value_masked": mask(kind, value),
        "created_at": at,
    }


def _holders(session: Session, org_id: int, kind: str, bidx: list[str]) -> dict[str, tuple[int, str]]:
    if not bidx:
        return {}
    rows = session.execute(
        select(MemberIdentity.value_bidx, Member.id, Member.member_no)
        .join(Member, Member.id == MemberIdentity.member_id)
        .where(
            MemberIdentity.org_id == org_id, MemberIdentity.kind == kind, MemberIdentity.value_bidx.in_(bidx)
        )
    ).all()
    return {b: (int(mid), no) for b, mid, no in rows}


def _apply_chunk(
    session: Session, org_id: int, program: PointsProgram, tz: str, rows: list[MemberRow], source: str
) -> _Outcome:
    out = _Outcome()
    cipher = get_cipher()
    phone_bidx = {r.row: cipher.blind_index(IdentityKind.PHONE, r.phone) for r in rows}
    card_bidx = {r.row: cipher.blind_index(IdentityKind.CARD, r.card) for r in rows if r.card}
    phones = _holders(session, org_id, IdentityKind.PHONE, list(phone_bidx.values()))
    cards = _holders(session, org_id, IdentityKind.CARD, list(card_bidx.values()))
    fresh: list[MemberRow] = []
    known: list[tuple[MemberRow, int, bool]] = []  # row, member id, whether its card is still free
    for r in rows:
        member = phones.get(phone_bidx[r.row])
        holder = cards.get(card_bidx[r.row]) if r.card else None
        if holder is not None and (member is None or holder[0] != member[0]):
            out.rejected.append(
                (
                    r.row,
                    Problem(
                        "card_taken",
                        f"会员卡号 {r.card} 已属于其他会员 {holder[1]}",
                        f"Card number {r.card} belongs to another member ({holder[1]})",
                    ),
                )
            )
        elif member is None:
            fresh.append(r)
        else:
            known.append((r, member[0], bool(r.card) and holder is None))
    now = utcnow()
    # Opening balances are points like any other: they expire as the program says, counted from today.
    expires_at = points.expiry_of(program, now, tz)
    reason = f"导入期初积分 opening balance imported from {source}"
    actor = f"system:{ACTOR}"
    if fresh:
        last = next_value(session, org_id, "member_no", len(fresh))
        member_ids = list(
            session.scalars(
                insert(Member).returning(Member.id, sort_by_parameter_order=True),
                [
                    {
                        "org_id": org_id,
                        "member_no": member_no_for(last - len(fresh) + 1 + i),
                        "name": r.name,
                        "gender": r.gender,
                        "birthday": r.birthday,
                        "channel": "import",
                        "registered_store_id": r.store_id,
                        "status": str(MemberStatus.ACTIVE),
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i, r in enumerate(fresh)
                ],
            )
        )
        identities = []
        for r, member_id in zip(fresh, member_ids, strict=True):
            identities.append(_identity(org_id, member_id, IdentityKind.PHONE, r.phone, now))
            if r.card:
                identities.append(_identity(org_id, member_id, IdentityKind.CARD, r.card, now))
        session.execute(insert(MemberIdentity), identities)
        account_ids = list(
            session.scalars(
                insert(PointAccount).returning(PointAccount.id, sort_by_parameter_order=True),
                [
                    {
                        "org_id": org_id,
                        "member_id": member_id,
                        "program_id": program.id,
                        "balance": r.points,
                        "debt": 0,
                        "lifetime_earned": 0,
                        "lifetime_redeemed": 0,
                        "updated_at": now,
                    }
                    for r, member_id in zip(fresh, member_ids, strict=True)
                ],
            )
        )
        # New accounts start at zero, so the opening entry and its lot are written directly.
        opening = [(r, m, a) for r, m, a in zip(fresh, member_ids, account_ids, strict=True) if r.points]
        if opening:
            entry_ids = list(
                session.scalars(
                    insert(PointEntry).returning(PointEntry.id, sort_by_parameter_order=True),
                    [
                        {
                            "org_id": org_id,
                            "account_id": a,
                            "member_id": m,
                            "kind": str(EntryKind.IMPORT_OPENING),
                            "amount": r.points,
                            "debt_change": 0,
                            "balance_after": r.points,
                            "debt_after": 0,
                            "store_id": r.store_id,
                            "ref": OPENING_REF,
                            "reason": reason,
                            "actor": actor,
                            "created_at": now,
                        }
                        for r, m, a in opening
                    ],
                )
            )
            session.execute(
                insert(PointLot),
                [
                    {
                        "org_id": org_id,
                        "account_id": a,
                        "member_id": m,
                        "entry_id": e,
                        "amount": r.points,
                        "remaining": r.points,
                        "store_id": r.store_id,
                        "earned_at": now,
                        "available_at": now,
                        "expires_at": expires_at,
                    }
                    for (r, m, a), e in zip(opening, entry_ids, strict=True)
                ],
            )
            out.opening_entries += len(opening)
            out.opening_points += sum(r.points for r, _, _ in opening)
        out.created = len(fresh)
    for r, member_id, card_free in known:
        out.existing += 1
        if card_free and r.card:
            session.add(MemberIdentity(**_identity(org_id, member_id, IdentityKind.CARD, r.card, now)))
            out.cards_bound += 1
        if r.points:
            account = points.ensure_account(session, org_id, member_id, program.id)
            applied = session.scalar(
                select(PointEntry.id).where(
                    PointEntry.account_id == account.id, PointEntry.ref == OPENING_REF
                )
            )
            if applied is not None:
                out.opening_already += 1
                continue
            account = points.lock_account(session, account.id)
            ctx = points.EntryContext(
                store_id=r.store_id, reason=reason, actor=actor, ref=OPENING_REF, at=now
            )
            points.earn(session, account, r.points, ctx, kind=EntryKind.IMPORT_OPENING, expires_at=expires_at)
            out.opening_entries += 1
            out.opening_points += r.points
    session.flush()
    if out.changed:
        audit.record(
            session,
            system_principal(org_id, ACTOR),
            "import.members",
            target_type="file",
            target_id=source,
            details={
                "created": out.created,
                "existing": out.existing,
                "opening_entries": out.opening_entries,
                "opening_points": out.opening_points,
                "cards_bound": out.cards_bound,
            },
        )
    return out


def import_members_file(
    factory: sessionmaker[Session],
    org_id: int,
    path: Path,
    *,
    console: Console | None = None,
    report_path: Path | None = None,
    chunk_size: int = 1000,
) -> ImportResult:
    """Import members from a CSV or XLSX file; returns counts and the rejected rows with reasons."""
    result = ImportResult("members", path, report_path=report_path)
    sheet: Sheet | None = None
    try:
        sheet = read_table(path, ALIASES, REQUIRED)
    except FileProblem as err:
        result.reject(1, [Problem(err.code, err.zh, err.en)])
    if sheet is not None:
        result.rows = len(sheet.rows)
        _import(factory, org_id, path.name, sheet, result, console, chunk_size)
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
    chunk_size: int,
) -> None:
    with factory() as session:
        org = org_service.get_org(session, org_id)
        stores = {
            code: int(sid)
            for code, sid in session.execute(select(Store.code, Store.id).where(Store.org_id == org_id)).all()
        }
        program = points.default_program(session, org_id)
        session.expunge(program)
    today = datetime.now(ZoneInfo(org.timezone)).date()
    good: list[MemberRow] = []
    seen_phone: dict[str, int] = {}
    seen_card: dict[str, int] = {}
    for row in sheet.rows:
        checked = validate_member_row(row, stores, today)
        if isinstance(checked, list):
            result.reject(row.number, checked)
            continue
        problems = []
        first = seen_phone.setdefault(checked.phone, row.number)
        if first != row.number:
            problems.append(
                Problem("phone_duplicate", f"手机号与第 {first} 行重复", f"Same phone number as row {first}")
            )
        if checked.card:
            first_card = seen_card.setdefault(checked.card, row.number)
            if first_card != row.number:
                problems.append(
                    Problem(
                        "card_duplicate",
                        f"会员卡号与第 {first_card} 行重复",
                        f"Same card number as row {first_card}",
                    )
                )
        if problems:
            result.reject(row.number, problems)
        else:
            good.append(checked)
    details = {"opening_entries": 0, "opening_points": 0, "opening_already_applied": 0, "cards_bound": 0}
    with (
        progress_bar(console, f"导入会员 importing members ({source})", len(sheet.rows)) as (progress, task),
        factory() as session,
    ):
        progress.advance(task, len(sheet.rows) - len(good))
        for start in range(0, len(good), chunk_size):
            chunk = good[start : start + chunk_size]
            out = commit_chunk(
                session, partial(_apply_chunk, session, org_id, program, org.timezone, chunk, source)
            )
            result.created += out.created
            result.existing += out.existing
            for number, problem in out.rejected:
                result.reject(number, [problem])
            details["opening_entries"] += out.opening_entries
            details["opening_points"] += out.opening_points
            details["opening_already_applied"] += out.opening_already
            details["cards_bound"] += out.cards_bound
            progress.advance(task, len(chunk))
    result.details = details
