"""Reads for views, the admin and the API."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q

from secrets_app.exceptions import SecretNotFound
from secrets_app.kinds import SECRET_KINDS
from secrets_app.kinds.base import SecretKind
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
    """What deleting ``secret`` does besides removing it, as its kind says; ``note`` is "" when nothing."""

    secret: Secret
    note: str


def secret_deletion_previews(secrets: Iterable[Secret]) -> list[DeletionPreview]:
    """For the deletion confirmation pages: each kind previews its secrets, all at once."""
    secrets = list(secrets)
    by_kind: dict[type[SecretKind], list[Secret]] = {}
    for secret in secrets:
        by_kind.setdefault(SECRET_KINDS[secret.kind], []).append(secret)
    notes = {}
    for kind_class, of_kind in by_kind.items():
        notes.update(zip([secret.pk for secret in of_kind], kind_class.deletion_previews(of_kind), strict=True))
    return [DeletionPreview(secret=secret, note=notes[secret.pk]) for secret in secrets]


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
