"""Service packages: templates, selling and granting, uses at any store that offers the service,
refunds of unused uses, and the settlement entries of uses at other stores.

A use locks the member package row, checks status, expiry and the store, then takes the uses with an
atomic conditional ``UPDATE`` (``uses_left = uses_left - n WHERE uses_left >= n``), so two tills taking
the last use at the same moment cannot both succeed and ``uses_left`` never goes below zero (a CHECK
guards it too). A use at a store other than the issuer records its settlement entry in the same
transaction (``settlement.record_benefit_use``, ``source_ref`` ``package_use:<id>``), charged to whoever
the template's ``bearer`` names. Every sale, grant, use and refund is audited and emits an event in the
same transaction; services flush, the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from onemember.audit import service as audit
from onemember.auth.principal import TILL_ROLES, Principal
from onemember.common.types import MemberStatus, Role
from onemember.db import utcnow
from onemember.errors import Forbidden, Invalid
from onemember.events import service as events
from onemember.members.errors import MemberNotFound
from onemember.members.models import Member
from onemember.org import service as org_service
from onemember.org.models import Brand, Region, Store
from onemember.packages import calculations
from onemember.packages.errors import (
    InsufficientUses,
    InvalidGrant,
    InvalidPackage,
    InvalidUses,
    MemberPackageNotFound,
    NotRefundable,
    PackageClosed,
    PackageCodeTaken,
    PackageExpired,
    PackageInactive,
    PackageNotFound,
    PaymentMismatch,
    ServiceNotOfferedHere,
)
from onemember.packages.models import MemberPackage, PackageUse, ServicePackage, ServicePackageStore
from onemember.settlement import service as settlement
from onemember.settlement.models import HQ
from onemember.settlement.service import Bearer


class RefundRule(StrEnum):
    NONE = "none"
    UNUSED_PRO_RATA = "unused_pro_rata"
    FULL_IF_UNUSED = "full_if_unused"


class StoreScope(StrEnum):
    ALL = "all"
    BRAND = "brand"
    REGION = "region"
    STORES = "stores"


class Source(StrEnum):
    SALE = "sale"
    COMPENSATION = "compensation"
    TIER_BENEFIT = "tier_benefit"
    CAMPAIGN = "campaign"
    GOODWILL = "goodwill"


class PackageStatus(StrEnum):
    ACTIVE = "active"
    REFUNDED = "refunded"


TEMPLATE_ROLES = frozenset({Role.HQ_ADMIN})
SELL_ROLES = TILL_ROLES
USE_ROLES = TILL_ROLES
GRANT_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER, Role.CS_AGENT})
REFUND_ROLES = frozenset({Role.HQ_ADMIN, Role.REGIONAL_MANAGER, Role.STORE_MANAGER, Role.CS_AGENT})
MAX_USES = 1000
MAX_PRICE_FEN = 10**10
MAX_VALIDITY_DAYS = 3660


# --- templates ---------------------------------------------------------------------------------------


@dataclass
class PackageSpec:
    code: str
    name: str
    service_code: str
    uses: int
    price_fen: int
    validity_days: int | None = 365
    refund_rule: str = RefundRule.UNUSED_PRO_RATA
    store_scope: str = StoreScope.ALL
    brand_code: str | None = None
    region_code: str | None = None
    store_codes: list[str] = field(default_factory=list)
    bearer: str = Bearer.ISSUING_STORE
    issuer_pct: int = 100


def validate_spec(spec: PackageSpec) -> None:
    def bad(zh: str, en: str, name: str) -> InvalidPackage:
        return InvalidPackage(zh, en, field=name)

    if not spec.code.strip() or len(spec.code) > 40:
        raise bad("次卡编码须为 1 到 40 个字符", "The code must be 1 to 40 characters", "code")
    if not spec.name.strip() or len(spec.name) > 120:
        raise bad("次卡名称须为 1 到 120 个字符", "The name must be 1 to 120 characters", "name")
    if not spec.service_code.strip() or len(spec.service_code) > 40:
        raise bad(
            "服务编码须为 1 到 40 个字符", "The service code must be 1 to 40 characters", "service_code"
        )
    if not 0 < spec.uses <= MAX_USES:
        raise bad(f"次数须为 1 到 {MAX_USES}", f"uses must be 1 to {MAX_USES}", "uses")
    if not 0 <= spec.price_fen <= MAX_PRICE_FEN:
        raise bad("售价（分）须为非负整数", "price_fen must not be negative", "price_fen")
    if spec.validity_days is not None and not 0 < spec.validity_days <= MAX_VALIDITY_DAYS:
        raise bad(
            f"有效天数须为 1 到 {MAX_VALIDITY_DAYS}",
            f"validity_days must be 1 to {MAX_VALIDITY_DAYS}",
            "validity_days",
        )
    if spec.refund_rule not in set(RefundRule):
        raise bad(
            f"未知的退款规则 {spec.refund_rule}", f"Unknown refund rule {spec.refund_rule}", "refund_rule"
        )
    if spec.store_scope not in set(StoreScope):
        raise bad(
            f"未知的门店范围 {spec.store_scope}", f"Unknown store scope {spec.store_scope}", "store_scope"
        )
    if spec.store_scope == StoreScope.BRAND and not spec.brand_code:
        raise bad("按品牌适用须指定品牌", "A brand scope needs brand_code", "brand_code")
    if spec.store_scope == StoreScope.REGION and not spec.region_code:
        raise bad("按区域适用须指定区域", "A region scope needs region_code", "region_code")
    if spec.store_scope == StoreScope.STORES and not spec.store_codes:
        raise bad("按门店列表适用须至少指定一家门店", "A store list needs at least one store", "store_codes")
    if spec.bearer not in set(Bearer):
        raise bad(
            f"未知的结算承担方 {spec.bearer}",
            f"Unknown settlement bearer {spec.bearer}",
            "bearer",
        )
    if not 0 <= spec.issuer_pct <= 100:
        raise bad("售卡门店承担比例须为 0 到 100", "issuer_pct must be 0 to 100", "issuer_pct")


def create_template(session: Session, principal: Principal, spec: PackageSpec) -> ServicePackage:
    """A new package template (HQ); its store scope names brands, regions or stores by code."""
    principal.require_role(TEMPLATE_ROLES, "管理次卡", "manage service packages")
    validate_spec(spec)
    org_id = principal.org_id
    if session.scalar(
        select(ServicePackage.id).where(ServicePackage.org_id == org_id, ServicePackage.code == spec.code)
    ):
        raise PackageCodeTaken(
            f"次卡编码 {spec.code} 已存在", f"A package with code {spec.code} already exists"
        )
    brand_id = region_id = None
    store_ids: list[int] = []
    if spec.store_scope == StoreScope.BRAND:
        brand_id = session.scalar(
            select(Brand.id).where(Brand.org_id == org_id, Brand.code == spec.brand_code)
        )
        if brand_id is None:
            raise InvalidPackage(
                f"找不到品牌 {spec.brand_code}", f"No brand with code {spec.brand_code}", field="brand_code"
            )
    elif spec.store_scope == StoreScope.REGION:
        region_id = session.scalar(
            select(Region.id).where(Region.org_id == org_id, Region.code == spec.region_code)
        )
        if region_id is None:
            raise InvalidPackage(
                f"找不到区域 {spec.region_code}",
                f"No region with code {spec.region_code}",
                field="region_code",
            )
    elif spec.store_scope == StoreScope.STORES:
        store_ids = sorted({org_service.store_by_code(session, org_id, c).id for c in spec.store_codes})
    bearer = spec.bearer
    share = spec.issuer_pct if bearer == Bearer.SPLIT else (100 if bearer == Bearer.ISSUING_STORE else 0)
    template = ServicePackage(
        org_id=org_id,
        code=spec.code,
        name=spec.name,
        service_code=spec.service_code,
        uses=spec.uses,
        validity_days=spec.validity_days,
        price_fen=spec.price_fen,
        refund_rule=spec.refund_rule,
        store_scope=spec.store_scope,
        scope_brand_id=brand_id,
        scope_region_id=region_id,
        bearer=bearer,
        issuer_pct=share,
        active=True,
        created_by=principal.actor,
        created_at=utcnow(),
    )
    session.add(template)
    session.flush()
    for store_id in store_ids:
        session.add(ServicePackageStore(org_id=org_id, package_id=template.id, store_id=store_id))
    audit.record(
        session,
        principal,
        "packages.template_created",
        target_type="service_package",
        target_id=template.code,
        details={
            "name": template.name,
            "service_code": template.service_code,
            "uses": template.uses,
            "price_fen": template.price_fen,
            "validity_days": template.validity_days,
            "refund_rule": template.refund_rule,
            "store_scope": template.store_scope,
            "store_codes": sorted(spec.store_codes) if store_ids else [],
            "bearer": template.bearer,
            "issuer_pct": template.issuer_pct,
        },
    )
    session.flush()
    return template


def set_active(
    session: Session, principal: Principal, template: ServicePackage, active: bool
) -> ServicePackage:
    """Stop selling a template (or sell it again); packages already held keep working."""
    principal.require_role(TEMPLATE_ROLES, "管理次卡", "manage service packages")
    if template.active != active:
        template.active = active
        audit.record(
            session,
            principal,
            "packages.template_listed" if active else "packages.template_withdrawn",
            target_type="service_package",
            target_id=template.code,
        )
        session.flush()
    return template


def template_by_code(session: Session, org_id: int, code: str) -> ServicePackage:
    template = session.scalar(
        select(ServicePackage).where(ServicePackage.org_id == org_id, ServicePackage.code == code)
    )
    if template is None:
        raise PackageNotFound(f"找不到次卡 {code}", f"No service package with code {code}")
    return template


def template_store_ids(session: Session, template_id: int) -> list[int]:
    return list(
        session.scalars(
            select(ServicePackageStore.store_id)
            .where(ServicePackageStore.package_id == template_id)
            .order_by(ServicePackageStore.store_id)
        )
    )


def offers_service(session: Session, template: ServicePackage, store: Store) -> bool:
    """Whether ``store`` performs the template's service."""
    if store.org_id != template.org_id or not store.active:
        return False
    if template.store_scope == StoreScope.ALL:
        return True
    if template.store_scope == StoreScope.BRAND:
        return store.brand_id == template.scope_brand_id
    if template.store_scope == StoreScope.REGION:
        return store.region_id == template.scope_region_id
    return (
        session.scalar(
            select(ServicePackageStore.id).where(
                ServicePackageStore.package_id == template.id, ServicePackageStore.store_id == store.id
            )
        )
        is not None
    )


