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
from onemember.coupons.models import Coupon, CouponRedemption, CouponTemplate
from onemember.coupons.verify import verify_coupons
from onemember.db import utcnow
from onemember.demo import generate
from onemember.events.models import Event
from onemember.members import service as members
from onemember.members.models import Member, MemberIdentity
from onemember.orders.models import Order, OrderLine, OrderPayment, OrderReturn, ReturnLine
from onemember.org.models import Brand, Staff, Store
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.packages.verify import verify_packages
from onemember.points import service as points_service
from onemember.points.calculations import proportional_part
from onemember.points.models import PointAccount, PointEntry, PointLot, PointLotMovement
from onemember.points.verify import verify
from onemember.segments.models import MemberCategoryStats, MemberStats, MemberStoreStats
from onemember.settlement import service as settlement
from onemember.settlement.models import SettlementEntry
from onemember.settlement.verify import verify_settlement
from onemember.tiers.models import MemberMonthlyStats


def _lot_stores(s: Session, entry_id: int) -> set[int | None]:
    """The stores that issued the lots a point entry took points from or gave points back to."""
    return set(
        s.scalars(
            select(PointLot.store_id)
            .join(PointLotMovement, PointLotMovement.lot_id == PointLot.id)
            .where(PointLotMovement.entry_id == entry_id)
        )
    )


