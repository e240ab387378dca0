"""The member's service packages: uses left of the total, expiry, where they can be used, every use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.db import utcnow
from onemember.deps import SessionDep
from onemember.members.models import Member
from onemember.members.views import mask_name
from onemember.org.models import Staff
from onemember.packages import service as packages
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage
from onemember.web import charts
from onemember.web.member.base import MemberDep, _org_of, _tr
from onemember.web.member.benefits import (
    LIST_LIMIT,
    Places,
    _benefit_counts,
    _day,
    _last_day,
    _names,
    _package_open,
    _places,
)
from onemember.web.templating import fen, render

router = APIRouter(include_in_schema=False)


@dataclass
class UseRow:
    at: datetime
    store: str
    staff: str  # masked like a member's name elsewhere: 张*
    uses: str


@dataclass
class PackageCard:
    id: int
    name: str
    service_code: str
    uses_left: int
    uses_total: int
    used: int
    pct_left: int
    open: bool
    state: str  # the expiry, or why the package is closed
    where: str
    origin: str
    refund: str
    history: list[UseRow]


def package_where(template: ServicePackage, store_ids: list[int], places: Places, lang: str) -> str:
    if template.store_scope == packages.StoreScope.BRAND:
        return _tr(lang, "member.pk.where.brand", name=places.brands.get(template.scope_brand_id or 0, ""))
    if template.store_scope == packages.StoreScope.REGION:
        return _tr(lang, "member.pk.where.region", name=places.regions.get(template.scope_region_id or 0, ""))
    if template.store_scope == packages.StoreScope.STORES:
        return _tr(
            lang, "member.pk.where.stores", names=_names([places.stores.get(i, "") for i in store_ids])
        )
    return _tr(lang, "member.pk.where.all")


def package_state(package: MemberPackage, tz: str, lang: str, now: datetime) -> str:
    if package.status == packages.PackageStatus.REFUNDED and package.refunded_at is not None:
        return _tr(
            lang,
            "member.pk.refunded",
            day=_day(package.refunded_at, tz),
            amount=fen(package.refunded_fen),
            uses=package.uses_refunded,
        )
    if package.expires_at is not None and now >= package.expires_at:
        return _tr(lang, "member.pk.expired", day=_last_day(package.expires_at, tz))
    if package.uses_left == 0:
        return _tr(lang, "member.pk.used_up")
    if package.expires_at is None:
        return _tr(lang, "member.pk.never")
    return _tr(lang, "member.pk.expires", day=_last_day(package.expires_at, tz))


def _use_numbers(use: PackageUse, lang: str) -> str:
    if use.uses == 1:
        return _tr(lang, "member.pk.use_no", n=use.first_use_no)
    return _tr(lang, "member.pk.use_range", first=use.first_use_no, last=use.first_use_no + use.uses - 1)


def package_cards(session: Session, member: Member, tz: str, lang: str) -> list[PackageCard]:
    """The member's packages, open ones first, each with its uses."""
    now = utcnow()
    held = packages.packages_of(session, member, include_closed=True)[:LIST_LIMIT]
    templates = {
        t.id: t
        for t in session.scalars(
            select(ServicePackage).where(ServicePackage.id.in_({p.package_id for p in held} or {-1}))
        )
    }
    scoped = {
        t.id: packages.template_store_ids(session, t.id)
        for t in templates.values()
        if t.store_scope == packages.StoreScope.STORES
    }
    uses: dict[int, list[PackageUse]] = {p.id: [] for p in held}
    for use in session.scalars(  # every package's uses in one read, in the order of ``packages.uses_of``
        select(PackageUse).where(PackageUse.member_package_id.in_(uses or {-1})).order_by(PackageUse.id)
    ):
        uses[use.member_package_id].append(use)
    staff_ids = {u.staff_id for rows in uses.values() for u in rows if u.staff_id is not None}
    staff = {
        int(i): str(name or username)
        for i, name, username in session.execute(
            select(Staff.id, Staff.display_name, Staff.username).where(
                Staff.org_id == member.org_id, Staff.id.in_(staff_ids or {-1})
            )
        ).all()
    }
    store_ids = {s for ids in scoped.values() for s in ids}
    store_ids |= {p.sold_store_id for p in held if p.sold_store_id is not None}
    store_ids |= {u.used_store_id for rows in uses.values() for u in rows}
    places = _places(
        session,
        member.org_id,
        store_ids,
        {t.scope_brand_id for t in templates.values() if t.scope_brand_id is not None},
        {t.scope_region_id for t in templates.values() if t.scope_region_id is not None},
    )
    cards = []
    for p in held:
        t = templates[p.package_id]
        day = _day(p.sold_at, tz)
        sold_at = places.store(p.sold_store_id, lang)
        if p.source == packages.Source.SALE:
            origin = _tr(lang, "member.pk.bought", day=day, store=sold_at, amount=fen(p.price_fen))
            refund = _tr(lang, f"member.pk.refund.{t.refund_rule}")
        else:
            origin = _tr(lang, "member.pk.granted", day=day, store=sold_at)
            refund = _tr(lang, "member.pk.refund.granted")
        history = [
            UseRow(
                at=u.used_at,
                store=places.stores.get(u.used_store_id, ""),
                staff=mask_name(staff[u.staff_id]) if u.staff_id in staff else _tr(lang, "member.pk.till"),
                uses=_use_numbers(u, lang),
            )
            for u in reversed(uses[p.id])
        ]
        used = p.uses_total - p.uses_left - p.uses_refunded
        cards.append(
            PackageCard(
                id=p.id,
                name=t.name,
                service_code=p.service_code,
                uses_left=p.uses_left,
                uses_total=p.uses_total,
                used=used,
                pct_left=100 * p.uses_left // p.uses_total,
                open=_package_open(p, now),
                state=package_state(p, tz, lang, now),
                where=package_where(t, scoped.get(t.id, []), places, lang),
                origin=origin,
                refund=refund,
                history=history,
            )
        )
    cards.sort(key=lambda c: not c.open)  # stable: newest first within each group
    return cards


