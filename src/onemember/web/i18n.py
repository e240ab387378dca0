"""Page texts in zh-CN (default) and English. Keys are dotted names; a missing key shows the key itself."""

from __future__ import annotations

LANGS = ("zh", "en")

MESSAGES: dict[str, tuple[str, str]] = {
    "app.name": ("OneMember 会员中心", "OneMember"),
    "app.console": ("管理后台", "Console"),
    "app.pos": ("收银台", "POS"),
    "app.member": ("会员中心", "Member"),
    "lang.switch": ("English", "中文"),
    "nav.home": ("首页", "Home"),
    "nav.members": ("会员", "Members"),
    "nav.stores": ("门店", "Stores"),
    "nav.audit": ("审计日志", "Audit log"),
    "nav.benefits": ("卡券与次卡", "Coupons & packages"),
    "nav.settlement": ("门店结算", "Settlement"),
    "nav.logout": ("退出登录", "Log out"),
    "login.title": ("员工登录", "Staff login"),
    "login.org": ("机构代码", "Org code"),
    "login.username": ("用户名", "Username"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Log in"),
    "login.failed": ("用户名或密码错误", "Wrong username or password"),
    "scope.all": ("全部门店", "All stores"),
    "scope.label": ("范围", "Scope"),
    "filter.store": ("门店", "Store"),
    "filter.region": ("区域", "Region"),
    "filter.apply": ("筛选", "Filter"),
    "filter.all": ("全部", "All"),
    "home.title": ("经营概览", "Overview"),
    "home.today": ("今日", "Today"),
    "home.month": ("本月", "This month"),
    "kpi.members": ("会员总数", "Members"),
    "kpi.new_members": ("新增会员", "New members"),
    "kpi.orders": ("订单数", "Orders"),
    "kpi.sales": ("销售额", "Sales"),
    "kpi.multi_store": ("跨店消费会员", "Members shopping at 2+ stores"),
    "kpi.points_issued": ("发放积分", "Points issued"),
    "kpi.points_redeemed": ("使用积分", "Points redeemed"),
    "chart.daily_sales": ("近 30 天销售额（元）", "Sales, last 30 days (yuan)"),
    "chart.daily_orders": ("近 30 天订单数", "Orders, last 30 days"),
    "chart.daily_members": ("近 30 天新增会员", "New members, last 30 days"),
    "chart.points": ("近 30 天积分发放与使用", "Points issued and redeemed, last 30 days"),
    "chart.store_share": ("各门店销售额（本月）", "Sales by store (this month)"),
    "chart.multi_store": ("会员到店数分布", "Members by number of stores visited"),
    "common.export": ("导出 Excel", "Export to Excel"),
    "common.search": ("搜索", "Search"),
    "common.prev": ("上一页", "Previous"),
    "common.next": ("下一页", "Next"),
    "common.none": ("暂无数据", "Nothing here yet"),
    "common.save": ("保存", "Save"),
    "common.cancel": ("取消", "Cancel"),
    "common.confirm": ("确认", "Confirm"),
    "common.back": ("返回", "Back"),
    "common.total": ("共", "Total"),
    "error.title": ("出错了", "Something went wrong"),
    "error.forbidden": ("无权访问该页面", "You may not open this page"),
}


def translate(key: str, lang: str) -> str:
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


def pick_lang(query_lang: str | None, cookie_lang: str | None, accept: str | None) -> str:
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGS:
            return candidate
    return "en" if (accept or "").lower().startswith("en") else "zh"


def register(messages: dict[str, tuple[str, str]]) -> None:
    """Each page module adds its own texts (zh-CN, English) at import time."""
    for key, pair in messages.items():
        if key in MESSAGES and MESSAGES[key] != pair:
            raise ValueError(f"message {key} registered twice with different texts")
        MESSAGES[key] = pair
