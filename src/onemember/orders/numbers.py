"""Human-readable order and return numbers: a kind letter, the local business date, random digits."""

from __future__ import annotations

import secrets
from datetime import datetime
from zoneinfo import ZoneInfo


def public_no(kind: str, at: datetime, tz: str) -> str:
    local = at.astimezone(ZoneInfo(tz))
    return f"{kind}{local:%y%m%d}{secrets.randbelow(10**10):010d}"