def templates(
    session: Session, org_id: int, *, store: Store | None = None, active_only: bool = True
) -> list[ServicePackage]:
    """The org's templates, by code; with ``store``, only those whose service that store performs."""
    q = select(ServicePackage).where(ServicePackage.org_id == org_id)
    if active_only:
        q = q.where(ServicePackage.active.is_(True))
    found = list(session.scalars(q.order_by(ServicePackage.code)))
    if store is not None:
        found = [t for t in found if offers_service(session, t, store)]
    return found


# --- selling and granting ----------------------------------------------------------------------------


def _require_member(principal: Principal, member: Member) -> None:
    if member.org_id != principal.org_id or member.status != MemberStatus.ACTIVE:
        raise MemberNotFound()


def _issue(
    session: Session,
    principal: Principal,
    member: Member,
    template: ServicePackage,
    store: Store | None,
    *,
    price_fen: int,
    payment_method: str,
    source: str,
    reason: str,
) -> MemberPackage:
    now = utcnow()
    tz = org_service.get_org(session, principal.org_id).timezone
    package = MemberPackage(
        org_id=principal.org_id,
        member_id=member.id,
        package_id=template.id,
        service_code=template.service_code,
        uses_total=template.uses,
        uses_left=template.uses,
        price_fen=price_fen,
        value_fen=price_fen if source == Source.SALE else template.price_fen,
        payment_method=payment_method,
        source=source,
        reason=reason,
        sold_store_id=store.id if store else None,
        sold_by=principal.actor,
        sold_at=now,
        expires_at=calculations.expiry_for(now, template.validity_days, tz),
        status=PackageStatus.ACTIVE,
        refunded_fen=0,
        uses_refunded=0,
        refunded_by="",
    )
    session.add(package)
    session.flush()
    action = "packages.sold" if source == Source.SALE else "packages.granted"
    audit.record(
        session,
        principal,
        action,
        target_type="member_package",
        target_id=package.id,
        member_id=member.id,
        store_id=package.sold_store_id,
        reason=reason,
        details={
            "package_code": template.code,
            "source": source,
            "uses": package.uses_total,
            "price_fen": package.price_fen,
            "value_fen": package.value_fen,
            "payment_method": payment_method,
            "expires_at": package.expires_at.isoformat() if package.expires_at else None,
        },
    )
    events.emit(
        session,
        principal.org_id,
        "package.sold",
        {
            "member_package_id": package.id,
            "package_code": template.code,
            "service_code": template.service_code,
            "member_no": member.member_no,
            "store_code": store.code if store else None,
            "source": source,
            "uses": package.uses_total,
            "price_fen": package.price_fen,
            "expires_at": package.expires_at.isoformat() if package.expires_at else None,
        },
        member_id=member.id,
        store_ids=[store.id] if store else [],
    )
    session.flush()
    return package


