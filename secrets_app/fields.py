"""Encryption at rest, inside the model field.

``EncryptedJSONField`` stores a JSON value (a secret's fields, a step's exact output) as
one Fernet token (AES-128-CBC with HMAC-SHA256). Values are encrypted with the first key of ``FLOWGATE_ENCRYPTION_KEYS`` and
decrypted with any of them (MultiFernet), so keys can be rotated while the product runs:
add the new key first, restart, run ``manage.py rotate_secret_keys``, drop the old key.

Decrypted objects come back as ``SecretValues``, a dict whose ``repr`` and ``str`` show the
field names only, so a stray ``print`` or log line of a model never leaks them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.db import models

from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import EncryptionKeyError


class SecretValues(dict):
    """A dict of secret values that never shows them when printed."""

    def __repr__(self) -> str:
        return f"SecretValues({', '.join(sorted(self))})"

    __str__ = __repr__


@functools.lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise EncryptionKeyError("No encryption keys are configured: set FLOWGATE_ENCRYPTION_KEYS.")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise EncryptionKeyError(
            "FLOWGATE_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)."
        ) from None


def fernet() -> MultiFernet:
    return _multi_fernet(tuple(vault_settings.encryption_keys))


def encrypt_json(value: Any) -> str:
    return fernet().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def decrypt_json(token: str) -> Any:
    """The stored value: a JSON object as ``SecretValues``, any other JSON value as it is."""
    try:
        plaintext = fernet().decrypt(token.encode())
    except InvalidToken:
        raise EncryptionKeyError(
            "Stored secret values cannot be decrypted with FLOWGATE_ENCRYPTION_KEYS: "
            "a key that encrypted them is missing."
        ) from None
    value = json.loads(plaintext)
    return SecretValues(value) if isinstance(value, dict) else value


def rotate_token(token: str) -> str:
    """Re-encrypt a stored token with the newest key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise EncryptionKeyError("A stored value cannot be decrypted with any configured key.") from None


class EncryptedJSONField(models.TextField):
    """A JSON object encrypted as a whole; the database only ever sees ciphertext."""

    description = "Encrypted JSON object"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", SecretValues)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return decrypt_json(value)

    def to_python(self, value):
        if value is None or isinstance(value, SecretValues):
            return value
        if isinstance(value, dict):
            return SecretValues(value)
        if not isinstance(value, str):  # a step's exact output may be any JSON value
            return value
        return decrypt_json(value)

    def get_prep_value(self, value):
        if value is None:
            return None
        return encrypt_json(dict(value) if isinstance(value, dict) else value)

    def value_to_string(self, obj):
        # dumpdata and other serializers get ciphertext, never the values.
        return self.get_prep_value(self.value_from_object(obj))
