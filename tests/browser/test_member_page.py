"""The member page on a phone: code login, QR that refreshes, points, expiry, ledger, orders from two stores,
consents, language, export and account deletion."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from onemember.common.types import EntryKind
from onemember.members.models import Member
from onemember.members.privacy_models import MemberConsent
from onemember.messaging.models import OutboxMessage
from onemember.points import service as points
from onemember.points.models import PointAccount
from onemember.settings import get_settings
from tests.browser.conftest import DESKTOP, PHONE, Live, shot

CODE_RE = re.compile(r"验证码是 (\d{6})")


def _api(live: Live, store: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers=live.chain.key(store), timeout=10)


def _member_with_history(live: Live, phone: str) -> tuple[str, list[str]]:
    """A member registered at A with an order at A and one at B, plus two expiring point grants."""
    with _api(live, "A") as a, _api(live, "B") as b:
        r = a.post("/api/v1/members", json={"phone": phone, "name": "韩梅梅", "gender": "female"})
        assert r.status_code == 201, r.text
        member_no = r.json()["member_no"]
        order_nos = []
        for client, sku, price in ((a, "TEA-1", 8800), (b, "CUP-2", 4500)):
            r = client.post(
                "/api/v1/orders",
                json={
                    "member": {"member_no": member_no},
                    "lines": [
                        {
                            "sku": sku,
                            "name": sku,
                            "quantity": 2 if sku == "TEA-1" else 1,
                            "unit_price_fen": price,
                        }
                    ],
                    "payments": [
                        {"method": "wechat_pay", "amount_fen": price * (2 if sku == "TEA-1" else 1)}
                    ],
                },
            )
            assert r.status_code == 201, r.text
            order_nos.append(r.json()["order_no"])
    with live.factory() as s:
        member = s.scalars(
            select(Member).where(Member.org_id == live.chain.org_id, Member.member_no == member_no)
        ).one()
        account = s.scalars(select(PointAccount).where(PointAccount.member_id == member.id)).one()
        account = points.lock_account(s, account.id)
        for amount, expires in (
            (30, datetime(2030, 3, 31, 16, tzinfo=UTC)),
            (50, datetime(2030, 6, 30, 16, tzinfo=UTC)),
        ):
            points.earn(
                s,
                account,
                amount,
                points.EntryContext(reason="生日礼 birthday gift", actor="test"),
                kind=EntryKind.ADJUST,
                expires_at=expires,
            )
        s.commit()
    return member_no, order_nos


def _code_from_outbox(live: Live, member_no: str) -> str:
    with live.factory() as s:
        body = s.scalar(
            select(OutboxMessage.body)
            .join(Member, Member.id == OutboxMessage.member_id)
            .where(Member.org_id == live.chain.org_id, Member.member_no == member_no)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        )
    assert body is not None
    found = CODE_RE.search(body)
    assert found, body
    return found.group(1)


def _full_shot(page: Page, name: str, size: dict[str, int]) -> None:
    """Grow the viewport to the page's height first, so the sticky tab bar sits at the bottom of the
    picture as it does on a screen, not across the middle of a long page."""
    page.set_viewport_size(size)
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    shot(page, name)
    page.set_viewport_size(size)


def _both_widths(page: Page, name: str) -> None:
    _full_shot(page, f"{name}-phone", PHONE)
    _full_shot(page, f"{name}-desktop", DESKTOP)
    page.set_viewport_size(PHONE)


def test_member_page_end_to_end(
    phone_page: Page, live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = phone_page
    monkeypatch.setattr(get_settings(), "member_code_ttl_seconds", 4)  # the QR refreshes every 2 s
    member_no, (order_a, order_b) = _member_with_history(live, "18800000501")

    page.goto(f"{live.url}/m/login?org={live.chain.org_code}")
    expect(page.get_by_test_id("phone-form")).to_be_visible()
    _both_widths(page, "member-login")
    page.fill("#phone", "18800000501")
    page.get_by_test_id("send-code").click()
    expect(page.get_by_test_id("login-notice")).to_contain_text("188****0501")
    page.fill("#code", _code_from_outbox(live, member_no))
    _full_shot(page, "member-login-code-phone", PHONE)
    page.get_by_test_id("verify").click()

    expect(page).to_have_url(f"{live.url}/m")
    expect(page.get_by_test_id("member-no")).to_have_text(member_no)
    expect(page.locator("[data-testid=member-qr] svg")).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("301")  # 176 + 45 + 30 + 50
    expect(page.get_by_test_id("debt")).to_have_text("0")
    rows = page.get_by_test_id("expiry-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_attribute("data-month", "2030-03")
    expect(rows.nth(0).get_by_test_id("expiry-points")).to_have_text("30")
    expect(rows.nth(0)).to_contain_text("2030-03-31")
    expect(rows.nth(1)).to_have_attribute("data-month", "2030-06")
    expect(rows.nth(1).get_by_test_id("expiry-points")).to_have_text("50")
    expect(rows.nth(2)).to_have_attribute("data-month", "never")
    expect(rows.nth(2).get_by_test_id("expiry-points")).to_have_text("221")
    code = page.get_by_test_id("member-code").get_attribute("data-code")
    assert code
    assert code.startswith("OM")
    expect(page.get_by_test_id("member-code")).not_to_have_attribute("data-code", code, timeout=8000)
    expect(page.locator("[data-testid=member-qr] svg")).to_be_visible()
    _both_widths(page, "member-home")
    monkeypatch.setattr(get_settings(), "member_code_ttl_seconds", 120)

    page.get_by_test_id("tab-points").click()
    ledger = page.get_by_test_id("ledger-row")
    expect(ledger).to_have_count(4)
    expect(ledger.nth(0)).to_have_attribute("data-amount", "50")
    expect(ledger.nth(3)).to_have_attribute("data-amount", "176")
    expect(ledger.nth(3)).to_contain_text(order_a)
    _both_widths(page, "member-ledger")

    page.get_by_test_id("tab-orders").click()
    orders = page.get_by_test_id("order-row")
    expect(orders).to_have_count(2)
    expect(orders.nth(0)).to_have_attribute("data-order-no", order_b)
    expect(orders.nth(0).get_by_test_id("order-store")).to_have_text("杭州西湖店")
    expect(orders.nth(0).get_by_test_id("order-paid")).to_have_text("¥45.00")
    expect(orders.nth(1)).to_have_attribute("data-order-no", order_a)
    expect(orders.nth(1).get_by_test_id("order-store")).to_have_text("上海徐汇店")
    expect(orders.nth(1).get_by_test_id("order-paid")).to_have_text("¥176.00")
    _both_widths(page, "member-orders")

    page.get_by_test_id("tab-me").click()
    expect(page.get_by_test_id("profile-phone")).to_have_text("188****0501")
    sms = page.get_by_test_id("consent-marketing_sms")
    expect(sms).to_have_attribute("data-granted", "off")
    page.get_by_test_id("consent-toggle-marketing_sms").check()
    expect(sms).to_have_attribute("data-granted", "on")
    expect(sms.get_by_test_id("consent-meta")).to_contain_text("通过会员中心设置")
    page.reload()
    expect(page.get_by_test_id("consent-marketing_sms")).to_have_attribute("data-granted", "on")
    expect(page.get_by_test_id("consent-marketing_email")).to_have_attribute("data-granted", "off")
    with live.factory() as s:
        consent = s.scalars(
            select(MemberConsent)
            .join(Member, Member.id == MemberConsent.member_id)
            .where(Member.org_id == live.chain.org_id, Member.member_no == member_no)
        ).one()
        assert (consent.purpose, consent.granted, consent.source) == ("marketing_sms", True, "member_page")
    _both_widths(page, "member-profile")

    page.get_by_test_id("lang-switch").click()
    expect(page.get_by_text("Marketing consents")).to_be_visible()
    expect(page.get_by_test_id("tab-points")).to_have_text(re.compile("Points"))
    expect(page.get_by_test_id("consent-marketing_sms")).to_contain_text("via member page")

    page.get_by_test_id("link-privacy").click()
    page.get_by_test_id("export-request").click()
    expect(page.get_by_test_id("export-ready")).to_be_visible()
    _both_widths(page, "member-privacy")
    with page.expect_download() as download_info:
        page.get_by_test_id("export-download").click()
    target = tmp_path / "export.json"
    download_info.value.save_as(target)
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["member"]["member_no"] == member_no
    assert data["member"]["name"] == "韩梅梅"
    assert [o["order_no"] for o in data["orders"]] == [order_a, order_b]
    assert [i["value"] for i in data["identities"]] == ["18800000501"]
    assert data["points"]["balance"] == 301

    page.get_by_test_id("delete-start").click()
    page.get_by_test_id("erase-submit").click()
    expect(page.get_by_test_id("erase-error")).to_have_text("Tick the box to confirm")
    _full_shot(page, "member-erase-phone", PHONE)
    page.get_by_test_id("erase-check").check()
    page.get_by_test_id("erase-submit").click()
    expect(page.get_by_test_id("login-notice")).to_have_text(
        "Your account has been deleted and your personal data erased."
    )
    page.goto(f"{live.url}/m")
    expect(page.get_by_test_id("phone-form")).to_be_visible()
    with _api(live, "A") as a:
        assert a.get(f"/api/v1/members/{member_no}").status_code == 404


def test_wrong_code_and_rate_limit_in_the_browser(phone_page: Page, live: Live) -> None:
    page = phone_page
    with _api(live, "C") as c:
        r = c.post("/api/v1/members", json={"phone": "18800000502"})
        assert r.status_code == 201
    page.goto(f"{live.url}/m/login?org={live.chain.org_code}")
    page.fill("#phone", "18800000502")
    page.get_by_test_id("send-code").click()
    page.fill("#code", "000000" if _code_from_outbox(live, r.json()["member_no"]) != "000000" else "111111")
    page.get_by_test_id("verify").click()
    expect(page.get_by_test_id("login-error")).to_have_text("验证码错误，还可尝试 4 次")
    page.get_by_test_id("resend").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("验证码已发送，请")
    expect(page.get_by_test_id("code-form")).to_be_visible()  # the last code still works here
    _full_shot(page, "member-login-error-phone", PHONE)
