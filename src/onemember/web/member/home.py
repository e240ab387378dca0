"""The member's home: the member code as a QR that refreshes itself, points and what expires when, the
tier, and the coupons and package uses ready to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.deps import SessionDep
from onemember.members import service as members
from onemember.members.models import Member
from onemember.points.models import PointLot
from onemember.settings import get_settings
from onemember.web.member.base import MemberDep, _account, _org_of
from onemember.web.member.benefits import _benefit_counts
from onemember.web.templating import render

router = APIRouter(include_in_schema=False)


def refresh_seconds() -> int:
    """Ask for a new code a little before the current one expires."""
    ttl = get_settings().member_code_ttl_seconds
    return max(1, ttl - max(2, ttl // 4))


def _code_context(member: Member) -> dict[str, Any]:
    code, expires = members.issue_member_code(member)
    svg = segno.make(code, error="m").svg_inline(scale=6, dark="#111827", border=2, omitsize=True)
    return {"code": code, "code_expires": expires, "svg": svg, "refresh": refresh_seconds()}


@dataclass
class ExpiryGroup:
    month: str | None  # YYYY-MM in the org's time zone; None for points that never expire
    points: int
    last_day: date | None  # the last day the group's soonest points can be used


def expiry_groups(session: Session, account_id: int, tz: str) -> list[ExpiryGroup]:
    """Open lots grouped by the month they expire, soonest first.

    Points expire at the end of a business day, stored as the next local midnight; a second before it
    is the last day they can be used, which is the day a member wants to see.
    """
    zone = ZoneInfo(tz)
    groups: dict[str | None, ExpiryGroup] = {}
    lots = session.execute(
        select(PointLot.remaining, PointLot.expires_at)
        .where(PointLot.account_id == account_id, PointLot.remaining > 0)
        .order_by(PointLot.expires_at.asc().nulls_last(), PointLot.id)
        .limit(5000)
    ).all()
    for remaining, expires_at in lots:
        last_day = (expires_at - timedelta(seconds=1)).astimezone(zone).date() if expires_at else None
        month = last_day.strftime("%Y-%m") if last_day else None
        group = groups.setdefault(month, ExpiryGroup(month, 0, last_day))
        group.points += int(remaining)
    return list(groups.values())


@router.get("/m")
def member_home(request: Request, member: MemberDep, session: SessionDep) -> HTMLResponse:
    """The member's home: member code, points and what expires when, coupons and package uses."""
    org = _org_of(session, member)
    account = _account(session, member)
    return render(
        request,
        "member/home.html",
        {
            "member": member,
            "section": "home",
            "org": org,
            "account": account,
            "groups": expiry_groups(session, account.id, org.timezone) if account else [],
            "tier": tier_progress(session, member, org.timezone, request.state.lang),
            "phone_masked": members.masked_phone(session, member.id),
            "counts": _benefit_counts(session, member),
            **_code_context(member),
        },
    )


def tier_progress(session: Session, member: Member, tz: str, lang: str) -> dict[str, object] | None:
    """The member's tier and what is still missing for the next one, in words and as a percentage."""
    from onemember.points.service import default_program
    from onemember.tiers.service import member_tier

    view = member_tier(session, default_program(session, member.org_id), member, tz)
    if view is None:
        return None
    nxt = view.next_level
    if nxt is None:
        text = "您已是最高等级" if lang == "zh" else "You are at the top tier"
        pct = 100
    else:
        if view.basis == "spend_12m":
            yuan = f"¥{view.missing / 100:,.2f}"
            text = (
                f"近 12 个月再消费 {yuan} 即可升级{nxt.name}"
                if lang == "zh"
                else f"{yuan} more spend within 12 months to reach {nxt.name}"
            )
        elif view.basis == "orders_12m":
            text = (
                f"近 12 个月再购物 {view.missing} 次即可升级{nxt.name}"
                if lang == "zh"
                else f"{view.missing} more orders within 12 months to reach {nxt.name}"
            )
        else:
            text = (
                f"再获得 {view.missing:,} 成长值即可升级{nxt.name}"
                if lang == "zh"
                else f"{view.missing:,} more growth points to reach {nxt.name}"
            )
        span = max(nxt.threshold - view.level.threshold, 1)
        pct = max(0, min(100, 100 * (view.basis_value - view.level.threshold) // span))
    grace = None
    if view.grace_until is not None:
        day = view.grace_until.astimezone(ZoneInfo(tz)).date().isoformat()
        grace = f"保级宽限期至 {day}" if lang == "zh" else f"Keep-level grace period until {day}"
    return {
        "name": view.level.name,
        "code": view.level.code,
        "text": text,
        "pct": pct,
        "grace": grace,
        "discount_pct": view.level.discount_pct,
        "multiplier_pct": view.level.points_multiplier_pct,
    }


@router.get("/m/code")
def member_code(request: Request, member: MemberDep) -> HTMLResponse:
    """A fresh member code (htmx swaps it in before the old one expires)."""
    return render(request, "member/_code.html", {"member": member, **_code_context(member)})
