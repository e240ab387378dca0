"""Reads an import file (CSV or XLSX) into rows of text keyed by canonical column names.

Chains export from old systems and from Excel, so the reader is forgiving about the container: CSV in
UTF-8 (with or without BOM) or GB18030 (what Excel on a Chinese Windows writes), XLSX cells that are
numbers or dates, and zh-CN column headers (手机号, 姓名 ...) as well as English ones. It is strict
about content; that is the importers' job.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any


class FileProblem(Exception):
    """The file as a whole cannot be imported (unreadable, or a required column is missing)."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en


@dataclass
class Row:
    number: int  # the spreadsheet row number: the header is row 1
    values: dict[str, str]  # canonical column -> stripped text ("" when blank)
    raw: list[str]  # the cells as read, for the rejection report


@dataclass
class Sheet:
    header: list[str]
    rows: list[Row]


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _canonical(header: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[int, str]:
    lookup = {alias.strip().lower(): name for name, names in aliases.items() for alias in (name, *names)}
    found: dict[int, str] = {}
    for i, title in enumerate(header):
        name = lookup.get(title.strip().lower())
        if name is not None and name not in found.values():
            found[i] = name
    return found


def _csv_records(path: Path) -> Iterator[list[str]]:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte sequence
        raise FileProblem(
            "import.encoding",
            "文件编码无法识别（请另存为 UTF-8 CSV）",
            "Cannot tell the file's encoding (save it as UTF-8 CSV)",
        )
    for record in csv.reader(io.StringIO(text, newline="")):
        yield [cell.strip() for cell in record]


def _xlsx_records(path: Path) -> Iterator[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise FileProblem(
            "import.unreadable", f"无法读取 Excel 文件：{exc}", f"Cannot read the Excel file: {exc}"
        ) from exc
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [_cell_text(v) for v in values]
    finally:
        book.close()


def read_table(path: Path, aliases: dict[str, tuple[str, ...]], required: tuple[str, ...]) -> Sheet:
    """All data rows of ``path``; blank lines are skipped but keep their row numbers."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        records = _xlsx_records(path)
    elif suffix in (".csv", ".txt", ""):
        records = _csv_records(path)
    else:
        raise FileProblem(
            "import.format",
            f"不支持的文件类型 {suffix}（请用 CSV 或 XLSX）",
            f"Unsupported file type {suffix} (use CSV or XLSX)",
        )
    header: list[str] | None = None
    columns: dict[int, str] = {}
    rows: list[Row] = []
    for number, record in enumerate(records, start=1):
        if header is None:
            header = [c.lstrip("\ufeff") for c in record]
            columns = _canonical(header, aliases)
            missing = [name for name in required if name not in columns.values()]
            if missing:
                raise FileProblem(
                    "import.missing_columns",
                    f"缺少必需的列：{', '.join(missing)}",
                    f"Required column(s) missing: {', '.join(missing)}",
                )
            continue
        if not any(record):
            continue
        values = {name: "" for name in aliases}
        for i, name in columns.items():
            if i < len(record):
                values[name] = record[i]
        rows.append(Row(number=number, values=values, raw=record))
    if header is None:
        raise FileProblem("import.empty", "文件是空的", "The file is empty")
    return Sheet(header=header, rows=rows)
