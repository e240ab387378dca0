"""Real requests and answers for the coupon, service package and settlement parts of the guides.

Builds a small chain (stores A, B, C from tests/factories.py) on a throwaway SQLite database, runs the
flows that docs/pos-integration.md (sections 12-15) and docs/settlement.md describe through the real
app (FastAPI's TestClient, no server) with a frozen clock, and prints every request as a curl command
with the answer it got, in Markdown. Run it from the repository root:

    .venv/bin/python docs/examples/benefits_and_settlement.py > /tmp/examples.md

Coupon codes, order numbers and ids change from run to run; amounts, points, statuses and error codes
do not. It ends by running ``onemember verify`` on the settlement database, as is and after an edit
made behind the ledger's back.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(tempfile.mkdtemp(prefix="onemember-examples-"))
os.environ.pop("DATABASE_URL", None)
os.environ["ONEMEMBER_VAR_DIR"] = str(WORK / "var")
os.environ["ONEMEMBER_PII_KEY"] = secrets.token_hex(32)
os.environ["ONEMEMBER_SECRET_KEY"] = secrets.token_hex(32)
os.environ["ONEMEMBER_DISPATCHER_ENABLED"] = "false"
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from openpyxl import load_workbook  # noqa: E402
from tests.factories import PASSWORD, Chain, make_chain  # noqa: E402

from onemember.app import create_app  # noqa: E402
from onemember.db import make_engine, make_sessionmaker, set_clock  # noqa: E402
from onemember.migrate import upgrade  # noqa: E402
from onemember.settings import get_settings  # noqa: E402


def emit(text: str) -> None:
    """The Markdown goes to stdout (a script's output, not logging)."""
    sys.stdout.write(text + "\n")


NOW = [datetime(2026, 11, 23, 2, 0, tzinfo=UTC)]  # 10:00 in Shanghai; steps move it


def at(month: int, day: int, hour: int = 2) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)