def sell_package(
    session: Session,
    principal: Principal,
    member: Member,
    template: ServicePackage,
    store: Store | None,
    *,
    payment_method: str,
    amount_fen: int,
) -> MemberPackage:
    """Sell a package at ``store``: the amount collected must be the template's price."""
    principal.require_role(SELL_ROLES, "售卖次卡", "sell service packages")
    if store is None:
        raise Invalid(
            "请指定售卡门店 store_code", "Name the selling store (store_code)", code="packages.store_required"
        )
    principal.require_store(store.id)
    _require_member(principal, member)
    if template.org_id != principal.org_id:
        raise PackageNotFound()
    if not template.active:
        raise PackageInactive()
    if amount_fen != template.price_fen:
        raise PaymentMismatch(
            f"该次卡售价 {template.price_fen} 分，实收 {amount_fen} 分",
            f"The package costs {template.price_fen} fen, {amount_fen} fen paid",
            price_fen=template.price_fen,
        )
    method = payment_method.strip()
    if template.price_fen > 0 and not 0 < len(method) <= 30:
        raise Invalid("请指定付款方式", "Name the payment method", code="packages.payment_method_required")
    return _issue(
        session,
        principal,
        member,
        template,
        store,
        price_fen=amount_fen,
        payment_method=method,
        source=Source.SALE,
        reason="",
    )