def _assert_consistent(s: Session, org_id: int) -> None:
    """Orders, lines, payments, ledger, growth, running stats and settlement agree, returns included."""
    orders = list(
        s.execute(
            select(
                Order.id,
                Order.member_id,
                Order.store_id,
                Order.total_fen,
                Order.discount_fen,
                Order.points_redeemed,
                Order.points_value_fen,
                Order.paid_fen,
                Order.points_earned,
                Order.occurred_at,
            ).where(Order.org_id == org_id)
        )
    )
    lines: dict[int, list[tuple[str, int, int, int, int, int, int, int]]] = defaultdict(list)
    for order_id, category, qty, amount, discount, value, paid, redeemed, earned in s.execute(
        select(
            OrderLine.order_id,
            OrderLine.category,
            OrderLine.quantity,
            OrderLine.amount_fen,
            OrderLine.discount_fen,
            OrderLine.points_value_fen,
            OrderLine.paid_fen,
            OrderLine.points_redeemed,
            OrderLine.points_earned,
        ).where(OrderLine.org_id == org_id)
    ):
        assert amount - discount - value == paid
        lines[order_id].append((category, qty, amount, discount, paid, redeemed, earned, value))
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

    tz = ZoneInfo("Asia/Shanghai")

    def month(at: datetime) -> int:
        local = at.astimezone(tz)
        return local.year * 100 + local.month

    expect_stats: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    expect_store: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    expect_cat: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    expect_months: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for order_id, member_id, store_id, total, discount, redeemed, value, paid, earned, at in orders:
        ls = lines[order_id]
        assert ls, "every order has lines"
        assert total == sum(line[2] for line in ls)
        assert discount == sum(line[3] for line in ls)
        assert value == sum(line[7] for line in ls)
        assert paid == total - discount - value == sum(line[4] for line in ls) == paid_by_order[order_id]
        assert redeemed == sum(line[5] for line in ls)
        assert earned == sum(line[6] for line in ls)
        assert entries.get((order_id, EntryKind.EARN), 0) == earned
        assert entries.get((order_id, EntryKind.REDEEM), 0) == -redeemed
        if member_id is None:
            assert earned == redeemed == 0
            continue
        expect_stats[member_id][0] += 1
        expect_stats[member_id][1] += total
        expect_store[(member_id, store_id)][0] += 1
        expect_store[(member_id, store_id)][1] += total
        expect_months[(member_id, month(at))][0] += 1
        expect_months[(member_id, month(at))][1] += total
        seen: set[str] = set()
        for category, qty, amount, *_ in ls:
            key = (member_id, category)
            if category not in seen:
                expect_cat[key][0] += 1
                seen.add(category)
            expect_cat[key][1] += qty
            expect_cat[key][2] += amount
    # Returns lower spend where it was made (the order's store, categories and month); counts stay.
    for member_id, amount in s.execute(
        select(OrderReturn.member_id, OrderReturn.amount_fen).where(OrderReturn.org_id == org_id)
    ):
        assert member_id is not None
        expect_stats[member_id][1] -= amount
        expect_stats[member_id][2] += 1
        expect_stats[member_id][3] += amount
    growth_back: dict[int, int] = defaultdict(int)
    returned_units: dict[int, int] = defaultdict(int)
    for line_id, qty, amount, category, line_qty, growth, member_id, store_id, at in s.execute(
        select(
            ReturnLine.order_line_id,
            ReturnLine.quantity,
            ReturnLine.amount_fen,
            OrderLine.category,
            OrderLine.quantity,
            OrderLine.growth_earned,
            Order.member_id,
            Order.store_id,
            Order.occurred_at,
        )
        .join(OrderLine, OrderLine.id == ReturnLine.order_line_id)
        .join(Order, Order.id == OrderLine.order_id)
        .where(ReturnLine.org_id == org_id)
        .order_by(ReturnLine.id)
    ):
        assert member_id is not None
        expect_store[(member_id, store_id)][1] -= amount
        expect_cat[(member_id, category)][1] -= qty
        expect_cat[(member_id, category)][2] -= amount
        expect_months[(member_id, month(at))][1] -= amount
        growth_back[member_id] += proportional_part(growth, returned_units[line_id], qty, line_qty)
        returned_units[line_id] += qty

    stats = {
        m: [n, spend, returns, returned]
        for m, n, spend, returns, returned in s.execute(
            select(
                MemberStats.member_id,
                MemberStats.order_count,
                MemberStats.total_spend_fen,
                MemberStats.return_count,
                MemberStats.returned_fen,
            ).where(MemberStats.org_id == org_id)
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

    # Cached account totals agree with the ledger (returns take earned points back and give redeemed
    # points back); a lot's movements explain its remainder.
    sums: dict[tuple[int, str], int] = defaultdict(int)
    for account_id, kind, amount in s.execute(
        select(PointEntry.account_id, PointEntry.kind, func.sum(PointEntry.amount))
        .where(PointEntry.org_id == org_id)
        .group_by(PointEntry.account_id, PointEntry.kind)
    ):
        sums[(account_id, kind)] = int(amount)
    for account in s.scalars(select(PointAccount).where(PointAccount.org_id == org_id)):
        earned_sum = sums[(account.id, EntryKind.EARN)] + sums[(account.id, EntryKind.EARN_REVERSAL)]
        redeemed_sum = sums[(account.id, EntryKind.REDEEM)] + sums[(account.id, EntryKind.REDEEM_REFUND)]
        assert (account.lifetime_earned, account.lifetime_redeemed, account.debt) == (
            earned_sum,
            -redeemed_sum,
            0,
        )
    # Growth value (成长值) per order, per line and in its own ledger, less what returns took back;
    # monthly stats for tier bases.
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
    expect_growth = {m: g - growth_back[m] for m, g in growth_orders.items() if g - growth_back[m]}
    assert accounts == expect_growth
    assert line_growth == sum(growth_orders.values())
    months = {
        (m, mo): [n, spend]
        for m, mo, n, spend in s.execute(
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
    # Points redeemed at one store but issued by another are settled between them, as checkout does,
    # and so are coupon redemptions and package uses (each a source verify re-derives).
    settled = verify_settlement(s, org_id)
    assert settled.ok, settled.problems[:5]
    cross: dict[int, int] = {}  # redemptions that spent other stores' points -> redeeming store
    for entry_id, redeem_store in s.execute(
        select(PointEntry.id, PointEntry.store_id).where(
            PointEntry.org_id == org_id, PointEntry.kind == EntryKind.REDEEM
        )
    ):
        if _lot_stores(s, entry_id) - {redeem_store}:
            assert redeem_store is not None
            cross[entry_id] = redeem_store
    # A return's refund of such points is settled when it gives points back to another store's lots.
    refunds = [
        entry_id
        for entry_id, reverses in s.execute(
            select(PointEntry.id, PointEntry.reverses_entry_id).where(
                PointEntry.org_id == org_id, PointEntry.kind == EntryKind.REDEEM_REFUND
            )
        )
        if reverses in cross and _lot_stores(s, entry_id) - {cross[reverses]}
    ]
    redemptions = s.scalar(
        select(func.count()).select_from(CouponRedemption).where(CouponRedemption.org_id == org_id)
    )
    uses = s.scalar(select(func.count()).select_from(PackageUse).where(PackageUse.org_id == org_id))
    assert settled.sources == len(cross) + len(refunds) + (redemptions or 0) + (uses or 0)
    report = verify(s, org_id)
    assert report.ok, report.problems[:5]
    assert verify_coupons(s, org_id) == []
    assert verify_packages(s, org_id) == []


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
        # Coupons and packages came through the real services: the last month and this one (the two
        # months HQ booked a correction in) have settlement entries of every kind.
        kinds = _kinds_by_month(s, org_id)
        months = sorted(month for month, kind in kinds if kind == "correction")
        assert len(months) == 2
        tz = ZoneInfo("Asia/Shanghai")
        assert months[1] in {f"{at.astimezone(tz):%Y-%m}" for at in (now, datetime.now(UTC))}
        for month in months:
            assert {kind for m, kind in kinds if m == month} == set(settlement.Kind), month
        assert result.benefits is not None
        assert result.benefits.coupons_redeemed > 0
        assert result.benefits.package_uses > 0
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
    assert "service packages: 3 templates" in loaded.output
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


def _kinds_by_month(s: Session, org_id: int) -> dict[tuple[str, str], int]:
    return {
        (month, kind): n
        for month, kind, n in s.execute(
            select(SettlementEntry.business_month, SettlementEntry.kind, func.count())
            .where(SettlementEntry.org_id == org_id)
            .group_by(SettlementEntry.business_month, SettlementEntry.kind)
        )
    }


def test_demo_benefits_through_the_real_services(factory: sessionmaker[Session]) -> None:
    """Coupons and service packages of a small demo on the morning of the 1st: counts that follow from
    the seed, written by the real services (every verify clean), every settlement kind in both months."""
    now = datetime(2026, 4, 1, 1, 30, tzinfo=UTC)  # 09:30 on 1 April in Shanghai
    march = datetime(2026, 2, 28, 16, 0, tzinfo=UTC)  # 1 March in Shanghai
    result = generate(factory, org_code="demo-benefits", members=200, stores=4, days=60, seed=11, now=now)
    b = result.benefits
    assert b is not None
    assert (b.coupon_templates, b.coupons_issued, b.coupons_redeemed, b.coupons_redeemed_elsewhere) == (
        6,
        42,
        18,
        10,
    )
    assert (b.coupon_discount_fen, b.coupon_returns, b.orders, b.order_lines, b.sales_fen) == (
        75758,
        3,
        18,
        53,
        646050,
    )
    assert (b.package_templates, b.packages_sold, b.package_uses, b.package_uses_elsewhere) == (3, 13, 22, 10)
    assert (b.packages_refunded, b.corrections, b.settlement_entries) == (1, 2, 30)
    assert (b.points_earned, b.points_redeemed, b.redeeming_orders, b.points_settled) == (5633, 4478, 8, 3)
    # The coupon orders are part of the chain's figures; the simulated clock is put back.
    assert (result.member_orders, result.multi_store_members, result.settlement_entries) == (275, 16, 6)
    assert "18 used (10 away from the issuer, ¥757.58 off), 3 returned" in result.summary()
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(minutes=5)
    org_id = result.org_id
    with factory() as s:
        _assert_consistent(s, org_id)
        assert s.scalar(select(func.count()).select_from(Event).where(Event.org_id == org_id)) == 0
        stores = {
            sid: (code, brand)
            for sid, code, brand in s.execute(
                select(Store.id, Store.code, Brand.code)
                .join(Brand, Brand.id == Store.brand_id)
                .where(Store.org_id == org_id)
            )
        }
        # Templates: issued and redeemed as the counters say; HQ's campaign and compensation coupons
        # have no issuing store, staff coupons the store that handed them out.
        assert [
            tuple(row)
            for row in s.execute(
                select(
                    CouponTemplate.code,
                    CouponTemplate.bearer,
                    CouponTemplate.issued_count,
                    CouponTemplate.redeemed_count,
                    CouponTemplate.budget_used,
                )
                .where(CouponTemplate.org_id == org_id)
                .order_by(CouponTemplate.id)
            )
        ] == [
            ("HQ-M300-50", "hq", 14, 4, 20000),
            ("LIFE-88", "redeeming_store", 8, 2, 4798),
            ("STORE-M100-20", "issuing_store", 6, 2, 4000),
            ("EXCH-DRINK", "issuing_store", 4, 3, 17970),
            ("SPLIT-M500-80", "split", 5, 1, 8000),
            ("COMP-30", "hq", 5, 4, 12000),
        ]
        issued: dict[tuple[str, bool], int] = defaultdict(int)
        for source, store_id in s.execute(
            select(Coupon.source, Coupon.issuing_store_id).where(Coupon.org_id == org_id)
        ):
            issued[(source, store_id is None)] += 1
        assert dict(issued) == {("campaign", True): 14, ("staff", False): 23, ("compensation", True): 5}
        # Redemptions: in March and April, at stores the template accepts, discounts as the result says;
        # a full return gives the coupon back (restore) or spends the item voucher (void).
        rows = s.execute(
            select(CouponRedemption, CouponTemplate.code)
            .join(CouponTemplate, CouponTemplate.id == CouponRedemption.template_id)
            .where(CouponRedemption.org_id == org_id)
        ).all()
        assert len(rows) == 18
        assert sum(r.discount_fen for r, _ in rows) == 75758
        assert sum(r.issuing_store_id != r.redeeming_store_id for r, _ in rows) == 10
        assert all(march <= r.redeemed_at <= now for r, _ in rows)
        for r, code in rows:
            if code == "STORE-M100-20":
                assert r.redeeming_store_id == r.issuing_store_id
            if code == "LIFE-88":
                assert stores[r.redeeming_store_id][1] == "life"
        statuses: dict[str, int] = defaultdict(int)
        for r, _ in rows:
            statuses[r.status] += 1
        assert dict(statuses) == {"redeemed": 16, "restored": 1, "voided": 1}
        for r, code in rows:
            coupon = s.get(Coupon, r.coupon_id)
            assert coupon is not None
            if r.status == "restored":  # the full return at another store gave the coupon back
                assert (coupon.status, coupon.redeemed_order_id) == ("available", None)
            elif r.status == "voided":  # a voucher for an item that came back is spent (void policy)
                assert (code, coupon.status) == ("EXCH-DRINK", "void")
            else:
                assert (coupon.status, coupon.redeemed_order_id) == ("redeemed", r.order_id)
        # Returns: one order in full at another store, one line at another store, one in full where
        # it was bought.
        returns = sorted(
            (store_id != original, amount, refund, points)
            for store_id, original, amount, refund, points in s.execute(
                select(
                    OrderReturn.store_id,
                    OrderReturn.original_store_id,
                    OrderReturn.amount_fen,
                    OrderReturn.refund_fen,
                    OrderReturn.points_refunded,
                ).where(OrderReturn.org_id == org_id)
            )
        )
        assert returns == [(False, 6590, 600, 0), (True, 25600, 23065, 104), (True, 94480, 91480, 0)]
        # Packages: sold at stores that offer the service, used there and elsewhere, one refunded pro
        # rata after two uses.
        packages = s.execute(
            select(MemberPackage, ServicePackage.code)
            .join(ServicePackage, ServicePackage.id == MemberPackage.package_id)
            .where(MemberPackage.org_id == org_id)
        ).all()
        assert len(packages) == 13
        uses = list(s.scalars(select(PackageUse).where(PackageUse.org_id == org_id)))
        assert len(uses) == 22
        assert sum(u.used_store_id != u.sold_store_id for u in uses) == 10
        assert all(march <= u.used_at <= now for u in uses)
        codes = {p.id: code for p, code in packages}
        for u in uses:
            if codes[u.member_package_id] == "NAIL-10":
                assert stores[u.used_store_id][1] == "life"
        refunded = [
            (code, p.uses_left, p.uses_refunded, p.refunded_fen)
            for p, code in packages
            if p.status == "refunded"
        ]
        assert refunded == [("PT-12", 0, 10, 300000)]
        # Settlement: every kind in March and in the nine hours of April gone.
        kinds = _kinds_by_month(s, org_id)
        assert {k: v for k, v in kinds.items() if k[0] in ("2026-03", "2026-04")} == {
            ("2026-03", "correction"): 1,
            ("2026-03", "coupon_redeemed"): 10,
            ("2026-03", "cross_store_return"): 1,
            ("2026-03", "package_used"): 9,
            ("2026-03", "points_redeemed"): 3,
            ("2026-04", "correction"): 1,
            ("2026-04", "coupon_redeemed"): 2,
            ("2026-04", "cross_store_return"): 1,
            ("2026-04", "package_used"): 1,
            ("2026-04", "points_redeemed"): 2,
        }
