"""The console members section in a real browser: search, the 360° page, the audited phone reveal, scope,
merge with its preview, and the Excel export of the filtered list."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from openpyxl import load_workbook
from playwright.sync_api import Page, expect
from sqlalchemy import select

from onemember.audit.models import AuditLog
from onemember.members.models import Member
from tests.browser.conftest import DESKTOP, PHONE, Live, shot, staff_login


def register(live: Live, store: str, phone: str, name: str) -> dict[str, Any]:
    body = {"phone": phone, "name": name, "birthday": "1991-03-08", "gender": "female", "channel": "pos"}
    r = httpx.post(f"{live.url}/api/v1/members", json=body, headers=live.chain.key(store))
    assert r.status_code == 201, r.text
    return dict(r.json())


def buy(live: Live, store: str, member_no: str, *lines: tuple[str, str, int, int]) -> dict[str, Any]:
    """Check out (sku, category, quantity, unit price in fen) lines at a store's till, paid by WeChat."""
    items = [
        {"sku": sku, "name": f"商品{sku}", "category": cat, "quantity": qty, "unit_price_fen": price}
        for sku, cat, qty, price in lines
    ]
    total = sum(qty * price for _, _, qty, price in lines)
    body = {
        "member": {"member_no": member_no},
        "lines": items,
        "payments": [{"method": "wechat_pay", "amount_fen": total}],
    }
    r = httpx.post(f"{live.url}/api/v1/orders", json=body, headers=live.chain.key(store))
    assert r.status_code == 201, r.text
    return dict(r.json())


def member_id(live: Live, member_no: str) -> int:
    with live.factory() as s:
        found = s.scalar(
            select(Member.id).where(Member.org_id == live.chain.org_id, Member.member_no == member_no)
        )
        assert found is not None
        return found


def search(page: Page, text: str) -> None:
    page.get_by_test_id("search-input").fill(text)
    page.get_by_test_id("search-button").click()


