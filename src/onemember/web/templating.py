"""Jinja2 set-up shared by the console, the POS page and the member page."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from onemember.web.i18n import translate

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def fen(value: int | None) -> str:
    """¥1,234.50 from integer fen."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    yuan, cents = divmod(abs(int(value)), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def local_time(value: datetime | None, tz: str = "Asia/Shanghai", fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "-"
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


templates.env.filters["fen"] = fen
templates.env.filters["local"] = local_time


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    lang = getattr(request.state, "lang", "zh")
    ctx = {
        "request": request,
        "lang": lang,
        "t": lambda key: translate(key, lang),
        "csrf": getattr(request.state, "csrf", ""),
        **context,
    }
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
