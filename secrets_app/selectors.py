"""Reads for views, the admin and the API."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from secrets_app.exceptions import SecretNotFound
from secrets_app.models import OAuth2Connection, Secret


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


@dataclass(frozen=True)
class DeletionPreview:
    """What deleting ``secret`` does besides removing it; ``revocation`` is "" when nothing."""

    secret: Secret
    revocation: str


def secret_deletion_previews(secrets: Iterable[Secret]) -> list[DeletionPreview]:
    """For the deletion confirmation pages: which secrets' tokens are revoked, and where."""
    secrets = list(secrets)
    oauth2_ids = [secret.pk for secret in secrets if secret.kind == "oauth2"]
    connections = {
        connection.secret_id: connection for connection in OAuth2Connection.objects.filter(secret__in=oauth2_ids)
    }
    previews = []
    for secret in secrets:
        connection = connections.get(secret.pk)
        revocation = ""
        if secret.kind == "oauth2":
            revocation_url = secret.config.get("revocation_url", "")
            if connection is None or not connection.tokens:
                revocation = "Not connected: no tokens to revoke."
            elif revocation_url:
                revocation = f"Its tokens are revoked at the provider ({urlsplit(revocation_url).netloc}) first."
            else:
                revocation = (
                    "The provider has no revocation endpoint: its tokens are removed here only and stay "
                    "valid at the provider until they expire."
                )
        previews.append(DeletionPreview(secret=secret, revocation=revocation))
    return previews
