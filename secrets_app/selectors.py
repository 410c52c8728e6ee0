"""Reads for views, the admin and the API."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.db.models import Q

from secrets_app.exceptions import SecretNotFound
from secrets_app.models import AuditEvent, OAuth2Connection, Secret


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


def secret_rename_consequences(*, secret: Secret, name: str) -> list[str]:
    """What renaming ``secret`` to ``name`` breaks or changes, in words for the user: the
    flows that name it (its bindings) and what its kind says (an OAuth2 redirect URI)."""
    if name == secret.name:
        return []
    holders = sorted(str(binding) for binding in secret.bindings.select_related("holder_type"))
    consequences = []
    if holders:
        consequences.append(
            f"These name it and stop finding it until they are changed to {name!r}: {', '.join(holders)}."
        )
    return consequences + secret.handler.rename_consequences(name)


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


@dataclass(frozen=True)
class ConnectionProblem:
    """A secret the front page lists under "needs attention", with why and since when."""

    secret_id: int
    name: str
    problem: str
    since: datetime | None
    is_oauth2: bool


def connections_needing_attention(*, limit: int = 10) -> list[ConnectionProblem]:
    """Secrets whose Test failed and OAuth2 connections that are not connected, revoked,
    need re-authorization or keep failing to refresh: one query."""
    Status = OAuth2Connection.Status
    troubled = (
        Q(status=Secret.Status.FAILING)
        | Q(oauth2_connection__status__in=[Status.NOT_CONNECTED, Status.NEEDS_REAUTHORIZATION, Status.REVOKED])
        | Q(oauth2_connection__failure_count__gt=0)
    )
    problems = []
    for secret in Secret.objects.filter(troubled).select_related("oauth2_connection").order_by("name")[:limit]:
        connection = getattr(secret, "oauth2_connection", None)
        if connection is not None and connection.status != Status.CONNECTED:
            detail = f": {connection.last_error}" if connection.last_error else ""
            problem, since = f"{connection.get_status_display()}{detail}", connection.last_error_at
        elif connection is not None and connection.failure_count:
            problem = f"Refresh failed {connection.failure_count} times: {connection.last_error}"
            since = connection.last_error_at
        else:
            problem, since = f"Test failed: {secret.status_detail or 'no detail'}", secret.last_tested_at
        problems.append(ConnectionProblem(secret.pk, secret.name, problem, since, connection is not None))
    return problems


def secrets_exist() -> bool:
    return Secret.objects.exists()


#: Audit actions that say a token was refreshed for a secret, or that refreshing it failed.
REFRESH_ACTIONS = ("oauth2.refresh", "oauth2.refresh_failed", "oauth2.needs_reauthorization")


def token_refreshes(*, names: Iterable[str], since, until) -> list[AuditEvent]:
    """Refreshes (and failed ones) of these secrets' tokens between ``since`` and ``until``, oldest first."""
    return list(
        AuditEvent.objects.filter(
            action__in=REFRESH_ACTIONS, target_type="secret", target_name__in=set(names), at__gte=since, at__lte=until
        ).order_by("at", "id")
    )
