"""Registration, lookup by every identifier and member code, masking, audited reveal, binding and merge."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit.models import AuditLog
from onemember.common.counters import is_valid_member_no
from onemember.events.models import Event
from onemember.members import service
from onemember.members.models import Member, MemberIdentity, MemberMerge
from onemember.points.verify import verify
from onemember.segments.models import MemberStats, MemberTag
from tests.factories import Chain
from tests.helpers import balance, checkout, line, login, register


def _members(factory: sessionmaker[Session], org_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Member).where(Member.org_id == org_id)) or 0)


def test_register_returns_member_number_and_masks_phone(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(
        app_client,
        chain,
        "A",
        "+86 138 1234 5678",
        card_no="vip-0001",
        wechat_openid="oAbc_123456",
        wechat_unionid="uX9-unionid",
        alipay_uid="2088123412341234",
    )
    assert len(m["member_no"]) == 9
    assert is_valid_member_no(m["member_no"])
    assert m["phone_masked"] == "138****5678"
    assert m["registered_store_code"] == "A"
    assert sorted((i["kind"], i["masked"]) for i in m["identities"]) == [
        ("alipay_uid", "2088********1234"),
        ("card", "VI****01"),
        ("phone", "138****5678"),
        ("wechat_openid", "oAbc***3456"),
        ("wechat_unionid", "uX9-***onid"),
    ]
    assert m["points"] == {"balance": 0, "debt": 0, "lifetime_earned": 0, "lifetime_redeemed": 0}
    with factory() as s:
        stored = s.scalars(
            select(MemberIdentity).where(
                MemberIdentity.kind == "phone", MemberIdentity.org_id == chain.org_id
            )
        ).all()
        assert len(stored) == 1
        assert b"13812345678" not in stored[0].value_enc  # encrypted at rest
        assert "13812345678" not in stored[0].value_bidx
        event = s.scalars(
            select(Event).where(Event.type == "member.registered", Event.org_id == chain.org_id)
        ).one()
        assert event.payload["member_no"] == m["member_no"]


def test_second_registration_with_same_phone_is_refused(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13812340000")
    r = app_client.post(
        "/api/v1/members", json={"phone": "138-1234-0000", "name": "李四"}, headers=chain.key("B")
    )
    assert r.status_code == 409
    assert r.json()["code"] == "members.identity_taken"
    assert r.json()["member_no"] == m["member_no"]
    bad = app_client.post("/api/v1/members", json={"phone": "23812340000x"}, headers=chain.key("B"))
    assert bad.status_code == 422
    assert bad.json()["code"] == "members.invalid_identifier"
    assert bad.json()["message_zh"] == "手机号格式无效（需为 11 位中国大陆手机号）"
    assert _members(factory, chain.org_id) == 1


def test_lookup_from_another_store_by_every_identifier(app_client: TestClient, chain: Chain) -> None:
    m = register(
        app_client,
        chain,
        "A",
        "13600001111",
        card_no="C-778899",
        wechat_openid="openid_abcdef",
        wechat_unionid="unionid_abcdef",
        alipay_uid="2088000011112222",
    )
    lookups = [
        {"kind": "phone", "value": "13600001111"},
        {"kind": "card", "value": "c-778899"},
        {"kind": "wechat_openid", "value": "openid_abcdef"},
        {"kind": "wechat_unionid", "value": "unionid_abcdef"},
        {"kind": "alipay_uid", "value": "2088000011112222"},
        {"member_no": m["member_no"]},
    ]
    for body in lookups:
        r = app_client.post("/api/v1/members/lookup", json=body, headers=chain.key("C"))
        assert r.status_code == 200, (body, r.text)
        assert r.json()["member_no"] == m["member_no"]
    missing = app_client.post(
        "/api/v1/members/lookup", json={"kind": "phone", "value": "13600001112"}, headers=chain.key("C")
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "members.not_found"


def test_cross_store_view_is_masked(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13600002222", name="欧阳娜娜")
    own = app_client.post(
        "/api/v1/members/lookup", json={"member_no": m["member_no"]}, headers=chain.key("A")
    ).json()
    other = app_client.post(
        "/api/v1/members/lookup", json={"member_no": m["member_no"]}, headers=chain.key("C")
    ).json()
    assert (own["name"], own["birthday"], own["full_profile"]) == ("欧阳娜娜", "1990-05-17", True)
    assert (other["name"], other["birthday"], other["full_profile"]) == ("欧***", None, False)
    assert other["phone_masked"] == "136****2222"


def test_dynamic_member_code_works_until_it_expires(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13600003333")
    issued = app_client.post(f"/api/v1/members/{m['member_no']}/member-code", headers=chain.key("A")).json()
    r = app_client.post(
        "/api/v1/members/lookup", json={"member_code": issued["code"]}, headers=chain.key("B")
    )
    assert r.status_code == 200
    assert r.json()["member_no"] == m["member_no"]
    with factory() as s:
        member = s.scalars(
            select(Member).where(Member.member_no == m["member_no"], Member.org_id == chain.org_id)
        ).one()
        old_code, expires = service.issue_member_code(member, now=time.time() - 121)
    assert expires.timestamp() < time.time()
    expired = app_client.post(
        "/api/v1/members/lookup", json={"member_code": old_code}, headers=chain.key("B")
    )
    assert expired.status_code == 422
    assert expired.json()["code"] == "members.code_expired"
    tampered = issued["code"][:-2] + ("AA" if issued["code"][-2:] != "AA" else "BB")
    bad = app_client.post("/api/v1/members/lookup", json={"member_code": tampered}, headers=chain.key("B"))
    assert bad.status_code == 422
    assert bad.json()["code"] == "members.code_invalid"
    paid = checkout(app_client, chain, "B", {"member_code": issued["code"]}, [line("X", 1, 1000)])
    assert paid["member_no"] == m["member_no"]


def test_reveal_phone_is_role_checked_and_audited(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13600004444")
    clerk = login(app_client, chain, "a_clerk")
    r = app_client.post(
        f"/api/v1/members/{m['member_no']}/reveal", json={"reason": "客户来电核实"}, headers=clerk
    )
    assert r.status_code == 403
    assert r.json()["code"] == "auth.pii_reveal"
    key = app_client.post(
        f"/api/v1/members/{m['member_no']}/reveal", json={"reason": "核实"}, headers=chain.key("A")
    )
    assert key.status_code == 403
    with factory() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditLog)
                .where(AuditLog.action == "member.pii_revealed", AuditLog.org_id == chain.org_id)
            )
            == 0
        )
    mgr = login(app_client, chain, "a_mgr")
    ok = app_client.post(
        f"/api/v1/members/{m['member_no']}/reveal", json={"reason": "客户来电核实"}, headers=mgr
    )
    assert ok.status_code == 200
    assert ok.json() == {"member_no": m["member_no"], "kind": "phone", "value": "13600004444"}
    with factory() as s:
        entry = s.scalars(
            select(AuditLog).where(AuditLog.action == "member.pii_revealed", AuditLog.org_id == chain.org_id)
        ).one()
        assert (entry.actor, entry.reason, entry.target_id, entry.details) == (
            "staff:a_mgr",
            "客户来电核实",
            m["member_no"],
            {"kind": "phone"},
        )


def test_binding_a_held_identity_needs_a_merge(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(app_client, chain, "A", "13500000001", card_no="CARD-1")
    b = register(app_client, chain, "B", "13500000002", wechat_openid="openid_of_b")
    mgr = login(app_client, chain, "a_mgr")
    r = app_client.post(
        f"/api/v1/members/{a['member_no']}/identities",
        json={"kind": "wechat_openid", "value": "openid_of_b"},
        headers=mgr,
    )
    assert r.status_code == 409
    assert r.json()["code"] == "members.identity_taken"
    assert r.json()["merge_candidate"] == b["member_no"]
    with factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(MemberMerge).where(MemberMerge.org_id == chain.org_id))
            == 0
        )
    fresh = app_client.post(
        f"/api/v1/members/{a['member_no']}/identities",
        json={"kind": "alipay_uid", "value": "2088777766665555"},
        headers=mgr,
    )
    assert fresh.status_code == 200
    assert fresh.json()["bound"] == {"kind": "alipay_uid", "masked": "2088********5555"}
    merged = app_client.post(
        f"/api/v1/members/{a['member_no']}/identities",
        json={"kind": "wechat_openid", "value": "openid_of_b", "merge": True, "reason": "同一顾客"},
        headers=mgr,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["merged_member_no"] == b["member_no"]
    found = app_client.post(
        "/api/v1/members/lookup",
        json={"kind": "wechat_openid", "value": "openid_of_b"},
        headers=chain.key("C"),
    )
    assert found.json()["member_no"] == a["member_no"]


def test_merge_moves_everything_and_old_number_resolves(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    a = register(app_client, chain, "A", "13500000011")
    b = register(app_client, chain, "B", "13500000012", card_no="OLD-CARD-12")
    checkout(app_client, chain, "A", {"member_no": a["member_no"]}, [line("X", 1, 10000, "食品")])
    ob = checkout(app_client, chain, "B", {"member_no": b["member_no"]}, [line("Y", 2, 2500, "美妆")])
    with factory() as s:
        bid = s.scalars(
            select(Member.id).where(Member.member_no == b["member_no"], Member.org_id == chain.org_id)
        ).one()
        s.add(MemberTag(org_id=chain.org_id, member_id=bid, tag="高价值", source="manual"))
        s.commit()
    cs = login(app_client, chain, "cs")
    preview = app_client.get(
        "/api/v1/members/merge-preview",
        params={"survivor": a["member_no"], "merged": b["member_no"]},
        headers=cs,
    ).json()
    assert preview == {
        "survivor_member_no": a["member_no"],
        "merged_member_no": b["member_no"],
        "orders": 1,
        "identities": ["phone", "card"],
        "points_balance": 50,
        "points_debt": 0,
        "tags": ["高价值"],
    }
    clerk = login(app_client, chain, "a_clerk")
    denied = app_client.post(
        "/api/v1/members/merge",
        json={"survivor_member_no": a["member_no"], "merged_member_no": b["member_no"], "reason": "同一人"},
        headers=clerk,
    )
    assert denied.status_code == 403
    r = app_client.post(
        "/api/v1/members/merge",
        json={"survivor_member_no": a["member_no"], "merged_member_no": b["member_no"], "reason": "同一人"},
        headers=cs,
    )
    assert r.status_code == 200, r.text
    assert balance(app_client, chain, a["member_no"]) == (150, 0)
    via_old = app_client.get(f"/api/v1/members/{b['member_no']}", headers=chain.key("C")).json()
    assert via_old["member_no"] == a["member_no"]
    assert sorted(i["kind"] for i in via_old["identities"]) == ["card", "phone", "phone"]
    orders = app_client.get(f"/api/v1/members/{a['member_no']}/orders", headers=chain.key("A")).json()
    assert ob["order_no"] in [o["order_no"] for o in orders]
    # A return of the merged member's order now reverses points on the survivor.
    ret = app_client.post(
        f"/api/v1/orders/{ob['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 2}]},
        headers=chain.key("A"),
    ).json()
    assert ret["member_no"] == a["member_no"]
    assert ret["points_balance"] == 100
    with factory() as s:
        aid = s.scalars(
            select(Member.id).where(Member.member_no == a["member_no"], Member.org_id == chain.org_id)
        ).one()
        st = s.get(MemberStats, aid)
        assert st is not None
        assert (st.order_count, st.store_count, st.total_spend_fen) == (2, 2, 10000)
        assert list(s.scalars(select(MemberTag.tag).where(MemberTag.member_id == aid))) == ["高价值"]
        audit = s.scalars(
            select(AuditLog).where(AuditLog.action == "member.merged", AuditLog.org_id == chain.org_id)
        ).one()
        assert (audit.actor, audit.reason) == ("staff:cs", "同一人")
        assert (
            s.scalars(
                select(Event.type).where(Event.type == "member.merged", Event.org_id == chain.org_id)
            ).one()
            == "member.merged"
        )
        assert verify(s, chain.org_id).ok
    again = app_client.post(
        "/api/v1/members/merge",
        json={"survivor_member_no": a["member_no"], "merged_member_no": a["member_no"], "reason": "x2"},
        headers=cs,
    )
    assert again.status_code == 409
    assert again.json()["code"] == "members.merge_invalid"
