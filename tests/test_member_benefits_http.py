"""The member page's coupons and service packages over HTTP: coupons grouped with what each gives, when
and where; a coupon's QR; giving a coupon to another member by phone number (confirm step, the same
service call and audit as the API, every refusal changing nothing); packages with uses left, expiry,
where they work and every use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.coupons.models import Coupon
from onemember.db import set_clock
from onemember.events.models import Event
from onemember.members.models import Member
from tests.factories import Chain
from tests.helpers import login, register
from tests.test_member_page_http import csrf
from tests.test_member_page_http import login as member_login

NOW = datetime(2030, 6, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    set_clock(c)
    yield c
    set_clock(None)


# --- reading pages -----------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def all(self, testid: str) -> list[Node]:
        found = []
        for child in self.children:
            if child.attrs.get("data-testid") == testid:
                found.append(child)
            found.extend(child.all(testid))
        return found

    def one(self, testid: str) -> Node:
        [node] = self.all(testid)
        return node

    def texts(self, testid: str) -> list[str]:
        return [n.text for n in self.all(testid)]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node.parts.append(data)


def page(html: str) -> Node:
    tree = _Tree()
    tree.feed(html)
    return tree.root


def card(node: Node) -> dict[str, str]:
    """A coupon card's texts by field."""
    keys = ("headline", "name", "gives", "items", "where", "difference", "validity", "starts", "note")
    return {k: node.one(f"coupon-{k}").text for k in keys if node.all(f"coupon-{k}")}


def group(root: Node, name: str) -> list[tuple[str, str]]:
    groups = root.all(f"group-{name}")
    return [(c.attrs["data-code"], c.attrs["data-status"]) for g in groups for c in g.all("coupon")]


# --- set-up through the API ---------------------------------------------------------------------------


def _template(client: TestClient, hq: dict[str, str], **body: Any) -> None:
    r = client.post("/api/v1/coupon-templates", json=body, headers=hq)
    assert r.status_code == 201, r.text


