"""Domain errors: an HTTP status, a stable machine code and a message in zh-CN and English.

Handlers in ``app.py`` turn them into ``application/problem+json``. A business conflict is never a 500.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status: int = 400
    code: str = "error"
    zh: str = "请求无法处理"
    en: str = "The request could not be processed"

    def __init__(
        self,
        zh: str | None = None,
        en: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        **extra: Any,
    ) -> None:
        self.zh = zh or type(self).zh
        self.en = en or type(self).en
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra = extra
        super().__init__(f"{self.code}: {self.en}")

    def to_problem(self, lang: str = "zh") -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.en,
            "status": self.status,
            "code": self.code,
            "detail": self.zh if lang == "zh" else self.en,
            "message_zh": self.zh,
            "message_en": self.en,
        }
        body.update(self.extra)
        return body


class NotFound(DomainError):
    status = 404
    code = "not_found"
    zh = "找不到该对象"
    en = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Forbidden(DomainError):
    status = 403
    code = "auth.forbidden"
    zh = "无权执行此操作"
    en = "You are not allowed to do this"


class Unauthorized(DomainError):
    status = 401
    code = "auth.unauthenticated"
    zh = "请先登录或提供有效的 API 密钥"
    en = "Log in or present a valid API key"


class Invalid(DomainError):
    status = 422
    code = "request.invalid"
    zh = "请求内容无效"
    en = "The request is invalid"


class ValueOutOfRange(Invalid):
    code = "request.out_of_range"
    zh = "请求中的数值超出范围"
    en = "A number in the request is out of range"
