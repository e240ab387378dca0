"""Small helpers the console's form pages share."""

from __future__ import annotations


def label_sep(lang: str) -> str:
    """What stands between a field's label and its message: "金额：须大于 0" / "Amount must be above 0"."""
    return " " if lang == "en" else "："
