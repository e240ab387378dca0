"""Parsing of import cells: whole numbers, dates, date-times and genders, each with its rejection reason."""

from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from onemember.common.types import Gender
from onemember.imports.result import Problem

_INT = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)(\.0+)?$")
_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")

# GB/T 2261.1 codes (1 male, 2 female, 0 unknown, 9 unstated) are what many old Chinese systems export.
_GENDERS = {
    "male": Gender.MALE,
    "m": Gender.MALE,
    "男": Gender.MALE,
    "1": Gender.MALE,
    "female": Gender.FEMALE,
    "f": Gender.FEMALE,
    "女": Gender.FEMALE,
    "2": Gender.FEMALE,
    "": Gender.UNKNOWN,
    "unknown": Gender.UNKNOWN,
    "未知": Gender.UNKNOWN,
    "保密": Gender.UNKNOWN,
    "0": Gender.UNKNOWN,
    "9": Gender.UNKNOWN,
}


def parse_int(text: str) -> int | None:
    """A whole number, allowing thousands separators and a ``.0`` tail from spreadsheets; else None."""
    if not _INT.match(text):
        return None
    return int(text.split(".")[0].replace(",", ""))


def parse_date(text: str) -> date | None:
    match = _DATE.match(text.split(" ")[0] if text.endswith("00:00:00") else text)
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_datetime(text: str, tz: ZoneInfo) -> datetime | None:
    """ISO date-time; a naive one is local time of the org (``tz``). Returns an aware datetime."""
    candidate = text.strip().replace("/", "-")
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def parse_gender(text: str) -> str | None:
    gender = _GENDERS.get(text.strip().lower())
    return str(gender) if gender is not None else None


def too_long(field: str, zh_name: str, limit: int) -> Problem:
    return Problem(
        f"{field}_too_long",
        f"{zh_name}过长（最多 {limit} 个字符）",
        f"{field} is too long (at most {limit} characters)",
    )
