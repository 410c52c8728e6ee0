"""Reads for views, the admin and the API."""

from typing import Any

from secrets_app.exceptions import SecretNotFound
from secrets_app.models import Secret


def secret_get(*, name: str) -> Secret:
    try:
        return Secret.objects.get(name=name)
    except Secret.DoesNotExist:
        raise SecretNotFound(name) from None


def published_jwks() -> dict[str, Any]:
    """The public keys of RS256 key pairs marked for publication, as a JWKS document."""
    keys = []
    for secret in Secret.objects.filter(kind="rs256").order_by("name"):
        if secret.config.get("publish") and secret.config.get("public_key"):
            keys.append(secret.handler.public_jwk())
    return {"keys": keys}
