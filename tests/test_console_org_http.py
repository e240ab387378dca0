"""The console's Stores and Audit pages over plain HTTP: who may see and change what, and failure paths."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.audit import service as audit
from onemember.audit.models import AuditLog
from onemember.auth.models import ApiKey
from onemember.auth.principal import system_principal
from onemember.common.types import Role
from onemember.org.models import Staff
from tests.factories import PASSWORD, Chain, _password_hash
from tests.helpers import login, register


def console_login(client: TestClient, chain: Chain, username: str) -> str:
    """Log in through the console form; returns the CSRF token to send with later POSTs."""
    client.cookies.clear()
    client.get("/console/login")
    csrf = str(client.cookies["om_csrf"])
    r = client.post(
        "/console/login",
        data={"org": chain.org_code, "username": username, "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf


def counts(factory: sessionmaker[Session]) -> tuple[int, int, int, int]:
    """Rows that a console write could add or change: keys, revoked keys, staff, audit entries."""
    with factory() as s:
        return (
            s.scalar(select(func.count()).select_from(ApiKey)) or 0,
            s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_not(None))) or 0,
            s.scalar(select(func.count()).select_from(Staff)) or 0,
            s.scalar(select(func.count()).select_from(AuditLog)) or 0,
        )


def xlsx_rows(content: bytes) -> list[tuple[object, ...]]:
    sheet = load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    return list(sheet.iter_rows(values_only=True))


def prefix_of(secret: str) -> str:
    return secret[4:12]


def test_auditor_reads_everything_and_a_forged_post_changes_nothing(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "auditor")
    tree = app_client.get("/console/stores")
    assert tree.status_code == 200
    for code in ("A", "B", "C"):
        assert f'data-testid="store-row-{code}"' in tree.text
    assert 'data-testid="staff-create-form"' not in tree.text
    page = app_client.get("/console/stores/A")
    assert page.status_code == 200
    assert 'data-testid="readonly-note"' in page.text
    for absent in ("key-create-form", "staff-create-form", "revoke-"):
        assert f'data-testid="{absent}' not in page.text
    before = counts(factory)
    a_key = prefix_of(chain.keys["A"])
    forged = [
        ("/console/stores/A/api-keys", {"name": "forged", "csrf": csrf}),
        ("/console/stores/A/staff", {"username": "ghost", "password": "long-enough-1", "role": "clerk"}),
        ("/console/staff", {"username": "ghost2", "password": "long-enough-1", "role": "hq_admin"}),
        (f"/console/stores/A/api-keys/{a_key}/revoke", {}),
    ]
    for url, data in forged:
        r = app_client.post(url, data={**data, "csrf": csrf})
        assert r.status_code == 403, url
        assert "auth.role" in r.text
    assert counts(factory) == before
    assert app_client.get("/api/v1/auth/me", headers=chain.key("A")).status_code == 200


def test_clerk_sees_own_store_read_only_and_gets_403_elsewhere(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "a_clerk")
    other = app_client.get("/console/stores/B")
    assert other.status_code == 403
    assert "该门店不在您的权限范围内" in other.text
    assert app_client.get("/console/stores/B/staff.xlsx").status_code == 403
    assert app_client.get("/console/staff.xlsx").status_code == 403
    tree = app_client.get("/console/stores")
    assert 'data-testid="store-row-A"' in tree.text
    assert 'data-testid="store-row-B"' not in tree.text
    own = app_client.get("/console/stores/A")
    assert own.status_code == 200
    assert 'data-testid="key-create-form"' not in own.text
    before = counts(factory)
    r = app_client.post("/console/stores/A/api-keys", data={"name": "mine", "csrf": csrf})
    assert r.status_code == 403
    r = app_client.post(
        "/console/stores/A/staff",
        data={"username": "sneaky", "password": "long-enough-1", "role": "clerk", "csrf": csrf},
    )
    assert r.status_code == 403
    assert counts(factory) == before


def test_store_manager_creates_only_clerks_of_own_store(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "a_mgr")
    before = counts(factory)
    wrong = [
        ("/console/stores/A/staff", "store_manager"),  # a role the form does not offer
        ("/console/stores/B/staff", "clerk"),  # another store
    ]
    for url, role in wrong:
        r = app_client.post(
            url, data={"username": "x_new", "password": "long-enough-1", "role": role, "csrf": csrf}
        )
        assert r.status_code == 403, url
    r = app_client.post("/console/stores/B/api-keys", data={"name": "other store", "csrf": csrf})
    assert r.status_code == 403
    r = app_client.post(
        f"/console/stores/A/api-keys/{prefix_of(chain.keys['B'])}/revoke", data={"csrf": csrf}
    )
    assert r.status_code == 404
    r = app_client.post(
        "/console/stores/A/staff",
        data={"username": "a_new", "password": "long-enough-1", "role": "clerk", "csrf": ""},
    )
    assert (r.status_code, "web.csrf" in r.text) == (403, True)
    assert counts(factory) == before

    r = app_client.post(
        "/console/stores/A/staff",
        data={"username": "a_new", "display_name": "新店员", "password": PASSWORD, "role": "clerk"},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert r.status_code == 200
    assert 'data-testid="staff-notice"' in r.text
    assert 'data-testid="staff-row-a_new"' in r.text
    assert r.text.lstrip().startswith("<section")  # htmx gets the section only
    with factory() as s:
        staff = s.scalar(select(Staff).where(Staff.org_id == chain.org_id, Staff.username == "a_new"))
        assert staff is not None
        assert (staff.role, staff.store_id, staff.display_name) == ("clerk", chain.stores["A"], "新店员")
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "staff.created")).one()
        assert (entry.actor, entry.target_id, entry.store_id, entry.details) == (
            "staff:a_mgr",
            "a_new",
            chain.stores["A"],
            {"role": "clerk"},
        )
    login(app_client, chain, "a_new")  # the new account can log in with its password


@pytest.mark.parametrize(
    ("username", "password", "status", "message"),
    [
        ("a_clerk", "long-enough-1", 409, "用户名已存在"),
        ("fresh", "short", 422, "密码至少 8 位"),
        ("x", "long-enough-1", 422, "用户名需 2 到 80 个字符"),
    ],
)
def test_bad_staff_forms_show_the_error_and_write_nothing(
    app_client: TestClient,
    chain: Chain,
    factory: sessionmaker[Session],
    username: str,
    password: str,
    status: int,
    message: str,
) -> None:
    csrf = console_login(app_client, chain, "hq")
    before = counts(factory)
    r = app_client.post(
        "/console/stores/B/staff",
        data={"username": username, "password": password, "role": "clerk"},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert r.status_code == status
    assert 'data-testid="staff-error"' in r.text
    assert message in r.text
    assert counts(factory) == before
    bad_key = app_client.post("/console/stores/B/api-keys", data={"name": "  ", "csrf": csrf})
    assert bad_key.status_code == 422
    assert "请填写 1 到 120 个字符的名称" in bad_key.text
    assert counts(factory) == before


def test_hq_creates_a_regional_manager_and_revokes_a_key(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    csrf = console_login(app_client, chain, "hq")
    r = app_client.post(
        "/console/staff",
        data={
            "username": "west_mgr",
            "password": PASSWORD,
            "role": "regional_manager",
            "region": "north",
            "csrf": csrf,
        },
    )
    assert r.status_code == 200
    assert 'data-testid="staff-row-west_mgr"' in r.text
    with factory() as s:
        staff = s.scalar(select(Staff).where(Staff.org_id == chain.org_id, Staff.username == "west_mgr"))
        assert staff is not None
        assert (staff.role, staff.store_id, staff.region_id is not None) == ("regional_manager", None, True)
    me = app_client.get("/api/v1/auth/me", headers=login(app_client, chain, "west_mgr")).json()
    assert me["store_codes"] == ["C"]
    staff_sheet = xlsx_rows(app_client.get("/console/staff.xlsx", params={"q": "west"}).content)
    assert [r[:5] for r in staff_sheet[1:]] == [("west_mgr", "west_mgr", "区域经理", "华北区", "在职")]

    prefix = prefix_of(chain.keys["C"])
    before = counts(factory)
    r = app_client.post(f"/console/stores/C/api-keys/{prefix}/revoke", data={"csrf": csrf})
    assert r.status_code == 200
    assert 'data-testid="revoked-notice"' in r.text
    assert app_client.get("/api/v1/auth/me", headers=chain.key("C")).status_code == 401
    keys, revoked, staff_n, entries = counts(factory)
    assert (keys, revoked, staff_n, entries) == (before[0], before[1] + 1, before[2], before[3] + 1)
    again = app_client.post(f"/console/stores/C/api-keys/{prefix}/revoke", data={"csrf": csrf})
    assert again.status_code == 200
    assert counts(factory) == (keys, revoked, staff_n, entries)  # revoking twice records nothing new
    active = app_client.get("/console/stores/C", params={"kstatus": "active"})
    assert f'data-testid="key-row-{prefix}"' not in active.text
    revoked_rows = xlsx_rows(app_client.get("/console/stores/C/api-keys.xlsx?kstatus=revoked").content)
    assert [(r[0], r[1], r[5]) for r in revoked_rows[1:]] == [(prefix, "till C", "已吊销")]
    english = app_client.get("/console/stores/C", params={"lang": "en"})
    assert "Store terminal API keys" in english.text
    assert "Regional manager" not in english.text  # only store roles are offered on a store page
    assert '<option value="store_manager" >Store manager</option>' in english.text


def test_staff_list_pages_sorts_filters_and_exports(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    with factory() as s:
        for i in range(25):
            s.add(
                Staff(
                    org_id=chain.org_id,
                    username=f"c_temp{i:02d}",
                    display_name=f"临时{i:02d}",
                    password_hash=_password_hash(),
                    role=str(Role.CLERK),
                    store_id=chain.stores["C"],
                    active=True,
                )
            )
        s.commit()
    console_login(app_client, chain, "hq")
    first = app_client.get("/console/stores/C", params={"q": "c_temp"})
    assert first.text.count('data-testid="staff-row-') == 20
    assert 'data-testid="staff-row-c_temp00"' in first.text
    assert 'data-testid="next-page"' in first.text
    second = app_client.get("/console/stores/C", params={"q": "c_temp", "page": "2"})
    assert second.text.count('data-testid="staff-row-') == 5
    assert 'data-testid="staff-row-c_temp24"' in second.text
    assert 'data-testid="next-page"' not in second.text
    desc = app_client.get("/console/stores/C", params={"q": "c_temp", "sort": "-username"})
    assert desc.text.index("staff-row-c_temp24") < desc.text.index("staff-row-c_temp23")
    clerks = app_client.get("/console/stores/C", params={"role": "store_manager"})
    assert clerks.text.count('data-testid="staff-row-') == 0
    export = app_client.get("/console/stores/C/staff.xlsx", params={"q": "temp1", "sort": "-username"})
    assert export.status_code == 200
    rows = xlsx_rows(export.content)
    assert rows[0][:3] == ("用户名", "姓名", "角色")
    assert [r[0] for r in rows[1:]] == [f"c_temp{i}" for i in range(19, 9, -1)]
    assert {r[2] for r in rows[1:]} == {"店员"}


def _actions(html: str) -> list[str]:
    marker = 'data-testid="audit-action">'
    return [part.split("<", 1)[0] for part in html.split(marker)[1:]]


def test_audit_scope_filters_and_dates(
    app_client: TestClient, chain: Chain, factory: sessionmaker[Session]
) -> None:
    member_a = register(app_client, chain, "A", "13355500001")
    reveal = app_client.post(
        f"/api/v1/members/{member_a['member_no']}/reveal",
        json={"reason": "客户来电核实"},
        headers=login(app_client, chain, "hq"),
    )
    assert reveal.status_code == 200
    with factory() as s:
        system = system_principal(chain.org_id)
        for at in (datetime(2026, 1, 1, 15, 59, tzinfo=UTC), datetime(2026, 1, 1, 16, 30, tzinfo=UTC)):
            audit.record(
                s, system, "test.dated", target_id=at.isoformat(), store_id=chain.stores["B"]
            ).at = at
        s.commit()

    console_login(app_client, chain, "a_mgr")
    page = app_client.get("/console/audit")
    assert page.status_code == 200
    # a_mgr sees the key created at A and the reveal about a member of A, nothing of B or C.
    assert sorted(_actions(page.text)) == ["apikey.created", "member.pii_revealed"]
    assert "test.dated" not in _actions(page.text)
    by_member = app_client.get("/console/audit", params={"member": member_a["member_no"]})
    assert _actions(by_member.text) == ["member.pii_revealed"]
    unknown = app_client.get("/console/audit", params={"member": "no-such-member"})
    assert "找不到该会员号" in unknown.text
    assert _actions(unknown.text) == []

    console_login(app_client, chain, "b_mgr")
    assert "member.pii_revealed" not in _actions(app_client.get("/console/audit").text)

    console_login(app_client, chain, "hq")
    day = {"date_from": "2026-01-02", "date_to": "2026-01-02"}
    dated = app_client.get("/console/audit", params=day)
    assert _actions(dated.text) == ["test.dated"]  # 16:30 UTC is 00:30 on Jan 2nd in Shanghai
    assert "2026-01-02 00:30:00" in dated.text
    bad = app_client.get("/console/audit", params={"date_from": "2026-13-01", "action": "test.dated"})
    assert "日期格式应为 YYYY-MM-DD" in bad.text
    assert len(_actions(bad.text)) == 2
    asc = app_client.get("/console/audit", params={"action": "test.dated", "sort": "at"})
    assert asc.text.index("2026-01-01 23:59:00") < asc.text.index("2026-01-02 00:30:00")
    stores = app_client.get("/console/audit", params={"store": "A", "actor": "system"})
    assert _actions(stores.text) == ["apikey.created"]
    export = app_client.get("/console/audit.xlsx", params={"action": "test.dated", "sort": "at"})
    rows = xlsx_rows(export.content)
    assert [(str(r[0]), r[3], r[7]) for r in rows[1:]] == [  # Shanghai time, as Excel has no zones
        ("2026-01-01 23:59:00", "test.dated", "B"),
        ("2026-01-02 00:30:00", "test.dated", "B"),
    ]
