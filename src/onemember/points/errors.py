from onemember.errors import Conflict, DomainError


class InsufficientPoints(Conflict):
    code = "points.insufficient_balance"
    zh = "积分余额不足"
    en = "Not enough points"


class InvalidRedeemAmount(DomainError):
    status = 422
    code = "points.invalid_redeem_amount"
    zh = "抵扣积分数量无效"
    en = "The number of points to redeem is invalid"
