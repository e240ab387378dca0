"""HTTP helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import PASSWORD, Chain


def login(client: TestClient, chain: Chain, username: str) -> dict[str, str]:
    r = client.post(
        "/api/v1/auth/login", json={"org": chain.org_code, "username": username, "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def register(client: TestClient, chain: Chain, store: str, phone: str, **extra: Any) -> dict[str, Any]:
    body = {
        "phone": phone,
        "name": "王小明",
        "birthday": "1990-05-17",
        "gender": "male",
        "channel": "pos",
        **extra,
    }
    r = client.post("/api/v1/members", json=body, headers=chain.key(store))
    assert r.status_code == 201, r.text
    return dict(r.json())


def line(sku: str, qty: int, price: int, category: str = "食品", name: str | None = None) -> dict[str, Any]:
    return {"sku": sku, "name": name or sku, "category": category, "quantity": qty, "unit_price_fen": price}


def checkout(
    client: TestClient,
    chain: Chain,
    store: str,
    member: dict[str, Any] | None,
    lines: list[dict[str, Any]],
    redeem: int = 0,
    *,
    headers: dict[str, str] | None = None,
    expect: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    total = sum(item["quantity"] * item["unit_price_fen"] for item in lines)
    due = total - redeem  # tests use the default rate: 100 points = 1 yuan, so 1 point = 1 fen
    body: dict[str, Any] = {
        "lines": lines,
        "redeem_points": redeem,
        "payments": [{"method": "wechat_pay", "amount_fen": due}] if due else [],
        **extra,
    }
    if member is not None:
        body["member"] = member
    r = client.post("/api/v1/orders", json=body, headers=headers or chain.key(store))
    assert r.status_code == expect, r.text
    return dict(r.json())


def balance(client: TestClient, chain: Chain, member_no: str, store: str = "A") -> tuple[int, int]:
    r = client.get(f"/api/v1/members/{member_no}/points", headers=chain.key(store))
    assert r.status_code == 200, r.text
    return r.json()["balance"], r.json()["debt"]