class Api:
    """A TestClient that prints each call as curl plus the real answer."""

    def __init__(self, db: Path) -> None:
        self.db = db
        engine = make_engine(f"sqlite:///{db}")
        upgrade(engine)
        factory = make_sessionmaker(engine)
        with factory() as s:
            self.chain: Chain = make_chain(s, code="demo")
            s.commit()
        self.client = TestClient(create_app(get_settings(), factory, start_dispatcher=False))
        self.client.__enter__()  # runs the app's startup; close() runs its shutdown

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def who(self, caller: str) -> tuple[dict[str, str], str]:
        """Headers and the shell variable the guide uses for ``caller``: a till key or a staff login."""
        if caller in self.chain.keys:
            return self.chain.key(caller), f"$KEY_STORE_{caller}"
        # Staff sessions last 12 hours and the clock jumps days: log in afresh for every call.
        r = self.client.post(
            "/api/v1/auth/login", json={"org": "demo", "username": caller, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}, f"${caller.upper()}_TOKEN"

    def call(
        self,
        title: str,
        method: str,
        path: str,
        caller: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        params: dict[str, str] | None = None,
        lang: str | None = None,
        show: bool = True,
    ) -> Any:
        headers, var = self.who(caller)
        if key:
            headers["Idempotency-Key"] = key
        if lang:
            headers["Accept-Language"] = lang
        r = self.client.request(method, path, json=body, headers=headers, params=params)
        if show:
            query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
            url = f'"$OM{path}{query}"' if "&" in query else f"$OM{path}{query}"
            parts = [f"curl -s{'' if method == 'GET' else ' -X ' + method} {url}"]
            parts.append(f'-H "Authorization: Bearer {var}"')
            if lang:
                parts.append(f"-H 'Accept-Language: {lang}'")
            if key:
                parts.append(f"-H 'Idempotency-Key: {key}'")
            if body is not None:
                parts.append("-H 'Content-Type: application/json'")
                parts.append("-d '" + json.dumps(body, ensure_ascii=False) + "'")
            emit(f"\n### {title}  ({NOW[0].isoformat()})\n\n```bash\n" + " \\\n  ".join(parts) + "\n```")
            if r.headers.get("content-type", "").startswith("application/vnd.openxmlformats"):
                emit(f"\nHTTP {r.status_code}, {r.headers['content-disposition']}")
            else:
                answer = json.dumps(r.json(), ensure_ascii=False, indent=2)
                emit(f"```json\nHTTP {r.status_code}\n{answer}\n```")
        if r.headers.get("content-type", "").startswith("application/vnd.openxmlformats"):
            return r.content
        return r.json()


def register(api: Api, store: str, phone: str, name: str) -> str:
    body = {"phone": phone, "name": name}
    return str(api.call("register", "POST", "/api/v1/members", store, body, show=False)["member_no"])


def order(
    api: Api, store: str, member_no: str, lines: list[tuple[str, str, str, int, int]], **extra: Any
) -> dict[str, Any]:
    """A checkout paid in cash for whatever is left after coupons and points (asked of usable first)."""
    items = [
        {"sku": sku, "name": name, "category": cat, "quantity": q, "unit_price_fen": p}
        for sku, name, cat, q, p in lines
    ]
    body: dict[str, Any] = {"member": {"member_no": member_no}, "lines": items, **extra}
    total = sum(q * p for *_, q, p in lines)
    discount = 0
    if extra.get("coupon_codes"):
        basket = {
            "lines": [{k: i[k] for k in ("sku", "category", "quantity", "unit_price_fen")} for i in items]
        }
        basket["coupon_codes"] = extra["coupon_codes"]
        usable = api.call(
            "usable", "POST", f"/api/v1/members/{member_no}/coupons/usable", store, basket, show=False
        )
        discount = usable["best_discount_fen"]
    due = total - discount - extra.get("redeem_points", 0)  # 1 point = 1 fen in this chain
    body["payments"] = [{"method": "cash", "amount_fen": due}] if due else []
    return body


# --- docs/pos-integration.md: coupons, coupons at checkout, service packages ---------------------------


def pos_examples() -> None:
    emit("# docs/pos-integration.md\n")
    api = Api(WORK / "pos.db")
    NOW[0] = at(11, 23)
    m = register(api, "A", "13812345678", "王小明")
    friend = register(api, "A", "13912345678", "李小红")
    first = order(api, "A", m, [("6901234567890", "羊毛围巾", "服装", 1, 60000)])
    api.call("a first sale at A (600 points)", "POST", "/api/v1/orders", "A", first, show=False)

    templates = [
        {
            "code": "M300-50",
            "name": "满300减50",
            "kind": "amount_off",
            "threshold_fen": 30000,
            "amount_fen": 5000,
            "valid_days": 30,
            "accept_scope": "brand",
            "accept_brand_code": "home",
            "giftable": True,
            "return_policy": "restore",
            "bearer": "issuing_store",
        },
        {
            "code": "P90",
            "name": "9折券（最多减30元）",
            "kind": "percent_off",
            "percent_off": 10,
            "cap_fen": 3000,
            "valid_days": 7,
            "return_policy": "void",
            "bearer": "hq",
        },
        {
            "code": "NEW80",
            "name": "新客满400减80",
            "kind": "amount_off",
            "threshold_fen": 40000,
            "amount_fen": 8000,
            "valid_days": 30,
            "exclusive": True,
            "bearer": "hq",
        },
        {
            "code": "NAILV",
            "name": "美甲服务券",
            "kind": "service",
            "skus": ["NAIL"],
            "pay_difference": True,
            "valid_days": 90,
            "bearer": "issuing_store",
        },
        {
            "code": "A-ONLY",
            "name": "徐汇店专享10元券",
            "kind": "amount_off",
            "amount_fen": 1000,
            "valid_days": 30,
            "accept_scope": "issuing_store",
            "bearer": "issuing_store",
        },
    ]
    for i, t in enumerate(templates):
        api.call(
            f"create template {t['code']}",
            "POST",
            "/api/v1/coupon-templates",
            "hq",
            t,
            key=f"tpl-{t['code']}",
            show=i == 0,
        )
    api.call(
        "bad template",
        "POST",
        "/api/v1/coupon-templates",
        "hq",
        {**templates[0], "code": "X", "amount_fen": 0},
        lang="en",
    )

    issued = api.call(
        "till A issues M300-50",
        "POST",
        f"/api/v1/members/{m}/coupons",
        "A",
        {"template_code": "M300-50"},
        key="A-T1-C-0001",
    )
    codes = {"M300-50": issued["code"]}
    codes["P90"] = api.call(
        "HQ issues P90 (no store)",
        "POST",
        f"/api/v1/members/{m}/coupons",
        "hq",
        {"template_code": "P90"},
        key="c2",
    )["code"]
    codes["NEW80"] = api.call(
        "NEW80", "POST", f"/api/v1/members/{m}/coupons", "A", {"template_code": "NEW80"}, key="c3", show=False
    )["code"]
    codes["NAILV"] = api.call(
        "till A issues a manicure voucher worth its price at A",
        "POST",
        f"/api/v1/members/{m}/coupons",
        "A",
        {"template_code": "NAILV", "cover_fen": 9900},
        key="c4",
    )["code"]
    codes["A-ONLY"] = api.call(
        "A-ONLY",
        "POST",
        f"/api/v1/members/{m}/coupons",
        "A",
        {"template_code": "A-ONLY"},
        key="c5",
        show=False,
    )["code"]
    api.call(
        "compensation without a reason",
        "POST",
        f"/api/v1/members/{m}/coupons",
        "cs",
        {"template_code": "P90", "source": "compensation", "reason": ""},
        lang="en",
    )
    api.call("a member's coupons", "GET", f"/api/v1/members/{m}/coupons", "B", params={"status": "available"})

    basket_lines = [
        ("6901111111111", "羊绒大衣", "服装", 1, 24000),
        ("6902222222222", "真丝围巾", "服装", 1, 8000),
        ("NAIL", "美甲（单次）", "服务", 1, 12500),
    ]
    basket = {
        "lines": [
            {"sku": sku, "category": cat, "quantity": q, "unit_price_fen": p}
            for sku, _, cat, q, p in basket_lines
        ]
    }
    best = api.call(
        "usable coupons for a basket at B", "POST", f"/api/v1/members/{m}/coupons/usable", "B", basket
    )
    api.call(
        "what exactly M300-50 alone does",
        "POST",
        f"/api/v1/members/{m}/coupons/usable",
        "B",
        {**basket, "coupon_codes": [codes["M300-50"]]},
    )
    body = order(
        api,
        "B",
        m,
        basket_lines,
        coupon_codes=best["best_codes"],
        redeem_points=600,
        client_order_id="B-T2-000031",
    )
    sale = api.call("checkout with coupons at B", "POST", "/api/v1/orders", "B", body, key="B-T2-000031")
    api.call(
        "the same coupons again",
        "POST",
        "/api/v1/orders",
        "B",
        {**body, "client_order_id": "B-T2-000032"},
        key="B-T2-000032",
        lang="en",
    )
    api.call(
        "A-ONLY at B",
        "POST",
        "/api/v1/orders",
        "B",
        {
            **order(api, "B", m, [("6903333333333", "茶叶", "食品", 1, 5000)]),
            "coupon_codes": [codes["A-ONLY"]],
        },
        lang="en",
    )
    forgot = order(api, "B", m, [("6903333333333", "茶叶", "食品", 1, 40000)])
    forgot["coupon_codes"] = [codes["NEW80"]]
    api.call("payments forget the coupon", "POST", "/api/v1/orders", "B", forgot, lang="en")

    NOW[0] = at(11, 24)
    api.call(
        "return the scarf at C",
        "POST",
        f"/api/v1/orders/{sale['order_no']}/returns",
        "C",
        {"lines": [{"line_no": 2, "quantity": 1}], "client_return_id": "C-R-0007"},
        key="C-R-0007",
    )
    api.call("coupons after a partial return", "GET", f"/api/v1/members/{m}/coupons", "C")
    api.call(
        "return the rest at C",
        "POST",
        f"/api/v1/orders/{sale['order_no']}/returns",
        "C",
        {
            "lines": [{"line_no": 1, "quantity": 1}, {"line_no": 3, "quantity": 1}],
            "client_return_id": "C-R-0008",
        },
        key="C-R-0008",
    )
    api.call("coupons after the full return", "GET", f"/api/v1/members/{m}/coupons", "C")
    api.call(
        "gift M300-50",
        "POST",
        f"/api/v1/members/{m}/coupons/{codes['M300-50']}/gift",
        "A",
        {"to_member_no": friend, "reason": "送给朋友"},
        key="A-T1-G-0001",
    )
    api.call(
        "gift a voucher that is not giftable",
        "POST",
        f"/api/v1/members/{m}/coupons/{codes['NAILV']}/gift",
        "A",
        {"to_member_no": friend},
        lang="en",
    )

    # The points mall: a coupon reward.
    api.call(
        "HQ template for the mall",
        "POST",
        "/api/v1/coupon-templates",
        "hq",
        {
            "code": "MALL20",
            "name": "满100减20",
            "kind": "amount_off",
            "threshold_fen": 10000,
            "amount_fen": 2000,
            "valid_days": 30,
            "bearer": "hq",
        },
        key="tpl-MALL20",
        show=False,
    )
    api.call(
        "a coupon reward",
        "POST",
        "/api/v1/rewards",
        "hq",
        {
            "code": "CPN20",
            "name": "20元券",
            "kind": "coupon",
            "points_cost": 400,
            "stock_mode": "none",
            "coupon_template_code": "MALL20",
        },
        key="rw-CPN20",
    )
    api.call(
        "redeem the coupon reward at C",
        "POST",
        f"/api/v1/members/{m}/reward-redemptions",
        "C",
        {"reward_code": "CPN20"},
        key="C-T1-RW-0001",
    )

    # Service packages.
    NOW[0] = at(11, 25)
    api.call(
        "HQ offers a package",
        "POST",
        "/api/v1/service-packages",
        "hq",
        {
            "code": "NAIL12",
            "name": "美甲十二次卡",
            "service_code": "manicure",
            "uses": 12,
            "price_fen": 29900,
            "validity_days": 365,
            "refund_rule": "unused_pro_rata",
            "store_scope": "brand",
            "brand_code": "home",
            "bearer": "issuing_store",
        },
        key="pkg-NAIL12",
    )
    api.call("packages at B", "GET", "/api/v1/service-packages", "B", params={"store_code": "B"})
    api.call("packages at C", "GET", "/api/v1/service-packages", "C", params={"store_code": "C"})
    api.call(
        "sell for the wrong amount",
        "POST",
        f"/api/v1/members/{m}/packages",
        "A",
        {"package_code": "NAIL12", "payment_method": "wechat_pay", "amount_fen": 30000},
        lang="en",
    )
    sold = api.call(
        "sell at A",
        "POST",
        f"/api/v1/members/{m}/packages",
        "A",
        {"package_code": "NAIL12", "payment_method": "wechat_pay", "amount_fen": 29900},
        key="A-T1-P-0001",
    )
    pid = sold["id"]
    api.call(
        "use at B",
        "POST",
        f"/api/v1/member-packages/{pid}/uses",
        "B",
        {"uses": 1, "member_no": m, "note": "法式美甲"},
        key="B-T2-U-0001",
    )
    api.call(
        "use two more at A",
        "POST",
        f"/api/v1/member-packages/{pid}/uses",
        "A",
        {"uses": 2, "member_no": m},
        key="A-T1-U-0001",
        show=False,
    )
    api.call(
        "use at C", "POST", f"/api/v1/member-packages/{pid}/uses", "C", {"uses": 1, "member_no": m}, lang="en"
    )
    api.call(
        "use too many",
        "POST",
        f"/api/v1/member-packages/{pid}/uses",
        "B",
        {"uses": 10, "member_no": m},
        lang="en",
    )
    api.call(
        "someone else's package",
        "POST",
        f"/api/v1/member-packages/{pid}/uses",
        "B",
        {"uses": 1, "member_no": friend},
        lang="en",
    )
    api.call("the package with its uses", "GET", f"/api/v1/member-packages/{pid}", "B")
    api.call("a member's packages", "GET", f"/api/v1/members/{m}/packages", "B")
    api.call(
        "a till may not refund",
        "POST",
        f"/api/v1/member-packages/{pid}/refund",
        "A",
        {"reason": "搬家"},
        lang="en",
    )
    api.call(
        "the store manager refunds",
        "POST",
        f"/api/v1/member-packages/{pid}/refund",
        "a_mgr",
        {"reason": "会员搬家，退剩余次数"},
        key="refund-1",
    )
    api.call("use after refund", "POST", f"/api/v1/member-packages/{pid}/uses", "A", {"uses": 1}, lang="en")
    api.call(
        "grant",
        "POST",
        f"/api/v1/members/{friend}/package-grants",
        "a_mgr",
        {"package_code": "NAIL12", "source": "compensation", "reason": "服务延误补偿", "store_code": "A"},
        key="grant-1",
    )
    api.call(
        "a till may not grant",
        "POST",
        f"/api/v1/members/{friend}/package-grants",
        "A",
        {"package_code": "NAIL12", "source": "goodwill", "reason": "x"},
        lang="en",
    )
    api.call(
        "a till may not read statements",
        "GET",
        "/api/v1/settlement/statements",
        "A",
        params={"period": "2026-11"},
        lang="en",
    )
    api.call(
        "settlement so far (HQ)", "GET", "/api/v1/settlement/entries", "hq", params={"period": "2026-11"}
    )
    api.close()


# --- docs/settlement.md: a scripted month, closing, late entries, verify -------------------------------


def settlement_examples() -> None:
    emit("\n\n# docs/settlement.md\n")
    api = Api(WORK / "settlement.db")
    NOW[0] = at(10, 1)
    api.call("default policy", "GET", "/api/v1/settlement/policy", "hq")
    m1 = register(api, "A", "18400000001", "张一")
    m2 = register(api, "C", "18400000002", "赵二")
    NOW[0] = at(10, 3)
    o1 = api.call(
        "3 Oct A",
        "POST",
        "/api/v1/orders",
        "A",
        order(api, "A", m1, [("COAT", "大衣", "服装", 2, 25000)]),
        show=False,
    )
    NOW[0] = at(10, 5)
    api.call(
        "5 Oct B",
        "POST",
        "/api/v1/orders",
        "B",
        order(api, "B", m1, [("BAG", "手袋", "箱包", 1, 30000)]),
        show=False,
    )
    NOW[0] = at(10, 8)
    o3 = api.call(
        "8 Oct B: 600 points",
        "POST",
        "/api/v1/orders",
        "B",
        order(api, "B", m1, [("SHOE", "皮鞋", "鞋", 1, 20000)], redeem_points=600),
    )
    NOW[0] = at(10, 10)
    api.call(
        "10 Oct: split 60",
        "PUT",
        "/api/v1/settlement/policy",
        "hq",
        {"bearer": "split", "issuer_pct": 60},
        key="policy-2026-10-10",
    )
    NOW[0] = at(10, 12)
    api.call(
        "12 Oct C",
        "POST",
        "/api/v1/orders",
        "C",
        order(api, "C", m2, [("TOY", "积木", "玩具", 1, 10000)]),
        show=False,
    )
    NOW[0] = at(10, 13)
    api.call(
        "13 Oct A: 100 points",
        "POST",
        "/api/v1/orders",
        "A",
        order(api, "A", m2, [("CUP", "马克杯", "家居", 1, 5000)], redeem_points=100),
        show=False,
    )
    NOW[0] = at(10, 20)
    api.call(
        "20 Oct C returns a coat bought at A",
        "POST",
        f"/api/v1/orders/{o1['order_no']}/returns",
        "C",
        {"lines": [{"line_no": 1, "quantity": 1}]},
        show=False,
    )
    NOW[0] = at(10, 25)
    api.call(
        "25 Oct A returns the shoes bought at B",
        "POST",
        f"/api/v1/orders/{o3['order_no']}/returns",
        "A",
        {"lines": [{"line_no": 1, "quantity": 1}]},
    )
    NOW[0] = at(10, 27)
    api.call(
        "HQ50",
        "POST",
        "/api/v1/coupon-templates",
        "hq",
        {
            "code": "HQ50",
            "name": "总部50元券",
            "kind": "amount_off",
            "amount_fen": 5000,
            "valid_days": 30,
            "bearer": "hq",
        },
        show=False,
    )
    cpn = api.call(
        "HQ issues", "POST", f"/api/v1/members/{m1}/coupons", "hq", {"template_code": "HQ50"}, show=False
    )
    api.call(
        "27 Oct B: HQ coupon",
        "POST",
        "/api/v1/orders",
        "B",
        order(api, "B", m1, [("HAT", "帽子", "服装", 1, 10000)], coupon_codes=[cpn["code"]]),
        show=False,
    )
    NOW[0] = at(10, 28)
    api.call(
        "NAIL10",
        "POST",
        "/api/v1/service-packages",
        "hq",
        {"code": "NAIL10", "name": "美甲十次卡", "service_code": "manicure", "uses": 10, "price_fen": 30000},
        show=False,
    )
    pkg = api.call(
        "sell at A",
        "POST",
        f"/api/v1/members/{m1}/packages",
        "A",
        {"package_code": "NAIL10", "payment_method": "cash", "amount_fen": 30000},
        show=False,
    )
    api.call(
        "28 Oct C: one manicure",
        "POST",
        f"/api/v1/member-packages/{pkg['id']}/uses",
        "C",
        {"uses": 1},
        show=False,
    )

    NOW[0] = at(10, 31)
    api.call(
        "October statements (HQ)", "GET", "/api/v1/settlement/statements", "hq", params={"period": "2026-10"}
    )
    api.call(
        "October, store manager A",
        "GET",
        "/api/v1/settlement/statements",
        "a_mgr",
        params={"period": "2026-10"},
    )
    api.call(
        "B's statement asked by A's manager",
        "GET",
        "/api/v1/settlement/statements",
        "a_mgr",
        params={"period": "2026-10", "store_code": "B"},
        lang="en",
    )
    api.call(
        "A's entries with B",
        "GET",
        "/api/v1/settlement/entries",
        "a_mgr",
        params={"period": "2026-10", "store_code": "A", "counterparty": "B"},
    )
    api.call("all October entries", "GET", "/api/v1/settlement/entries", "hq", params={"period": "2026-10"})
    xlsx = api.call(
        "Excel",
        "GET",
        "/api/v1/settlement/statements.xlsx",
        "a_mgr",
        params={"period": "2026-10", "store_code": "A"},
    )
    wb = load_workbook(io.BytesIO(xlsx))
    for ws in wb.worksheets:
        emit(f"\nsheet {ws.title}:")
        for row in ws.iter_rows(values_only=True):
            emit(" | ".join("" if v is None else str(v) for v in row))

    NOW[0] = at(11, 2)
    api.call(
        "close November early",
        "POST",
        "/api/v1/settlement/periods/2026-11/close",
        "hq",
        {"reason": "月结"},
        lang="en",
    )
    api.call(
        "a store manager closes",
        "POST",
        "/api/v1/settlement/periods/2026-10/close",
        "a_mgr",
        {"reason": "月结"},
        lang="en",
    )
    api.call(
        "close October",
        "POST",
        "/api/v1/settlement/periods/2026-10/close",
        "hq",
        {"reason": "10 月月结"},
        key="close-2026-10",
    )
    api.call(
        "close October again",
        "POST",
        "/api/v1/settlement/periods/2026-10/close",
        "hq",
        {"reason": "x"},
        lang="en",
    )
    # A till that was offline on 30 Oct sends its sale now: M2's points were issued at C, spent at B.
    api.call(
        "a late offline order from October",
        "POST",
        "/api/v1/orders/offline-batch",
        "B",
        {
            "orders": [
                {
                    "client_order_id": "B-T3-20261030-0001",
                    "occurred_at": "2026-10-30T15:20:00+08:00",
                    "member": {"member_no": m2},
                    "lines": [
                        {
                            "sku": "PEN",
                            "name": "钢笔",
                            "category": "文具",
                            "quantity": 1,
                            "unit_price_fen": 3000,
                        }
                    ],
                    "redeem_points": 40,
                    "payments": [{"method": "cash", "amount_fen": 2960}],
                }
            ]
        },
    )
    api.call(
        "a correction for October",
        "POST",
        "/api/v1/settlement/corrections",
        "hq",
        {
            "debtor": "A",
            "creditor": "C",
            "amount_fen": 3000,
            "reason": "10 月 28 日 C 店美甲少记一次",
            "business_month": "2026-10",
        },
        key="corr-2026-10-1",
    )
    api.call("periods", "GET", "/api/v1/settlement/periods", "hq")
    api.call("November so far", "GET", "/api/v1/settlement/entries", "hq", params={"period": "2026-11"})
    api.call(
        "November statements", "GET", "/api/v1/settlement/statements", "hq", params={"period": "2026-11"}
    )
    api.call(
        "October unchanged",
        "GET",
        "/api/v1/settlement/statements",
        "hq",
        params={"period": "2026-10", "store_code": "HQ"},
    )
    api.close()
    verify(api.db)


def verify(db: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "NO_COLOR": "1", "COLUMNS": "200"}
    cli = str(Path(sys.executable).with_name("onemember"))

    def run(title: str) -> None:
        done = subprocess.run([cli, "verify"], env=env, capture_output=True, text=True, check=False)
        shown = f"$ onemember verify\n{done.stdout}{done.stderr}$ echo $?\n{done.returncode}"
        emit(f"\n### {title}\n\n```console\n{shown}\n```")

    run("verify")
    # Behind the ledger's back: drop the append-only trigger on a copy and edit one entry.
    tampered = db.with_name("tampered.db")
    with sqlite3.connect(db) as source, sqlite3.connect(tampered) as copy:
        source.backup(copy)  # the database runs in WAL mode: copy it through SQLite, not the file
    env["DATABASE_URL"] = f"sqlite:///{tampered}"
    with sqlite3.connect(tampered) as conn:
        conn.execute("DROP TRIGGER settlement_entries_no_update")
        conn.execute(
            "UPDATE settlement_entries SET amount_fen = amount_fen + 100"
            " WHERE id = (SELECT min(id) FROM settlement_entries WHERE kind = 'package_used')"
        )
    run("verify after an edit behind its back")


def main(*parts: Callable[[], None]) -> None:
    set_clock(lambda: NOW[0])
    try:
        for part in parts:
            part()
    finally:
        set_clock(None)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main(pos_examples, settlement_examples)
