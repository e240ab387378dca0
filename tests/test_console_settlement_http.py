"""The console's settlement pages over plain HTTP: a scripted October of cross-store activity (points
earned at one store and spent at another, a package sold at A used at B, a return at C of an order from
A, an HQ correction) whose statements are worked out by hand; the drill-down to each entry's order,
return or package use; the Excel exports; who may see which statement; closing a period (HQ only, once)
and a late correction landing in the next period; the points policy. Every refusal changes nothing."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.app import create_app
from onemember.audit.models import AuditLog
from onemember.db import set_clock
from onemember.settings import get_settings
from onemember.settlement.models import SettlementEntry, SettlementPeriod, SettlementPolicy
from onemember.web import console_settlement
from tests.factories import PASSWORD, Chain
from tests.helpers import checkout, line, login, register


def at(month: int, day: int, hour: int = 2) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    """A frozen clock the test moves by assigning ``clock[0]``."""
    now = [at(10, 1)]
    set_clock(lambda: now[0])
    yield now
    set_clock(None)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(get_settings(), factory, start_dispatcher=False)
    with TestClient(app) as c:
        yield c


def console_login(client: TestClient, chain: Chain, username: str) -> str:
    """Log in through the console form; returns the CSRF token for later POSTs. The session cookie is
    kept by hand: it expires 12 hours after the test's frozen clock, which the client's jar would see as
    long past."""
    client.cookies.clear()
    client.get("/console/login")
    csrf = str(client.cookies["om_csrf"])
    r = client.post(
        "/console/login",
        data={"org": chain.org_code, "username": username, "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    token = re.search(r"om_session=([^;]+)", r.headers["set-cookie"])
    assert token is not None
    client.cookies.set("om_session", token.group(1))
    return csrf


def cell(page: str, testid: str) -> str:
    """The text of the element with ``data-testid=testid`` (tags stripped, spaces squeezed)."""
    found = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>(.*?)</(td|div|span|dd|p)>', page, re.S)
    assert found is not None, f"no {testid} on the page"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def chart(page: str, testid: str) -> dict[str, Any]:
    found = re.search(rf"data-testid=\"{testid}\" data-chart='([^']*)'", page)
    assert found is not None, f"no chart {testid}"
    return dict(json.loads(html.unescape(found.group(1))))


def entry_rows(page: str) -> list[tuple[str, str, list[tuple[str, str | None]]]]:
    """Each drill-down row as (debtor → creditor, signed amount, [(source label, link)])."""
    out = []
    for entry_id in re.findall(r'data-testid="entry-(\d+)"', page):
        source = re.search(rf'data-testid="source-{entry_id}">(.*?)</td>', page, re.S)
        assert source is not None
        links = [
            (" ".join(re.sub(r"<[^>]+>", " ", label).split()), href or None)
            for href, label in re.findall(
                r'<div class="text-nowrap">(?:<a href="([^"]*)">)?(.*?)(?:</a>)?</div>', source.group(1)
            )
        ]
        out.append((cell(page, f"direction-{entry_id}"), cell(page, f"amount-{entry_id}"), links))
    return out


def counts(
    factory: sessionmaker[Session], org_id: int
) -> tuple[int, int, list[tuple[Any, ...]], list[tuple[str, str]]]:
    """Settlement entries, audit rows, the policies as stored and the periods: what a refusal must leave
    alone (idempotent answers aside)."""
    with factory() as s:
        entries = s.scalar(select(func.count()).where(SettlementEntry.org_id == org_id)) or 0
        audits = s.scalar(select(func.count()).where(AuditLog.org_id == org_id)) or 0
        policies = [
            tuple(row)
            for row in s.execute(
                select(
                    SettlementPolicy.id,
                    SettlementPolicy.bearer,
                    SettlementPolicy.issuer_pct,
                    SettlementPolicy.value_fen,
                    SettlementPolicy.value_points,
                    SettlementPolicy.updated_at,
                )
                .where(SettlementPolicy.org_id == org_id)
                .order_by(SettlementPolicy.id)
            ).all()
        ]
        periods = [
            (p, st)
            for p, st in s.execute(
                select(SettlementPeriod.period, SettlementPeriod.status)
                .where(SettlementPeriod.org_id == org_id)
                .order_by(SettlementPeriod.period)
            ).all()
        ]
    return int(entries), int(audits), policies, periods


def october(client: TestClient, chain: Chain, clock: list[datetime]) -> dict[str, Any]:
    """A month of cross-store activity through the real API (the checkout, returns and packages record
    their own settlement entries), then an HQ correction through the page. Issuing store bears points,
    100 points = 1 yuan, so a point is a fen."""
    m1 = register(client, chain, "A", "18500000001")
    m2 = register(client, chain, "B", "18500000002")
    one = {"kind": "phone", "value": "18500000001"}
    two = {"kind": "phone", "value": "18500000002"}
    # 3 Oct, A: M1 buys 2 coats at 250.00 and earns 500 points (A's lot).
    clock[0] = at(10, 3)
    o1 = checkout(client, chain, "A", one, [line("COAT", 2, 25000, "服装")])
    assert o1["points_earned"] == 500
    # 6 Oct, B: M1 pays 3.00 of 200.00 with 300 of A's points: A owes B 300 fen.
    clock[0] = at(10, 6)
    o2 = checkout(client, chain, "B", one, [line("SHOE", 1, 20000, "鞋")], redeem=300)
    # 8 Oct, B: M2 earns 100 points at B (spent at A on 16 Oct, below).
    clock[0] = at(10, 8)
    assert checkout(client, chain, "B", two, [line("TOY", 1, 10000, "玩具")])["points_earned"] == 100
    # 10-12 Oct: a five-wash package (100.00) sold at A, one wash used at B: A owes B 20.00.
    clock[0] = at(10, 10)
    hq = login(client, chain, "hq")
    r = client.post(
        "/api/v1/service-packages",
        json={"code": "WASH5", "name": "洗护五次卡", "service_code": "wash", "uses": 5, "price_fen": 10000},
        headers=hq,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/members/{m1['member_no']}/packages",
        json={"package_code": "WASH5", "payment_method": "wechat_pay", "amount_fen": 10000},
        headers=chain.key("A"),
    )
    assert r.status_code == 201, r.text
    clock[0] = at(10, 12)
    r = client.post(f"/api/v1/member-packages/{r.json()['id']}/uses", json={}, headers=chain.key("B"))
    assert r.status_code == 201, r.text
    assert r.json()["value_fen"] == 2000
    use_id = r.json()["id"]
    # 16 Oct, A: M2 spends B's 100 points at A: B owes A 100 fen.
    clock[0] = at(10, 16)
    o4 = checkout(client, chain, "A", two, [line("CUP", 1, 5000, "家居")], redeem=100)
    # 20 Oct, C: M1 returns one coat bought at A; C refunds 250.00: A owes C 25000 fen.
    clock[0] = at(10, 20)
    r = client.post(
        f"/api/v1/orders/{o1['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["refund_fen"] == 25000
    r1 = r.json()["return_no"]
    # 31 Oct: HQ pays C a 12.34 subsidy through the correction form (this month, so October).
    clock[0] = at(10, 31)
    csrf = console_login(client, chain, "hq")
    page = client.get("/console/settlement")
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key is not None
    r = client.post(
        "/console/settlement/corrections",
        data={
            "csrf": csrf,
            "key": key.group(1),
            "period": "2026-10",
            "debtor": "HQ",
            "creditor": "C",
            "amount": "12.34",
            "reason": "十月门店活动补贴",
            "business_month": "",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return {
        "m1": m1["member_no"],
        "m2": m2["member_no"],
        "o1": o1["order_no"],
        "o2": o2["order_no"],
        "o4": o4["order_no"],
        "r1": r1,
        "use_id": use_id,
        "correction_url": r.headers["location"],
    }


# --- statements --------------------------------------------------------------------------------------

# By hand (fen):
#   A owes B 300 (points) + 2000 (package); B owes A 100 (points)  -> A vs B: +100 -2300 = -2200
#   A owes C 25000 (return at C)                                    -> A vs C: -25000
#   HQ owes C 1234 (correction)
#   HQ -1234 · A -27200 · B +2200 · C +26234 (sums to 0); 5 entries, 286.34 settled in all.
NETS = {"HQ": "-¥12.34", "A": "-¥272.00", "B": "+¥22.00", "C": "+¥262.34"}


def test_hq_sees_every_statement_netted_by_hand(
    client: TestClient, chain: Chain, clock: list[datetime], factory: sessionmaker[Session]
) -> None:
    month = october(client, chain, clock)
    page = client.get(month["correction_url"])
    assert page.status_code == 200
    with factory() as s:
        correction_id = s.scalar(
            select(SettlementEntry.id).where(
                SettlementEntry.org_id == chain.org_id, SettlementEntry.kind == "correction"
            )
        )
    assert cell(page.text, "corrected-1") == (
        f"已记录调整 #{correction_id}：HQ 应付 C ¥12.34，业务月份 2026-10，记入 2026-10 期间。"
    )
    assert 'data-testid="corrected-2"' not in page.text  # its month is open: nothing to explain

    page = client.get("/console/settlement")  # this month (October) by default
    assert page.status_code == 200
    assert cell(page.text, "period-status") == "未关账"
    assert cell(page.text, "kpi-volume") == "¥286.34"
    assert cell(page.text, "kpi-entries") == "5"
    assert cell(page.text, "kpi-parties") == "4"
    assert re.findall(r'data-testid="party-(\w+)"', page.text) == ["HQ", "A", "B", "C"]
    assert {code: cell(page.text, f"net-{code}") for code in NETS} == NETS
    assert [cell(page.text, f"receivable-{c}") for c in NETS] == ["¥0.00", "¥1.00", "¥23.00", "¥262.34"]
    assert [cell(page.text, f"payable-{c}") for c in NETS] == ["¥12.34", "¥273.00", "¥1.00", "¥0.00"]
    assert [cell(page.text, f"entries-{c}") for c in NETS] == ["1", "4", "3", "2"]
    # The breakdown by kind, per party.
    assert {
        k: cell(page.text, f"kind-A-{k}")
        for k in ("points_redeemed", "coupon_redeemed", "package_used", "cross_store_return", "correction")
    } == {
        "points_redeemed": "-¥2.00",
        "coupon_redeemed": "¥0.00",
        "package_used": "-¥20.00",
        "cross_store_return": "-¥250.00",
        "correction": "¥0.00",
    }
    assert cell(page.text, "kind-C-correction") == "+¥12.34"
    assert cell(page.text, "kind-B-points_redeemed") == "+¥2.00"
    # The charts carry the same nets in yuan: bars top to bottom are HQ, A, B, C.
    net = chart(page.text, "chart-net")
    assert net["yAxis"]["data"] == ["C 北京朝阳店", "B 杭州西湖店", "A 上海徐汇店", "HQ"]
    assert [d["value"] for d in net["series"][0]["data"]] == [262.34, 22.0, -272.0, -12.34]
    by_kind = chart(page.text, "chart-by-kind")
    assert by_kind["xAxis"]["data"] == ["HQ", "A", "B", "C"]
    assert {s["name"]: s["data"] for s in by_kind["series"]} == {
        "积分抵扣": [0.0, -2.0, 2.0, 0.0],
        "优惠券核销": [0.0, 0.0, 0.0, 0.0],
        "次卡使用": [0.0, -20.0, 20.0, 0.0],
        "跨店退货": [0.0, -250.0, 0.0, 250.0],
        "调整": [-12.34, 0.0, 0.0, 12.34],
    }

    # A's statement: netted per counterparty and by kind.
    page = client.get("/console/settlement/stores/A?period=2026-10")
    assert page.status_code == 200
    assert [cell(page.text, f"kpi-{k}") for k in ("receivable", "payable", "net", "entries")] == [
        "¥1.00",
        "¥273.00",
        "-¥272.00",
        "4",
    ]
    assert re.findall(r'data-testid="cp-(\w+)"', page.text) == ["B", "C"]
    assert [cell(page.text, f"cp-{k}-B") for k in ("receivable", "payable", "net", "entries")] == [
        "¥1.00",
        "¥23.00",
        "-¥22.00",
        "3",
    ]
    assert [cell(page.text, f"cp-{k}-C") for k in ("receivable", "payable", "net", "entries")] == [
        "¥0.00",
        "¥250.00",
        "-¥250.00",
        "1",
    ]
    assert cell(page.text, "cp-net-B-points_redeemed") == "-¥2.00"
    assert cell(page.text, "cp-net-B-package_used") == "-¥20.00"
    assert cell(page.text, "cp-net-C-cross_store_return") == "-¥250.00"
    assert cell(page.text, "kind-net-cross_store_return") == "-¥250.00"
    assert cell(page.text, "total-net") == "-¥272.00"
    net = chart(page.text, "chart-net")
    assert [d["value"] for d in net["series"][0]["data"]] == [-250.0, -22.0]  # C, then B from the top
    kinds = chart(page.text, "chart-kinds")
    assert {s["name"]: s["data"] for s in kinds["series"]} == {
        "应收": [1.0, 0.0, 0.0, 0.0, 0.0],
        "应付": [3.0, 0.0, 20.0, 250.0, 0.0],
    }
    # C's statement counts the HQ pool as a counterparty.
    page = client.get("/console/settlement/stores/C?period=2026-10")
    assert re.findall(r'data-testid="cp-(\w+)"', page.text) == ["HQ", "A"]
    assert cell(page.text, "cp-net-HQ") == "+¥12.34"
    page = client.get("/console/settlement/stores/HQ?period=2026-10")
    assert cell(page.text, "kpi-net") == "-¥12.34"

    # Every text is there in English too.
    for url in (
        "/console/settlement?period=2026-10",
        "/console/settlement/stores/A?period=2026-10",
        "/console/settlement/stores/A/with/B?period=2026-10",
        "/console/settlement/periods/2026-09/close?period=2026-09",
        "/console/settlement/policy",
    ):
        page = client.get(f"{url}{'&' if '?' in url else '?'}lang=en")
        assert page.status_code == 200, url
        assert "stl." not in text_of(page.text), url
    page = client.get("/console/settlement?period=2026-10&lang=en")
    assert cell(page.text, "period-status") == "Open"
    assert "Net per party (yuan)" in chart(page.text, "chart-net")["title"]["text"]
    client.get("/console/settlement?lang=zh")


def test_drill_down_traces_each_entry_to_its_order_return_or_package_use(
    client: TestClient,
    chain: Chain,
    clock: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    month = october(client, chain, clock)
    m1, m2 = month["m1"], month["m2"]
    page = client.get("/console/settlement/stores/A/with/B?period=2026-10")
    assert page.status_code == 200
    assert [cell(page.text, f"kpi-{k}") for k in ("receivable", "payable", "net", "entries")] == [
        "¥1.00",
        "¥23.00",
        "-¥22.00",
        "3",
    ]
    assert entry_rows(page.text) == [
        ("A → B", "-¥3.00", [(f"订单 {month['o2']}", f"/console/members/{m1}/orders/{month['o2']}")]),
        ("A → B", "-¥20.00", [(f"次卡使用 #{month['use_id']}", f"/console/members/{m1}")]),
        ("B → A", "+¥1.00", [(f"订单 {month['o4']}", f"/console/members/{m2}/orders/{month['o4']}")]),
    ]
    page = client.get("/console/settlement/stores/A/with/C?period=2026-10")
    order_url = f"/console/members/{m1}/orders/{month['o1']}"
    assert entry_rows(page.text) == [
        ("A → C", "-¥250.00", [(f"订单 {month['o1']}", order_url), (f"退货单 {month['r1']}", order_url)])
    ]
    assert client.get(order_url).status_code == 200  # the link opens the order with its return
    # The same pair seen from B's side has the signs the other way round.
    page = client.get("/console/settlement/stores/B/with/A?period=2026-10")
    assert [(d, a) for d, a, _ in entry_rows(page.text)] == [
        ("A → B", "+¥3.00"),
        ("A → B", "+¥20.00"),
        ("B → A", "-¥1.00"),
    ]
    # One kind only.
    page = client.get("/console/settlement/stores/A/with/B?period=2026-10&kind=points_redeemed")
    assert [(d, a) for d, a, _ in entry_rows(page.text)] == [("A → B", "-¥3.00"), ("B → A", "+¥1.00")]
    # Paged: two to a page.
    monkeypatch.setattr(console_settlement, "ENTRY_PAGE", 2)
    page = client.get("/console/settlement/stores/A/with/B?period=2026-10")
    assert [a for _, a, _ in entry_rows(page.text)] == ["-¥3.00", "-¥20.00"]
    assert 'data-testid="next-page"' in page.text
    page = client.get("/console/settlement/stores/A/with/B?period=2026-10&page=2")
    assert [a for _, a, _ in entry_rows(page.text)] == ["+¥1.00"]
    assert 'data-testid="next-page"' not in page.text
    assert 'data-testid="prev-page"' in page.text
    # A counterparty that is the party itself, or no party at all, or a malformed month: clear refusals.
    r = client.get("/console/settlement/stores/A/with/A?period=2026-10")
    assert r.status_code == 422
    assert cell(r.text, "error-message") == "对方不能是本方"
    r = client.get("/console/settlement/stores/A/with/ZZ?period=2026-10")
    assert r.status_code == 404
    assert cell(r.text, "error-message") == "结算方 ZZ 不存在"
    r = client.get("/console/settlement/stores/A?period=2026-13")
    assert r.status_code == 422
    assert cell(r.text, "error-message") == "结算期间 2026-13 格式应为 YYYY-MM"
    r = client.get("/console/settlement/stores/A?period=2026-13&lang=en")
    assert cell(r.text, "error-message") == "Period 2026-13 should look like YYYY-MM"


def rows_of(content: bytes, sheet: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in load_workbook(io.BytesIO(content))[sheet].iter_rows(values_only=True)][1:]


def test_exports_hold_the_statement_numbers(client: TestClient, chain: Chain, clock: list[datetime]) -> None:
    month = october(client, chain, clock)
    page = client.get("/console/settlement?period=2026-10")
    assert 'href="/console/settlement/statements.xlsx?period=2026-10"' in page.text
    r = client.get("/console/settlement/statements.xlsx?period=2026-10")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    totals = [row for row in rows_of(r.content, "对账单 statement") if row[3] == "全部 all"]
    assert totals == [
        ("2026-10", "open", "HQ", "全部 all", "合计 total", 0, 1234, -1234, 1),
        ("2026-10", "open", "A", "全部 all", "合计 total", 100, 27300, -27200, 4),
        ("2026-10", "open", "B", "全部 all", "合计 total", 2300, 100, 2200, 3),
        ("2026-10", "open", "C", "全部 all", "合计 total", 26234, 0, 26234, 2),
    ]
    detail = rows_of(r.content, "明细 entries")
    assert [(row[3], row[4], row[5], row[6], row[8], row[9]) for row in detail] == [
        ("points_redeemed", "A", "B", 300, month["o2"], None),
        ("package_used", "A", "B", 2000, None, None),
        ("points_redeemed", "B", "A", 100, month["o4"], None),
        ("cross_store_return", "A", "C", 25000, month["o1"], month["r1"]),
        ("correction", "HQ", "C", 1234, None, None),
    ]
    # A's statement export.
    page = client.get("/console/settlement/stores/A?period=2026-10")
    assert 'href="/console/settlement/stores/A/statement.xlsx?period=2026-10"' in page.text
    r = client.get("/console/settlement/stores/A/statement.xlsx?period=2026-10")
    summary = rows_of(r.content, "对账单 statement")
    assert [row for row in summary if row[4] == "合计 total"] == [
        ("2026-10", "open", "A", "B", "合计 total", 100, 2300, -2200, 3),
        ("2026-10", "open", "A", "C", "合计 total", 0, 25000, -25000, 1),
        ("2026-10", "open", "A", "全部 all", "合计 total", 100, 27300, -27200, 4),
    ]
    assert sorted(row[6] for row in rows_of(r.content, "明细 entries")) == [100, 300, 2000, 25000]
    # The drill-down's export: that counterparty only.
    page = client.get("/console/settlement/stores/A/with/B?period=2026-10")
    assert 'href="/console/settlement/stores/A/with/B/entries.xlsx?period=2026-10"' in page.text
    r = client.get("/console/settlement/stores/A/with/B/entries.xlsx?period=2026-10")
    assert r.status_code == 200
    summary = rows_of(r.content, "对账单 statement")
    assert [row for row in summary if row[4] == "合计 total"] == [
        ("2026-10", "open", "A", "B", "合计 total", 100, 2300, -2200, 3),
        ("2026-10", "open", "A", "全部 all", "合计 total", 100, 2300, -2200, 3),
    ]
    assert [(row[4], row[5], row[6]) for row in rows_of(r.content, "明细 entries")] == [
        ("A", "B", 300),
        ("A", "B", 2000),
        ("B", "A", 100),
    ]


def test_store_staff_see_their_own_stores_only(
    client: TestClient, chain: Chain, clock: list[datetime]
) -> None:
    october(client, chain, clock)
    console_login(client, chain, "a_mgr")
    page = client.get("/console/settlement?period=2026-10")
    assert page.status_code == 200
    assert re.findall(r'data-testid="party-(\w+)"', page.text) == ["A"]
    assert [cell(page.text, f"kpi-{k}") for k in ("receivable", "payable", "net")] == [
        "¥1.00",
        "¥273.00",
        "-¥272.00",
    ]
    assert 'data-testid="correction-form"' not in page.text
    assert 'data-testid="close-period"' not in page.text
    assert client.get("/console/settlement/stores/A/with/B?period=2026-10").status_code == 200
    r = client.get("/console/settlement/statements.xlsx?period=2026-10")
    assert r.status_code == 200
    assert {row[2] for row in rows_of(r.content, "对账单 statement")} == {"A"}
    for url, message in (
        ("/console/settlement/stores/B?period=2026-10", "该门店不在您的权限范围内"),
        ("/console/settlement/stores/B/with/A?period=2026-10", "该门店不在您的权限范围内"),
        ("/console/settlement/stores/B/statement.xlsx?period=2026-10", "该门店不在您的权限范围内"),
        ("/console/settlement/stores/HQ?period=2026-10", "只有总部可以查看总部结算"),
        ("/console/settlement/periods/2026-09/close", "您的角色无权结算关账"),
    ):
        r = client.get(url)
        assert (r.status_code, cell(r.text, "error-message")) == (403, message), url
    # A regional manager sees the region's stores, and exports one store at a time (as the API does).
    console_login(client, chain, "east_mgr")
    page = client.get("/console/settlement?period=2026-10")
    assert re.findall(r'data-testid="party-(\w+)"', page.text) == ["A", "B"]
    assert cell(page.text, "kpi-net") == "-¥250.00"  # A -272.00 and B +22.00
    assert 'data-testid="export"' not in page.text
    assert client.get("/console/settlement/stores/C?period=2026-10").status_code == 403
    # The auditor reads everything and changes nothing; a clerk and customer service see no statements.
    console_login(client, chain, "auditor")
    page = client.get("/console/settlement?period=2026-10")
    assert re.findall(r'data-testid="party-(\w+)"', page.text) == ["HQ", "A", "B", "C"]
    assert 'data-testid="correction-form"' not in page.text
    for username in ("a_clerk", "cs"):
        console_login(client, chain, username)
        r = client.get("/console/settlement")
        assert (r.status_code, cell(r.text, "error-message")) == (403, "您的角色无权查看门店结算")


# --- closing and late corrections ------------------------------------------------------------------


def close_form(client: TestClient, period: str, csrf: str, reason: str, key: str) -> Any:
    return client.post(
        f"/console/settlement/periods/{period}/close",
        data={"csrf": csrf, "reason": reason, "key": key},
        follow_redirects=False,
    )


def test_hq_closes_october_once_and_a_late_correction_lands_in_november(
    client: TestClient, chain: Chain, clock: list[datetime], factory: sessionmaker[Session]
) -> None:
    october(client, chain, clock)
    clock[0] = at(11, 2)
    before = counts(factory, chain.org_id)
    assert before[3] == [("2026-10", "open")]

    # Refusals first; each changes nothing.
    for username in ("a_mgr", "east_mgr", "auditor"):
        csrf = console_login(client, chain, username)
        r = close_form(client, "2026-10", csrf, "月结", f"k-{username}")
        assert (r.status_code, cell(r.text, "error-message")) == (403, "您的角色无权结算关账")
    csrf = console_login(client, chain, "hq")
    page = client.get("/console/settlement")  # November now
    assert cell(page.text, "period-status") == "未关账"
    assert cell(page.text, "not-ended") == "本月结束后才能关账"
    r = close_form(client, "2026-11", csrf, "月结", "k-nov")
    assert (r.status_code, cell(r.text, "close-error")) == (409, "2026-11 尚未结束，不能关账")
    r = close_form(client, "2026-10", csrf, "", "k-blank")
    assert (r.status_code, cell(r.text, "close-error")) == (422, "请填写关账说明")
    assert counts(factory, chain.org_id) == before

    # The confirm step shows what will be frozen.
    page = client.get("/console/settlement?period=2026-10")
    assert 'href="/console/settlement/periods/2026-10/close"' in page.text
    page = client.get("/console/settlement/periods/2026-10/close")
    assert page.status_code == 200
    assert [cell(page.text, f"kpi-{k}") for k in ("entries", "volume")] == ["5", "¥286.34"]
    assert re.findall(r'data-testid="close-net-(\w+)"', page.text) == ["HQ", "A", "B", "C"]
    assert text_of(page.text).count("-¥272.00") == 1
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key is not None
    r = close_form(client, "2026-10", csrf, "十月对账完成", key.group(1))
    assert (r.status_code, r.headers["location"]) == (303, "/console/settlement?period=2026-10&closed=1")
    # The same form sent twice closes once.
    r = close_form(client, "2026-10", csrf, "十月对账完成", key.group(1))
    assert (r.status_code, r.headers["location"]) == (303, "/console/settlement?period=2026-10&closed=1")
    page = client.get("/console/settlement?period=2026-10&closed=1")
    assert cell(page.text, "closed-notice") == "2026-10 已关账，条目已冻结"
    assert cell(page.text, "closed-text") == (
        "2026-10 已于 2026-11-02 10:00 由 staff:hq 关账，5 笔、合计 ¥286.34 已冻结。"
        "之后记入该月的条目（迟到的核销、总部调整）落入下一个未关账期间。"
    )
    assert {c: cell(page.text, f"frozen-{c}") for c in NETS} == NETS
    assert {c: cell(page.text, f"net-{c}") for c in NETS} == NETS
    assert cell(page.text, "period-total-2026-10") == "¥286.34"
    assert 'data-testid="close-period"' not in page.text
    with factory() as s:
        logs = s.execute(
            select(AuditLog.actor, AuditLog.reason, AuditLog.target_id).where(
                AuditLog.org_id == chain.org_id, AuditLog.action == "settlement.period_closed"
            )
        ).all()
        assert [tuple(x) for x in logs] == [("staff:hq", "十月对账完成", "2026-10")]
        closed_at = s.scalar(select(SettlementPeriod.closed_at).where(SettlementPeriod.period == "2026-10"))
    after_close = counts(factory, chain.org_id)
    assert after_close[3] == [("2026-10", "closed")]

    # Closing again: refused in the reader's language, nothing changes.
    r = close_form(client, "2026-10", csrf, "再次关账", "k-again")
    assert (r.status_code, cell(r.text, "close-error")) == (409, "2026-10 已关账")
    client.get("/console/settlement?lang=en")
    r = close_form(client, "2026-10", csrf, "again", "k-again-en")
    assert (r.status_code, cell(r.text, "close-error")) == (409, "2026-10 is already closed")
    client.get("/console/settlement?lang=zh")
    assert counts(factory, chain.org_id) == after_close
    with factory() as s:
        assert s.scalar(select(SettlementPeriod.closed_at).where(SettlementPeriod.period == "2026-10")) == (
            closed_at
        )

    # A late correction for October lands in November, and the page says so.
    page = client.get("/console/settlement")
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key is not None
    late = {
        "csrf": csrf,
        "key": key.group(1),
        "period": "2026-11",
        "debtor": "C",
        "creditor": "B",
        "amount": "5",
        "reason": "十月次卡漏记一次",
        "business_month": "2026-10",
    }
    r = client.post("/console/settlement/corrections", data=late, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/console/settlement?period=2026-11&corrected=")
    # The same form sent twice records once.
    again = client.post("/console/settlement/corrections", data=late, follow_redirects=False)
    assert again.headers["location"] == r.headers["location"]
    assert counts(factory, chain.org_id)[0] == after_close[0] + 1
    page = client.get(r.headers["location"])
    entry_id = r.headers["location"].rsplit("=", 1)[1]
    assert cell(page.text, "corrected-1") == (
        f"已记录调整 #{entry_id}：C 应付 B ¥5.00，业务月份 2026-10，记入 2026-11 期间。"
    )
    assert cell(page.text, "corrected-2") == "2026-10 已关账，调整记入下一个未关账期间 2026-11。"
    assert re.findall(r'data-testid="party-(\w+)"', page.text) == ["B", "C"]
    assert (cell(page.text, "net-B"), cell(page.text, "net-C")) == ("+¥5.00", "-¥5.00")
    page = client.get("/console/settlement/stores/B/with/C?period=2026-11")
    assert re.findall(r'data-testid="entry-(\d+)"', page.text) == [entry_id]
    assert cell(page.text, f"late-{entry_id}") == "属于 2026-10（迟到）"
    # October is as it was at the close.
    page = client.get("/console/settlement?period=2026-10")
    assert {c: cell(page.text, f"net-{c}") for c in NETS} == NETS
    assert cell(page.text, "kpi-entries") == "5"

    # Store staff cannot record corrections.
    csrf = console_login(client, chain, "a_mgr")
    before = counts(factory, chain.org_id)
    r = client.post(
        "/console/settlement/corrections",
        data={"csrf": csrf, "debtor": "B", "creditor": "A", "amount": "1", "reason": "x"},
        follow_redirects=False,
    )
    assert (r.status_code, cell(r.text, "error-message")) == (403, "您的角色无权调整结算")
    assert counts(factory, chain.org_id) == before


def test_bad_corrections_are_refused_and_change_nothing(
    client: TestClient, chain: Chain, clock: list[datetime], factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    before = counts(factory, chain.org_id)
    good = {"csrf": csrf, "debtor": "A", "creditor": "B", "amount": "10.00", "reason": "补记"}
    cases: list[tuple[dict[str, str], int, str, str]] = [
        ({"amount": "abc"}, 422, "error-amount", "金额（元）：须为大于 0 的金额，最多两位小数，如 12.50"),
        ({"amount": "0"}, 422, "error-amount", "金额（元）：须为大于 0 的金额，最多两位小数，如 12.50"),
        ({"amount": "1.234"}, 422, "error-amount", "金额（元）：须为大于 0 的金额，最多两位小数，如 12.50"),
        ({"amount": "-3"}, 422, "error-amount", "金额（元）：须为大于 0 的金额，最多两位小数，如 12.50"),
        ({"reason": ""}, 422, "error-reason", "原因：必填"),
        ({"debtor": ""}, 422, "error-debtor", "应付方：必填"),
        ({"business_month": "2026-13"}, 422, "error-business_month", "业务月份：格式应为 YYYY-MM"),
        (
            {"corrects_entry_id": "x1"},
            422,
            "error-corrects_entry_id",
            "更正的结算编号（可选）：须为结算编号（整数）",
        ),
        ({"creditor": "A"}, 422, "error-creditor", "应付方与应收方不能相同"),
        ({"creditor": "ZZ"}, 404, "form-errors", "结算方 ZZ 不存在"),
        ({"corrects_entry_id": "999999999"}, 404, "form-errors", "找不到该结算记录"),
    ]
    for change, status, where, message in cases:
        r = client.post("/console/settlement/corrections", data={**good, **change}, follow_redirects=False)
        assert (r.status_code, cell(r.text, where)) == (status, message), change
        assert 'data-testid="correction-form"' in r.text
    r = client.post("/console/settlement/corrections?lang=en", data={**good, "amount": "abc"})
    assert cell(r.text, "error-amount") == (
        "Amount (yuan) must be an amount above 0 with at most 2 decimals, such as 12.50"
    )
    r = client.post("/console/settlement/corrections", data={**good, "csrf": "forged"})
    assert r.status_code == 403
    assert counts(factory, chain.org_id) == before
    # The form keeps what was typed.
    r = client.post("/console/settlement/corrections", data={**good, "amount": "abc"})
    assert 'value="补记"' in r.text
    assert 'value="abc"' in r.text


# --- the points policy -------------------------------------------------------------------------------


def test_hq_edits_the_points_policy_others_read_it(
    client: TestClient, chain: Chain, clock: list[datetime], factory: sessionmaker[Session]
) -> None:
    csrf = console_login(client, chain, "hq")
    page = client.get("/console/settlement/policy")
    assert page.status_code == 200
    assert cell(page.text, "current-bearer") == "发放门店"
    assert cell(page.text, "current-value") == "100 积分 = ¥1.00 · 每积分 1 分"
    assert cell(page.text, "policy-example") == (
        "示例：会员在 B 店使用 A 店发放的 1,000 积分，A 店应付 B 店 ¥10.00"
    )
    assert 'data-testid="policy-save"' in page.text
    before = counts(factory, chain.org_id)
    bad: list[tuple[dict[str, str], str, str]] = [
        ({"bearer": "split", "issuer_pct": "150"}, "error-issuer_pct", "发放门店承担比例须在 0 到 100 之间"),
        ({"bearer": "split", "issuer_pct": "x"}, "error-issuer_pct", "发放门店承担比例（%）：须为整数"),
        ({"value_yuan": "abc"}, "error-value_yuan", "价值（元）：须为金额，最多两位小数，如 1.00"),
        ({"value_points": "0"}, "form-errors", "积分价值无效"),
        ({"bearer": "nobody"}, "error-bearer", "未知的承担方 nobody"),
    ]
    base = {"csrf": csrf, "bearer": "hq", "issuer_pct": "100", "value_points": "100", "value_yuan": "1.00"}
    for change, where, message in bad:
        r = client.post("/console/settlement/policy", data={**base, **change}, follow_redirects=False)
        assert (r.status_code, cell(r.text, where)) == (422, message), change
    assert counts(factory, chain.org_id) == before

    r = client.post(
        "/console/settlement/policy",
        data={**base, "bearer": "split", "issuer_pct": "60", "value_points": "50", "value_yuan": "1.00"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/console/settlement/policy?saved=1")
    page = client.get("/console/settlement/policy?saved=1")
    assert cell(page.text, "current-bearer") == "按比例分摊 · 60%"
    assert cell(page.text, "current-value") == "50 积分 = ¥1.00 · 每积分 2 分"
    # 1,000 points worth 20.00; A bears 60 %.
    assert cell(page.text, "policy-example").endswith("A 店应付 B 店 ¥12.00")
    with factory() as s:
        row = s.scalar(select(SettlementPolicy).where(SettlementPolicy.org_id == chain.org_id))
        assert row is not None
        assert (row.bearer, row.issuer_pct, row.value_fen, row.value_points, row.updated_by) == (
            "split",
            60,
            100,
            50,
            "staff:hq",
        )
        assert (
            s.scalar(
                select(func.count()).where(
                    AuditLog.org_id == chain.org_id, AuditLog.action == "settlement.policy_set"
                )
            )
            == 1
        )
    # Back to the program's rate: the value follows the program again.
    r = client.post("/console/settlement/policy", data={**base, "bearer": "hq", "follow": "on"})
    assert r.status_code == 200
    assert cell(r.text, "current-value") == "100 积分 = ¥1.00 · 每积分 1 分"
    assert 'id="p-follow" name="follow" checked' in r.text

    # A store manager reads; a save is refused and changes nothing; a clerk may not look.
    csrf = console_login(client, chain, "a_mgr")
    page = client.get("/console/settlement/policy")
    assert page.status_code == 200
    assert 'data-testid="readonly-note"' in page.text
    assert 'data-testid="policy-save"' not in page.text
    before = counts(factory, chain.org_id)
    r = client.post("/console/settlement/policy", data={**base, "csrf": csrf}, follow_redirects=False)
    assert (r.status_code, cell(r.text, "error-message")) == (403, "您的角色无权设置结算规则")
    assert counts(factory, chain.org_id) == before
    console_login(client, chain, "a_clerk")
    r = client.get("/console/settlement/policy")
    assert (r.status_code, cell(r.text, "error-message")) == (403, "您的角色无权查看结算规则")
