"""ECharts option builders: pages embed the options as JSON and ``static/app/charts.js`` draws them."""

from __future__ import annotations

import json
from typing import Any

PALETTE = ["#0d6efd", "#20c997", "#fd7e14", "#6f42c1", "#dc3545", "#198754", "#0dcaf0", "#ffc107"]


def _base(title: str) -> dict[str, Any]:
    return {
        "color": PALETTE,
        "title": {"text": title, "left": 0, "textStyle": {"fontSize": 14, "fontWeight": 500}},
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 48, "right": 16, "top": 48, "bottom": 28},
        "animation": False,
    }


def line(title: str, x: list[str], series: dict[str, list[float] | list[int]], *, area: bool = False) -> str:
    option = _base(title)
    option["legend"] = {"top": 0, "right": 0}
    option["xAxis"] = {"type": "category", "data": [d[5:] for d in x], "boundaryGap": False}
    option["yAxis"] = {"type": "value"}
    option["series"] = [
        {
            "name": name,
            "type": "line",
            "smooth": True,
            "showSymbol": False,
            "data": values,
            **({"areaStyle": {"opacity": 0.15}} if area else {}),
        }
        for name, values in series.items()
    ]
    return json.dumps(option, ensure_ascii=False)


def bar_frame(title: str) -> dict[str, Any]:
    """Options every bar chart shares (title, palette, a shadow pointer); callers add axes and series."""
    option = _base(title)
    option["tooltip"] = {"trigger": "axis", "axisPointer": {"type": "shadow"}}
    return option


def bar(title: str, x: list[str], values: list[float] | list[int], *, horizontal: bool = False) -> str:
    option = bar_frame(title)
    cat = {"type": "category", "data": x}
    val = {"type": "value"}
    option["xAxis"], option["yAxis"] = (val, cat) if horizontal else (cat, val)
    if horizontal:
        option["grid"] = {"left": 96, "right": 16, "top": 40, "bottom": 24}
    option["series"] = [{"type": "bar", "data": values, "barMaxWidth": 28}]
    return json.dumps(option, ensure_ascii=False)


def pie(title: str, items: list[tuple[str, float | int]]) -> str:
    option = _base(title)
    option["tooltip"] = {"trigger": "item"}
    option["series"] = [
        {
            "type": "pie",
            "radius": ["40%", "70%"],
            "top": 24,
            "data": [{"name": n, "value": v} for n, v in items],
        }
    ]
    return json.dumps(option, ensure_ascii=False)


def grouped_bar(title: str, x: list[str], series: dict[str, list[int]]) -> str:
    """Bars side by side per category (ECharts options for static/app/charts.js)."""
    option = bar_frame(title)
    option["legend"] = {"bottom": 0, "left": "center"}
    option["grid"] = {"left": 56, "right": 16, "top": 48, "bottom": 56}
    option["xAxis"] = {"type": "category", "data": x}
    option["yAxis"] = {"type": "value"}
    option["series"] = [{"name": n, "type": "bar", "data": v, "barMaxWidth": 22} for n, v in series.items()]
    return json.dumps(option, ensure_ascii=False)
