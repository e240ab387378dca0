"""``onemember``: serve, migrate, load demo data, manage staff and keys, import, verify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onemember.auth import service as auth_service
from onemember.auth.principal import system_principal
from onemember.common.types import Role
from onemember.db import make_engine, make_sessionmaker, transaction
from onemember.errors import DomainError
from onemember.org import service as org_service
from onemember.org.models import Org, Region
from onemember.settings import get_settings

app = typer.Typer(help="OneMember: one member across every store.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
apikey_app = typer.Typer(help="Store terminal API keys.", no_args_is_help=True)
import_app = typer.Typer(help="Import from a chain's old system (CSV or XLSX).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")
app.add_typer(apikey_app, name="apikey")
app.add_typer(import_app, name="import")
jobs_app = typer.Typer(
    help="Scheduled work: expiry, reminders, birthday gifts, tier review.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
console = Console()

OrgOpt = Annotated[str | None, typer.Option("--org", help="Org code; may be left out when there is one org")]


def _factory() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine())


def _org(session: Session, code: str | None) -> Org:
    if code:
        org = session.scalar(select(Org).where(Org.code == code))
        if org is None:
            raise typer.BadParameter(f"no org with code {code}")
        return org
    orgs = list(session.scalars(select(Org)))
    if len(orgs) != 1:
        raise typer.BadParameter(f"{len(orgs)} orgs exist; name one with --org")
    return orgs[0]


def _fail(err: DomainError) -> None:
    console.print(f"[red]{err.code}[/red]: {err.zh} / {err.en}")
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Take the database to the current schema."""
    from onemember.migrate import upgrade

    engine = make_engine()
    upgrade(engine)
    console.print(f"database at head: {engine.url.render_as_string(hide_password=True)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
) -> None:
    """Run the API and web pages (and the event dispatcher)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "onemember.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def demo(
    members: Annotated[int, typer.Option(help="Members to create")] = 2000,
    stores: Annotated[int, typer.Option(help="Stores to create")] = 12,
    days: Annotated[int, typer.Option(help="Days of purchase history")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing when an org exists")] = False,
    org_code: Annotated[str, typer.Option("--org", help="Code of the demo org")] = "demo",
) -> None:
    """Load a realistic demo chain: stores in several cities, two brands, members and a year of orders."""
    from onemember.demo import generate

    factory = _factory()
    with factory() as session:
        if if_empty and session.scalar(select(func.count()).select_from(Org)):
            console.print("an org exists already; demo data not loaded")
            return
    try:
        result = generate(
            factory, org_code=org_code, members=members, stores=stores, days=days, seed=seed, console=console
        )
    except DomainError as err:
        _fail(err)
        return
    console.print(result.summary())


@staff_app.command("create")
def staff_create(
    username: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    role: Annotated[Role, typer.Option()],
    store: Annotated[str | None, typer.Option(help="Store code (store staff)")] = None,
    region: Annotated[str | None, typer.Option(help="Region code (regional managers)")] = None,
    org: OrgOpt = None,
) -> None:
    """Create a staff account."""
    try:
        with transaction(_factory()) as session:
            o = _org(session, org)
            store_id = org_service.store_by_code(session, o.id, store).id if store else None
            region_id = (
                session.scalar(select(Region.id).where(Region.org_id == o.id, Region.code == region))
                if region
                else None
            )
            staff = org_service.add_staff(
                session, o.id, username, password, role, store_id=store_id, region_id=region_id
            )
            console.print(f"created {staff.username} ({staff.role})")
    except DomainError as err:
        _fail(err)


@apikey_app.command("create")
def apikey_create(
    store: Annotated[str, typer.Option(help="Store code")],
    name: Annotated[str, typer.Option(help="A label, e.g. the till")] = "",
    org: OrgOpt = None,
) -> None:
    """Create a till API key; the secret is printed once."""
    try:
        with transaction(_factory()) as session:
            o = _org(session, org)
            secret, key = auth_service.create_api_key(
                session, system_principal(o.id, "cli"), org_service.store_by_code(session, o.id, store), name
            )
            console.print(f"store {store} key {key.prefix}: [bold]{secret}[/bold]  (shown once)")
    except DomainError as err:
        _fail(err)


@app.command()
def verify(org: OrgOpt = None) -> None:
    """Prove ledger entries, lots and cached balances agree; exit non-zero with a report if not."""
    from onemember.coupons.verify import verify_coupons
    from onemember.packages.verify import verify_packages
    from onemember.points.verify import verify as verify_ledger
    from onemember.settlement.verify import verify_settlement

    with _factory()() as session:
        org_id = _org(session, org).id if org else None
        report = verify_ledger(session, org_id)
        settled = verify_settlement(session, org_id)
        org_ids = [org_id] if org_id is not None else list(session.scalars(select(Org.id).order_by(Org.id)))
        benefits = [
            p for oid in org_ids for p in (*verify_coupons(session, oid), *verify_packages(session, oid))
        ]
    console.print(f"accounts {report.accounts}, entries {report.entries}, lots {report.lots}")
    console.print(
        f"settlement entries {settled.entries}, sources {settled.sources}, "
        f"closed periods {settled.closed_periods}"
    )
    report.problems.extend(settled.problems)
    report.problems.extend(benefits)
    if not report.ok:
        for problem in report.problems[:200]:
            console.print(f"[red]✗[/red] {problem}")
        console.print(f"[red]{len(report.problems)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print(
        "[green]✓ ledger = lots = balances; coupons and packages match their uses; "
        "settlement nets to zero and matches its sources[/green]"
    )


@import_app.command("members")
def import_members(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or XLSX")],
    org: OrgOpt = None,
    report: Annotated[Path | None, typer.Option(help="Write rejected rows with reasons here (CSV)")] = None,
) -> None:
    """Import members (phone, name, birthday, card number, opening points, registered store)."""
    from onemember.imports import import_members_file

    factory = _factory()
    with factory() as session:
        org_id = _org(session, org).id
    result = import_members_file(factory, org_id, file, console=console, report_path=report)
    console.print(result.summary())
    if result.rejected:
        sys.exit(3)


@import_app.command("orders")
def import_orders(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or XLSX")],
    org: OrgOpt = None,
    report: Annotated[Path | None, typer.Option(help="Write rejected rows with reasons here (CSV)")] = None,
    earn_points: Annotated[
        bool, typer.Option("--earn-points", help="Earn points at the base rate on the imported orders")
    ] = False,
) -> None:
    """Import historical orders so analytics have history from day one."""
    from onemember.imports import import_orders_file

    factory = _factory()
    with factory() as session:
        org_id = _org(session, org).id
    result = import_orders_file(
        factory, org_id, file, console=console, report_path=report, earn_points=earn_points
    )
    console.print(result.summary())
    if result.rejected:
        sys.exit(3)


@jobs_app.command("run")
def jobs_run(
    only: Annotated[
        str, typer.Option(help="Comma-separated: expire,remind,birthday,tiers")
    ] = "expire,remind,birthday,tiers",
    at: Annotated[
        str | None, typer.Option("--at", help="Run as of this ISO time (with offset); default now")
    ] = None,
    force: Annotated[bool, typer.Option(help="Run even if already run for that business day")] = False,
) -> None:
    """Run the daily jobs now for every org (each once per business day unless --force)."""
    from datetime import datetime

    from rich.progress import Progress

    from onemember.jobs.runner import JOBS, run_daily

    names = tuple(n.strip() for n in only.split(",") if n.strip())
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        raise typer.BadParameter(f"unknown job(s): {', '.join(unknown)}")
    when = datetime.fromisoformat(at) if at else None
    if when is not None and when.tzinfo is None:
        raise typer.BadParameter("--at needs a time zone offset, e.g. 2026-12-01T02:00:00+08:00")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("jobs", total=None)
        results = run_daily(
            _factory(),
            when,
            only=names,
            force=force,
            progress=lambda org, job: bar.update(task, description=f"{org}: {job}"),
        )
    for key, value in results.items():
        console.print(f"{key}: {value}")


@app.command()
def worker() -> None:
    """Run the event dispatcher (webhooks) in the foreground, without the web server."""
    from onemember.events.dispatcher import Dispatcher
    from onemember.jobs.runner import Scheduler

    factory = _factory()
    scheduler = Scheduler(factory)
    scheduler.start()
    try:
        Dispatcher(factory, get_settings()).run_forever()
    finally:
        scheduler.stop()


def main() -> None:
    app()
