"""What an import did: counts, and every rejected row with its reasons in zh-CN and English."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from onemember.imports.reader import Sheet


@dataclass(frozen=True)
class Problem:
    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class Rejection:
    """One rejected row; a row with several problems carries all of them."""

    row: int
    problems: tuple[Problem, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.problems)

    @property
    def zh(self) -> str:
        return "；".join(p.zh for p in self.problems)

    @property
    def en(self) -> str:
        return "; ".join(p.en for p in self.problems)

    @property
    def reason(self) -> str:
        return f"{self.zh} / {self.en}"


@dataclass
class ImportResult:
    kind: str  # "members" or "orders"
    path: Path
    rows: int = 0
    created: int = 0  # members or orders written
    existing: int = 0  # already there: left as they were (a re-run)
    rejected: list[Rejection] = field(default_factory=list)
    details: dict[str, int] = field(default_factory=dict)
    report_path: Path | None = None

    def reject(self, row: int, problems: list[Problem]) -> None:
        self.rejected.append(Rejection(row, tuple(problems)))

    @property
    def rejected_rows(self) -> list[int]:
        return [r.row for r in self.rejected]

    def summary(self) -> str:
        noun_zh, noun_en = ("会员", "members") if self.kind == "members" else ("订单", "orders")
        lines = [
            f"导入{noun_zh} import {noun_en} from {self.path.name}: {self.rows} row(s) read",
            f"  新建 created {self.created}, 已存在 already present {self.existing}, "
            f"拒绝 rejected {len(self.rejected)} row(s)",
        ]
        if self.details:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in self.details.items()))
        for rejection in self.rejected[:20]:
            lines.append(f"  ✗ 第 {rejection.row} 行 row {rejection.row}: {rejection.reason}")
        if len(self.rejected) > 20:
            lines.append(f"  … {len(self.rejected) - 20} more")
        if self.report_path is not None and self.rejected:
            lines.append(f"  校验报告 validation report: {self.report_path}")
        return "\n".join(lines)


def write_report(path: Path, sheet: Sheet | None, rejected: list[Rejection]) -> None:
    """Rejected rows as CSV (UTF-8 with BOM, so Excel shows the Chinese): reasons, then the row as given."""
    raw = {row.number: row.raw for row in sheet.rows} if sheet else {}
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["row", "codes", "reason_zh", "reason_en", *(sheet.header if sheet else [])])
        for rejection in sorted(rejected, key=lambda r: r.row):
            out.writerow(
                [
                    rejection.row,
                    " ".join(rejection.codes),
                    rejection.zh,
                    rejection.en,
                    *raw.get(rejection.row, []),
                ]
            )


@contextmanager
def progress_bar(console: Console | None, description: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
    with progress:
        yield progress, progress.add_task(description, total=total)
