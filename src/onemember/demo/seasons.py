"""Shopping seasons of a Chinese retail year: how busy a day is and what sells more on it.

Pure functions over dates; the generator turns them into cumulative weights once per run.
"""

from __future__ import annotations

from datetime import date, timedelta

from onemember.demo.data import CATEGORIES, MID_AUTUMN, SPRING_FESTIVAL

_WEEKDAY = (0.9, 0.88, 0.92, 0.95, 1.1, 1.35, 1.3)
_MONTH = (1.05, 0.9, 0.95, 0.95, 1.0, 1.05, 0.95, 0.95, 1.0, 1.05, 1.1, 1.15)

# Opening hours 09:00–22:00 local time: lunch and evening peaks.
HOURS = tuple(range(9, 22))
HOUR_WEIGHTS = (2, 4, 6, 8, 7, 5, 5, 6, 8, 9, 8, 6, 3)

# How much more a category sells in a season, on top of the member's own taste.
CATEGORY_BOOST: dict[str, dict[str, float]] = {
    "": {},
    "cny": {"食品": 2.5, "酒饮": 3.0, "服装": 1.5, "家居": 1.3, "玩具": 1.5},
    "d11": {"美妆": 2.2, "数码": 2.0, "母婴": 1.6, "个护": 1.5},
    "d12": {"美妆": 1.5, "数码": 1.5},
    "618": {"数码": 2.2, "美妆": 1.5},
    "38": {"美妆": 2.5, "个护": 1.3},
    "61": {"玩具": 3.0, "母婴": 1.3},
    "midautumn": {"食品": 2.0, "酒饮": 1.8},
}
SEASON_KEYS = tuple(CATEGORY_BOOST)


def category_boosts() -> dict[str, tuple[float, ...]]:
    """Per season key, a multiplier for each category in ``CATEGORIES`` order."""
    return {key: tuple(boost.get(c, 1.0) for c in CATEGORIES) for key, boost in CATEGORY_BOOST.items()}


def day_profile(day: date) -> tuple[float, str]:
    """How busy ``day`` is (1.0 = an ordinary weekday) and its season key."""
    factor = _WEEKDAY[day.weekday()] * _MONTH[day.month - 1]
    key = ""
    cny = SPRING_FESTIVAL.get(day.year + 1) if day.month >= 11 else SPRING_FESTIVAL.get(day.year)
    if cny is not None:
        delta = (day - cny).days
        if -21 <= delta <= -2:  # 年货 shopping
            factor *= 1.6
            key = "cny"
        elif delta == -1:  # 除夕
            factor *= 0.8
            key = "cny"
        elif 0 <= delta <= 3:  # most people are at home with family
            factor *= 0.35
        elif 4 <= delta <= 7:
            factor *= 0.7
    mid = MID_AUTUMN.get(day.year)
    if mid is not None and -14 <= (day - mid).days <= 0:
        factor *= 1.25
        key = key or "midautumn"
    md = (day.month, day.day)
    if md == (11, 11):
        factor *= 3.0
        key = "d11"
    elif day.month == 11 and day.day <= 12:
        factor *= 1.3
        key = "d11"
    elif md == (12, 12):
        factor *= 1.8
        key = "d12"
    elif md == (6, 18):
        factor *= 2.0
        key = "618"
    elif day.month == 6 and day.day < 18:
        factor *= 1.15
        key = "618"
    elif md in ((3, 7), (3, 8)):
        factor *= 1.4
        key = "38"
    elif (day.month == 5 and day.day >= 25) or md == (6, 1):
        factor *= 1.1
        key = key or "61"
    elif md == (5, 20):
        factor *= 1.3
    elif day.month == 10 and day.day <= 7:  # 国庆黄金周
        factor *= 1.4
    elif md == (1, 1):
        factor *= 1.3
    return factor, key


def availability(day: date) -> tuple[bool, bool, bool, bool]:
    """Which seasonal products are on the shelf: (winter, summer, 年货, 月饼)."""
    winter = day.month in (11, 12, 1, 2, 3)
    summer = day.month in (5, 6, 7, 8, 9)
    cny = SPRING_FESTIVAL.get(day.year + 1) if day.month >= 11 else SPRING_FESTIVAL.get(day.year)
    in_cny = cny is not None and -35 <= (day - cny).days <= 7
    mid = MID_AUTUMN.get(day.year)
    in_mid = mid is not None and -30 <= (day - mid).days <= 0
    return winter, summer, in_cny, in_mid


def on_shelf(season: str, avail: tuple[bool, bool, bool, bool]) -> bool:
    winter, summer, cny, mid = avail
    return (
        season == ""
        or (season == "winter" and winter)
        or (season == "summer" and summer)
        or (season == "cny" and cny)
        or (season == "midautumn" and mid)
    )


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
