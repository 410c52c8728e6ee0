"""HS256 secret: a shared key for HMAC-SHA256 JWTs and ``dir``/A256GCM JWEs.

The key is the UTF-8 bytes of the text, or the decoded bytes when the encoding is
base64url (what "Generate" produces). RFC 7518 §3.2 asks for at least 32 bytes; JWE with
``dir`` and A256GCM uses the key as the content key, so it must be exactly 32 bytes.
"""

import base64
import binascii
import re
import secrets

from django.core.exceptions import ValidationError
from jwcrypto import jwk

from project.declarative import Field
from secrets_app.exceptions import SecretMisconfigured
from secrets_app.kinds.base import JoseKind, SharedKeyKind

MIN_KEY_BYTES = 32
JWE_KEY_BYTES = 32
#: RFC 4648 §5, padding optional. The decoder skips other characters without a word, which
#: would make a key that is not what the other party holds.
BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _key_bytes(secret: str, encoding: str) -> bytes:
    if encoding == "base64url":
        return base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    return secret.encode()


def generate_secret() -> str:
    """A new 32-byte key, base64url-encoded (use with encoding ``base64url``)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(JWE_KEY_BYTES)).decode().rstrip("=")


class Hs256(JoseKind, SharedKeyKind):
    slug = "hs256"
    label = "HS256 secret"
    description = "A shared key to sign and verify HS256 JWTs and to encrypt JWEs (dir, A256GCM)."
    algorithm = "HS256"
    key_management = "dir"
    fields = (
        Field("secret", "Secret", secret=True, help_text="At least 32 bytes."),
        Field(
            "encoding",
            "Encoding",
            type="choice",
            choices=(("text", "Text (UTF-8 bytes)"), ("base64url", "base64url-encoded bytes")),
            default="text",
        ),
    )

    @classmethod
    def validate(cls, config, values):
        if config["encoding"] == "base64url" and not BASE64URL.fullmatch(values["secret"]):
            raise ValidationError({"secret": "Not valid base64url: use only letters, digits, '-' and '_' (and '=' at the end)."})
        try:
            key = _key_bytes(values["secret"], config["encoding"])
        except (binascii.Error, ValueError) as exc:  # the reason never quotes the key
            raise ValidationError({"secret": f"Not valid base64url: {exc}."}) from None
        if len(key) < MIN_KEY_BYTES:
            raise ValidationError({"secret": f"The key has {len(key)} bytes; HS256 needs at least {MIN_KEY_BYTES}."})

    def shared_key(self) -> bytes:
        return _key_bytes(self.value("secret"), self.value("encoding", "text"))

    def _key(self) -> jwk.JWK:
        from secrets_app import jose

        return jose.symmetric_key(self.shared_key())

    def signing_key(self):
        return self._key()

    def verification_keys(self, kid=None):
        keyset = jwk.JWKSet()
        keyset.add(self._key())
        return keyset

    def encryption_key(self):
        key_bytes = self.shared_key()
        if len(key_bytes) != JWE_KEY_BYTES:
            raise SecretMisconfigured(
                f"Secret {self.name!r}: JWE with dir/A256GCM needs a key of exactly {JWE_KEY_BYTES} bytes; "
                f"this one has {len(key_bytes)}. Generate a new secret (base64url) to use JWE."
            )
        return self._key()

    decryption_key = encryption_key
