"""The ASGI app: routers, problem+json error handlers and the background event dispatcher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from onemember import __version__
from onemember.db import make_engine, make_sessionmaker
from onemember.deps import lang_of
from onemember.errors import DomainError, ValueOutOfRange
from onemember.settings import Settings, get_settings


def _problem(status: int, code: str, zh: str, en: str, lang: str, **extra: Any) -> JSONResponse:
    err = DomainError(zh, en, code=code, status=status, **extra)
    return JSONResponse(err.to_problem(lang), status_code=status, media_type="application/problem+json")


def create_app(
    settings: Settings | None = None,
    session_factory: sessionmaker[Session] | None = None,
    *,
    start_dispatcher: bool | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    if session_factory is None:
        session_factory = make_sessionmaker(make_engine(settings=settings))
    run_dispatcher = settings.dispatcher_enabled if start_dispatcher is None else start_dispatcher

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = None
        if run_dispatcher:
            from onemember.events.dispatcher import Dispatcher
            from onemember.jobs.runner import Scheduler

            dispatcher = Dispatcher(session_factory, settings)
            dispatcher.start()
            scheduler = Scheduler(session_factory)
            scheduler.start()
        app.state.dispatcher = dispatcher
        yield
        if dispatcher is not None:
            dispatcher.stop()
            scheduler.stop()

    app = FastAPI(
        title="OneMember API",
        version=__version__,
        description="One member across every store: members, points, orders and returns for POS and ERP.",
        lifespan=lifespan,
    )
    app.state.sessionmaker = session_factory
    app.state.settings = settings

    from onemember.web.common import LoginRequired, WebMiddleware, is_page_request, login_redirect

    app.add_middleware(WebMiddleware)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "web" / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return login_redirect(request, exc)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if is_page_request(request):
            from onemember.web.templating import render

            return render(request, "error.html", {"error": exc}, status_code=exc.status)
        return JSONResponse(
            exc.to_problem(lang_of(request)), status_code=exc.status, media_type="application/problem+json"
        )

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(request: Request, exc: Exception) -> Response:
        # A number the database cannot hold (an id above 2**63 in a URL, say): bad input, not a crash.
        return await domain_error(request, ValueOutOfRange())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _problem(
            422,
            "request.invalid",
            "请求内容无效，请检查字段",
            "The request is invalid; check the fields",
            lang_of(request),
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _problem(404, "not_found", "找不到该资源", "Not found", lang_of(request))
        if exc.status_code == 405:
            return _problem(
                405, "method_not_allowed", "不支持该请求方法", "Method not allowed", lang_of(request)
            )
        return _problem(exc.status_code, "http_error", str(exc.detail), str(exc.detail), lang_of(request))

    from onemember.auth.api import router as auth_router
    from onemember.coupons.api import router as coupons_router
    from onemember.events.api import router as events_router
    from onemember.members.api import router as members_router
    from onemember.orders.api import router as orders_router
    from onemember.org.api import router as org_router
    from onemember.packages.api import router as packages_router
    from onemember.points.admin_api import router as points_admin_router
    from onemember.points.api import router as points_router
    from onemember.points.program_api import router as program_router
    from onemember.settlement.api import router as settlement_router
    from onemember.web import (
        console,
        console_benefits,
        console_mall,
        console_members,
        console_org,
        console_points,
        console_settlement,
        member,
        pos,
    )

    api_routers = (
        auth_router,
        org_router,
        members_router,
        orders_router,
        points_router,
        program_router,
        points_admin_router,
        coupons_router,
        packages_router,
        settlement_router,
        events_router,
    )
    page_routers = (
        console.router,
        console_members.router,
        console_points.router,
        console_benefits.router,
        console_mall.router,
        console_settlement.router,
        console_org.router,
        pos.router,
        member.router,
    )
    for router in (*api_routers, *page_routers):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)

    @app.get("/healthz", tags=["ops"])
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

    return app
