"""The POS page over plain HTTP: login and roles, identification, basket input, checkout (replayed on a
double submit), failure paths that change nothing, HQ store choice, and returns at another store."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.db import utcnow
from onemember.members import service as members
from onemember.orders.models import Order, OrderReturn
from onemember.points import service as points
from onemember.web.pos.base import Basket, yuan_to_fen
from tests.factories import PASSWORD, Chain
from tests.helpers import balance, checkout, line, register


def pos_login(client: TestClient, chain: Chain, username: str = "a_clerk") -> None:
    client.get("/pos/login")
    r = client.post(
        "/pos/login",
        data={
            "csrf": client.cookies["om_csrf"],
            "org": chain.org_code,
            "username": username,
            "password": PASSWORD,
            "next": "/pos",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/pos"


def post(client: TestClient, url: str, **data: str) -> Response:
    response: Response = client.post(
        url, data={"csrf": client.cookies["om_csrf"], **data}, follow_redirects=False
    )
    return response


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def by_testid(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{name}"[^>]*>([^<]*)<', html)
    assert match, f"no element {name}"
    return match.group(1).strip()


def order_count(factory: sessionmaker[Session], chain: Chain, member_no: str) -> int:
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, member_no)
        return int(s.scalar(select(func.count()).where(Order.member_id == member.id)) or 0)


def add(client: TestClient, sku: str, name: str, qty: str, price: str, category: str = "") -> Response:
    return post(client, "/pos/basket/lines", sku=sku, name=name, quantity=qty, price=price, category=category)


def test_yuan_to_fen_is_exact() -> None:
    assert yuan_to_fen("12") == 1200
    assert yuan_to_fen("12.5") == 1250
    assert yuan_to_fen("0.07") == 7
    assert yuan_to_fen(" ¥38.50 ") == 3850
    assert yuan_to_fen("19.99") == 1999  # no float rounding on the way


def test_login_required_and_roles(app_client: TestClient, chain: Chain) -> None:
    r = app_client.get("/pos", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/pos/login?next=/pos"
    page = app_client.get("/pos/login")
    assert "收银台登录" in page.text
    app_client.get("/pos/login")
    r = app_client.post(
        "/pos/login",
        data={"csrf": "wrong", "org": chain.org_code, "username": "a_clerk", "password": PASSWORD},
    )
    assert r.status_code == 403
    pos_login(app_client, chain, "cs")
    r = app_client.get("/pos")
    assert r.status_code == 403
    assert "您的角色无权使用收银台" in r.text
    post(app_client, "/pos/logout")
    pos_login(app_client, chain, "a_clerk")
    r = app_client.get("/pos")
    assert r.status_code == 200
    assert by_testid(r.text, "pos-store") == "上海徐汇店"
    assert 'data-testid="identify-input"' in r.text
    assert re.search(r'data-testid="identify-input"\s+autofocus', r.text)


def test_identify_by_phone_member_no_and_card(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "B", "18700000101", card_no="CARD-870001")
    with factory() as s:
        member = members.by_member_no(s, chain.org_id, m["member_no"])
        program = points.default_program(s, chain.org_id)
        account = points.lock_account(s, points.ensure_account(s, chain.org_id, member.id, program.id).id)
        ctx = points.EntryContext(reason="test lots", actor="test")
        points.earn(s, account, 150, ctx, expires_at=utcnow() + timedelta(days=10))
        points.earn(s, account, 200, ctx, expires_at=utcnow() + timedelta(days=90))
        points.earn(s, account, 40, ctx)
        s.commit()
    pos_login(app_client, chain)
    for typed in ("187 0000 0101", m["member_no"], "card-870001"):
        r = post(app_client, "/pos/identify", q=typed)
        assert r.status_code == 303, r.text
        page = app_client.get("/pos").text
        assert by_testid(page, "member-no") == m["member_no"]
        post(app_client, "/pos/member/clear")
    post(app_client, "/pos/identify", q="18700000101")
    page = app_client.get("/pos").text
    assert by_testid(page, "member-name") == "王**"
    assert by_testid(page, "member-phone") == "187****0101"
    assert by_testid(page, "member-tier") == "普通会员"
    assert by_testid(page, "member-balance") == "390"
    assert by_testid(page, "member-expiring") == "150"
    assert "王小明" not in page
    assert "18700000101" not in page
    r = post(app_client, "/pos/identify", q="18700009999")
    assert r.status_code == 404
    assert by_testid(r.text, "identify-error") == "找不到该会员"
    assert 'value="18700009999"' in r.text
    r = post(app_client, "/pos/identify", q="   ")
    assert r.status_code == 422
    assert by_testid(r.text, "identify-error") == "请输入或扫描会员标识"
    code, _ = members.issue_member_code(member, now=time.time() - 1000)
    r = post(app_client, "/pos/identify", q=code)
    assert r.status_code == 422
    assert by_testid(r.text, "identify-error") == "会员码已过期，请刷新后重试"
    fresh, _ = members.issue_member_code(member)
    assert post(app_client, "/pos/identify", q=fresh.lower()).status_code == 303
    en = app_client.get("/pos?lang=en").text
    assert by_testid(en, "member-tier") == "Member"


def test_bad_price_input_changes_nothing(app_client: TestClient, chain: Chain) -> None:
    pos_login(app_client, chain)
    assert add(app_client, "SKU-1", "面包", "1", "12.5").status_code == 303
    before = app_client.cookies.get("om_pos_basket")
    for price in ("12.345", "abc", "-5", "1e3", "12,50", "1.2.3", "0.001"):
        r = add(app_client, "SKU-2", "牛奶", "1", price)
        assert r.status_code == 422, price
        assert (
            by_testid(r.text, "line-error") == "单价格式无效：请输入以元为单位、最多两位小数的金额，如 12.50"
        )
        assert 'value="牛奶"' in r.text  # the form keeps what was typed
        assert "set-cookie" not in r.headers
    for qty in ("0", "1.5", "x", "100001"):
        r = add(app_client, "SKU-2", "牛奶", qty, "3")
        assert r.status_code == 422
        assert by_testid(r.text, "line-error") == "数量须为 1 到 100000 的整数"
    r = add(app_client, "NEW-SKU", "", "1", "")
    assert r.status_code == 422
    assert by_testid(r.text, "line-error") == "本店近期没有售出该商品，请输入单价"
    assert app_client.cookies.get("om_pos_basket") == before
    page = app_client.get("/pos").text
    assert page.count('data-testid="basket-line"') == 1
    assert by_testid(page, "basket-total") == "¥12.50"


def test_basket_lines_change_and_survive_reload(app_client: TestClient, chain: Chain) -> None:
    pos_login(app_client, chain)
    add(app_client, "SKU-1", "面包", "2", "12.50", "烘焙")
    add(app_client, "SKU-1", "面包", "1", "12.50", "烘焙")  # the same item again adds to its line
    add(app_client, "SKU-2", "牛奶", "1", "6")
    page = app_client.get("/pos").text
    assert by_testid(page, "line-qty-1") == "3"
    assert by_testid(page, "line-amount-1") == "¥37.50"
    assert by_testid(page, "basket-total") == "¥43.50"
    assert re.search(r'data-testid="line-sku"[^>]*autofocus', page)
    post(app_client, "/pos/basket/change", op="0:-1")
    post(app_client, "/pos/basket/change", op="1:1")
    page = app_client.get("/pos").text
    assert by_testid(page, "line-qty-1") == "2"
    assert by_testid(page, "line-qty-2") == "2"
    assert by_testid(page, "basket-total") == "¥37.00"
    post(app_client, "/pos/basket/change", op="0:0")
    page = app_client.get("/pos").text
    assert page.count('data-testid="basket-line"') == 1
    post(app_client, "/pos/basket/clear")
    assert 'data-testid="basket-empty"' in app_client.get("/pos").text
    # A basket cookie that was tampered with is ignored, never trusted.
    token = Basket(1, "A", None, []).encode()
    app_client.cookies.set("om_pos_basket", token[:-3] + "AAA", path="/pos")
    assert 'data-testid="basket-empty"' in app_client.get("/pos").text


def test_insufficient_points_changes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18700000201")
    checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("SEED", 1, 5000)])
    assert balance(app_client, chain, m["member_no"]) == (50, 0)
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700000201")
    add(app_client, "SKU-9", "茶叶", "1", "80")
    page = app_client.get("/pos").text
    assert "最多可用 <strong>50</strong> 积分 · 100 积分 = ¥1.00" in page
    form = {"basket": hidden(page, "basket"), "idem": hidden(page, "idem"), "method": "cash"}
    r = post(app_client, "/pos/checkout", redeem="60", **form)
    assert r.status_code == 409
    assert by_testid(r.text, "checkout-error") == "积分余额不足：可用 50，需要 60"
    assert order_count(factory, chain, m["member_no"]) == 1
    assert balance(app_client, chain, m["member_no"]) == (50, 0)
    assert r.text.count('data-testid="basket-line"') == 1
    assert hidden(r.text, "idem") != form["idem"]  # the corrected form gets a fresh key
    for bad, text in (("-1", "抵扣积分须为不小于 0 的整数"), ("1.5", "抵扣积分须为不小于 0 的整数")):
        r = post(app_client, "/pos/checkout", redeem=bad, **{**form, "idem": hidden(r.text, "idem")})
        assert r.status_code == 422
        assert by_testid(r.text, "checkout-error") == text
    r = post(app_client, "/pos/checkout", redeem="9000", **{**form, "idem": "k-over-total"})
    assert r.status_code == 422
    assert by_testid(r.text, "checkout-error") == "抵扣金额超过订单金额"
    r = post(app_client, "/pos/checkout", redeem="0", basket="forged.token", idem="k-forged", method="cash")
    assert r.status_code == 422
    assert by_testid(r.text, "checkout-error") == "页面已过期，请刷新后重试"
    assert order_count(factory, chain, m["member_no"]) == 1
    assert balance(app_client, chain, m["member_no"]) == (50, 0)
    quote = app_client.get("/pos/quote?redeem=60").text
    assert by_testid(quote, "quote-warning") == "超过会员可用积分"
    quote = app_client.get("/pos/quote?redeem=30").text
    assert by_testid(quote, "quote-value") == "-¥0.30"
    assert by_testid(quote, "quote-due") == "¥79.70"


def test_checkout_replays_a_double_submit_and_prints_the_receipt(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "B", "18700000301")
    checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("SEED", 1, 50000)])
    pos_login(app_client, chain)
    post(app_client, "/pos/identify", q="18700000301")
    add(app_client, "SKU-TEA", "龙井茶", "2", "38.50", "茶叶")
    add(app_client, "SKU-CUP", "茶杯", "1", "25")
    page = app_client.get("/pos").text
    form = {"basket": hidden(page, "basket"), "idem": hidden(page, "idem"), "method": "wechat_pay"}
    first = post(app_client, "/pos/checkout", redeem="300", **form)
    assert first.status_code == 303
    second = post(app_client, "/pos/checkout", redeem="300", **form)
    assert second.headers["location"] == first.headers["location"]
    assert order_count(factory, chain, m["member_no"]) == 2  # the seed and this one
    # The basket starts over after the checkout.
    assert 'data-testid="basket-empty"' in app_client.get("/pos").text
    receipt = app_client.get(first.headers["location"]).text
    assert by_testid(receipt, "receipt-total") == "¥102.00"
    assert by_testid(receipt, "receipt-points-value") == "-¥3.00"
    assert by_testid(receipt, "receipt-paid") == "¥99.00"
    assert by_testid(receipt, "receipt-redeemed") == "300"
    assert by_testid(receipt, "receipt-earned") == "98"
    assert by_testid(receipt, "receipt-balance") == "298"
    assert "基础积分：实付每 1 元得 1 积分（按行向下取整）" in receipt
    assert "@media print" in app_client.get("/static/app/pos.css").text
    assert balance(app_client, chain, m["member_no"]) == (298, 0)
    # A different body under the same key is refused and changes nothing.
    r = post(app_client, "/pos/checkout", redeem="0", **form)
    assert r.status_code == 422
    assert by_testid(r.text, "checkout-error") == "该幂等键已用于内容不同的请求"
    assert order_count(factory, chain, m["member_no"]) == 2


def test_quick_add_uses_this_stores_recent_lines(app_client: TestClient, chain: Chain) -> None:
    checkout(app_client, chain, "A", None, [line("QA-1", 1, 990, name="矿泉水")])
    checkout(app_client, chain, "B", None, [line("QB-1", 1, 500, name="酸奶")])
    pos_login(app_client, chain)
    page = app_client.get("/pos").text
    assert 'data-testid="quick-QA-1"' in page
    assert 'data-testid="quick-QB-1"' not in page
    assert post(app_client, "/pos/basket/quick", sku="QA-1").status_code == 303
    assert add(app_client, "QA-1", "", "2", "").status_code == 303  # a scanned SKU, no price typed
    page = app_client.get("/pos").text
    assert by_testid(page, "line-qty-1") == "3"
    assert by_testid(page, "basket-total") == "¥29.70"
    form = {"basket": hidden(page, "basket"), "idem": hidden(page, "idem"), "method": "cash"}
    r = post(app_client, "/pos/checkout", redeem="", **form)
    assert r.status_code == 303
    receipt = app_client.get(r.headers["location"]).text
    assert by_testid(receipt, "receipt-member") == "非会员"
    assert by_testid(receipt, "receipt-paid") == "¥29.70"


def test_hq_chooses_a_store(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    pos_login(app_client, chain, "hq")
    page = app_client.get("/pos").text
    assert 'data-testid="choose-store"' in page
    r = add(app_client, "X", "x", "1", "1")
    assert r.status_code == 422
    assert "请先选择收银门店" in r.text
    page = app_client.get("/pos?store=B").text
    assert re.search(r'<option value="B" selected>杭州西湖店', page)
    add(app_client, "HQ-1", "礼盒", "1", "66")
    page = app_client.get("/pos").text  # the choice is kept in a cookie
    form = {"basket": hidden(page, "basket"), "idem": hidden(page, "idem"), "method": "alipay"}
    r = post(app_client, "/pos/checkout", redeem="0", **form)
    assert r.status_code == 303
    order_no = r.headers["location"].rsplit("/", 1)[1]
    with factory() as s:
        order = s.scalar(select(Order).where(Order.order_no == order_no))
        assert order is not None
        assert order.store_id == chain.stores["B"]
        assert order.total_fen == 6600
    # Another store's basket is not carried over.
    assert 'data-testid="basket-empty"' in app_client.get("/pos?store=C").text


def test_return_at_another_store(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18700000401")
    sale = checkout(
        app_client,
        chain,
        "A",
        {"member_no": m["member_no"]},
        [line("R-1", 2, 4000, name="衬衫"), line("R-2", 1, 2000, name="袜子")],
    )
    assert balance(app_client, chain, m["member_no"]) == (100, 0)
    pos_login(app_client, chain, "c_clerk")
    r = app_client.get("/pos/orders?no=S000")
    assert r.status_code == 404
    assert by_testid(r.text, "lookup-error") == "找不到该订单"
    page = app_client.get(f"/pos/orders?no={sale['order_no']}").text
    assert by_testid(page, "order-store") == "上海徐汇店"
    assert 'data-testid="cross-store"' in page
    assert by_testid(page, "returnable-1") == "2"
    assert by_testid(page, "order-member") == f"王** 187****0401 · {m['member_no']}"
    idem = hidden(page, "idem")
    url = f"/pos/orders/{sale['order_no']}/returns"
    form = {"csrf": app_client.cookies["om_csrf"], "idem": idem, "line": ["1", "2"], "reason": "尺码不合适"}
    r = app_client.post(url, data={**form, "qty": ["3", "0"]}, follow_redirects=False)
    assert r.status_code == 409
    assert by_testid(r.text, "return-error") == "第 1 行最多还可退 2 件"
    r = app_client.post(url, data={**form, "idem": "k2", "qty": ["0", "0"]}, follow_redirects=False)
    assert r.status_code == 422
    assert by_testid(r.text, "return-error") == "请至少填写一行的退货数量"
    r = app_client.post(url, data={**form, "idem": "k3", "qty": ["x", "0"]}, follow_redirects=False)
    assert r.status_code == 422
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(OrderReturn)) == 0
    assert balance(app_client, chain, m["member_no"]) == (100, 0)
    form["idem"] = hidden(r.text, "idem")
    first = app_client.post(url, data={**form, "qty": ["1", "0"]}, follow_redirects=False)
    assert first.status_code == 303
    again = app_client.post(url, data={**form, "qty": ["1", "0"]}, follow_redirects=False)
    assert again.headers["location"] == first.headers["location"]
    receipt = app_client.get(first.headers["location"]).text
    assert by_testid(receipt, "return-refund") == "¥40.00"
    assert by_testid(receipt, "return-points-reversed") == "-40"
    assert by_testid(receipt, "return-points-refunded") == "+0"
    assert by_testid(receipt, "return-balance") == "60"
    assert by_testid(receipt, "return-original-store") == "上海徐汇店"
    assert balance(app_client, chain, m["member_no"]) == (60, 0)
    with factory() as s:
        ret = s.scalar(select(OrderReturn).where(OrderReturn.org_id == chain.org_id))
        assert ret is not None
        assert ret.store_id == chain.stores["C"]
        assert ret.reason == "尺码不合适"
    page = app_client.get(f"/pos/orders?no={sale['order_no']}").text
    assert by_testid(page, "returnable-1") == "1"
    assert by_testid(page, "order-status") == "部分退货"


def test_return_of_spent_points_shows_the_debt(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "18700000501")
    ref = {"member_no": m["member_no"]}
    sale = checkout(app_client, chain, "A", ref, [line("D-1", 1, 10000, name="外套")])
    checkout(app_client, chain, "A", ref, [line("D-2", 1, 100, name="纸袋")], redeem=100)
    assert balance(app_client, chain, m["member_no"]) == (0, 0)
    pos_login(app_client, chain, "a_clerk")
    page = app_client.get(f"/pos/orders?no={sale['order_no']}").text
    data = {"csrf": app_client.cookies["om_csrf"], "idem": hidden(page, "idem"), "line": ["1"], "qty": ["1"]}
    r = app_client.post(f"/pos/orders/{sale['order_no']}/returns", data=data, follow_redirects=False)
    assert r.status_code == 303
    receipt = app_client.get(r.headers["location"]).text
    assert by_testid(receipt, "return-refund") == "¥100.00"
    assert by_testid(receipt, "return-points-reversed") == "-100"
    assert by_testid(receipt, "return-shortfall") == "100"
    assert "记为欠分，之后消费抵还" in receipt
    assert by_testid(receipt, "return-balance") == "0"
    assert by_testid(receipt, "return-debt") == "100"
    assert balance(app_client, chain, m["member_no"]) == (0, 100)
    post(app_client, "/pos/identify", q="18700000501")
    page = app_client.get("/pos").text
    assert by_testid(page, "member-debt") == "100"
    assert by_testid(page, "member-balance") == "0"
    page = app_client.get(f"/pos/orders?no={sale['order_no']}").text
    assert 'data-testid="nothing-returnable"' in page
    assert by_testid(page, "order-status") == "已全部退货"
