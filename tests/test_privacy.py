"""Member self-service in the members domain: login codes and their limits, sessions, consents, profile,
export and erasure (PIPL), at the service level."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.common.types import IdentityKind
from onemember.db import utcnow
from onemember.errors import Invalid
from onemember.events.models import Event
from onemember.members import privacy
from onemember.members import service as members
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member, MemberIdentity
from onemember.members.privacy_models import MemberConsent, MemberOtp, MemberSession, PrivacyRequest
from onemember.messaging.models import OutboxMessage
from onemember.orders.models import Order
from onemember.points.models import PointAccount, PointEntry, PointLot
from onemember.points.verify import verify
from tests.factories import Chain
from tests.helpers import checkout, line, register


def _member(session: Session, chain: Chain, member_no: str) -> Member:
    return members.by_member_no(session, chain.org_id, member_no)


def _code_of(session: Session, otp_id: int) -> str:
    body = session.scalar(
        select(OutboxMessage.body)
        .join(MemberOtp, MemberOtp.message_id == OutboxMessage.id)
        .where(MemberOtp.id == otp_id)
    )
    assert body is not None
    found = re.search(r"(\d{6})", body)
    assert found
    return found.group(1)


def _otps(session: Session, chain: Chain) -> int:
    return int(session.scalar(select(func.count()).where(MemberOtp.org_id == chain.org_id)) or 0)


def test_per_phone_limits_one_a_minute_five_an_hour(
    app_client: TestClient, chain: Chain, session: Session
) -> None:
    register(app_client, chain, "A", "18800000301")
    start = utcnow()
    for i in range(privacy.OTP_PER_PHONE_PER_HOUR):
        privacy.request_login_code(
            session, chain.org_id, "18800000301", now=start + timedelta(seconds=61 * i)
        )
    with pytest.raises(privacy.LoginRateLimited) as err:
        privacy.request_login_code(session, chain.org_id, "18800000301", now=start + timedelta(seconds=400))
    assert err.value.status == 429
    assert err.value.code == "members.login_rate_limited"
    assert err.value.zh == "该手机号获取验证码次数过多，请 54 分钟后再试"
    assert err.value.en == "Too many codes for this number; try again in 54 min"
    assert _otps(session, chain) == 5
    # An hour after the first, one more is allowed.
    privacy.request_login_code(session, chain.org_id, "18800000301", now=start + timedelta(seconds=3601))
    with pytest.raises(privacy.LoginRateLimited) as err:
        privacy.request_login_code(session, chain.org_id, "18800000301", now=start + timedelta(seconds=3630))
    assert err.value.zh == "验证码已发送，请 31 秒后再试"
    assert _otps(session, chain) == 6
    assert session.scalar(select(func.count()).where(OutboxMessage.org_id == chain.org_id)) == 6


def test_per_address_cap(app_client: TestClient, chain: Chain, session: Session) -> None:
    now = utcnow()
    for i in range(privacy.OTP_PER_IP_PER_HOUR):
        privacy.request_login_code(session, chain.org_id, f"188000{i:05d}", "10.9.9.9", now=now)
    with pytest.raises(privacy.LoginRateLimited) as err:
        privacy.request_login_code(session, chain.org_id, "18800009999", "10.9.9.9", now=now)
    assert err.value.en == "Too many code requests from this network; try again in 60 min"
    privacy.request_login_code(session, chain.org_id, "18800009999", "10.9.9.8", now=now)
    assert session.scalar(select(func.count()).where(OutboxMessage.org_id == chain.org_id)) == 0  # no members


def test_code_expires_after_five_minutes(app_client: TestClient, chain: Chain, session: Session) -> None:
    register(app_client, chain, "A", "18800000302")
    start = utcnow() - timedelta(minutes=10)
    sent = privacy.request_login_code(session, chain.org_id, "18800000302", now=start)
    code = _code_of(session, sent.otp_id)
    with pytest.raises(privacy.LoginCodeExpired):
        privacy.verify_login_code(session, chain.org_id, "18800000302", code, now=start + privacy.OTP_TTL)
    login = privacy.verify_login_code(
        session, chain.org_id, "18800000302", code, now=start + privacy.OTP_TTL - timedelta(seconds=1)
    )
    assert (
        login.member.member_no
        == members.find_by_identity(session, chain.org_id, IdentityKind.PHONE, "18800000302").member_no
    )  # type: ignore[union-attr]


def test_only_the_newest_code_works(app_client: TestClient, chain: Chain, session: Session) -> None:
    register(app_client, chain, "A", "18800000303")
    now = utcnow()
    old = privacy.request_login_code(session, chain.org_id, "18800000303", now=now - timedelta(seconds=90))
    new = privacy.request_login_code(session, chain.org_id, "18800000303", now=now)
    old_code, new_code = _code_of(session, old.otp_id), _code_of(session, new.otp_id)
    if old_code != new_code:
        with pytest.raises(privacy.LoginCodeWrong):
            privacy.verify_login_code(session, chain.org_id, "18800000303", old_code, now=now)
    privacy.verify_login_code(session, chain.org_id, "18800000303", new_code, now=now)


def test_wrong_tries_lock_the_code(app_client: TestClient, chain: Chain, session: Session) -> None:
    register(app_client, chain, "A", "18800000304")
    sent = privacy.request_login_code(session, chain.org_id, "18800000304")
    code = _code_of(session, sent.otp_id)
    wrong = f"{(int(code) + 7) % 10**6:06d}"
    for left in range(privacy.OTP_MAX_ATTEMPTS - 1, 0, -1):
        with pytest.raises(privacy.LoginCodeWrong) as err:
            privacy.verify_login_code(session, chain.org_id, "18800000304", wrong)
        assert err.value.extra == {"tries_left": left}
    with pytest.raises(privacy.LoginCodeLocked):
        privacy.verify_login_code(session, chain.org_id, "18800000304", wrong)
    with pytest.raises(privacy.LoginCodeLocked):
        privacy.verify_login_code(session, chain.org_id, "18800000304", code)
    assert session.scalar(select(func.count()).where(MemberSession.org_id == chain.org_id)) == 0


def test_sessions_expire_and_are_revoked(app_client: TestClient, chain: Chain, session: Session) -> None:
    register(app_client, chain, "A", "18800000305")
    sent = privacy.request_login_code(session, chain.org_id, "18800000305")
    login = privacy.verify_login_code(session, chain.org_id, "18800000305", _code_of(session, sent.otp_id))
    assert privacy.authenticate_member(session, login.token).id == login.member.id
    with pytest.raises(privacy.MemberSessionExpired):
        privacy.authenticate_member(session, login.token, now=utcnow() + privacy.MEMBER_SESSION_TTL)
    with pytest.raises(privacy.MemberSessionExpired):
        privacy.authenticate_member(session, "omm_not-a-token")
    privacy.logout_member(session, login.token)
    with pytest.raises(privacy.MemberSessionExpired):
        privacy.authenticate_member(session, login.token)


def test_consents_are_opt_in_and_audited(app_client: TestClient, chain: Chain, session: Session) -> None:
    m = register(app_client, chain, "A", "18800000306")
    member = _member(session, chain, m["member_no"])
    me = privacy.member_principal(member, "10.0.0.7")
    assert [(c.purpose, c.granted, c.changed_at) for c in privacy.consents_of(session, member.id)] == [
        ("marketing_sms", False, None),
        ("marketing_wechat", False, None),
        ("marketing_email", False, None),
        ("personalised_recommendations", False, None),
    ]
    on = privacy.set_consent(session, me, member, "marketing_wechat", True, "member_page")
    assert (on.granted, on.source) == (True, "member_page")
    privacy.set_consent(session, me, member, "marketing_wechat", True, "member_page")  # no change
    privacy.set_consent(session, me, member, "marketing_wechat", False, "member_page")
    views = {c.purpose: c for c in privacy.consents_of(session, member.id)}
    assert views["marketing_wechat"].granted is False
    assert views["marketing_wechat"].changed_at is not None
    logs = list(
        session.scalars(select(AuditLog).where(AuditLog.member_id == member.id).order_by(AuditLog.id))
    )
    assert [(a.action, a.actor, a.actor_role, a.ip, a.details["granted"]) for a in logs] == [
        ("member.consent_changed", f"member:{m['member_no']}", "member", "10.0.0.7", True),
        ("member.consent_changed", f"member:{m['member_no']}", "member", "10.0.0.7", False),
    ]
    with pytest.raises(Invalid):
        privacy.set_consent(session, me, member, "telemarketing", True, "member_page")


def test_profile_validation_changes_nothing(app_client: TestClient, chain: Chain, session: Session) -> None:
    m = register(app_client, chain, "A", "18800000307")
    member = _member(session, chain, m["member_no"])
    me = privacy.member_principal(member)
    for name, born, gender in (
        ("x" * 61, None, "male"),
        ("ok", None, "robot"),
        ("ok", date(1899, 12, 31), "male"),
    ):
        with pytest.raises(privacy.ProfileInvalid):
            privacy.update_profile(session, me, member, name, born, gender)
    assert (member.name, member.birthday, member.gender) == ("王小明", date(1990, 5, 17), "male")
    assert privacy.update_profile(session, me, member, " 王小明 ", date(1990, 5, 17), "male") == []
    assert privacy.update_profile(session, me, member, "王 明", None, "unknown") == [
        "name",
        "birthday",
        "gender",
    ]


def _ledger_sums(session: Session, member_id: int) -> tuple[int, int, int]:
    row = session.execute(
        select(func.count(), func.sum(PointEntry.amount), func.sum(PointEntry.debt_change)).where(
            PointEntry.member_id == member_id
        )
    ).one()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


def test_erasure_anonymises_and_keeps_the_ledger_whole(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000308", card_no="CARD-0308", wechat_openid="oWx_0308")
    ref = {"member_no": m["member_no"]}
    o1 = checkout(app_client, chain, "A", ref, [line("SKU1", 3, 4000)])
    o2 = checkout(app_client, chain, "B", ref, [line("SKU2", 1, 2500)], redeem=20)
    with factory() as s:
        member = _member(s, chain, m["member_no"])
        member_id = member.id
        sent = privacy.request_login_code(s, chain.org_id, "18800000308")
        login = privacy.verify_login_code(s, chain.org_id, "18800000308", _code_of(s, sent.otp_id))
        me = privacy.member_principal(member, "10.1.2.3")
        privacy.set_consent(s, me, member, "marketing_sms", True, "member_page")
        s.commit()
        before = _ledger_sums(s, member_id)
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member_id)).one()
        balance_before = (account.balance, account.debt, account.lifetime_earned)
        lots_before = int(
            s.scalar(select(func.sum(PointLot.remaining)).where(PointLot.member_id == member_id))
        )
    assert before == (3, 120 - 20 + 24, 0)

    with factory() as s:
        member = s.get(Member, member_id)
        assert member is not None
        req = privacy.erase_member(s, privacy.member_principal(member, "10.1.2.3"), member, reason="asked")
        s.commit()
        assert (req.kind, req.status) == ("erasure", "completed")
        assert req.details["identities_removed"] == ["card", "phone", "wechat_openid"]

    with factory() as s:
        member = s.get(Member, member_id)
        assert member is not None
        assert (member.name, member.birthday, member.gender, member.status) == ("", None, "unknown", "erased")
        assert member.erased_at is not None
        assert member.member_no == m["member_no"]
        assert s.scalar(select(func.count()).where(MemberIdentity.member_id == member_id)) == 0
        assert s.scalar(select(func.count()).where(MemberOtp.member_id == member_id)) == 0
        assert all(
            r is not None
            for r in s.scalars(select(MemberSession.revoked_at).where(MemberSession.member_id == member_id))
        )
        with pytest.raises(privacy.MemberSessionExpired):
            privacy.authenticate_member(s, login.token)
        consent = s.scalars(select(MemberConsent).where(MemberConsent.member_id == member_id)).one()
        assert (consent.granted, consent.source) == (False, "erasure")
        message = s.scalars(select(OutboxMessage).where(OutboxMessage.member_id == member_id)).one()
        assert (message.recipient_enc, message.body) == (b"", "")
        # Lookups by the old identities and the member number find nothing.
        for kind, value in (("phone", "18800000308"), ("card", "CARD-0308"), ("wechat_openid", "oWx_0308")):
            assert members.find_by_identity(s, chain.org_id, kind, value) is None
        with pytest.raises(MemberNotFound):
            members.by_member_no(s, chain.org_id, m["member_no"])
        # The books are untouched.
        assert _ledger_sums(s, member_id) == before
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member_id)).one()
        assert (account.balance, account.debt, account.lifetime_earned) == balance_before
        assert int(s.scalar(select(func.sum(PointLot.remaining)).where(PointLot.member_id == member_id))) == (
            lots_before
        )
        assert sorted(s.scalars(select(Order.order_no).where(Order.member_id == member_id))) == sorted(
            [o1["order_no"], o2["order_no"]]
        )
        report = verify(s, chain.org_id)
        assert report.ok, report.problems
        audit = s.scalars(
            select(AuditLog).where(AuditLog.member_id == member_id, AuditLog.action == "member.erased")
        ).one()
        assert (audit.actor, audit.actor_role, audit.reason, audit.ip) == (
            f"member:{m['member_no']}",
            "member",
            "asked",
            "10.1.2.3",
        )
        event = s.scalars(
            select(Event).where(Event.member_id == member_id, Event.type == "member.erased")
        ).one()
        assert event.payload == {"member_no": m["member_no"]}
        assert s.scalar(select(func.count()).where(PrivacyRequest.member_id == member_id)) == 1
        # A second erasure finds no active member and changes nothing.
        with pytest.raises(MemberNotFound):
            privacy.erase_member(s, privacy.member_principal(member), member)
    r = app_client.get(f"/api/v1/members/{m['member_no']}", headers=chain.key("A"))
    assert r.status_code == 404
    # The old phone may register again as a new member.
    again = register(app_client, chain, "A", "18800000308")
    assert again["member_no"] != m["member_no"]


def test_export_holds_the_members_own_data(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "18800000309", alipay_uid="2088000000000309")
    o1 = checkout(app_client, chain, "C", {"member_no": m["member_no"]}, [line("TEA", 2, 1500, name="绿茶")])
    with factory() as s:
        member = _member(s, chain, m["member_no"])
        me = privacy.member_principal(member)
        privacy.set_consent(s, me, member, "personalised_recommendations", True, "member_page")
        req = privacy.request_export(s, me, member)
        data = privacy.export_data(s, member, req)
        s.commit()
        assert privacy.export_request(s, member, req.id).id == req.id
        other = members.by_member_no(
            s, chain.org_id, register(app_client, chain, "A", "18800000310")["member_no"]
        )
        with pytest.raises(MemberNotFound):
            privacy.export_request(s, other, req.id)
    assert data["member"] | {"created_at": None} == {
        "member_no": m["member_no"],
        "name": "王小明",
        "gender": "male",
        "birthday": "1990-05-17",
        "status": "active",
        "channel": "pos",
        "registered_store": {"code": "A", "name": "上海徐汇店"},
        "created_at": None,
    }
    assert sorted((i["kind"], i["value"]) for i in data["identities"]) == [
        ("alipay_uid", "2088000000000309"),
        ("phone", "18800000309"),
    ]
    [order] = data["orders"]
    assert (order["order_no"], order["store_code"], order["store_name"], order["paid_fen"]) == (
        o1["order_no"],
        "C",
        "北京朝阳店",
        3000,
    )
    assert order["lines"] == [
        {
            "sku": "TEA",
            "name": "绿茶",
            "category": "食品",
            "quantity": 2,
            "unit_price_fen": 1500,
            "amount_fen": 3000,
            "returned_quantity": 0,
        }
    ]
    assert data["points"]["balance"] == 30
    assert [(e["kind"], e["amount"], e["order_no"]) for e in data["points"]["ledger"]] == [
        ("earn", 30, o1["order_no"])
    ]
    assert [c["purpose"] for c in data["consents"] if c["granted"]] == ["personalised_recommendations"]
    assert [r["kind"] for r in data["privacy_requests"]] == ["export"]