def grant_package(
    session: Session,
    principal: Principal,
    member: Member,
    template: ServicePackage,
    store: Store | None,
    *,
    source: str,
    reason: str,
) -> MemberPackage:
    """Give a package free (compensation, a tier benefit, a campaign, goodwill); always with a reason.

    A grant by a store names that store as the issuer; one by HQ or customer service may name none,
    and then HQ is the issuer for settlement.
    """
    principal.require_role(GRANT_ROLES, "赠送次卡", "grant service packages")
    if source == Source.SALE or source not in set(Source):
        raise InvalidGrant(f"未知的赠送来源 {source}", f"Unknown grant source {source}", field="source")
    reason = reason.strip()
    if not 0 < len(reason) <= 300:
        raise InvalidGrant(
            "请填写赠送原因（300 字以内）", "Give a reason (up to 300 characters)", field="reason"
        )
    if store is not None:
        principal.require_store(store.id)
    elif not principal.is_hq:
        raise Invalid("请指定门店 store_code", "Name the store (store_code)", code="packages.store_required")
    _require_member(principal, member)
    if template.org_id != principal.org_id:
        raise PackageNotFound()
    if not template.active:
        raise PackageInactive()
    return _issue(
        session,
        principal,
        member,
        template,
        store,
        price_fen=0,
        payment_method="",
        source=source,
        reason=reason,
    )


# --- the member's packages ---------------------------------------------------------------------------


def _member_ids(session: Session, member: Member) -> list[int]:
    """The member and every member merged into them (whose packages they now hold)."""
    ids = [member.id]
    frontier = [member.id]
    for _ in range(10):
        merged = list(session.scalars(select(Member.id).where(Member.merged_into_id.in_(frontier))))
        if not merged:
            break
        ids.extend(merged)
        frontier = merged
    return ids


