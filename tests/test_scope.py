"""Login, roles and scopes: a store acts on its own store only; orgs never see each other."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth.models import ApiKey
from onemember.orders.models import Order
from tests.factories import PASSWORD, Chain, make_chain
from tests.helpers import checkout, line, login, register


def _store_codes(client: TestClient, headers: dict[str, str]) -> list[str]:
    tree = client.get("/api/v1/org", headers=headers).json()
    return sorted(s["code"] for b in tree["brands"] for r in b["regions"] for s in r["stores"])


def test_scope_follows_role(app_client: TestClient, chain: Chain) -> None:
    assert _store_codes(app_client, login(app_client, chain, "hq")) == ["A", "B", "C"]
    assert _store_codes(app_client, login(app_client, chain, "east_mgr")) == ["A", "B"]
    assert _store_codes(app_client, login(app_client, chain, "a_mgr")) == ["A"]
    assert _store_codes(app_client, chain.key("C")) == ["C"]
    me = app_client.get("/api/v1/auth/me", headers=login(app_client, chain, "east_mgr")).json()
    assert me == {
        "actor": "staff:east_mgr",
        "kind": "staff",
        "role": "regional_manager",
        "store_code": None,
        "store_codes": ["A", "B"],
    }


def test_wrong_password_and_missing_credentials(app_client: TestClient, chain: Chain) -> None:
    r = app_client.post(
        "/api/v1/auth/login", json={"org": chain.org_code, "username": "hq", "password": "nope"}
    )
    assert r.status_code == 401
    assert r.json()["code"] == "auth.login_failed"
    assert app_client.get("/api/v1/org").json()["code"] == "auth.unauthenticated"
    bad = app_client.get("/api/v1/org", headers={"Authorization": "Bearer omk_deadbeefxxxx"})
    assert (bad.status_code, bad.json()["code"]) == (401, "auth.invalid_api_key")


def test_store_staff_cannot_act_for_another_store(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    m = register(app_client, chain, "A", "13300000001")
    clerk = login(app_client, chain, "a_clerk")
    body = {
        "member": {"member_no": m["member_no"]},
        "store_code": "B",
        "lines": [line("X", 1, 100)],
        "payments": [{"method": "cash", "amount_fen": 100}],
    }
    r = app_client.post("/api/v1/orders", json=body, headers=clerk)
    assert (r.status_code, r.json()["code"]) == (403, "auth.store_scope")
    r2 = app_client.post("/api/v1/orders", json=body, headers=chain.key("A"))
    assert r2.status_code == 403
    hq = login(app_client, chain, "hq")
    ok = app_client.post("/api/v1/orders", json=body, headers=hq)
    assert ok.status_code == 201
    assert ok.json()["store_code"] == "B"
    auditor = login(app_client, chain, "auditor")
    ro = app_client.post("/api/v1/orders", json=body, headers=auditor)
    assert (ro.status_code, ro.json()["code"]) == (403, "auth.role")
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.org_id == chain.org_id)) == 1


def test_api_keys_are_managed_within_scope(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    mgr = login(app_client, chain, "a_mgr")
    created = app_client.post(
        "/api/v1/stores/A/api-keys", json={"name": "till 2"}, headers={**mgr, "Idempotency-Key": "new-till-2"}
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("omk_")
    # A retry gets the same key back but never the secret again: secrets are not kept anywhere.
    retry = app_client.post(
        "/api/v1/stores/A/api-keys", json={"name": "till 2"}, headers={**mgr, "Idempotency-Key": "new-till-2"}
    )
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (retry.json()["prefix"], retry.json()["secret"]) == (created.json()["prefix"], None)
    with factory() as s:
        from onemember.common.models import IdempotencyRecord

        stored = s.scalars(
            select(IdempotencyRecord.response_body).where(IdempotencyRecord.key == "new-till-2")
        ).one()
        assert stored is not None
        assert secret.encode() not in stored
    listed = app_client.get("/api/v1/stores/A/api-keys", headers=mgr).json()
    assert [k["name"] for k in listed] == ["till A", "till 2"]
    assert all(k["secret"] is None for k in listed)
    other = app_client.post("/api/v1/stores/B/api-keys", json={"name": "x"}, headers=mgr)
    assert (other.status_code, other.json()["code"]) == (403, "auth.store_scope")
    assert app_client.get("/api/v1/stores/B/api-keys", headers=mgr).status_code == 403
    by_key = app_client.post("/api/v1/stores/A/api-keys", json={"name": "x"}, headers=chain.key("A"))
    assert by_key.status_code == 403
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.org_id == chain.org_id)) == 4
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    for who in ("a_clerk", "auditor", "cs"):
        denied = app_client.post(
            f"/api/v1/api-keys/{created.json()['prefix']}/revoke", headers=login(app_client, chain, who)
        )
        assert (denied.status_code, denied.json()["code"]) == (403, "auth.role")
    by_till = app_client.post(f"/api/v1/api-keys/{created.json()['prefix']}/revoke", headers=chain.key("A"))
    assert by_till.status_code == 403
    assert app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    revoked = app_client.post(f"/api/v1/api-keys/{created.json()['prefix']}/revoke", headers=mgr)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert (after.status_code, after.json()["code"]) == (401, "auth.invalid_api_key")


def test_orgs_are_isolated(app_client: TestClient, chain: Chain, factory: sessionmaker[Session]) -> None:
    with factory() as s:
        other = make_chain(s)
        s.commit()
    m = register(app_client, chain, "A", "13300000002")
    order = checkout(app_client, chain, "A", {"member_no": m["member_no"]}, [line("X", 1, 100)])
    for path in (
        f"/api/v1/members/{m['member_no']}",
        f"/api/v1/orders/{order['order_no']}",
        f"/api/v1/members/{m['member_no']}/points",
    ):
        r = app_client.get(path, headers=other.key("A"))
        assert r.status_code == 404, path
    r = app_client.post(
        "/api/v1/members/lookup", json={"kind": "phone", "value": "13300000002"}, headers=other.key("A")
    )
    assert r.status_code == 404
    # The same phone can be a member of both orgs.
    register(app_client, other, "A", "13300000002")


def test_staff_creation_and_logout(app_client: TestClient, chain: Chain) -> None:
    mgr = login(app_client, chain, "a_mgr")
    created = app_client.post(
        "/api/v1/staff",
        json={"username": "a_clerk2", "password": PASSWORD, "role": "clerk", "store_code": "A"},
        headers=mgr,
    )
    assert created.status_code == 201
    assert created.json() == {"username": "a_clerk2", "role": "clerk", "store_code": "A", "region_code": None}
    escalate = app_client.post(
        "/api/v1/staff", json={"username": "boss", "password": PASSWORD, "role": "hq_admin"}, headers=mgr
    )
    assert escalate.status_code == 403
    token = login(app_client, chain, "a_clerk2")
    assert app_client.get("/api/v1/auth/me", headers=token).status_code == 200
    assert app_client.post("/api/v1/auth/logout", headers=token).status_code == 204
    assert app_client.get("/api/v1/auth/me", headers=token).json()["code"] == "auth.session_expired"