def _issue(client: TestClient, headers: dict[str, str], member_no: str, template: str, **extra: Any) -> str:
    r = client.post(
        f"/api/v1/members/{member_no}/coupons", json={"template_code": template, **extra}, headers=headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


@dataclass
class Wallet:
    m1: dict[str, Any]
    m2: dict[str, Any]
    codes: dict[str, str]  # template code -> the coupon m1 holds


def _wallet(client: TestClient, chain: Chain) -> Wallet:
    """Member 1 holds one coupon of each kind (one used at store B, one ending today); member 2 none."""
    hq = login(client, chain, "hq")
    _template(
        client,
        hq,
        code="M300",
        name="满300减50",
        kind="amount_off",
        threshold_fen=30000,
        amount_fen=5000,
        valid_days=30,
        giftable=True,
    )
    _template(
        client,
        hq,
        code="D8",
        name="八折券",
        kind="percent_off",
        percent_off=20,
        cap_fen=2000,
        threshold_fen=10000,
        accept_scope="brand",
        accept_brand_code="home",
        valid_days=7,
    )
    _template(
        client,
        hq,
        code="TEA",
        name="好茶一杯",
        kind="free_item",
        skus=["TEA-1"],
        accept_scope="region",
        accept_region_code="east",
        valid_days=30,
        giftable=True,
    )
    _template(
        client,
        hq,
        code="CUP",
        name="9.9 元杯子",
        kind="fixed_price",
        price_fen=990,
        skus=["CUP-2"],
        accept_scope="issuing_store",
        valid_from="2030-07-01T00:00:00+08:00",
        valid_to="2030-08-01T00:00:00+08:00",
    )
    _template(
        client,
        hq,
        code="SPA",
        name="护理体验",
        kind="service",
        categories=["护理"],
        pay_difference=False,
        threshold_fen=20000,
        accept_scope="stores",
        accept_store_codes=["C", "B"],
        valid_days=90,
    )
    _template(
        client,
        hq,
        code="M10",
        name="立减10元",
        kind="amount_off",
        amount_fen=1000,
        valid_days=30,
        giftable=True,
    )
    _template(
        client,
        hq,
        code="TODAY",
        name="今日券",
        kind="amount_off",
        amount_fen=500,
        valid_days=1,
        giftable=True,
    )
    m1 = register(client, chain, "A", "18800001001")
    m2 = register(client, chain, "B", "18800001002", name="李雷")
    no = m1["member_no"]
    codes = {
        "M300": _issue(client, hq, no, "M300"),
        "D8": _issue(client, hq, no, "D8"),
        "TEA": _issue(client, chain.key("A"), no, "TEA", cover_fen=1800),
        "CUP": _issue(client, chain.key("A"), no, "CUP"),
        "SPA": _issue(client, hq, no, "SPA"),
        "M10": _issue(client, hq, no, "M10"),
        "TODAY": _issue(client, hq, no, "TODAY"),
    }
    r = client.post(
        "/api/v1/orders",
        json={
            "member": {"member_no": no},
            "lines": [{"sku": "X-1", "name": "X", "category": "食品", "quantity": 1, "unit_price_fen": 5000}],
            "coupon_codes": [codes["M10"]],
            "payments": [{"method": "wechat_pay", "amount_fen": 4000}],
        },
        headers=chain.key("B"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["coupon_discount_fen"] == 1000
    return Wallet(m1, m2, codes)


def _second_client(client: TestClient) -> TestClient:
    return TestClient(client.app)


@dataclass(frozen=True)
class Snapshot:
    holders: dict[str, tuple[str, str | None]]  # coupon code -> (holder member no, gifted from member no)
    audits: int
    events: int


def _snapshot(factory: sessionmaker[Session], chain: Chain) -> Snapshot:
    with factory() as s:
        numbers = dict(
            s.execute(select(Member.id, Member.member_no).where(Member.org_id == chain.org_id)).all()
        )
        holders = {
            c.code: (numbers[c.member_id], numbers.get(c.gifted_from_member_id or 0))
            for c in s.scalars(select(Coupon).where(Coupon.org_id == chain.org_id))
        }
        audits = s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.org_id == chain.org_id))
        events = s.scalar(select(func.count()).select_from(Event).where(Event.org_id == chain.org_id))
    return Snapshot(holders, int(audits or 0), int(events or 0))


# --- coupons -----------------------------------------------------------------------------------------


def test_coupons_grouped_with_what_when_and_where(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    w = _wallet(app_client, chain)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    clock.now = NOW + timedelta(days=1)  # TODAY ended at the end of 2030-06-10
    r = app_client.get("/m/coupons")
    assert r.status_code == 200
    root = page(r.text)
    c = w.codes
    # Soonest-ending first; the one not valid until July is listed among those to use, with its first day.
    assert group(root, "available") == [
        (c["D8"], "available"),
        (c["M300"], "available"),
        (c["TEA"], "available"),
        (c["CUP"], "available"),
        (c["SPA"], "available"),
    ]
    assert group(root, "used") == [(c["M10"], "redeemed")]
    assert group(root, "expired") == [(c["TODAY"], "expired")]
    assert group(root, "gifted") == []
    cards = {n.attrs["data-code"]: card(n) for n in root.all("coupon")}
    assert cards[c["M300"]] == {
        "headline": "¥50.00",
        "name": "满300减50",
        "gives": "满¥300.00减¥50.00",
        "where": "全部门店通用",
        "validity": "2030-06-10 至 2030-07-09",
    }
    assert cards[c["D8"]] == {
        "headline": "8折",
        "name": "八折券",
        "gives": "8折，最高减¥20.00，满¥100.00可用",
        "where": "优家品牌门店通用",
        "validity": "2030-06-10 至 2030-06-16",
    }
    assert cards[c["TEA"]] == {
        "headline": "赠品券",
        "name": "好茶一杯",
        "gives": "免费领取指定商品一件",
        "items": "适用商品：TEA-1",
        "where": "华东区门店通用",
        "difference": "最高抵扣¥18.00，门店售价更高时需补差价",
        "validity": "2030-06-10 至 2030-07-09",
    }
    assert cards[c["CUP"]] == {
        "headline": "¥9.90",
        "name": "9.9 元杯子",
        "gives": "指定商品一件只需¥9.90",
        "items": "适用商品：CUP-2",
        "where": "仅限发券门店：上海徐汇店",
        "validity": "2030-07-01 至 2030-07-31",
        "starts": "2030-07-01 起可用",
    }
    assert cards[c["SPA"]] == {
        "headline": "服务券",
        "name": "护理体验",
        "gives": "免费享受指定服务一次，满¥200.00可用",
        "items": "适用品类：护理",
        "where": "仅限：杭州西湖店、北京朝阳店",
        "difference": "各门店均全额抵扣，无需补差价",
        "validity": "2030-06-10 至 2030-09-07",
    }
    assert cards[c["M10"]] == {
        "headline": "¥10.00",
        "name": "立减10元",
        "gives": "无门槛立减¥10.00",
        "where": "全部门店通用",
        "validity": "2030-06-10 至 2030-07-09",
        "note": "2030-06-10 于杭州西湖店使用，优惠 ¥10.00",
    }
    assert cards[c["TODAY"]]["note"] == "已于 2030-06-10 到期"
    assert root.one("nav-coupons").text == "优惠券 5"
    assert root.one("tab-benefits").attrs["class"] == "active"

    en = page(app_client.get("/m/coupons?lang=en").text)
    cards = {n.attrs["data-code"]: card(n) for n in en.all("coupon")}
    assert cards[c["D8"]]["gives"] == "20% off, at most ¥20.00 off, when you spend ¥100.00 or more"
    assert cards[c["D8"]]["headline"] == "20% off"
    assert cards[c["M300"]]["gives"] == "¥50.00 off when you spend ¥300.00 or more"
    assert (
        cards[c["TEA"]]["difference"]
        == "Covers up to ¥18.00; where the item costs more, you pay the difference"
    )
    assert cards[c["CUP"]]["where"] == "Only at the store that gave it: 上海徐汇店"
    assert cards[c["M10"]]["note"] == "Used at 杭州西湖店 on 2030-06-10, saved ¥10.00"
    app_client.get("/m/coupons?lang=zh")

    home = page(app_client.get("/m").text)
    assert home.one("home-coupons-count").text == "5"


def test_coupon_detail_shows_its_code_as_a_qr(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    w = _wallet(app_client, chain)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    code = w.codes["M300"]
    r = app_client.get(f"/m/coupons/{code.lower()}")
    assert r.status_code == 200
    root = page(r.text)
    detail = root.one("coupon-detail")
    assert (detail.attrs["data-code"], detail.attrs["data-status"]) == (code, "available")
    assert "<svg" in r.text
    assert root.one("coupon-qr").children[0].tag == "svg"
    assert root.one("coupon-code").text == f"{code[:4]} {code[4:8]} {code[8:]}"
    assert root.all("gift-form")
    # Not giftable: no form, a word why; used: no QR and no form.
    d8 = page(app_client.get(f"/m/coupons/{w.codes['D8']}").text)
    assert (d8.one("gift-unavailable").text, d8.all("gift-form")) == ("该券不可转赠", [])
    used = app_client.get(f"/m/coupons/{w.codes['M10']}")
    assert used.status_code == 200
    assert "<svg" not in used.text
    assert page(used.text).all("gift-form") == []
    # Another member's coupon is not found, like a code that does not exist.
    other = _issue(app_client, login(app_client, chain, "hq"), w.m2["member_no"], "M300")
    for missing in (other, "ZZZZZZZZZZZZ"):
        r = app_client.get(f"/m/coupons/{missing}")
        assert r.status_code == 404
        assert page(r.text).one("error-message").text == "找不到该优惠券"


def test_gift_a_coupon_by_phone_after_a_confirm_step(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    w = _wallet(app_client, chain)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    code = w.codes["M300"]
    before = _snapshot(factory, chain)
    r = app_client.post(f"/m/coupons/{code}/gift", data={"csrf": csrf(app_client), "phone": "188 0000 1002"})
    assert r.status_code == 200
    confirm = page(r.text)
    assert confirm.one("gift-confirm-lead").text == "将「满300减50」转赠给 188****1002？转赠后无法撤回。"
    assert "李雷" not in r.text
    assert w.m2["member_no"] not in r.text
    assert _snapshot(factory, chain) == before  # the confirm step changes nothing

    r = app_client.post(
        f"/m/coupons/{code}/gift/confirm",
        data={"csrf": csrf(app_client), "phone": "18800001002"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, f"/m/coupons?gifted={code}")
    after = _snapshot(factory, chain)
    assert after.holders == {**before.holders, code: (w.m2["member_no"], w.m1["member_no"])}
    assert (after.audits, after.events) == (before.audits + 1, before.events + 1)
    with factory() as s:
        audit = s.scalars(
            select(AuditLog).where(AuditLog.org_id == chain.org_id, AuditLog.action == "coupons.gifted")
        ).one()
        assert (audit.actor_role, audit.target_id, audit.member_id) == (
            "member",
            code,
            _member_id(s, chain.org_id, w.m1),
        )
        assert audit.details == {
            "template_code": "M300",
            "from_member_no": w.m1["member_no"],
            "to_member_no": w.m2["member_no"],
        }
        event = s.scalars(
            select(Event).where(Event.org_id == chain.org_id, Event.type == "coupon.gifted")
        ).one()
        assert event.member_id == _member_id(s, chain.org_id, w.m2)

    root = page(app_client.get(f"/m/coupons?gifted={code}").text)
    assert root.one("coupons-notice").text == "已将「满300减50」转赠给 188****1002"
    assert group(root, "gifted") == [(code, "gifted")]
    assert card(root.one("group-gifted").one("coupon"))["note"] == "2030-06-10 转赠给 188****1002"
    assert code not in [c for c, _ in group(root, "available")]
    # Sent twice (a double tap, a resubmitted form), the second confirm lands on the same result and
    # changes nothing; the same coupon sent to anyone else is no longer this member's to give.
    again = app_client.post(
        f"/m/coupons/{code}/gift/confirm",
        data={"csrf": csrf(app_client), "phone": "18800001002"},
        follow_redirects=False,
    )
    assert (again.status_code, again.headers["location"]) == (303, f"/m/coupons?gifted={code}")
    assert _snapshot(factory, chain) == after
    elsewhere = app_client.post(
        f"/m/coupons/{code}/gift/confirm", data={"csrf": csrf(app_client), "phone": "18800001001"}
    )
    assert elsewhere.status_code == 404
    assert page(elsewhere.text).one("error-message").text == "找不到该优惠券"
    assert _snapshot(factory, chain) == after

    friend = _second_client(app_client)
    member_login(friend, chain, factory, "18800001002", w.m2["member_no"])
    mine = page(friend.get("/m/coupons").text)
    assert group(mine, "available") == [(code, "available")]
    assert mine.one("coupon-received").text == "好友转赠"
    assert page(friend.get(f"/m/coupons/{code}").text).all("gift-form")


def _member_id(s: Session, org_id: int, m: dict[str, Any]) -> int:
    return int(
        s.scalars(select(Member.id).where(Member.org_id == org_id, Member.member_no == m["member_no"])).one()
    )


@pytest.mark.parametrize(
    ("coupon", "phone", "status", "message", "message_en"),
    [
        ("D8", "18800001002", 409, "该优惠券不可转赠", "This coupon cannot be given to another member"),
        # The coupon's own refusal comes before any look-up of the number.
        ("D8", "18800009999", 409, "该优惠券不可转赠", "This coupon cannot be given to another member"),
        (
            "M300",
            "18800009999",
            404,
            "没有会员使用该手机号，请核对号码",
            "No member uses that mobile number; check the number",
        ),
        ("M300", "18800001001", 422, "不能转赠给自己", "A coupon cannot be given to its holder"),
        (
            "M300",
            "1880000" * 20,
            422,
            "手机号格式无效（需为 11 位中国大陆手机号）",
            "Not a valid mainland China mobile number (11 digits)",
        ),
        (
            "M300",
            "1880000",
            422,
            "手机号格式无效（需为 11 位中国大陆手机号）",
            "Not a valid mainland China mobile number (11 digits)",
        ),
        ("M10", "18800001002", 409, "该优惠券已使用或已作废", "This coupon has already been used or voided"),
        ("TODAY", "18800001002", 409, "该优惠券已过期", "This coupon has expired"),
    ],
)
def test_refused_gifts_change_nothing(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    clock: Clock,
    coupon: str,
    phone: str,
    status: int,
    message: str,
    message_en: str,
) -> None:
    w = _wallet(app_client, chain)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    clock.now = NOW + timedelta(days=1)
    code = w.codes[coupon]
    before = _snapshot(factory, chain)
    # A number that matches no member is only counted (one audit row each, against probing numbers).
    noted = 1 if status == 404 else 0
    for n, step in enumerate(("gift", "gift/confirm"), start=1):
        r = app_client.post(f"/m/coupons/{code}/{step}", data={"csrf": csrf(app_client), "phone": phone})
        assert r.status_code == status, (step, r.text)
        root = page(r.text)
        assert root.one("gift-error").text == message
        assert root.one("coupon-detail").attrs["data-code"] == code
        assert root.all("gift-confirm") == []
        assert _snapshot(factory, chain) == replace(before, audits=before.audits + n * noted)
    en = app_client.post(
        f"/m/coupons/{code}/gift/confirm?lang=en", data={"csrf": csrf(app_client), "phone": phone}
    )
    assert en.status_code == status
    assert page(en.text).one("gift-error").text == message_en
    assert _snapshot(factory, chain) == replace(before, audits=before.audits + 3 * noted)


def test_numbers_that_match_no_member_are_limited_per_hour(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    """Five numbers that match no member in an hour, then even a real member's number is refused for the
    hour (so a giftable coupon cannot be used to find out who is a member); an hour later it works."""
    w = _wallet(app_client, chain)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    clock.now = NOW + timedelta(days=1)
    code = w.codes["M300"]
    for i in range(5):
        r = app_client.post(
            f"/m/coupons/{code}/gift", data={"csrf": csrf(app_client), "phone": f"1880000990{i}"}
        )
        assert r.status_code == 404, r.text
    before = _snapshot(factory, chain)
    r = app_client.post(
        f"/m/coupons/{code}/gift/confirm", data={"csrf": csrf(app_client), "phone": "18800001002"}
    )
    assert r.status_code == 429, r.text
    assert page(r.text).one("gift-error").text == "转赠时输入的手机号多次不匹配，请 1 小时后再试"
    assert _snapshot(factory, chain) == before
    clock.now = NOW + timedelta(days=1, hours=1, minutes=1)
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    r = app_client.post(
        f"/m/coupons/{code}/gift/confirm", data={"csrf": csrf(app_client), "phone": "18800001002"}
    )
    assert r.status_code == 200, r.text
    assert page(r.text).one("coupons-notice").text == "已将「满300减50」转赠给 188****1002"
    assert _snapshot(factory, chain).holders[code] == (w.m2["member_no"], w.m1["member_no"])


def test_gift_needs_the_csrf_token_and_a_member_session(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    w = _wallet(app_client, chain)
    code = w.codes["M300"]
    before = _snapshot(factory, chain)
    r = app_client.post(
        f"/m/coupons/{code}/gift/confirm",
        data={"csrf": csrf(app_client), "phone": "18800001002"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, f"/m/login?next=/m/coupons/{code}/gift/confirm")
    member_login(app_client, chain, factory, "18800001001", w.m1["member_no"])
    r = app_client.post(f"/m/coupons/{code}/gift/confirm", data={"phone": "18800001002"})
    assert r.status_code == 403
    assert _snapshot(factory, chain) == before


# --- service packages --------------------------------------------------------------------------------


def _post(client: TestClient, path: str, headers: dict[str, str], status: int = 201, **body: Any) -> Any:
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    return r.json()


def test_packages_with_uses_left_expiry_places_and_history(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    hq = login(app_client, chain, "hq")
    for body in (
        {
            "code": "MANI10",
            "name": "美甲十次卡",
            "service_code": "manicure",
            "uses": 10,
            "price_fen": 50000,
            "validity_days": 30,
            "refund_rule": "unused_pro_rata",
            "store_scope": "brand",
            "brand_code": "home",
        },
        {
            "code": "WASH3",
            "name": "洗护三次卡",
            "service_code": "wash",
            "uses": 3,
            "price_fen": 9000,
            "validity_days": None,
            "refund_rule": "full_if_unused",
            "store_scope": "stores",
            "store_codes": ["B"],
        },
        {
            "code": "CARE2",
            "name": "护理两次卡",
            "service_code": "care",
            "uses": 2,
            "price_fen": 6000,
            "validity_days": None,
            "refund_rule": "none",
            "store_scope": "region",
            "region_code": "east",
        },
    ):
        _post(app_client, "/api/v1/service-packages", hq, **body)
    m = register(app_client, chain, "A", "18800001003")
    no = m["member_no"]
    mani = _post(
        app_client,
        f"/api/v1/members/{no}/packages",
        chain.key("A"),
        package_code="MANI10",
        amount_fen=50000,
        payment_method="wechat_pay",
    )
    clerk = login(app_client, chain, "a_clerk")
    clock.now = NOW + timedelta(hours=1)
    _post(app_client, f"/api/v1/member-packages/{mani['id']}/uses", clerk, uses=1)
    clock.now = NOW + timedelta(hours=2)
    _post(app_client, f"/api/v1/member-packages/{mani['id']}/uses", chain.key("B"), uses=2)
    wash = _post(
        app_client,
        f"/api/v1/members/{no}/packages",
        chain.key("B"),
        package_code="WASH3",
        amount_fen=9000,
        payment_method="cash",
    )
    _post(
        app_client,
        f"/api/v1/member-packages/{wash['id']}/refund",
        login(app_client, chain, "b_mgr"),
        status=200,
        reason="顾客搬家",
    )
    care = _post(
        app_client,
        f"/api/v1/members/{no}/package-grants",
        hq,
        package_code="CARE2",
        source="goodwill",
        reason="客诉补偿",
    )
    member_login(app_client, chain, factory, "18800001003", no)

    r = app_client.get("/m/packages")
    assert r.status_code == 200
    root = page(r.text)
    cards = {int(n.attrs["data-package-id"]): n for n in root.all("package")}

    def fields(n: Node) -> dict[str, str]:
        keys = ("name", "uses", "state", "where", "refund", "origin")
        return {k: n.one(f"package-{k}").text for k in keys}

    assert [int(n.attrs["data-package-id"]) for n in root.one("packages-open").all("package")] == [
        care["id"],
        mani["id"],
    ]
    assert [int(n.attrs["data-package-id"]) for n in root.one("packages-closed").all("package")] == [
        wash["id"]
    ]
    assert fields(cards[mani["id"]]) == {
        "name": "美甲十次卡",
        "uses": "剩余 7 / 10 次",
        "state": "有效期至 2030-07-09",
        "where": "优家品牌门店可用",
        "refund": "未使用的次数可按比例退款",
        "origin": "2030-06-10 于上海徐汇店购买，¥500.00",
    }
    history = cards[mani["id"]].one("package-history")
    assert [
        (u.one("use-store").text, u.one("use-staff").text, u.one("use-no").text)
        for u in history.all("use-row")
    ] == [
        ("杭州西湖店", "收银系统", "第 2–3 次"),
        ("上海徐汇店", "a******", "第 1 次"),
    ]
    assert history.texts("use-time") == ["2030-06-10 14:00", "2030-06-10 13:00"]
    assert fields(cards[wash["id"]]) == {
        "name": "洗护三次卡",
        "uses": "剩余 0 / 3 次",
        "state": "2030-06-10 已退款 ¥90.00（3 次）",
        "where": "仅限：杭州西湖店",
        "refund": "未使用时可全额退款",
        "origin": "2030-06-10 于杭州西湖店购买，¥90.00",
    }
    assert cards[wash["id"]].one("package-history").texts("use-row") == []
    assert fields(cards[care["id"]]) == {
        "name": "护理两次卡",
        "uses": "剩余 2 / 2 次",
        "state": "长期有效",
        "where": "华东区门店可用",
        "refund": "赠送的次卡不可退款",
        "origin": "2030-06-10 由总部赠送",
    }
    chart = json.loads(root.one("chart-uses").attrs["data-chart"])
    assert chart["yAxis"]["data"] == ["护理两次卡", "美甲十次卡"]
    assert [(s["name"], s["data"]) for s in chart["series"]] == [("已用", [0, 3]), ("剩余", [2, 7])]
    assert root.one("nav-packages").text == "次卡 2"
    home = page(app_client.get("/m").text)
    assert home.one("home-package-uses").text == "9"

    # After its last day the manicure package is closed, its uses kept.
    clock.now = datetime(2030, 7, 9, 16, 0, tzinfo=UTC)  # 2030-07-10 00:00 in Shanghai
    member_login(app_client, chain, factory, "18800001003", no)  # a member session lasts 7 days
    root = page(app_client.get("/m/packages").text)
    assert [int(n.attrs["data-package-id"]) for n in root.one("packages-open").all("package")] == [care["id"]]
    closed = {int(n.attrs["data-package-id"]): n for n in root.one("packages-closed").all("package")}
    assert list(closed) == [wash["id"], mani["id"]]
    assert closed[mani["id"]].one("package-state").text == "已于 2030-07-09 到期"
    assert len(closed[mani["id"]].all("use-row")) == 2
    assert page(app_client.get("/m").text).one("home-package-uses").text == "2"

    en = page(app_client.get("/m/packages?lang=en").text)
    mani_en = {int(n.attrs["data-package-id"]): n for n in en.all("package")}[mani["id"]]
    assert mani_en.one("package-uses").text == "7 of 10 uses left"
    assert mani_en.one("package-origin").text == "Bought at 上海徐汇店 on 2030-06-10 for ¥500.00"
    assert [u.one("use-no").text for u in mani_en.all("use-row")] == ["No. 2–3", "No. 1"]


def test_no_benefits_yet(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], clock: Clock
) -> None:
    m = register(app_client, chain, "C", "18800001004")
    member_login(app_client, chain, factory, "18800001004", m["member_no"])
    root = page(app_client.get("/m/coupons").text)
    assert (group(root, "available"), root.one("group-available").text) == ([], "暂无可用的优惠券")
    assert root.all("group-used") == root.all("group-expired") == root.all("group-gifted") == []
    root = page(app_client.get("/m/packages").text)
    assert root.one("packages-open").text == "暂无次卡"
    assert (root.all("package"), root.all("chart-uses"), root.all("packages-closed")) == ([], [], [])
    home = page(app_client.get("/m").text)
    assert (home.one("home-coupons-count").text, home.one("home-package-uses").text) == ("0", "0")
