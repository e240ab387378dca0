"""Settings from the environment (prefix ``ONEMEMBER_``, plus ``DATABASE_URL``) and an optional ``.env``.

Every knob has a safe default so that ``onemember serve`` works on a bare machine.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEMEMBER_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("DATABASE_URL", "ONEMEMBER_DATABASE_URL"),
        description="SQLAlchemy URL; empty means SQLite under var_dir.",
    )
    var_dir: Path = Path("var")
    secret_key: str = Field(
        default="", description="Signs tokens and member codes; generated into var/ if empty."
    )
    pii_key: str = Field(default="", description="Encrypts personal data; generated into var/ if empty.")
    default_timezone: str = "Asia/Shanghai"
    member_code_ttl_seconds: int = 120
    staff_token_ttl_hours: int = 12
    idempotency_ttl_days: int = 30
    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: float = 2.0
    dispatcher_enabled: bool = True
    dispatcher_interval_seconds: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000

    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common libpq-style scheme and use psycopg 3.
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://") :]
            elif url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.var_dir / 'onemember.db').resolve()}"

    def _key_file(self, name: str) -> str:
        """A key kept in var/ so a bare-machine install stays stable across restarts."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        path = self.var_dir / name
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def resolved_secret_key(self) -> bytes:
        return (self.secret_key or self._key_file("secret.key")).encode()

    def resolved_pii_key(self) -> bytes:
        return bytes.fromhex(self.pii_key or self._key_file("pii.key"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
