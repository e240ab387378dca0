"""The operator CLI on the embedded default database (SQLite under the var directory)."""

from __future__ import annotations

from sqlalchemy import select, update
from typer.testing import CliRunner

from onemember.auth.models import ApiKey
from onemember.cli import app
from onemember.db import make_engine, make_sessionmaker
from onemember.org.models import Staff
from onemember.points.models import PointAccount
from tests.factories import make_chain

runner = CliRunner()


def test_cli_upgrade_keys_staff_and_verify() -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    factory = make_sessionmaker(make_engine())
    with factory() as s:
        chain = make_chain(s, code="clichain")
        s.commit()
    made = runner.invoke(app, ["apikey", "create", "--store", "B", "--org", "clichain", "--name", "till 9"])
    assert made.exit_code == 0, made.output
    assert "omk_" in made.output
    staff = runner.invoke(
        app,
        [
            "staff",
            "create",
            "--org",
            "clichain",
            "--username",
            "b_clerk9",
            "--password",
            "long-enough-pw",
            "--role",
            "clerk",
            "--store",
            "B",
        ],
    )
    assert staff.exit_code == 0, staff.output
    short = runner.invoke(
        app,
        [
            "staff",
            "create",
            "--org",
            "clichain",
            "--username",
            "b_clerk10",
            "--password",
            "short",
            "--role",
            "clerk",
            "--store",
            "B",
        ],
    )
    assert short.exit_code == 2
    assert "org.password_too_short" in short.output
    with factory() as s:
        names = list(s.scalars(select(ApiKey.name).where(ApiKey.org_id == chain.org_id).order_by(ApiKey.id)))
        assert names == ["till A", "till B", "till C", "till 9"]
        assert s.scalars(select(Staff.role).where(Staff.username == "b_clerk9")).one() == "clerk"
        assert s.scalars(select(Staff).where(Staff.username == "b_clerk10")).first() is None
    ok = runner.invoke(app, ["verify", "--org", "clichain"])
    assert ok.exit_code == 0, ok.output
    assert "ledger = lots = balances" in ok.output
    from onemember.auth.principal import system_principal
    from onemember.members import service as members
    from onemember.points import service as points

    with factory() as s:
        member = members.register(
            s, system_principal(chain.org_id), chain.stores["A"], members.Registration(phone="13011112222")
        )
        account = points.ensure_account(
            s, chain.org_id, member.id, points.default_program(s, chain.org_id).id
        )
        points.earn(s, account, 5, points.EntryContext())
        s.flush()
        s.execute(update(PointAccount).where(PointAccount.id == account.id).values(balance=6))
        s.commit()
    bad = runner.invoke(app, ["verify", "--org", "clichain"])
    assert bad.exit_code == 1
    assert "1 problem(s)" not in bad.output
    assert "2 problem(s)" in bad.output
