from onemember.errors import Conflict, DomainError, NotFound


class InvalidSettlement(DomainError):
    status = 422
    code = "settlement.invalid"
    zh = "结算记录无效"
    en = "The settlement entry is invalid"


class InvalidPeriod(DomainError):
    status = 422
    code = "settlement.invalid_period"
    zh = "结算期间格式应为 YYYY-MM"
    en = "A settlement period looks like YYYY-MM"


class InvalidPolicy(DomainError):
    status = 422
    code = "settlement.invalid_policy"
    zh = "结算规则无效"
    en = "The settlement policy is invalid"


class PeriodClosed(Conflict):
    code = "settlement.period_closed"
    zh = "该结算期间已关账"
    en = "This settlement period is closed"


class PeriodNotEnded(Conflict):
    code = "settlement.period_not_ended"
    zh = "该结算期间尚未结束，不能关账"
    en = "This settlement period has not ended yet"


class EarlierPeriodOpen(Conflict):
    code = "settlement.earlier_period_open"
    zh = "请先关闭更早的结算期间"
    en = "Close the earlier settlement period first"


class SettlementEntryNotFound(NotFound):
    code = "settlement.entry_not_found"
    zh = "找不到该结算记录"
    en = "Settlement entry not found"


class PartyNotFound(NotFound):
    code = "settlement.party_not_found"
    zh = "找不到该结算方（门店编码或 HQ）"
    en = "Settlement party not found (a store code or HQ)"
