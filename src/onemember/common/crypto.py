"""Personal data protection: AES-GCM encryption at rest, a keyed blind index for exact lookup, masking.

The blind index is an HMAC of the normalised value under a key derived from the PII key, so the
database can find ``13812345678`` without ever holding it in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onemember.settings import get_settings

_VERSION = b"\x01"


class PiiCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the PII key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(hashlib.sha256(b"onemember-enc" + key).digest())
        self._bidx_key = hashlib.sha256(b"onemember-bidx" + key).digest()

    def encrypt(self, value: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, value.encode(), None)

    def decrypt(self, blob: bytes) -> str:
        if blob[:1] != _VERSION:
            raise ValueError("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], None).decode()

    def blind_index(self, kind: str, normalized: str) -> str:
        return hmac.new(self._bidx_key, f"{kind}:{normalized}".encode(), hashlib.sha256).hexdigest()[:40]


@lru_cache
def get_cipher() -> PiiCipher:
    return PiiCipher(get_settings().resolved_pii_key())


def mask(kind: str, value: str) -> str:
    """138****5678 for phones; first and last few characters for other identifiers."""
    if kind == "phone" and len(value) == 11:
        return f"{value[:3]}****{value[7:]}"
    if len(value) <= 4:
        return "*" * len(value)
    keep = 4 if len(value) > 10 else 2
    return (
        f"{value[:keep]}{'*' * (len(value) - 2 * keep)}{value[-keep:]}"
        if len(value) > 2 * keep
        else (value[:1] + "*" * (len(value) - 2) + value[-1:])
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))
