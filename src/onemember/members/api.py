"""Member endpoints: register, find by any identifier, profile, member code, identities, reveal, merge."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from onemember.common import idempotency
from onemember.deps import CurrentPrincipal, IdempotencyKey, Lang, SessionDep, respond
from onemember.members import service, views
from onemember.members.schemas import (
    BindIdentityIn,
    BindIdentityOut,
    IdentityOut,
    LookupIn,
    MemberCodeOut,
    MemberOut,
    MergeIn,
    MergeOut,
    RegisterIn,
    RevealIn,
    RevealOut,
)
from onemember.orders.checkout import acting_store

router = APIRouter(prefix="/api/v1/members", tags=["members"])


@router.post("", status_code=201, response_model=MemberOut)
def register_member(
    body: RegisterIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Register a member at a store; the answer carries the new member number."""

    def work() -> MemberOut:
        store = (
            acting_store(session, principal, body.store_code)
            if (body.store_code or principal.store_id)
            else None
        )
        extra = {
            k: v
            for k, v in {
                "card": body.card_no,
                "wechat_openid": body.wechat_openid,
                "wechat_unionid": body.wechat_unionid,
                "alipay_uid": body.alipay_uid,
            }.items()
            if v
        }
        member = service.register(
            session,
            principal,
            store.id if store else None,
            service.Registration(
                phone=body.phone,
                name=body.name,
                birthday=body.birthday,
                gender=body.gender,
                channel=body.channel,
                identities=extra,
            ),
        )
        return views.member_out(session, principal, member)

    return respond(
        idempotency.run(session, principal, idem, "members.register", body, work, status=201, lang=lang)
    )


@router.post("/lookup", response_model=MemberOut)
def lookup_member(body: LookupIn, principal: CurrentPrincipal, session: SessionDep) -> MemberOut:
    """Find a member from any store by exact number, member code, phone, card, openid or Alipay id."""
    member = service.resolve(session, principal.org_id, service.MemberRef(**body.model_dump()))
    return views.member_out(session, principal, member)


@router.get("/merge-preview", response_model=MergeOut)
def preview_merge(survivor: str, merged: str, principal: CurrentPrincipal, session: SessionDep) -> MergeOut:
    """Show what merging ``merged`` into ``survivor`` would move."""
    a = service.by_member_no(session, principal.org_id, survivor)
    b = service.by_member_no(session, principal.org_id, merged)
    return MergeOut(**service.merge_preview(session, a, b))


@router.post("/merge", response_model=MergeOut)
def merge_members(
    body: MergeIn, principal: CurrentPrincipal, session: SessionDep, lang: Lang, idem: IdempotencyKey = None
) -> JSONResponse:
    """Merge two members who are one person; the merged number keeps resolving to the survivor."""

    def work() -> MergeOut:
        a = service.by_member_no(session, principal.org_id, body.survivor_member_no)
        b = service.by_member_no(session, principal.org_id, body.merged_member_no)
        record = service.merge_members(session, principal, a, b, body.reason)
        moved = {k: v for k, v in record.moved.items() if k in MergeOut.model_fields}
        return MergeOut(**moved)

    return respond(idempotency.run(session, principal, idem, "members.merge", body, work, lang=lang))


@router.get("/{member_no}", response_model=MemberOut)
def read_member(member_no: str, principal: CurrentPrincipal, session: SessionDep) -> MemberOut:
    """A member's profile, balance and running stats (masked outside the caller's stores)."""
    member = service.by_member_no(session, principal.org_id, member_no)
    return views.member_out(session, principal, member)


@router.post("/{member_no}/member-code", response_model=MemberCodeOut)
def issue_member_code(member_no: str, principal: CurrentPrincipal, session: SessionDep) -> MemberCodeOut:
    """A short-lived signed member code to show as a QR (for a mini-program or app backend)."""
    member = service.by_member_no(session, principal.org_id, member_no)
    code, expires = service.issue_member_code(member)
    return MemberCodeOut(member_no=member.member_no, code=code, expires_at=expires)


@router.post("/{member_no}/identities", response_model=BindIdentityOut)
def bind_identity(
    member_no: str,
    body: BindIdentityIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    lang: Lang,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Bind a phone, card, WeChat or Alipay identity; one held by another member starts a merge."""

    def work() -> BindIdentityOut:
        member = service.by_member_no(session, principal.org_id, member_no)
        identity, merge = service.bind_identity(
            session, principal, member, body.kind, body.value, merge=body.merge, reason=body.reason
        )
        return BindIdentityOut(
            member_no=member.member_no,
            bound=IdentityOut(kind=identity.kind, masked=identity.value_masked) if identity else None,
            merged_member_no=str(merge.moved.get("merged_member_no")) if merge else None,
        )

    return respond(
        idempotency.run(
            session,
            principal,
            idem,
            "members.bind",
            {"member_no": member_no, **body.model_dump()},
            work,
            lang=lang,
        )
    )


@router.post("/{member_no}/reveal", response_model=RevealOut)
def reveal_identity(
    member_no: str, body: RevealIn, principal: CurrentPrincipal, session: SessionDep
) -> RevealOut:
    """Show the full phone (or other identifier) to a role allowed to see it; the reveal is audited."""
    member = service.by_member_no(session, principal.org_id, member_no)
    value = service.reveal_identity(session, principal, member, body.kind, body.reason)
    session.commit()
    return RevealOut(member_no=member.member_no, kind=body.kind, value=value)
