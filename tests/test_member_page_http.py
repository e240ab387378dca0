"""The member page over HTTP: one-time-code login with its limits, the pages, consents, export, erasure."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.db import utcnow
from onemember.members.models import Member
from onemember.members.privacy_models import MemberConsent, MemberOtp, MemberSession
from onemember.messaging.models import OutboxMessage
from onemember.points.verify import verify
from tests.factories import Chain
from tests.helpers import checkout, line, register

CODE_RE = re.compile(r"验证码是 (\d{6})，5 分钟内有效")


def csrf(client: TestClient, path: str = "/m/login") -> str:
    if "om_csrf" not in client.cookies:
        client.get(path)
    return str(client.cookies["om_csrf"])


def ask_code(client: TestClient, chain: Chain, phone: str, **extra: str) -> Any:
    return client.post(
        "/m/login/code", data={"csrf": csrf(client), "org": chain.org_code, "phone": phone, **extra}
    )


def enter_code(client: TestClient, chain: Chain, phone: str, code: str) -> Any:
    return client.post(
        "/m/login/verify",
        data={"csrf": csrf(client), "org": chain.org_code, "phone": phone, "code": code},
        follow_redirects=False,
    )


def outbox(factory: sessionmaker[Session], org_id: int) -> list[OutboxMessage]:
    with factory() as s:
        return list(
            s.scalars(select(OutboxMessage).where(OutboxMessage.org_id == org_id).order_by(OutboxMessage.id))
        )


def outbox_ids(factory: sessionmaker[Session], org_id: int) -> list[tuple[int, str]]:
    return [(m.id, m.status) for m in outbox(factory, org_id)]


def last_code(factory: sessionmaker[Session], member_no: str, org_id: int) -> str:
    with factory() as s:
        body = s.scalar(
            select(OutboxMessage.body)
            .join(Member, Member.id == OutboxMessage.member_id)
            .where(Member.org_id == org_id, Member.member_no == member_no)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        )
    assert body is not None
    found = CODE_RE.search(body)
    assert found, body
    return found.group(1)


def login(
    client: TestClient, chain: Chain, factory: sessionmaker[Session], phone: str, member_no: str
) -> None:
    r = ask_code(client, chain, phone)
    assert r.status_code == 200, r.text
    r = enter_code(client, chain, phone, last_code(factory, member_no, chain.org_id))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/m"


def test_login_with_code_from_the_outbox(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000101")
    assert app_client.get("/m", follow_redirects=False).headers["location"] == "/m/login?next=/m"
    r = ask_code(app_client, chain, "188 0000 0101")
    assert r.status_code == 200
    assert 'data-testid="code-form"' in r.text
    assert "验证码已发送至 188****0101" in r.text
    [message] = outbox(factory, chain.org_id)
    assert message.status == "sent"
    assert message.channel == "sms"
    assert message.recipient_masked == "188****0101"
    assert message.template_key == "member.login_code"
    assert message.attempts == 1
    assert message.provider_id.startswith("log-")
    assert b"18800000101" not in message.recipient_enc
    code = last_code(factory, m["member_no"], chain.org_id)
    assert message.body == f"【OneMember】您的验证码是 {code}，5 分钟内有效"
    with factory() as s:
        otp = s.scalars(select(MemberOtp).where(MemberOtp.org_id == chain.org_id)).one()
        assert code not in otp.code_hash
        assert otp.message_id == message.id
    r = enter_code(app_client, chain, "18800000101", code)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "om_member=omm_" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    token = app_client.cookies["om_member"]
    with factory() as s:
        record = s.scalars(select(MemberSession).where(MemberSession.member_id == message.member_id)).one()
        assert record.token_hash != token
        assert len(record.token_hash) == 64
    home = app_client.get("/m")
    assert home.status_code == 200
    assert f'data-testid="member-no">{m["member_no"]}<' in home.text
    assert "<svg" in home.text
    # A used code does not open a second session.
    again = enter_code(app_client, chain, "18800000101", code)
    assert again.status_code == 422
    assert "验证码已失效" in again.text
    r = app_client.post("/m/logout", data={"csrf": csrf(app_client)}, follow_redirects=False)
    assert r.headers["location"] == "/m/login?bye=1"
    with factory() as s:
        assert s.scalars(select(MemberSession.revoked_at).where(MemberSession.id == record.id)).one()
    app_client.cookies.set("om_member", token, path="/m")
    assert app_client.get("/m", follow_redirects=False).status_code == 303


def test_second_code_within_a_minute_is_refused_and_nothing_is_queued(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    register(app_client, chain, "A", "18800000102")
    assert ask_code(app_client, chain, "18800000102").status_code == 200
    before = outbox_ids(factory, chain.org_id)
    assert len(before) == 1
    r = ask_code(app_client, chain, "18800000102")
    assert r.status_code == 429
    assert re.search(r"验证码已发送，请 \d+ 秒后再试", r.text)
    assert outbox_ids(factory, chain.org_id) == before
    with factory() as s:
        assert s.scalar(select(func.count()).where(MemberOtp.org_id == chain.org_id)) == 1
    r = app_client.post(
        "/m/login/code?lang=en",
        data={"csrf": csrf(app_client), "org": chain.org_code, "phone": "18800000102"},
    )
    assert r.status_code == 429
    assert re.search(r"A code was just sent; try again in \d+ s", r.text)


def test_a_phone_that_is_no_member_gets_the_same_answer(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    register(app_client, chain, "A", "18800000103")
    member_answer = ask_code(app_client, chain, "18800000103")
    stranger_answer = ask_code(app_client, chain, "18800000199")
    assert member_answer.status_code == stranger_answer.status_code == 200

    def scrub(text: str) -> str:
        return text.replace("0103", "XXXX").replace("0199", "XXXX")

    assert scrub(member_answer.text) == scrub(stranger_answer.text)
    assert len(outbox(factory, chain.org_id)) == 1  # only the member got a message
    assert ask_code(app_client, chain, "18800000199").status_code == 429  # same limits
    r = enter_code(app_client, chain, "18800000199", "123456")
    assert r.status_code == 422
    assert "验证码错误，还可尝试 4 次" in r.text


def test_five_wrong_codes_lock_the_code(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000104")
    ask_code(app_client, chain, "18800000104")
    code = last_code(factory, m["member_no"], chain.org_id)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        r = enter_code(app_client, chain, "18800000104", wrong)
        assert r.status_code == 422
        assert f"验证码错误，还可尝试 {left} 次" in r.text
    r = enter_code(app_client, chain, "18800000104", wrong)
    assert "验证码错误次数过多" in r.text
    r = enter_code(app_client, chain, "18800000104", code)
    assert r.status_code == 422
    assert "验证码错误次数过多" in r.text
    assert "om_member" not in app_client.cookies
    with factory() as s:
        assert s.scalar(select(MemberOtp.attempts).where(MemberOtp.org_id == chain.org_id)) == 5
        assert s.scalar(select(func.count()).where(MemberSession.org_id == chain.org_id)) == 0


def test_expired_code_is_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000105")
    ask_code(app_client, chain, "18800000105")
    code = last_code(factory, m["member_no"], chain.org_id)
    with factory() as s:
        s.execute(
            update(MemberOtp)
            .where(MemberOtp.org_id == chain.org_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
    r = enter_code(app_client, chain, "18800000105", code)
    assert r.status_code == 422
    assert "验证码已失效，请重新获取" in r.text
    assert "om_member" not in app_client.cookies


def test_invalid_phone_and_missing_csrf(app_client: TestClient, chain: Chain) -> None:
    r = ask_code(app_client, chain, "12345")
    assert r.status_code == 422
    assert "手机号格式无效" in r.text
    r = app_client.post("/m/login/code", data={"org": chain.org_code, "phone": "18800000106"})
    assert r.status_code == 403


def test_pages_ledger_orders_profile_consents(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000107")
    ref = {"member_no": m["member_no"]}
    o1 = checkout(app_client, chain, "A", ref, [line("SKU1", 2, 5000)])
    o2 = checkout(app_client, chain, "B", ref, [line("SKU2", 1, 3000)], redeem=50)
    login(app_client, chain, factory, "18800000107", m["member_no"])
    home = app_client.get("/m")
    assert 'data-testid="balance">79<' in home.text  # 100 earned, 50 spent, 29 earned on ¥29.50 paid
    ledger = app_client.get("/m/ledger")
    assert ledger.text.count('data-testid="ledger-row"') == 3
    assert o2["order_no"] in ledger.text
    only_redeem = app_client.get("/m/ledger?kind=redeem")
    assert only_redeem.text.count('data-testid="ledger-row"') == 1
    assert 'data-amount="-50"' in only_redeem.text
    xlsx = app_client.get("/m/ledger?kind=redeem&format=xlsx")
    assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    orders = app_client.get("/m/orders")
    assert orders.text.index(o2["order_no"]) < orders.text.index(o1["order_no"])
    assert "上海徐汇店" in orders.text
    assert "杭州西湖店" in orders.text
    only_b = app_client.get("/m/orders?store=B")
    assert o2["order_no"] in only_b.text
    assert o1["order_no"] not in only_b.text
    sheet = openpyxl.load_workbook(io.BytesIO(app_client.get("/m/orders?store=B&format=xlsx").content)).active
    assert sheet is not None
    rows = list(sheet.values)
    assert rows[0][:5] == ("订单号", "门店", "时间", "金额", "实付")
    assert [(r[0], r[1], r[3], r[4], r[6]) for r in rows[1:]] == [
        (o2["order_no"], "杭州西湖店", 30, 29.5, 29)
    ]
    detail = app_client.get(f"/m/orders/{o1['order_no']}")
    assert "SKU1" in detail.text
    # Someone else's order is not found.
    other = register(app_client, chain, "A", "18800000108")
    o3 = checkout(app_client, chain, "A", {"member_no": other["member_no"]}, [line("X", 1, 100)])
    assert app_client.get(f"/m/orders/{o3['order_no']}").status_code == 404

    profile = app_client.get("/m/profile")
    assert "188****0107" in profile.text
    r = app_client.post(
        "/m/profile",
        data={"csrf": csrf(app_client), "name": "李 雷", "birthday": "1991-02-03", "gender": "female"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/m/profile?saved=1"
    r = app_client.post(
        "/m/profile",
        data={"csrf": csrf(app_client), "name": "李 雷", "birthday": "2999-01-01", "gender": "female"},
    )
    assert r.status_code == 422
    assert "生日无效" in r.text
    with factory() as s:
        member = s.scalars(
            select(Member).where(Member.org_id == chain.org_id, Member.member_no == m["member_no"])
        ).one()
        assert (member.name, member.birthday.isoformat() if member.birthday else None, member.gender) == (
            "李 雷",
            "1991-02-03",
            "female",
        )

    r = app_client.post("/m/consents/marketing_sms", data={"csrf": csrf(app_client), "granted": "on"})
    assert r.status_code == 200
    assert 'data-granted="on"' in r.text
    r = app_client.post("/m/consents/marketing_sms", headers={"X-CSRF-Token": csrf(app_client)})
    assert 'data-granted="off"' in r.text
    assert app_client.post("/m/consents/spam", data={"csrf": csrf(app_client)}).status_code == 422
    with factory() as s:
        consent = s.scalars(select(MemberConsent).where(MemberConsent.member_id == member.id)).one()
        assert (consent.purpose, consent.granted, consent.source) == ("marketing_sms", False, "member_page")
        actions = list(
            s.scalars(select(AuditLog.action).where(AuditLog.member_id == member.id).order_by(AuditLog.id))
        )
        assert actions == ["member.profile_updated", "member.consent_changed", "member.consent_changed"]


def test_export_and_erase(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    m = register(app_client, chain, "A", "18800000109", wechat_openid="oWx_18800000109")
    ref = {"member_no": m["member_no"]}
    o1 = checkout(app_client, chain, "A", ref, [line("SKU1", 1, 9900)])
    o2 = checkout(app_client, chain, "C", ref, [line("SKU2", 1, 1000)])
    login(app_client, chain, factory, "18800000109", m["member_no"])
    r = app_client.post("/m/privacy/export", data={"csrf": csrf(app_client)}, follow_redirects=False)
    assert r.status_code == 303
    page = app_client.get(r.headers["location"])
    link = re.search(r'href="(/m/privacy/exports/\d+)"', page.text)
    assert link
    download = app_client.get(link.group(1))
    assert (
        download.headers["content-disposition"] == f'attachment; filename="onemember-{m["member_no"]}.json"'
    )
    data = json.loads(download.content)
    assert data["member"]["member_no"] == m["member_no"]
    assert sorted(o["order_no"] for o in data["orders"]) == sorted([o1["order_no"], o2["order_no"]])
    assert {(i["kind"], i["value"]) for i in data["identities"]} == {
        ("phone", "18800000109"),
        ("wechat_openid", "oWx_18800000109"),
    }
    assert data["points"]["balance"] == 109
    assert [e["amount"] for e in data["points"]["ledger"]] == [99, 10]

    r = app_client.post("/m/privacy/erase", data={"csrf": csrf(app_client)})
    assert r.status_code == 422  # not confirmed: nothing happens
    assert app_client.get("/m").status_code == 200
    r = app_client.post(
        "/m/privacy/erase", data={"csrf": csrf(app_client), "confirm": "yes"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "erased=1" in r.headers["location"]
    assert "om_member" not in app_client.cookies
    assert "账户已注销" in app_client.get(r.headers["location"]).text
    lookup = app_client.get(f"/api/v1/members/{m['member_no']}", headers=chain.key("A"))
    assert lookup.status_code == 404
    r = app_client.post(
        "/api/v1/orders",
        json={
            "member": {"kind": "phone", "value": "18800000109"},
            "lines": [line("X", 1, 100)],
            "payments": [{"method": "cash", "amount_fen": 100}],
        },
        headers=chain.key("A"),
    )
    assert r.status_code == 404
    with factory() as s:
        assert verify(s, chain.org_id).ok
    # The old phone gets the same answer as any stranger, and no message.
    sent = len(outbox(factory, chain.org_id))
    assert ask_code(app_client, chain, "18800000109").status_code == 200
    assert len(outbox(factory, chain.org_id)) == sent


@pytest.mark.parametrize(
    "path",
    [
        "/m",
        "/m/ledger",
        "/m/orders",
        "/m/profile",
        "/m/privacy",
        "/m/code",
        "/m/coupons",
        "/m/coupons/ABCDEFGHJKLM",
        "/m/packages",
    ],
)
def test_pages_need_a_member_session(app_client: TestClient, path: str) -> None:
    r = app_client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/m/login")
    r = app_client.get(path, headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 204
    assert r.headers["HX-Redirect"] == "/m/login"


def test_login_returns_to_the_page_asked_for(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000110")
    assert (
        app_client.get("/m/ledger", follow_redirects=False).headers["location"] == "/m/login?next=/m/ledger"
    )
    page = app_client.get("/m/login?next=/m/ledger")
    assert 'name="next" value="/m/ledger"' in page.text
    data = {"csrf": csrf(app_client), "org": chain.org_code, "phone": "18800000110", "next": "/m/ledger"}
    assert 'name="next" value="/m/ledger"' in app_client.post("/m/login/code", data=data).text
    code = last_code(factory, m["member_no"], chain.org_id)
    r = app_client.post("/m/login/verify", data={**data, "code": code}, follow_redirects=False)
    assert r.headers["location"] == "/m/ledger"


@pytest.mark.parametrize("target", ["//evil.example/m", "https://evil.example/", "/console", "/m//x"])
def test_login_never_redirects_off_the_member_page(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session], target: str
) -> None:
    m = register(app_client, chain, "A", "18800000111")
    data = {"csrf": csrf(app_client), "org": chain.org_code, "phone": "18800000111", "next": target}
    app_client.post("/m/login/code", data=data)
    r = app_client.post(
        "/m/login/verify",
        data={**data, "code": last_code(factory, m["member_no"], chain.org_id)},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/m"
