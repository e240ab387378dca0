"""The console members pages over plain HTTP: scope, search, sort, paging, export, and the failure paths of
the audited phone reveal and of the merge (each refused request changes nothing)."""

from __future__ import annotations

import io
import re
from typing import Any

from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.members.models import Member, MemberIdentity, MemberMerge
from onemember.orders.models import Order
from onemember.points.models import PointAccount
from tests.factories import PASSWORD, Chain
from tests.helpers import checkout, line, register


def console_login(client: TestClient, chain: Chain, username: str) -> str:
    """Log in through the console form; returns the CSRF token the pages carry."""
    client.cookies.clear()
    client.get("/console/login")
    csrf = client.cookies.get("om_csrf")
    assert csrf
    r = client.post(
        "/console/login",
        data={"org": chain.org_code, "username": username, "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf


def audit_rows(factory: sessionmaker[Session], org_id: int, action: str) -> list[tuple[Any, ...]]:
    with factory() as s:
        return [
            tuple(row)
            for row in s.execute(
                select(AuditLog.actor, AuditLog.member_id, AuditLog.reason, AuditLog.target_id).where(
                    AuditLog.org_id == org_id, AuditLog.action == action
                )
            )
        ]


def member_state(factory: sessionmaker[Session], chain: Chain, member_no: str) -> tuple[Any, ...]:
    """Everything a merge would change, to prove a refused one changed nothing."""
    with factory() as s:
        m = s.scalar(select(Member).where(Member.org_id == chain.org_id, Member.member_no == member_no))
        assert m is not None
        return (
            m.status,
            m.merged_into_id,
            s.scalar(select(func.count()).where(Order.member_id == m.id)),
            s.scalar(select(func.count()).where(MemberIdentity.member_id == m.id)),
            s.scalar(select(PointAccount.balance).where(PointAccount.member_id == m.id)),
            s.scalar(select(func.count()).select_from(MemberMerge).where(MemberMerge.org_id == chain.org_id)),
        )


def row_numbers(html: str) -> list[str]:
    return re.findall(r'data-testid="member-row" data-member-no="(\d+)"', html)


def test_forged_reveal_without_the_role_gets_403_and_writes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18600000101", name="赵子涵")
    no = m["member_no"]
    csrf = console_login(app_client, chain, "a_clerk")
    page = app_client.get(f"/console/members/{no}")
    assert page.status_code == 200
    assert "186****0101" in page.text
    assert 'data-testid="reveal-button"' not in page.text
    assert 'data-testid="merge-card"' not in page.text
    for user in ("a_clerk", "auditor", "b_mgr"):  # no reveal role; reveal role but another store's member
        csrf = console_login(app_client, chain, user)
        r = app_client.post(
            f"/console/members/{no}/reveal",
            data={"csrf": csrf, "reason": "伪造请求"},
            headers={"HX-Request": "true"},
        )
        assert r.status_code == 403, (user, r.text)
        assert "18600000101" not in r.text
        assert "您无权查看该会员的完整个人信息" in r.text
    # A reveal role without the page's CSRF token is refused as well.
    console_login(app_client, chain, "hq")
    r = app_client.post(f"/console/members/{no}/reveal", data={"reason": "无令牌"})
    assert r.status_code == 403
    assert "页面已过期" in r.text
    assert audit_rows(factory, chain.org_id, "member.pii_revealed") == []


def test_reveal_needs_a_reason_and_is_audited_once_given(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18600000102", name="钱多多")
    no = m["member_no"]
    csrf = console_login(app_client, chain, "a_mgr")
    page = app_client.get(f"/console/members/{no}")
    assert 'data-testid="reveal-button"' in page.text
    empty = app_client.post(
        f"/console/members/{no}/reveal", data={"csrf": csrf, "reason": "  "}, headers={"HX-Request": "true"}
    )
    assert empty.status_code == 200
    assert "请填写查看原因" in empty.text
    assert "18600000102" not in empty.text
    plain = app_client.post(f"/console/members/{no}/reveal", data={"csrf": csrf, "reason": ""})
    assert plain.status_code == 422
    assert audit_rows(factory, chain.org_id, "member.pii_revealed") == []
    ok = app_client.post(
        f"/console/members/{no}/reveal",
        data={"csrf": csrf, "reason": "会员来电核实"},
        headers={"HX-Request": "true"},
    )
    assert ok.status_code == 200
    assert 'data-testid="phone-full">18600000102<' in ok.text
    member_id = _member_id(factory, chain, no)
    assert audit_rows(factory, chain.org_id, "member.pii_revealed") == [
        ("staff:a_mgr", member_id, "会员来电核实", no)
    ]
    # Without htmx the form posts normally and the whole page comes back with the number shown.
    page = app_client.post(f"/console/members/{no}/reveal", data={"csrf": csrf, "reason": "寄送礼品核对"})
    assert page.status_code == 200
    assert 'data-testid="phone-full">18600000102<' in page.text
    assert 'data-testid="member-name">钱多多<' in page.text
    assert len(audit_rows(factory, chain.org_id, "member.pii_revealed")) == 2


def test_merge_with_itself_shows_the_domain_error_and_changes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18600000103", name="孙悦")
    no = m["member_no"]
    checkout(app_client, chain, "A", {"member_no": no}, [line("sku-1", 1, 5000)])
    before = member_state(factory, chain, no)
    assert before == ("active", None, 1, 1, 50, 0)
    csrf = console_login(app_client, chain, "hq")
    preview = app_client.get(
        f"/console/members/{no}/merge-preview", params={"other": no}, headers={"HX-Request": "true"}
    )
    assert preview.status_code == 200
    assert 'data-testid="merge-error">不能与自己合并<' in preview.text
    r = app_client.post(
        f"/console/members/{no}/merge",
        data={"csrf": csrf, "other": no, "reason": "重复"},
        follow_redirects=False,
    )
    assert r.status_code == 409
    assert 'data-testid="error-message">不能与自己合并<' in r.text
    assert "members.merge_invalid" in r.text
    en = app_client.post(
        f"/console/members/{no}/merge?lang=en", data={"csrf": csrf, "other": no, "reason": "dup"}
    )
    assert en.status_code == 409
    assert "A member cannot be merged with itself" in en.text
    assert member_state(factory, chain, no) == before
    assert audit_rows(factory, chain.org_id, "member.merged") == []


def test_merge_refused_for_roles_without_it_and_without_a_reason(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(app_client, chain, "A", "18600000104", name="李雷")
    b = register(app_client, chain, "A", "18600000105", name="李雷")
    checkout(app_client, chain, "A", {"member_no": b["member_no"]}, [line("sku-1", 2, 1000)])
    before_a, before_b = (
        member_state(factory, chain, a["member_no"]),
        member_state(factory, chain, b["member_no"]),
    )
    for user in ("a_clerk", "auditor", "b_mgr"):  # no merge role; merge role but not their member
        csrf = console_login(app_client, chain, user)
        r = app_client.post(
            f"/console/members/{a['member_no']}/merge",
            data={"csrf": csrf, "other": b["member_no"], "reason": "同一人"},
        )
        assert r.status_code == 403, (user, r.text)
    csrf = console_login(app_client, chain, "a_mgr")
    r = app_client.post(
        f"/console/members/{a['member_no']}/merge",
        data={"csrf": csrf, "other": b["member_no"], "reason": " "},
    )
    assert r.status_code == 422
    assert "请填写合并原因" in r.text
    assert member_state(factory, chain, a["member_no"]) == before_a
    assert member_state(factory, chain, b["member_no"]) == before_b
    assert audit_rows(factory, chain.org_id, "member.merged") == []


def test_merge_moves_the_member_and_the_old_number_opens_the_survivor(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(app_client, chain, "A", "18600000106", name="周杰")
    b = register(app_client, chain, "B", "18600000107", name="周杰")
    checkout(app_client, chain, "B", {"member_no": b["member_no"]}, [line("sku-1", 3, 1000)])
    csrf = console_login(app_client, chain, "cs")
    preview = app_client.get(
        f"/console/members/{a['member_no']}/merge-preview",
        params={"other": "186 0000 0107"},
        headers={"HX-Request": "true"},
    )
    assert preview.status_code == 200
    assert 'data-testid="preview-orders">1<' in preview.text
    assert 'data-testid="preview-points">30<' in preview.text
    r = app_client.post(
        f"/console/members/{a['member_no']}/merge",
        data={"csrf": csrf, "other": b["member_no"], "reason": "同一顾客两个号"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/members/{a['member_no']}?merged_from={b['member_no']}"
    old = app_client.get(f"/console/members/{b['member_no']}", follow_redirects=False)
    assert old.status_code == 303
    assert old.headers["location"] == r.headers["location"]
    page = app_client.get(old.headers["location"])
    assert f"会员号 {b['member_no']} 已合并到本会员" in page.text
    assert 'data-testid="points-balance">30<' in page.text
    assert member_state(factory, chain, b["member_no"])[:3] == (
        "merged",
        _member_id(factory, chain, a["member_no"]),
        0,
    )
    assert audit_rows(factory, chain.org_id, "member.merged") == [
        ("staff:cs", _member_id(factory, chain, a["member_no"]), "同一顾客两个号", a["member_no"])
    ]


def _member_id(factory: sessionmaker[Session], chain: Chain, member_no: str) -> int:
    with factory() as s:
        found = s.scalar(
            select(Member.id).where(Member.org_id == chain.org_id, Member.member_no == member_no)
        )
        assert found is not None
        return found


def test_store_manager_lists_own_members_and_finds_others_only_by_exact_phone(
    app_client: TestClient, chain: Chain
) -> None:
    at_a = register(app_client, chain, "A", "18600000111", name="范甲")
    at_b = register(app_client, chain, "B", "18600000112", name="范乙")
    shops_b = register(app_client, chain, "A", "18600000113", name="范丙")
    checkout(app_client, chain, "B", {"member_no": shops_b["member_no"]}, [line("sku-1", 1, 2000)])
    console_login(app_client, chain, "b_mgr")
    listed = app_client.get("/console/members", params={"q": "范", "sort": "name", "dir": "asc"})
    assert listed.status_code == 200
    assert row_numbers(listed.text) == [shops_b["member_no"], at_b["member_no"]]  # 范丙 < 范乙 by code point
    found = app_client.get("/console/members", params={"q": "18600000111"})
    assert row_numbers(found.text) == [at_a["member_no"]]
    assert 'data-testid="row-name">范* <span' in found.text
    by_no = app_client.get("/console/members", params={"q": at_a["member_no"]})
    assert row_numbers(by_no.text) == [at_a["member_no"]]
    page = app_client.get(f"/console/members/{at_a['member_no']}")
    assert 'data-testid="member-name">范*<' in page.text
    assert 'data-testid="cross-store"' in page.text
    assert 'data-testid="reveal-button"' not in page.text
    assert "186****0111" in page.text
    english = app_client.get("/console/members", params={"q": "18600000111", "lang": "en"})
    assert "Find a member" in english.text
    assert "Cross-store view (masked)" in english.text
    assert "Export to Excel" in english.text
    missing = app_client.get("/console/members", params={"q": "18600000199", "lang": "zh"})
    assert row_numbers(missing.text) == []
    assert "没有找到该手机号或会员号的会员" in missing.text
    console_login(app_client, chain, "hq")
    everyone = app_client.get("/console/members", params={"q": "范", "sort": "name", "dir": "asc"})
    assert row_numbers(everyone.text) == [shops_b["member_no"], at_b["member_no"], at_a["member_no"]]
    only_b = app_client.get("/console/members", params={"q": "范", "store": "B"})
    assert row_numbers(only_b.text) == [at_b["member_no"]]
    north = app_client.get("/console/members", params={"q": "范", "region": "north"})
    assert row_numbers(north.text) == []


def test_sort_and_paging_happen_on_the_server(app_client: TestClient, chain: Chain) -> None:
    nos = [
        register(app_client, chain, "C", f"186000002{i:02d}", name=f"序{i:02d}")["member_no"]
        for i in range(1, 23)
    ]
    for idx, amount in ((4, 3000), (9, 9050), (15, 101)):
        checkout(app_client, chain, "C", {"member_no": nos[idx]}, [line("sku-1", 1, amount, category="饮品")])
    console_login(app_client, chain, "hq")
    first = app_client.get("/console/members", params={"q": "序", "sort": "spend", "dir": "desc"})
    assert row_numbers(first.text)[:3] == [nos[9], nos[4], nos[15]]
    assert len(row_numbers(first.text)) == 20
    assert "共 22 条 · 第 1 / 2 页" in first.text
    second = app_client.get(
        "/console/members", params={"q": "序", "sort": "spend", "dir": "desc", "page": "2"}
    )
    assert len(row_numbers(second.text)) == 2
    by_name = app_client.get(
        "/console/members", params={"q": "序", "sort": "name", "dir": "asc", "page": "2"}
    )
    assert row_numbers(by_name.text) == [nos[20], nos[21]]
    newest = app_client.get("/console/members", params={"q": "序"})
    assert row_numbers(newest.text)[:2] == [nos[21], nos[20]]
    last_buy = app_client.get("/console/members", params={"q": "序", "sort": "last_purchase"})
    assert row_numbers(last_buy.text)[:3] == [nos[15], nos[9], nos[4]]
    export = app_client.get("/console/members/export", params={"q": "序", "sort": "spend", "dir": "desc"})
    assert export.status_code == 200
    sheet = load_workbook(io.BytesIO(export.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == (
        "会员号",
        "姓名",
        "手机号",
        "注册门店",
        "状态",
        "注册时间",
        "最近消费",
        "订单数",
        "累计消费（元）",
    )
    assert len(rows) == 23
    assert [r[:5] + r[7:] for r in rows[1:4]] == [
        (nos[9], "序10", "186****0210", "C 北京朝阳店", "有效", 1, 90.5),
        (nos[4], "序05", "186****0205", "C 北京朝阳店", "有效", 1, 30),
        (nos[15], "序16", "186****0216", "C 北京朝阳店", "有效", 1, 1.01),
    ]


def test_order_detail_fragment_only_for_the_members_own_orders(app_client: TestClient, chain: Chain) -> None:
    a = register(app_client, chain, "A", "18600000121", name="吴桐")
    b = register(app_client, chain, "A", "18600000122", name="吴桐")
    order = checkout(
        app_client, chain, "A", {"member_no": a["member_no"]}, [line("sku-9", 2, 1250, category="零食")]
    )
    console_login(app_client, chain, "hq")
    frag = app_client.get(
        f"/console/members/{a['member_no']}/orders/{order['order_no']}", headers={"HX-Request": "true"}
    )
    assert frag.status_code == 200
    assert frag.text.count('data-testid="order-line"') == 1
    assert "¥25.00" in frag.text
    other = app_client.get(f"/console/members/{b['member_no']}/orders/{order['order_no']}")
    assert other.status_code == 404
