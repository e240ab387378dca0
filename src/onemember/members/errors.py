from onemember.errors import Conflict, DomainError, NotFound


class MemberNotFound(NotFound):
    code = "members.not_found"
    zh = "找不到该会员"
    en = "Member not found"


class InvalidIdentity(DomainError):
    status = 422
    code = "members.invalid_identifier"
    zh = "会员标识格式无效"
    en = "The member identifier is not valid"


class IdentityTaken(Conflict):
    code = "members.identity_taken"
    zh = "该标识已属于另一位会员"
    en = "That identifier already belongs to another member"


class MemberCodeInvalid(DomainError):
    status = 422
    code = "members.code_invalid"
    zh = "会员码无效"
    en = "The member code is not valid"


class MemberCodeExpired(DomainError):
    status = 422
    code = "members.code_expired"
    zh = "会员码已过期，请刷新后重试"
    en = "The member code has expired; refresh it and try again"


class MergeInvalid(Conflict):
    code = "members.merge_invalid"
    zh = "无法合并这两位会员"
    en = "These two members cannot be merged"
