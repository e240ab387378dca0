"""The member page shows the tier and exactly what is missing for the next one."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import Chain
from tests.helpers import checkout, line, register
from tests.helpers import login as staff_login
from tests.test_member_page_http import login


def test_member_sees_tier_progress(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    hq = staff_login(app_client, chain, "hq")
    r = app_client.post(
        "/api/v1/tiers",
        headers=hq,
        json={
            "code": "main",
            "name": "会员等级",
            "basis": "spend_12m",
            "grace_days": 30,
            "levels": [
                {"code": "normal", "name": "普通会员", "threshold": 0, "keep_threshold": 0},
                {
                    "code": "gold",
                    "name": "金卡",
                    "threshold": 100000,
                    "keep_threshold": 80000,
                    "discount_pct": 5,
                },
            ],
        },
    )
    assert r.status_code == 201, r.text
    m = register(app_client, chain, "A", "18800009901")
    checkout(app_client, chain, "B", {"member_no": m["member_no"]}, [line("X", 1, 68000)])
    login(app_client, chain, factory, "18800009901", m["member_no"])
    page = app_client.get("/m")
    assert page.status_code == 200
    progress = re.search(r'data-testid="tier-progress">([^<]+)<', page.text)
    assert progress is not None
    assert progress.group(1) == "近 12 个月再消费 ¥320.00 即可升级金卡"
    assert 'data-testid="tier-name">普通会员<' in page.text
    assert 'style="width: 68%"' in page.text
    en = app_client.get("/m?lang=en")
    assert "¥320.00 more spend within 12 months to reach 金卡" in en.text
