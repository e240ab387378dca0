from onemember.errors import Conflict, DomainError, NotFound


class OrderNotFound(NotFound):
    code = "orders.not_found"
    zh = "找不到该订单"
    en = "Order not found"


class InvalidOrder(DomainError):
    status = 422
    code = "orders.invalid"
    zh = "订单内容无效"
    en = "The order is invalid"


class PaymentMismatch(DomainError):
    status = 422
    code = "orders.payment_mismatch"
    zh = "支付金额与应付金额不符"
    en = "Payments do not add up to the amount due"


class DuplicateClientOrder(Conflict):
    code = "orders.duplicate_client_order_id"
    zh = "该门店已有相同客户端单号的订单"
    en = "This store already has an order with that client order id"


class ReturnExceedsQuantity(Conflict):
    code = "orders.return_exceeds_quantity"
    zh = "退货数量超过可退数量"
    en = "More units returned than remain on the line"