def uses_chart(cards: list[PackageCard], lang: str) -> str:
    """Used and left uses of each open package, as stacked bars (``charts.bar`` laid out, two series)."""
    names = [c.name for c in cards]
    option = json.loads(
        charts.bar(_tr(lang, "member.pk.chart"), names, [c.uses_left for c in cards], horizontal=True)
    )
    option["legend"] = {"top": 0, "right": 0}
    option["grid"] = {"left": 8, "right": 16, "top": 40, "bottom": 8, "containLabel": True}
    option["series"] = [
        {
            "name": _tr(lang, "member.pk.chart_used"),
            "type": "bar",
            "stack": "uses",
            "data": [c.used for c in cards],
            "barMaxWidth": 22,
            "itemStyle": {"color": "#adb5bd"},
        },
        {
            "name": _tr(lang, "member.pk.chart_left"),
            "type": "bar",
            "stack": "uses",
            "data": [c.uses_left for c in cards],
            "barMaxWidth": 22,
            "itemStyle": {"color": charts.PALETTE[1]},
            "label": {"show": True, "position": "insideRight"},
        },
    ]
    return json.dumps(option, ensure_ascii=False)


@router.get("/m/packages")
def member_packages(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """My service packages: uses left of the total, expiry, where they can be used, and every use."""
    lang = request.state.lang
    org = _org_of(session, member)
    cards = package_cards(session, member, org.timezone, lang)
    open_cards = [c for c in cards if c.open]
    return render(
        request,
        "member/packages.html",
        {
            "member": member,
            "section": "benefits",
            "org": org,
            "open_cards": open_cards,
            "closed_cards": [c for c in cards if not c.open],
            "chart": uses_chart(open_cards, lang) if open_cards else None,
            "chart_height": 72 + 40 * len(open_cards),
            "counts": _benefit_counts(session, member),
        },
    )
