"""Imports from an old system: validation report with exact reasons, idempotent re-runs, ledger intact."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.auth.principal import system_principal
from onemember.common.types import EntryKind
from onemember.imports import import_members_file, import_orders_file
from onemember.members import service as members
from onemember.members.models import Member, MemberIdentity
from onemember.orders.models import Order, OrderLine, OrderPayment
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.points.verify import verify
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from onemember.tiers.models import MemberMonthlyStats
from tests.factories import Chain

DATA = Path(__file__).parent / "data"

PHONE_INVALID_ZH = "手机号格式无效（需为 11 位中国大陆手机号）"
PHONE_INVALID_EN = "Not a valid mainland China mobile number (11 digits)"


def _register(factory: sessionmaker[Session], chain: Chain, phone: str, store: str = "A", **ids: str) -> str:
    with factory() as s:
        m = members.register(
            s,
            system_principal(chain.org_id),
            chain.stores[store],
            members.Registration(phone=phone, name="老会员", identities=ids or None),
        )
        s.commit()
        return m.member_no


def _member(s: Session, chain: Chain, phone: str) -> Member:
    found = members.find_by_identity(s, chain.org_id, "phone", phone)
    assert found is not None
    return found


def _account(s: Session, member_id: int) -> PointAccount:
    account = s.scalar(select(PointAccount).where(PointAccount.member_id == member_id))
    assert account is not None
    return account


def _counts(s: Session, org_id: int) -> dict[str, int]:
    tables: list[Any] = [
        Member,
        MemberIdentity,
        PointAccount,
        PointEntry,
        PointLot,
        Order,
        OrderLine,
        OrderPayment,
        MemberStats,
        MemberStoreStats,
        MemberCategoryStats,
        AuditLog,
    ]
    counts = {
        str(t.__tablename__): s.scalar(select(func.count()).select_from(t).where(t.org_id == org_id)) or 0
        for t in tables
    }
    counts["points"] = (
        s.scalar(
            select(func.coalesce(func.sum(PointAccount.balance), 0)).where(PointAccount.org_id == org_id)
        )
        or 0
    )
    counts["spend"] = (
        s.scalar(
            select(func.coalesce(func.sum(MemberStats.total_spend_fen), 0)).where(
                MemberStats.org_id == org_id
            )
        )
        or 0
    )
    return counts


def _report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_import_members_validates_reports_and_is_idempotent(
    factory: sessionmaker[Session], chain: Chain, tmp_path: Path
) -> None:
    holder_no = _register(factory, chain, "13900000000", "B", card="YX9999")
    report_path = tmp_path / "report.csv"

    result = import_members_file(
        factory, chain.org_id, DATA / "members_import.csv", console=None, report_path=report_path
    )

    assert (result.rows, result.created, result.existing) == (13, 4, 1)
    assert result.details == {
        "opening_entries": 3,
        "opening_points": 2050,
        "opening_already_applied": 0,
        "cards_bound": 1,
    }
    assert [(r.row, r.codes) for r in result.rejected] == [
        (6, ("phone_invalid",)),
        (7, ("phone_duplicate",)),
        (8, ("birthday_invalid",)),
        (9, ("points_invalid",)),
        (10, ("points_invalid", "store_unknown")),
        (11, ("card_duplicate",)),
        (12, ("card_taken",)),
        (13, ("gender_invalid",)),
    ]
    reasons = {r.row: (r.zh, r.en) for r in result.rejected}
    assert reasons[6] == (f"{PHONE_INVALID_ZH}：12345", f"{PHONE_INVALID_EN}: 12345")
    assert reasons[7] == ("手机号与第 2 行重复", "Same phone number as row 2")
    assert reasons[8] == (
        "生日格式无效：1990-02-30（应为 YYYY-MM-DD）",
        "Birthday is not a date (YYYY-MM-DD): 1990-02-30",
    )
    assert reasons[9] == (
        "期初积分须为非负整数：-5",
        "Opening points must be a whole number of 0 or more: -5",
    )
    assert reasons[10] == (
        "期初积分须为非负整数：12.5；找不到门店 Z9",
        "Opening points must be a whole number of 0 or more: 12.5; No store with code Z9",
    )
    assert reasons[11] == ("会员卡号与第 2 行重复", "Same card number as row 2")
    assert reasons[12] == (
        f"会员卡号 YX9999 已属于其他会员 {holder_no}",
        f"Card number YX9999 belongs to another member ({holder_no})",
    )
    assert reasons[13] == ("性别无效：x（可填 男/女/male/female）", "Unknown gender (use male/female): x")

    report = _report(report_path)
    assert [row["row"] for row in report] == ["6", "7", "8", "9", "10", "11", "12", "13"]
    assert report[4]["codes"] == "points_invalid store_unknown"
    assert report[4]["reason_zh"] == "期初积分须为非负整数：12.5；找不到门店 Z9"
    assert report[0]["phone"] == "12345"  # the row as given follows the reasons
    assert report[6]["card_no"] == "YX9999"

    with factory() as s:
        wang = _member(s, chain, "13800000001")
        assert (wang.name, wang.birthday, wang.gender, wang.channel) == (
            "王芳",
            date(1988, 3, 12),
            "female",
            "import",
        )
        assert wang.registered_store_id == chain.stores["A"]
        assert members.find_by_identity(s, chain.org_id, "card", "YX0000000001") is not None
        zhang = _member(s, chain, "13800000003")  # "+86 138-0000-0003" normalised
        assert members.find_by_identity(s, chain.org_id, "card", "YX0000000003").id == zhang.id  # type: ignore[union-attr]
        liu = _member(s, chain, "13800000004")
        assert (liu.birthday, liu.gender, liu.registered_store_id) == (None, "unknown", None)
        assert members.masked_phone(s, wang.id) == "138****0001"
        assert (_account(s, wang.id).balance, _account(s, zhang.id).balance) == (1200, 350)
        assert _account(s, liu.id).balance == 0
        entry = s.scalar(select(PointEntry).where(PointEntry.member_id == wang.id))
        assert entry is not None
        assert (entry.kind, entry.amount, entry.balance_after, entry.ref, entry.store_id) == (
            EntryKind.IMPORT_OPENING,
            1200,
            1200,
            "import-opening",
            chain.stores["A"],
        )
        lot = s.scalar(select(PointLot).where(PointLot.entry_id == entry.id))
        assert lot is not None
        assert (lot.amount, lot.remaining, lot.expires_at) == (1200, 1200, None)
        # The member who registered at a till before the import keeps their profile and gets the opening.
        holder = _member(s, chain, "13900000000")
        assert (holder.member_no, holder.name, holder.channel) == (holder_no, "老会员", "pos")
        assert _account(s, holder.id).balance == 500
        assert members.find_by_identity(s, chain.org_id, "card", "YX8888").id == holder.id  # type: ignore[union-attr]
        # Member numbers continue the org's counter.
        numbers = sorted(s.scalars(select(Member.member_no).where(Member.org_id == chain.org_id)))
        assert len(numbers) == len(set(numbers)) == 5
        assert verify(s, chain.org_id).ok
        before = _counts(s, chain.org_id)

    again = import_members_file(
        factory, chain.org_id, DATA / "members_import.csv", console=None, report_path=report_path
    )
    assert (again.created, again.existing) == (0, 5)
    assert again.details == {
        "opening_entries": 0,
        "opening_points": 0,
        "opening_already_applied": 3,
        "cards_bound": 0,
    }
    assert [(r.row, r.codes) for r in again.rejected] == [(r.row, r.codes) for r in result.rejected]
    with factory() as s:
        assert _counts(s, chain.org_id) == before
        assert verify(s, chain.org_id).ok
        registered = members.register(
            s, system_principal(chain.org_id), chain.stores["A"], members.Registration(phone="13600000000")
        )
        assert registered.member_no not in numbers


def test_import_members_xlsx_with_chinese_headers_and_spreadsheet_cells(
    factory: sessionmaker[Session], chain: Chain, tmp_path: Path
) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["手机号", "姓名", "生日", "性别", "会员卡号", "期初积分", "门店编码"])
    sheet.append([13700000001, "钱多多", datetime(1990, 5, 17), "女", None, 88.0, "B"])  # noqa: DTZ001
    sheet.append(["13700000002", "孙小美", "1993/02/01", "2", "CARD-77", "1,000", "C"])
    sheet.append([None, None, None, None, None, None, None])
    sheet.append(["137000000", "短号", None, None, None, None, "A"])
    path = tmp_path / "members.xlsx"
    book.save(path)

    result = import_members_file(factory, chain.org_id, path, console=None, report_path=None)

    assert (result.rows, result.created, result.existing) == (3, 2, 0)
    assert [(r.row, r.codes) for r in result.rejected] == [(5, ("phone_invalid",))]
    with factory() as s:
        qian = _member(s, chain, "13700000001")
        assert (qian.birthday, qian.gender, _account(s, qian.id).balance) == (date(1990, 5, 17), "female", 88)
        sun = _member(s, chain, "13700000002")
        assert (sun.birthday, sun.gender, _account(s, sun.id).balance) == (date(1993, 2, 1), "female", 1000)
        assert members.find_by_identity(s, chain.org_id, "card", "CARD-77").id == sun.id  # type: ignore[union-attr]
        assert verify(s, chain.org_id).ok


def test_import_members_missing_column_rejects_the_file(
    factory: sessionmaker[Session], chain: Chain, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,birthday\n王五,1990-01-01\n", encoding="utf-8")
    with factory() as s:
        before = _counts(s, chain.org_id)
    result = import_members_file(factory, chain.org_id, path, console=None, report_path=tmp_path / "r.csv")
    assert result.created == 0
    assert [(r.row, r.codes, r.zh, r.en) for r in result.rejected] == [
        (1, ("import.missing_columns",), "缺少必需的列：phone", "Required column(s) missing: phone")
    ]
    with factory() as s:
        assert _counts(s, chain.org_id) == before


def test_import_members_reads_gb18030_csv(
    factory: sessionmaker[Session], chain: Chain, tmp_path: Path
) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("手机号,姓名,期初积分\n13500000001,欧阳娜娜,20\n".encode("gb18030"))
    result = import_members_file(factory, chain.org_id, path, console=None, report_path=None)
    assert (result.created, result.rejected) == (1, [])
    with factory() as s:
        assert _member(s, chain, "13500000001").name == "欧阳娜娜"


def _order_members(factory: sessionmaker[Session], chain: Chain) -> dict[str, str]:
    """Member 000000018 (the first of the org, named by number in the file) and two by phone."""
    numbers = {"first": _register(factory, chain, "13700000000")}
    assert numbers["first"] == "000000018"
    numbers["wang"] = _register(factory, chain, "13800000001")
    numbers["li"] = _register(factory, chain, "13800000002", "B")
    return numbers


def test_import_orders_groups_lines_reports_bad_orders_and_is_idempotent(
    factory: sessionmaker[Session], chain: Chain, tmp_path: Path
) -> None:
    _order_members(factory, chain)
    report_path = tmp_path / "orders-report.csv"

    result = import_orders_file(
        factory, chain.org_id, DATA / "orders_import.csv", console=None, report_path=report_path
    )

    assert (result.rows, result.created, result.existing) == (14, 4, 0)
    assert result.details == {"lines": 5, "member_orders": 3, "walk_in_orders": 1, "points_earned": 0}
    assert [(r.row, r.codes) for r in result.rejected] == [
        (7, ("order_has_bad_rows",)),
        (8, ("quantity_invalid",)),
        (9, ("store_unknown",)),
        (10, ("member_not_found",)),
        (11, ("occurred_invalid",)),
        (12, ("order_has_bad_rows",)),
        (13, ("order_inconsistent",)),
        (14, ("occurred_future",)),
        (15, ("price_invalid",)),
    ]
    reasons = {r.row: (r.zh, r.en) for r in result.rejected}
    assert reasons[7] == (
        "订单 R1004 的其他行有错误，整单未导入",
        "Another row of order R1004 is invalid; the whole order was left out",
    )
    assert reasons[8] == ("数量须为正整数：0", "quantity must be a whole number of 1 or more: 0")
    assert reasons[9] == ("找不到门店 Z", "No store with code Z")
    assert reasons[10] == ("找不到手机号为 138****2222 的会员", "No member with phone 138****2222")
    assert reasons[11] == (
        "下单时间格式无效：2025-13-01 11:00:00（应为 ISO 格式，如 2025-03-01 14:30:00）",
        "occurred_at is not an ISO date-time (e.g. 2025-03-01 14:30:00): 2025-13-01 11:00:00",
    )
    assert reasons[13] == (
        "与第 12 行同属订单 R1008，但会员或下单时间不一致",
        "Same order R1008 as row 12, but a different member or time",
    )
    assert reasons[14] == (
        "下单时间晚于当前时间：2099-01-01 10:00:00",
        "occurred_at is in the future: 2099-01-01 10:00:00",
    )
    assert reasons[15] == (
        "单价（分）须为非负整数：12.5",
        "unit_price_fen must be a whole number of fen, 0 or more: 12.5",
    )
    assert [row["row"] for row in _report(report_path)] == ["7", "8", "9", "10", "11", "12", "13", "14", "15"]

    with factory() as s:
        orders = {
            (o.client_order_id, o.store_id): o
            for o in s.scalars(select(Order).where(Order.org_id == chain.org_id))
        }
        assert set(orders) == {
            ("R1001", chain.stores["A"]),
            ("R1002", chain.stores["B"]),
            ("R1003", chain.stores["A"]),
            ("R1001", chain.stores["B"]),
        }
        r1001 = orders[("R1001", chain.stores["A"])]
        wang = _member(s, chain, "13800000001")
        assert (r1001.member_id, r1001.source, r1001.total_fen, r1001.paid_fen, r1001.points_earned) == (
            wang.id,
            "import",
            60190,
            60190,
            0,
        )
        assert r1001.occurred_at == datetime(2025, 3, 1, 2, 15, tzinfo=UTC)  # naive means Asia/Shanghai
        assert r1001.order_no.startswith("S250301")
        lines = list(
            s.scalars(select(OrderLine).where(OrderLine.order_id == r1001.id).order_by(OrderLine.line_no))
        )
        assert [(ln.sku, ln.quantity, ln.amount_fen, ln.category) for ln in lines] == [
            ("6920001000011", 2, 53600, "母婴"),
            ("6920006000017", 1, 6590, "食品"),
        ]
        payments = list(s.scalars(select(OrderPayment).where(OrderPayment.order_id == r1001.id)))
        assert [(p.method, p.amount_fen) for p in payments] == [("import", 60190)]
        r1002 = orders[("R1002", chain.stores["B"])]
        assert r1002.member_id == s.scalar(
            select(Member.id).where(Member.member_no == "000000018", Member.org_id == chain.org_id)
        )
        assert r1002.occurred_at == datetime(2025, 3, 2, 10, 30, tzinfo=UTC)
        assert orders[("R1003", chain.stores["A"])].member_id is None
        stats = s.get(MemberStats, wang.id)
        assert stats is not None
        assert (stats.order_count, stats.total_spend_fen, stats.store_count) == (1, 60190, 1)
        assert stats.first_purchase_at == stats.last_purchase_at == r1001.occurred_at
        cats = {
            c.category: (c.order_count, c.quantity, c.spend_fen)
            for c in s.scalars(select(MemberCategoryStats).where(MemberCategoryStats.member_id == wang.id))
        }
        assert cats == {"母婴": (1, 2, 53600), "食品": (1, 1, 6590)}
        month = s.get(MemberMonthlyStats, (wang.id, 202503))  # tier bases read the local month
        assert month is not None
        assert (month.orders, month.spend_fen) == (1, 60190)
        assert (r1001.growth_earned, _account(s, wang.id).growth_value) == (0, 0)
        li = _member(s, chain, "13800000002")
        li_stats = s.get(MemberStats, li.id)
        assert li_stats is not None
        assert (li_stats.order_count, li_stats.total_spend_fen) == (1, 12900)
        assert (
            s.scalar(select(func.count()).select_from(PointEntry).where(PointEntry.org_id == chain.org_id))
            == 0
        )
        before = _counts(s, chain.org_id)

    again = import_orders_file(
        factory, chain.org_id, DATA / "orders_import.csv", console=None, report_path=None
    )
    assert (again.created, again.existing) == (0, 4)
    assert [r.row for r in again.rejected] == [r.row for r in result.rejected]
    with factory() as s:
        assert _counts(s, chain.org_id) == before
        assert verify(s, chain.org_id).ok


def test_import_orders_can_earn_points(factory: sessionmaker[Session], chain: Chain, tmp_path: Path) -> None:
    _order_members(factory, chain)
    result = import_orders_file(
        factory, chain.org_id, DATA / "orders_import.csv", console=None, report_path=None, earn_points=True
    )
    assert result.created == 4
    # Base rate 1 point per yuan paid, per line rounded down: 536 + 65, 259, 129 (the walk-in earns nothing).
    assert result.details["points_earned"] == 536 + 65 + 259 + 129
    with factory() as s:
        wang = _member(s, chain, "13800000001")
        assert _account(s, wang.id).balance == 601
        entry = s.scalar(select(PointEntry).where(PointEntry.member_id == wang.id))
        assert entry is not None
        assert (entry.kind, entry.amount, entry.created_at) == (
            EntryKind.EARN,
            601,
            datetime(2025, 3, 1, 2, 15, tzinfo=UTC),
        )
        order = s.scalar(select(Order).where(Order.member_id == wang.id))
        assert order is not None
        assert order.points_earned == 601
        assert order.earn_explanation[0]["points"] == 601
        assert order.earn_explanation[0]["rule"] == "base_rate"
        assert (order.growth_earned, _account(s, wang.id).growth_value) == (601, 601)
        assert verify(s, chain.org_id).ok
    again = import_orders_file(
        factory, chain.org_id, DATA / "orders_import.csv", console=None, report_path=None, earn_points=True
    )
    assert (again.created, again.details["points_earned"]) == (0, 0)