def packages_of(session: Session, member: Member, *, include_closed: bool = False) -> list[MemberPackage]:
    """A member's packages, newest first; by default only those still open (active, even if expired)."""
    q = select(MemberPackage).where(
        MemberPackage.org_id == member.org_id, MemberPackage.member_id.in_(_member_ids(session, member))
    )
    if not include_closed:
        q = q.where(MemberPackage.status == PackageStatus.ACTIVE)
    return list(session.scalars(q.order_by(MemberPackage.id.desc())))


def holder(session: Session, package: MemberPackage) -> Member:
    """The member holding ``package`` now: a merged member's survivor."""
    member = session.get(Member, package.member_id)
    for _ in range(10):
        if member is None or member.merged_into_id is None:
            break
        member = session.get(Member, member.merged_into_id)
    if member is None:
        raise MemberNotFound()
    return member


def member_package(session: Session, org_id: int, package_id: int, *, lock: bool = False) -> MemberPackage:
    q = select(MemberPackage).where(MemberPackage.id == package_id, MemberPackage.org_id == org_id)
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    package = session.scalar(q)
    if package is None:
        raise MemberPackageNotFound()
    return package


def uses_of(session: Session, package: MemberPackage) -> list[PackageUse]:
    return list(
        session.scalars(
            select(PackageUse).where(PackageUse.member_package_id == package.id).order_by(PackageUse.id)
        )
    )


# --- using -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UseFact:
    """What settlement needs of one use: a package sold at ``sold_store_id`` (None: HQ) used at
    ``used_store_id``, worth ``value_fen``, with the template's bearer rule."""

    use_id: int
    org_id: int
    member_id: int
    member_package_id: int
    package_code: str
    sold_store_id: int | None
    used_store_id: int
    uses: int
    value_fen: int
    used_at: datetime
    bearer: str
    issuer_pct: int


@dataclass(frozen=True)
class OwedPart:
    """``payer_store_id`` (None: the HQ pool) owes ``payee_store_id`` ``amount_fen``."""

    payer_store_id: int | None
    payee_store_id: int
    amount_fen: int


def source_ref(use_id: int) -> str:
    """How settlement entries name the use they settle."""
    return f"package_use:{use_id}"


def owed_for(fact: UseFact) -> OwedPart | None:
    """Who repays the performing store for a use, by the template's bearer (settlement's rule).

    The issuer is the selling store, or HQ for a package HQ granted; ``split`` charges the issuer
    ``issuer_pct`` percent (rounded down) and leaves the rest with the performing store. Nothing is
    owed for a zero-value use, when the performing store bears the cost, or when the debtor would be
    the performing store itself.
    """
    bearer = Bearer(fact.bearer)
    debtor = settlement.cost_debtor(bearer, settlement.party(fact.sold_store_id), fact.used_store_id)
    amount = settlement.cost_share(bearer, fact.issuer_pct, fact.value_fen)
    if debtor is None or amount <= 0:
        return None
    return OwedPart(None if debtor == HQ else debtor, fact.used_store_id, amount)


def _record_settlement(session: Session, fact: UseFact, template: ServicePackage, actor: str) -> None:
    settlement.record_benefit_use(
        session,
        fact.org_id,
        settlement.Kind.PACKAGE_USED,
        bearer=fact.bearer,
        issuer_store_id=fact.sold_store_id,
        redeeming_store_id=fact.used_store_id,
        value_fen=fact.value_fen,
        source_ref=source_ref(fact.use_id),
        issuer_pct=fact.issuer_pct,
        at=fact.used_at,
        reason=f"次卡 {template.name}（{template.code}）使用 {fact.uses} 次",
        actor=actor,
    )


def _fact(use: PackageUse, template: ServicePackage) -> UseFact:
    return UseFact(
        use_id=use.id,
        org_id=use.org_id,
        member_id=use.member_id,
        member_package_id=use.member_package_id,
        package_code=template.code,
        sold_store_id=use.sold_store_id,
        used_store_id=use.used_store_id,
        uses=use.uses,
        value_fen=use.value_fen,
        used_at=use.used_at,
        bearer=template.bearer,
        issuer_pct=template.issuer_pct,
    )


