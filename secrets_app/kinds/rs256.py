"""RS256 key pair: RSA keys for RS256 JWTs and RSA-OAEP-256/A256GCM JWEs.

Three ways to hold it:
- a private key (generated here, or pasted as PEM): signs, verifies, encrypts, decrypts;
  its public key can be published at ``/.well-known/jwks.json``;
- a public key only: verifies and encrypts, for tokens issued elsewhere;
- a JWKS URL: verifies tokens of an issuer that publishes its keys (downloaded through
  the outbound guard, cached, fetched again when a token names an unknown ``kid``).
"""

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from jwcrypto import jwk

from project.declarative import Field
from secrets_app.app_settings import vault_settings
from secrets_app.kinds.base import Capability, CleanedSecret, JoseKind


class Rs256(JoseKind):
    slug = "rs256"
    label = "RS256 key pair"
    description = (
        "RSA keys to sign and verify RS256 JWTs and to encrypt JWEs; or a public key or JWKS URL to verify only."
    )
    algorithm = "RS256"
    key_management = "RSA-OAEP-256"
    capabilities = frozenset({Capability.GENERATE_KEY})
    fields = (
        Field(
            "private_key",
            "Private key (PEM)",
            type="textarea",
            secret=True,
            required=False,
            help_text="An unencrypted RSA private key of at least 2048 bits; or use 'Generate key pair'.",
        ),
        Field(
            "public_key",
            "Public key (PEM)",
            type="textarea",
            required=False,
            help_text="Derived from the private key when there is one; paste one alone to verify only.",
        ),
        Field(
            "jwks_url",
            "JWKS URL",
            type="url",
            required=False,
            help_text="Verify tokens with the keys an issuer publishes (instead of a key here).",
        ),
        Field(
            "publish",
            "Publish public key",
            type="boolean",
            default=False,
            help_text="List the public key at /.well-known/jwks.json.",
        ),
    )

    @classmethod
    def clean(cls, data: Mapping[str, Any], previous: CleanedSecret | None = None) -> CleanedSecret:
        """``generate: true`` creates a private key when there is none yet (idempotent)."""
        from secrets_app import jose

        data = dict(data)
        generate = data.pop("generate", False)
        if generate is True or str(generate).lower() in {"true", "on", "1"}:
            has_key = bool(data.get("private_key")) or bool(previous and previous.values.get("private_key"))
            if not has_key:
                data["private_key"] = jose.generate_rsa_private_pem(vault_settings.generated_rsa_bits)
                data["public_key"] = ""
        return super().clean(data, previous)

    @classmethod
    def validate(cls, config, values):
        from secrets_app import jose

        private_pem, public_text, jwks_url = values.get("private_key"), config.get("public_key"), config.get("jwks_url")
        if private_pem:
            try:
                key = jose.rsa_key_from_pem(private_pem, private=True)
            except ValueError as exc:
                raise ValidationError({"private_key": str(exc)}) from None
            config["public_key"] = jose.public_pem(key)
        elif public_text:
            try:
                jose.rsa_key_from_pem(public_text, private=False)
            except ValueError as exc:
                raise ValidationError({"public_key": str(exc)}) from None
        elif not jwks_url:
            raise ValidationError(
                {"private_key": "Give a private key, a public key or a JWKS URL (or generate a key pair)."}
            )
        if jwks_url and (private_pem or public_text):
            raise ValidationError({"jwks_url": "Use either a key or a JWKS URL, not both."})
        if config.get("publish") and not private_pem:
            raise ValidationError({"publish": "Only a key pair held here can be published."})

    @classmethod
    def exportable_config(cls, config, values):
        if values.get("private_key"):
            config.pop("public_key", None)
        return config

    def _public_key(self) -> jwk.JWK:
        from secrets_app import jose

        pem = self.value("public_key")
        if not pem:
            raise self.refuse("it holds no key, only a JWKS URL")
        return jose.public_key(pem)

    def signing_key(self):
        from secrets_app import jose

        pem = self.value("private_key")
        if not pem:
            raise self.refuse("it holds no private key to sign with")
        return jose.with_key_id(jose.rsa_key_from_pem(pem, private=True))

    decryption_key = signing_key

    def encryption_key(self):
        return self._public_key()

    def verification_keys(self, kid=None):
        from secrets_app import jose

        url = self.value("jwks_url")
        if url:
            return jose.jwks_cache.keys(url, kid=kid)
        keyset = jwk.JWKSet()
        keyset.add(self._public_key())
        return keyset

    def public_jwk(self) -> dict[str, Any]:
        return {**self._public_key().export_public(as_dict=True), "alg": "RS256", "use": "sig"}
