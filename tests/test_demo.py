"""The demo chain is written the way the real checkout writes: orders, ledger, lots and stats agree."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from onemember.auth import service as auth_service
from onemember.auth.principal import system_principal
from onemember.cli import app
from onemember.common.counters import member_no_for
from onemember.common.crypto import get_cipher
from onemember.common.types import EntryKind
from onemember.demo import generate
from onemember.events.models import Event
from onemember.members import service as members
from onemember.members.models import Member, MemberIdentity
from onemember.orders.models import Order, OrderLine, OrderPayment
from onemember.org.models import Staff, Store
from onemember.points import service as points_service
from onemember.points.models import PointAccount, PointEntry, PointLot, PointLotMovement
from onemember.points.verify import verify
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from onemember.settlement.verify import verify_settlement
from onemember.tiers.models import MemberMonthlyStats


def _assert_consistent(s: Session, org_id: int) -> None:
    orders = list(
        s.execute(
            select(
                Order.id,
                Order.member_id,
                Order.store_id,
                Order.total_fen,
                Order.points_redeemed,
                Order.points_value_fen,
                Order.paid_fen,
                Order.points_earned,
                Order.occurred_at,
            ).where(Order.org_id == org_id)
        )
    )
    lines: dict[int, list[tuple[str, int, int, int, int, int]]] = defaultdict(list)
    for order_id, category, qty, amount, paid, redeemed, earned in s.execute(
        select(
            OrderLine.order_id,
            OrderLine.category,
            OrderLine.quantity,
            OrderLine.amount_fen,
            OrderLine.paid_fen,
            OrderLine.points_redeemed,
            OrderLine.points_earned,
        ).where(OrderLine.org_id == org_id)
    ):
        lines[order_id].append((category, qty, amount, paid, redeemed, earned))
    paid_by_order: dict[int, int] = defaultdict(int)
    for order_id, amount in s.execute(
        select(OrderPayment.order_id, OrderPayment.amount_fen).where(OrderPayment.org_id == org_id)
    ):
        paid_by_order[order_id] += amount
    entries: dict[tuple[int, str], int] = defaultdict(int)
    for entry_order_id, kind, amount in s.execute(
        select(PointEntry.order_id, PointEntry.kind, PointEntry.amount).where(
            PointEntry.org_id == org_id, PointEntry.order_id.is_not(None)
        )
    ):
        assert entry_order_id is not None
        entries[(entry_order_id, kind)] += amount

    expect_stats: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    expect_store: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    expect_cat: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for order_id, member_id, store_id, total, redeemed, value, paid, earned, _at in orders:
        ls = lines[order_id]
        assert ls, "every order has lines"
        assert total == sum(line[2] for line in ls)
        assert paid == total - value == sum(line[3] for line in ls) == paid_by_order[order_id]
        assert redeemed == sum(line[4] for line in ls)
        assert earned == sum(line[5] for line in ls)
        assert entries.get((order_id, EntryKind.EARN), 0) == earned
        assert entries.get((order_id, EntryKind.REDEEM), 0) == -redeemed
        if member_id is None:
            assert earned == redeemed == 0
            continue
        expect_stats[member_id][0] += 1
        expect_stats[member_id][1] += total
        expect_store[(member_id, store_id)][0] += 1
        expect_store[(member_id, store_id)][1] += total
        seen: set[str] = set()
        for category, qty, amount, *_ in ls:
            key = (member_id, category)
            if category not in seen:
                expect_cat[key][0] += 1
                seen.add(category)
            expect_cat[key][1] += qty
            expect_cat[key][2] += amount

    stats = {
        m: [n, spend]
        for m, n, spend in s.execute(
            select(MemberStats.member_id, MemberStats.order_count, MemberStats.total_spend_fen).where(
                MemberStats.org_id == org_id
            )
        )
    }
    assert stats == dict(expect_stats)
    store_stats = {
        (m, st): [n, spend]
        for m, st, n, spend in s.execute(
            select(
                MemberStoreStats.member_id,
                MemberStoreStats.store_id,
                MemberStoreStats.order_count,
                MemberStoreStats.spend_fen,
            ).where(MemberStoreStats.org_id == org_id)
        )
    }
    assert store_stats == dict(expect_store)
    store_counts = {
        m: n
        for m, n in s.execute(
            select(MemberStats.member_id, MemberStats.store_count).where(MemberStats.org_id == org_id)
        )
    }
    per_member_stores: dict[int, int] = defaultdict(int)
    for member_id, _store in expect_store:
        per_member_stores[member_id] += 1
    assert store_counts == dict(per_member_stores)
    cat_stats = {
        (m, c): [n, q, spend]
        for m, c, n, q, spend in s.execute(
            select(
                MemberCategoryStats.member_id,
                MemberCategoryStats.category,
                MemberCategoryStats.order_count,
                MemberCategoryStats.quantity,
                MemberCategoryStats.spend_fen,
            ).where(MemberCategoryStats.org_id == org_id)
        )
    }
    assert cat_stats == dict(expect_cat)

    # Cached account totals agree with the ledger; a lot's movements explain its remainder.
    for account in s.scalars(select(PointAccount).where(PointAccount.org_id == org_id)):
        earned_sum = s.scalar(
            select(func.coalesce(func.sum(PointEntry.amount), 0)).where(
                PointEntry.account_id == account.id, PointEntry.kind == EntryKind.EARN
            )
        )
        redeemed_sum = s.scalar(
            select(func.coalesce(func.sum(PointEntry.amount), 0)).where(
                PointEntry.account_id == account.id, PointEntry.kind == EntryKind.REDEEM
            )
        )
        assert (account.lifetime_earned, account.lifetime_redeemed, account.debt) == (
            earned_sum,
            -(redeemed_sum or 0),
            0,
        )
    # Growth value (成长值) per order, per line and in its own ledger; monthly stats for tier bases.
    growth_orders: dict[int, int] = defaultdict(int)
    for member_id, growth in s.execute(
        select(Order.member_id, Order.growth_earned).where(
            Order.org_id == org_id, Order.member_id.is_not(None)
        )
    ):
        assert member_id is not None
        growth_orders[member_id] += growth
    line_growth = s.scalar(
        select(func.coalesce(func.sum(OrderLine.growth_earned), 0)).where(OrderLine.org_id == org_id)
    )
    accounts = {
        m: g
        for m, g in s.execute(
            select(PointAccount.member_id, PointAccount.growth_value).where(PointAccount.org_id == org_id)
        )
        if g
    }
    assert accounts == {m: g for m, g in growth_orders.items() if g}
    assert line_growth == sum(growth_orders.values())
    tz = ZoneInfo("Asia/Shanghai")
    expect_months: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for _id, member_id, _store, total, *_rest, at in orders:
        if member_id is not None:
            local = at.astimezone(tz)
            expect_months[(member_id, local.year * 100 + local.month)][0] += 1
            expect_months[(member_id, local.year * 100 + local.month)][1] += total
    months = {
        (m, month): [n, spend]
        for m, month, n, spend in s.execute(
            select(
                MemberMonthlyStats.member_id,
                MemberMonthlyStats.month,
                MemberMonthlyStats.orders,
                MemberMonthlyStats.spend_fen,
            ).where(MemberMonthlyStats.org_id == org_id)
        )
    }
    assert months == dict(expect_months)
    # Lots expire as the program says (the demo program: 次年年底清零).
    program = points_service.default_program(s, org_id)
    assert (program.expiry_policy, program.expiry_fixed_month, program.expiry_fixed_day) == (
        "fixed_yearly",
        12,
        31,
    )
    for earned_at, expires_at in s.execute(
        select(PointLot.earned_at, PointLot.expires_at).where(PointLot.org_id == org_id).limit(200)
    ):
        assert expires_at == points_service.expiry_of(program, earned_at, "Asia/Shanghai")
    # Points redeemed at one store but issued by another are settled between them, as checkout does.
    settled = verify_settlement(s, org_id)
    assert settled.ok, settled.problems[:5]
    cross = 0
    for entry_id, redeem_store in s.execute(
        select(PointEntry.id, PointEntry.store_id).where(
            PointEntry.org_id == org_id, PointEntry.kind == EntryKind.REDEEM
        )
    ):
        issuers = set(
            s.scalars(
                select(PointLot.store_id)
                .join(PointLotMovement, PointLotMovement.lot_id == PointLot.id)
                .where(PointLotMovement.entry_id == entry_id)
            )
        )
        cross += bool(issuers - {redeem_store})
    assert settled.sources == cross
    report = verify(s, org_id)
    assert report.ok, report.problems[:5]


def test_demo_chain_is_consistent_and_realistic(factory: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    result = generate(factory, org_code="demo-small", members=200, stores=4, days=60, seed=11, console=None)

    assert result.store_codes == ["SH01", "HZ01", "BJ01", "NJ01"]
    assert (result.brands, result.members) == (2, 200)
    assert result.member_orders > 200
    assert result.multi_store_members > 0
    assert "demo-small" in result.summary()
    with factory() as s:
        org_id = result.org_id
        _assert_consistent(s, org_id)
        stores = {
            code: (city, brand)
            for code, city, brand in s.execute(
                select(Store.code, Store.city, Store.brand_id).where(Store.org_id == org_id)
            )
        }
        assert [stores[c][0] for c in ("SH01", "HZ01", "BJ01", "NJ01")] == ["上海", "杭州", "北京", "南京"]
        assert len({brand for _, brand in stores.values()}) == 2
        multi = s.scalar(
            select(func.count())
            .select_from(MemberStats)
            .where(MemberStats.org_id == org_id, MemberStats.store_count > 1)
        )
        assert multi == result.multi_store_members > 0
        # History lies within the window and never in the future.
        first, last = s.execute(
            select(func.min(Order.occurred_at), func.max(Order.occurred_at)).where(Order.org_id == org_id)
        ).one()
        assert now - timedelta(days=61) <= first
        assert last <= datetime.now(UTC)
        # Members: unique numbers from the org's counter, phones encrypted with a blind index and masked.
        numbers = list(s.scalars(select(Member.member_no).where(Member.org_id == org_id).order_by(Member.id)))
        assert numbers == [member_no_for(i) for i in range(1, 201)]
        phones = list(
            s.execute(
                select(
                    MemberIdentity.value_enc, MemberIdentity.value_bidx, MemberIdentity.value_masked
                ).where(MemberIdentity.org_id == org_id, MemberIdentity.kind == "phone")
            )
        )
        assert len(phones) == 200
        cipher = get_cipher()
        plain = [cipher.decrypt(enc) for enc, _, _ in phones]
        assert len(set(plain)) == 200
        for phone, (_, bidx, masked) in zip(plain, phones, strict=True):
            assert members.normalize_identity("phone", phone) == phone
            assert bidx == cipher.blind_index("phone", phone)
            assert masked == f"{phone[:3]}****{phone[7:]}"
        assert members.find_by_identity(s, org_id, "phone", plain[0]) is not None
        assert s.scalar(select(func.count()).select_from(Event).where(Event.org_id == org_id)) == 0
        # Staff: HQ, per-store manager and clerk, regional managers, customer service, auditor.
        usernames = set(s.scalars(select(Staff.username).where(Staff.org_id == org_id)))
        assert {"admin", "cs", "auditor", "sh01_mgr", "sh01_clerk", "nj01_mgr", "life_east_mgr"} <= usernames
        _, _, staff = auth_service.login(s, "demo-small", "sh01_mgr", "onemember-store")
        assert (staff.role, staff.store_id) == (
            "store_manager",
            s.scalar(select(Store.id).where(Store.org_id == org_id, Store.code == "SH01")),
        )
        _, _, admin = auth_service.login(s, "demo-small", "admin", "onemember-admin")
        assert admin.role == "hq_admin"
        # Later registrations continue the counters and sequences.
        sh01 = s.scalar(select(Store.id).where(Store.org_id == org_id, Store.code == "SH01"))
        newcomer = members.register(
            s, system_principal(org_id), sh01, members.Registration(phone="19900000000")
        )
        assert newcomer.member_no == member_no_for(201)
        before_max = s.scalar(
            select(func.max(Member.id)).where(Member.org_id == org_id, Member.id != newcomer.id)
        )
        assert before_max is not None
        assert newcomer.id > before_max


def test_demo_expires_points_at_year_end(factory: sessionmaker[Session]) -> None:
    now = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    result = generate(
        factory, org_code="demo-expiry", members=150, stores=3, days=500, seed=3, console=None, now=now
    )
    assert result.points_expired > 0
    assert result.settlement_entries > 0
    with factory() as s:
        _assert_consistent(s, result.org_id)
        # Lots earned in 2024 (Asia/Shanghai) expired at the end of 2025 and are used up.
        moment = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
        open_expired = s.scalar(
            select(func.count())
            .select_from(PointLot)
            .where(PointLot.org_id == result.org_id, PointLot.expires_at <= now, PointLot.remaining > 0)
        )
        assert open_expired == 0
        expired = s.scalar(
            select(func.coalesce(func.sum(PointEntry.amount), 0)).where(
                PointEntry.org_id == result.org_id,
                PointEntry.kind == EntryKind.EXPIRE,
                PointEntry.created_at == moment,
            )
        )
        assert expired == -result.points_expired
        moved = s.scalar(
            select(func.coalesce(func.sum(PointLotMovement.amount), 0))
            .join(PointEntry, PointEntry.id == PointLotMovement.entry_id)
            .where(PointEntry.org_id == result.org_id, PointEntry.kind == EntryKind.EXPIRE)
        )
        assert moved == -result.points_expired


def test_demo_members_only(factory: sessionmaker[Session]) -> None:
    result = generate(factory, org_code="demo-lookup", members=300, stores=2, days=0, seed=5, console=None)
    assert (result.members, result.member_orders, result.walk_in_orders) == (300, 0, 0)
    with factory() as s:
        org_id = result.org_id
        assert s.scalar(select(func.count()).select_from(Member).where(Member.org_id == org_id)) == 300
        assert (
            s.scalar(select(func.count()).select_from(PointAccount).where(PointAccount.org_id == org_id))
            == 300
        )
        assert s.scalar(select(func.count()).select_from(Order).where(Order.org_id == org_id)) == 0
        assert verify(s, org_id).ok


def test_cli_demo_then_imports(tmp_path: Path) -> None:
    """The operator's path: load a demo chain, import members and orders into it, verify."""
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    loaded = runner.invoke(
        app, ["demo", "--members", "60", "--stores", "2", "--days", "30", "--org", "clidemo"]
    )
    assert loaded.exit_code == 0, loaded.output
    assert "sh01_mgr" in loaded.output
    skipped = runner.invoke(app, ["demo", "--if-empty", "--org", "clidemo2"])
    assert "demo data not loaded" in skipped.output

    members_csv = tmp_path / "members.csv"
    members_csv.write_text(
        "phone,name,opening_points,store_code\n13312345678,林一,100,SH01\n13312345679,林二,5,XX01\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.csv"
    imported = runner.invoke(
        app, ["import", "members", str(members_csv), "--org", "clidemo", "--report", str(report)]
    )
    assert imported.exit_code == 3, imported.output  # a row was rejected
    assert "XX01" in report.read_text(encoding="utf-8-sig")
    orders_csv = tmp_path / "orders.csv"
    orders_csv.write_text(
        "order_ref,store_code,phone,occurred_at,sku,name,category,quantity,unit_price_fen\n"
        "OLD-1,SH01,13312345678,2024-12-01 10:00:00,6920006000017,伊利安慕希酸奶,食品,2,6590\n",
        encoding="utf-8",
    )
    orders = runner.invoke(app, ["import", "orders", str(orders_csv), "--org", "clidemo"])
    assert orders.exit_code == 0, orders.output
    assert runner.invoke(app, ["verify", "--org", "clidemo"]).exit_code == 0