def settlement_facts(
    session: Session,
    org_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    use_ids: Sequence[int] | None = None,
) -> list[UseFact]:
    """Uses in ``[since, until)`` (or the given ids), oldest first, with what settlement needs."""
    q = (
        select(PackageUse, ServicePackage)
        .join(ServicePackage, ServicePackage.id == PackageUse.package_id)
        .where(PackageUse.org_id == org_id)
    )
    if since is not None:
        q = q.where(PackageUse.used_at >= since)
    if until is not None:
        q = q.where(PackageUse.used_at < until)
    if use_ids is not None:
        q = q.where(PackageUse.id.in_(list(use_ids)))
    return [_fact(u, t) for u, t in session.execute(q.order_by(PackageUse.id)).all()]


def use_package(
    session: Session,
    principal: Principal,
    package_id: int,
    store: Store | None,
    *,
    uses: int = 1,
    note: str = "",
    member: Member | None = None,
) -> PackageUse:
    """Take ``uses`` uses of a member package at ``store``; a failure changes nothing.

    With ``member`` given, the package must be that member's (a till names the member it serves).
    """
    principal.require_role(USE_ROLES, "核销次卡", "use service packages")
    if store is None:
        raise Invalid(
            "请指定服务门店 store_code",
            "Name the performing store (store_code)",
            code="packages.store_required",
        )
    principal.require_store(store.id)
    if not 0 < uses <= MAX_USES:
        raise InvalidUses()
    if len(note) > 300:
        raise Invalid(
            "备注不能超过 300 字", "The note must be at most 300 characters", code="packages.note_too_long"
        )
    package = member_package(session, principal.org_id, package_id, lock=True)
    owner = holder(session, package)
    if owner.status != MemberStatus.ACTIVE or (member is not None and owner.id != member.id):
        raise MemberPackageNotFound()
    template = session.get(ServicePackage, package.package_id)
    assert template is not None
    if package.status != PackageStatus.ACTIVE:
        raise PackageClosed()
    now = utcnow()
    if package.expires_at is not None and now >= package.expires_at:
        raise PackageExpired(expires_at=package.expires_at.isoformat())
    if not offers_service(session, template, store):
        raise ServiceNotOfferedHere(
            f"门店 {store.code} 不提供服务 {template.service_code}",
            f"Store {store.code} does not offer service {template.service_code}",
        )
    before = package.uses_left
    if before < uses:
        raise InsufficientUses(uses_left=before)
    taken = cast(
        CursorResult[Any],
        session.execute(
            update(MemberPackage)
            .where(
                MemberPackage.id == package.id,
                MemberPackage.status == PackageStatus.ACTIVE,
                MemberPackage.uses_left >= uses,
            )
            .values(uses_left=MemberPackage.uses_left - uses)
            .execution_options(synchronize_session=False)
        ),
    )
    if taken.rowcount != 1:
        raise InsufficientUses(uses_left=before)
    set_committed_value(package, "uses_left", before - uses)
    first = package.uses_total - before + 1
    use = PackageUse(
        org_id=principal.org_id,
        member_id=package.member_id,
        member_package_id=package.id,
        package_id=template.id,
        sold_store_id=package.sold_store_id,
        used_store_id=store.id,
        uses=uses,
        first_use_no=first,
        value_fen=calculations.uses_value(package.value_fen, package.uses_total, first, uses),
        actor=principal.actor,
        staff_id=principal.id if principal.kind == "staff" else None,
        api_key_id=principal.id if principal.kind == "api_key" else None,
        note=note,
        used_at=now,
    )
    session.add(use)
    session.flush()
    audit.record(
        session,
        principal,
        "packages.used",
        target_type="member_package",
        target_id=package.id,
        member_id=owner.id,
        store_id=store.id,
        details={
            "use_id": use.id,
            "package_code": template.code,
            "uses": uses,
            "value_fen": use.value_fen,
            "uses_left": package.uses_left,
            "sold_store_id": package.sold_store_id,
        },
    )
    events.emit(
        session,
        principal.org_id,
        "package.used",
        {
            "use_id": use.id,
            "member_package_id": package.id,
            "package_code": template.code,
            "service_code": template.service_code,
            "member_no": owner.member_no,
            "store_code": store.code,
            "uses": uses,
            "uses_left": package.uses_left,
            "value_fen": use.value_fen,
        },
        member_id=owner.id,
        store_ids=[s for s in (store.id, package.sold_store_id) if s is not None],
    )
    _record_settlement(session, _fact(use, template), template, principal.actor)
    session.flush()
    return use


