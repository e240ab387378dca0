from fastapi.testclient import TestClient

from tests.factories import Chain
from tests.helpers import balance, checkout, line, register


def test_register_checkout_return_across_stores(app_client: TestClient, chain: Chain) -> None:
    m = register(app_client, chain, "A", "13812345678")
    assert m["phone_masked"] == "138****5678"
    found = app_client.post(
        "/api/v1/members/lookup", json={"kind": "phone", "value": "13812345678"}, headers=chain.key("B")
    )
    assert found.status_code == 200, found.text
    assert found.json()["member_no"] == m["member_no"]
    order = checkout(
        app_client,
        chain,
        "B",
        {"member_no": m["member_no"]},
        [line("SKU1", 2, 5050), line("SKU2", 1, 1999, "美妆")],
    )
    assert order["total_fen"] == 12099
    assert order["points_earned"] == 101 + 19
    assert balance(app_client, chain, m["member_no"]) == (120, 0)
    ret = app_client.post(
        f"/api/v1/orders/{order['order_no']}/returns",
        json={"lines": [{"line_no": 1, "quantity": 1}]},
        headers=chain.key("C"),
    )
    assert ret.status_code == 201, ret.text
    body = ret.json()
    assert body["points_reversed"] == 50
    assert body["refund_fen"] == 5050
    assert body["original_store_code"] == "B"
    assert balance(app_client, chain, m["member_no"]) == (70, 0)