def test_hq_finds_by_phone_sees_the_360_view_and_reveals_the_phone(page: Page, live: Live) -> None:
    m = register(live, "A", "18600000001", "林晓雨")
    no = m["member_no"]
    buy(live, "A", no, ("f-1", "生鲜", 2, 1990), ("d-1", "日化", 1, 3500))
    buy(live, "A", no, ("f-2", "生鲜", 1, 2600))
    order_b = buy(live, "B", no, ("s-1", "零食", 3, 850))

    for i, (store, name, spend) in enumerate(
        [
            ("A", "许文静", 8800),
            ("B", "何家豪", 15600),
            ("C", "罗佳怡", 0),
            ("B", "马志强", 4250),
            ("A", "郭小萌", 0),
        ]
    ):
        other = register(live, store, f"186000000{41 + i}", name)
        if spend:
            buy(live, store, other["member_no"], (f"g-{i}", "生鲜", 1, spend))

    staff_login(page, live, "hq")
    page.goto(f"{live.url}/console/members")
    expect(page.get_by_test_id("member-row").first).to_be_visible()
    shot(page, "console-members-list-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "console-members-list-phone")
    page.set_viewport_size(DESKTOP)

    search(page, "186 0000 0001")
    rows = page.get_by_test_id("member-row")
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_test_id("row-phone")).to_have_text("186****0001")
    expect(rows.first.get_by_test_id("row-name")).to_have_text("林晓雨")
    expect(rows.first.get_by_test_id("row-orders")).to_have_text("3")
    expect(rows.first.get_by_test_id("row-spend")).to_have_text("¥126.30")
    rows.first.get_by_test_id("member-link").click()

    expect(page).to_have_url(f"{live.url}/console/members/{no}")
    expect(page.get_by_test_id("member-name")).to_have_text("林晓雨")
    expect(page.get_by_test_id("phone-masked")).to_have_text("186****0001")
    expect(page.get_by_test_id("registered-store")).to_have_text("A 上海徐汇店")
    expect(page.get_by_test_id("stat-orders")).to_have_text("3")
    expect(page.get_by_test_id("stat-spend")).to_have_text("¥126.30")
    expect(page.get_by_test_id("stat-stores")).to_have_text("2")
    store_rows = page.get_by_test_id("store-row")
    expect(store_rows).to_have_count(2)
    expect(store_rows.nth(0)).to_have_attribute("data-store", "A")
    expect(store_rows.nth(0).get_by_test_id("store-orders")).to_have_text("2")
    expect(store_rows.nth(0).get_by_test_id("store-spend")).to_have_text("¥100.80")
    expect(store_rows.nth(1).get_by_test_id("store-spend")).to_have_text("¥25.50")
    cats = page.get_by_test_id("category-row")
    expect(cats).to_have_count(3)
    expect(cats.nth(0)).to_have_attribute("data-category", "生鲜")
    expect(cats.nth(0).get_by_test_id("category-spend")).to_have_text("¥65.80")
    expect(page.get_by_test_id("points-balance")).to_have_text("125")
    expect(page.get_by_test_id("lot-row")).to_have_count(3)
    expect(page.get_by_test_id("ledger-row")).to_have_count(3)
    expect(page.locator("[data-chart] svg")).to_have_count(2)
    expect(page.get_by_test_id("order-row")).to_have_count(3)

    page.locator(f'[data-order-no="{order_b["order_no"]}"]').get_by_test_id("order-link").click()
    detail = page.get_by_test_id("order-detail")
    expect(detail).to_contain_text(order_b["order_no"])
    expect(detail).to_contain_text("B 杭州西湖店")
    expect(detail.get_by_test_id("order-line")).to_have_count(1)
    shot(page, "console-member-360-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "console-member-360-phone")
    page.set_viewport_size(DESKTOP)

    page.get_by_test_id("reveal-reason").fill("会员来电核实身份")
    page.get_by_test_id("reveal-button").click()
    expect(page.get_by_test_id("phone-full")).to_have_text("18600000001")
    with live.factory() as s:
        entries = s.execute(
            select(
                AuditLog.actor, AuditLog.actor_role, AuditLog.reason, AuditLog.target_id, AuditLog.details
            ).where(
                AuditLog.org_id == live.chain.org_id,
                AuditLog.action == "member.pii_revealed",
                AuditLog.member_id == member_id(live, no),
            )
        ).all()
    assert [tuple(e) for e in entries] == [
        ("staff:hq", "hq_admin", "会员来电核实身份", no, {"kind": "phone"})
    ]

    page.context.clear_cookies()
    staff_login(page, live, "a_clerk")
    page.goto(f"{live.url}/console/members/{no}")
    expect(page.get_by_test_id("member-name")).to_have_text("林晓雨")
    expect(page.get_by_test_id("phone-masked")).to_have_text("186****0001")
    expect(page.get_by_test_id("reveal-button")).to_have_count(0)
    expect(page.get_by_test_id("merge-card")).to_have_count(0)


def test_store_manager_lists_only_their_members_but_finds_others_by_exact_phone(
    page: Page, live: Live
) -> None:
    at_a = register(live, "A", "18600000011", "柏青山")
    at_b = register(live, "B", "18600000012", "柏绿水")
    staff_login(page, live, "b_mgr")
    page.goto(f"{live.url}/console/members")
    expect(page.get_by_test_id("scope-label")).to_contain_text("杭州西湖店")
    expect(page.get_by_test_id("scope-filter")).to_have_count(0)
    search(page, "柏")
    rows = page.get_by_test_id("member-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-member-no", at_b["member_no"])

    search(page, "18600000011")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-member-no", at_a["member_no"])
    expect(rows.first.get_by_test_id("row-name")).to_contain_text("柏**")
    expect(rows.first.get_by_test_id("row-phone")).to_have_text("186****0011")
    expect(page.get_by_test_id("list-note")).to_contain_text("精确查找")
    rows.first.get_by_test_id("member-link").click()
    expect(page.get_by_test_id("member-name")).to_have_text("柏**")
    expect(page.get_by_test_id("cross-store")).to_be_visible()
    expect(page.get_by_test_id("birthday")).not_to_contain_text("1991")
    expect(page.get_by_test_id("phone-masked")).to_have_text("186****0011")
    expect(page.get_by_test_id("reveal-button")).to_have_count(0)
    expect(page.get_by_test_id("merge-card")).to_have_count(0)

    page.goto(f"{live.url}/console/members/{at_b['member_no']}")
    expect(page.get_by_test_id("member-name")).to_have_text("柏绿水")
    expect(page.get_by_test_id("reveal-button")).to_be_visible()


def test_merge_two_members_with_a_preview_and_the_old_number_opens_the_survivor(
    page: Page, live: Live
) -> None:
    keep = register(live, "A", "18600000021", "秦川")
    gone = register(live, "B", "18600000022", "秦川")
    buy(live, "A", keep["member_no"], ("m-1", "生鲜", 1, 5000))
    buy(live, "B", gone["member_no"], ("m-2", "零食", 2, 1500))
    staff_login(page, live, "hq")
    page.goto(f"{live.url}/console/members/{keep['member_no']}")
    page.get_by_test_id("merge-other").fill(keep["member_no"])
    page.get_by_test_id("merge-preview-button").click()
    expect(page.get_by_test_id("merge-error")).to_have_text("不能与自己合并")

    page.get_by_test_id("merge-other").fill(gone["member_no"])
    page.get_by_test_id("merge-preview-button").click()
    preview = page.get_by_test_id("merge-preview")
    expect(preview).to_contain_text(gone["member_no"])
    expect(preview.get_by_test_id("preview-orders")).to_have_text("1")
    expect(preview.get_by_test_id("preview-points")).to_have_text("30")
    expect(preview.get_by_test_id("preview-debt")).to_have_text("0")
    expect(preview.get_by_test_id("preview-identities")).to_contain_text("186****0022")
    shot(page, "console-member-merge-preview-desktop")
    page.get_by_test_id("merge-reason").fill("同一顾客的两个会员号")
    page.get_by_test_id("merge-confirm").click()

    expect(page).to_have_url(
        f"{live.url}/console/members/{keep['member_no']}?merged_from={gone['member_no']}"
    )
    expect(page.get_by_test_id("merged-notice")).to_contain_text(gone["member_no"])
    expect(page.get_by_test_id("points-balance")).to_have_text("80")
    expect(page.get_by_test_id("stat-orders")).to_have_text("2")
    expect(page.get_by_test_id("order-row")).to_have_count(2)
    expect(page.get_by_test_id("merged-from")).to_have_text(gone["member_no"])
    expect(page.get_by_test_id("identities")).to_contain_text("186****0022")

    page.goto(f"{live.url}/console/members/{gone['member_no']}")
    expect(page).to_have_url(
        re.compile(rf"/console/members/{keep['member_no']}\?merged_from={gone['member_no']}$")
    )
    expect(page.get_by_test_id("member-no")).to_have_text(keep["member_no"])
    expect(page.get_by_test_id("merged-notice")).to_contain_text(gone["member_no"])


def test_excel_export_holds_exactly_the_filtered_rows(page: Page, live: Live, tmp_path: Path) -> None:
    a = register(live, "A", "18600000031", "甄一")
    b = register(live, "B", "18600000032", "甄二")
    c = register(live, "C", "18600000033", "甄三")
    register(live, "A", "18600000034", "贾四")  # another name: filtered out
    buy(live, "B", b["member_no"], ("x-1", "日化", 1, 12345))
    buy(live, "A", a["member_no"], ("x-2", "生鲜", 1, 990))
    staff_login(page, live, "hq")
    page.goto(f"{live.url}/console/members?q=%E7%94%84&sort=spend&dir=desc")
    rows = page.get_by_test_id("member-row")
    expect(rows).to_have_count(3)
    shown = [rows.nth(i).get_attribute("data-member-no") for i in range(3)]
    assert shown == [b["member_no"], a["member_no"], c["member_no"]]
    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    download = info.value
    assert download.suggested_filename.startswith("members-")
    assert download.suggested_filename.endswith(".xlsx")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    sheet = load_workbook(saved).active
    assert sheet is not None
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == (
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
    assert [row[:5] + row[7:] for row in values[1:]] == [
        (b["member_no"], "甄二", "186****0032", "B 杭州西湖店", "有效", 1, 123.45),
        (a["member_no"], "甄一", "186****0031", "A 上海徐汇店", "有效", 1, 9.9),
        (c["member_no"], "甄三", "186****0033", "C 北京朝阳店", "有效", 0, 0),
    ]
    assert values[3][6] is None  # 甄三 has not bought anything yet
    assert all("18600000" not in str(cell) for row in values for cell in row)

    page.goto(f"{live.url}/console/members?q=%E7%94%84&store=B")
    expect(rows).to_have_count(1)
    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    info.value.save_as(tmp_path / "only-b.xlsx")
    only_b_sheet = load_workbook(tmp_path / "only-b.xlsx").active
    assert only_b_sheet is not None
    only_b = list(only_b_sheet.iter_rows(values_only=True))
    assert [row[0] for row in only_b[1:]] == [b["member_no"]]