# --- refunds -----------------------------------------------------------------------------------------


def refund_amount(package: MemberPackage, rule: str) -> int:
    """What refunding ``package``'s unused uses pays back under ``rule``; raises when it may not."""
    if package.status != PackageStatus.ACTIVE:
        raise PackageClosed()
    if package.source != Source.SALE or package.price_fen == 0:
        raise NotRefundable("赠送的次卡不可退款", "A granted package cannot be refunded")
    if package.uses_left == 0:
        raise NotRefundable("该次卡已无剩余次数", "No uses are left to refund")
    if rule == RefundRule.NONE:
        raise NotRefundable()
    if rule == RefundRule.FULL_IF_UNUSED:
        if package.uses_left != package.uses_total:
            raise NotRefundable(
                "该次卡仅在未使用时可全额退款", "This package is refundable only while unused"
            )
        return package.price_fen
    return calculations.pro_rata_refund(package.price_fen, package.uses_total, package.uses_left)


def refund_package(session: Session, principal: Principal, package_id: int, *, reason: str) -> MemberPackage:
    """Refund a package's unused uses by its template's rule and close it.

    Store managers refund their own stores' sales; packages sold without a store are HQ's. Refunds are
    allowed after expiry too (the member paid for uses the chain never performed).
    """
    principal.require_role(REFUND_ROLES, "次卡退款", "refund service packages")
    reason = reason.strip()
    if not 0 < len(reason) <= 300:
        raise Invalid(
            "请填写退款原因（300 字以内）",
            "Give a reason (up to 300 characters)",
            code="packages.reason_required",
        )
    package = member_package(session, principal.org_id, package_id, lock=True)
    if package.sold_store_id is not None:
        principal.require_store(package.sold_store_id)
    elif not principal.is_hq:
        raise Forbidden("该次卡由总部处理", "HQ handles this package", code="auth.store_scope")
    template = session.get(ServicePackage, package.package_id)
    assert template is not None
    amount = refund_amount(package, template.refund_rule)
    left = package.uses_left
    closed = cast(
        CursorResult[Any],
        session.execute(
            update(MemberPackage)
            .where(
                MemberPackage.id == package.id,
                MemberPackage.status == PackageStatus.ACTIVE,
                MemberPackage.uses_left == left,
            )
            .values(uses_left=0, status=PackageStatus.REFUNDED)
            .execution_options(synchronize_session=False)
        ),
    )
    if closed.rowcount != 1:
        raise PackageClosed()
    set_committed_value(package, "uses_left", 0)
    set_committed_value(package, "status", PackageStatus.REFUNDED)
    now = utcnow()
    package.refunded_fen = amount
    package.uses_refunded = left
    package.refunded_at = now
    package.refunded_by = principal.actor
    owner = holder(session, package)
    audit.record(
        session,
        principal,
        "packages.refunded",
        target_type="member_package",
        target_id=package.id,
        member_id=owner.id,
        store_id=package.sold_store_id,
        reason=reason,
        details={
            "package_code": template.code,
            "refund_rule": template.refund_rule,
            "uses_refunded": left,
            "refunded_fen": amount,
            "price_fen": package.price_fen,
            "payment_method": package.payment_method,
        },
    )
    events.emit(
        session,
        principal.org_id,
        "package.refunded",
        {
            "member_package_id": package.id,
            "package_code": template.code,
            "member_no": owner.member_no,
            "uses_refunded": left,
            "refunded_fen": amount,
            "payment_method": package.payment_method,
        },
        member_id=owner.id,
        store_ids=[package.sold_store_id] if package.sold_store_id else [],
    )
    session.flush()
    return package
