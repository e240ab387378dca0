"""Checks that every member package agrees with its uses, for ``onemember verify``.

For each package: ``uses_total == uses_left + sum(uses) + uses_refunded``; the uses' values are exactly
what the largest-remainder split gives their use numbers; a package with no use left that was not
refunded has used up exactly its value; a refund never pays more than the unused uses were worth.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from onemember.packages import calculations
from onemember.packages.models import MemberPackage, PackageUse


def verify_packages(session: Session, org_id: int) -> list[str]:
    """Problems found in the org's packages; an empty list when all agree."""
    uses: dict[int, list[PackageUse]] = defaultdict(list)
    for use in session.scalars(select(PackageUse).where(PackageUse.org_id == org_id).order_by(PackageUse.id)):
        uses[use.member_package_id].append(use)
    problems: list[str] = []
    for package in session.scalars(
        select(MemberPackage).where(MemberPackage.org_id == org_id).order_by(MemberPackage.id)
    ):
        taken = uses.get(package.id, [])
        used = sum(u.uses for u in taken)
        if package.uses_total != package.uses_left + used + package.uses_refunded:
            problems.append(
                f"member package {package.id}: {package.uses_total} uses != {package.uses_left} left + "
                f"{used} used + {package.uses_refunded} refunded"
            )
            continue
        next_no = 1
        value = 0
        for u in sorted(taken, key=lambda u: u.first_use_no):
            expected = calculations.uses_value(package.value_fen, package.uses_total, u.first_use_no, u.uses)
            if u.first_use_no != next_no or u.value_fen != expected:
                problems.append(
                    f"member package {package.id}: use {u.id} numbered {u.first_use_no} worth {u.value_fen}, "
                    f"expected {next_no} worth {expected}"
                )
            next_no = u.first_use_no + u.uses
            value += u.value_fen
        if package.uses_left == 0 and package.uses_refunded == 0 and value != package.value_fen:
            problems.append(f"member package {package.id}: used up {value} of {package.value_fen} fen")
        unused = calculations.pro_rata_refund(package.price_fen, package.uses_total, package.uses_refunded)
        if package.refunded_fen > unused and package.uses_refunded != package.uses_total:
            problems.append(
                f"member package {package.id}: refunded {package.refunded_fen} fen for uses worth {unused}"
            )
    return problems
