"""Stored OAuth2 tokens: a fresh access token on demand, refreshed exactly once.

Providers that rotate refresh tokens revoke the whole grant when a spent refresh token
is used again, so two processes refreshing the same connection at the same moment
means a dead connection. The protocol here, the same on every database:

1. Read the connection. An access token valid for longer than the leeway is used as is.
2. Take the row's lease: ``UPDATE ... SET lease_owner = me WHERE version = <read> AND
   the lease is free or expired``. For a given version exactly one process wins.
3. The others wait with short sleeps until ``version`` changes and use the new token;
   if the winner failed meanwhile they report its error instead of trying again; if the
   winner died, its lease expires and one of them takes over.
4. The winner asks the provider, while a heartbeat thread keeps extending its lease (a
   lapsed lease with a request still in flight would let a second process send the
   same refresh token). It stores access token, rotated refresh token (or the old one
   when none came back), expiry and scope in one ``UPDATE ... WHERE version = <read>``
   that also bumps ``version`` and frees the lease.

No transaction or row lock is held while waiting for the provider, and SQLite (where
``select_for_update`` does nothing) behaves exactly like PostgreSQL.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from project.backoff import retry_delay
from project.heartbeat import Heartbeat
from secrets_app import metrics, signals
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import (
    NotConnected,
    ReauthorizationRequired,
    SecretMisconfigured,
    TokenEndpointUnavailable,
)
from secrets_app.models import OAuth2Connection, Secret
from secrets_app.oauth2.client import OAuth2Config, TokenResult, hooks_for
from secrets_app.services.audit import audit_record

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
#: A token is refreshed at the earliest once only this share of its lifetime is left, so
#: that a fixed leeway cannot exceed a short lifetime: with 30-second tokens and a 60 s
#: leeway every single use would refresh.
LEEWAY_SHARE_OF_LIFETIME = 1 / 3


def connection_for(secret: Secret) -> OAuth2Connection:
    connection, _created = OAuth2Connection.objects.get_or_create(secret=secret)
    connection.secret = secret
    return connection


def refresh_leeway(expires_in: float | None, *, at_most: float) -> float:
    """How long before expiry a token of lifetime ``expires_in`` (seconds, as issued) is due:
    ``at_most``, or less for a short-lived token (``LEEWAY_SHARE_OF_LIFETIME`` of it).
    Unknown lifetime (stored before lifetimes were kept): ``at_most``."""
    if expires_in is None:
        return at_most
    return min(at_most, expires_in * LEEWAY_SHARE_OF_LIFETIME)


def is_expiring(connection: OAuth2Connection) -> bool:
    if connection.expires_at is None:
        return False
    within = refresh_leeway(connection.expires_in, at_most=vault_settings.oauth2_refresh_leeway_seconds)
    return connection.expires_at <= timezone.now() + timedelta(seconds=within)


def failure_message(secret: Secret, reason: str, *, permanent: bool) -> str:
    """A refresh failure as users read it: raised, shown in step errors and stored as the
    connection's last error, naming the secret from the first failure on."""
    if permanent:
        return f"OAuth2 {secret.label} needs re-authorization: {reason}"
    return f"OAuth2 {secret.label}: {reason}"


def raise_unless_usable(connection: OAuth2Connection, config: OAuth2Config) -> None:
    label = f"OAuth2 {connection.secret.label}"
    status = connection.status
    if status == OAuth2Connection.Status.NEEDS_REAUTHORIZATION:
        # The last error is the message the failure raised, naming the secret (failure_message).
        raise ReauthorizationRequired(connection.last_error or f"{label} needs re-authorization; reconnect it.")
    if status == OAuth2Connection.Status.REVOKED and config.grant_type != "client_credentials":
        raise NotConnected(f"{label} was revoked; use 'Request access token' to connect it again.")
    if status == OAuth2Connection.Status.NOT_CONNECTED and config.grant_type != "client_credentials":
        raise NotConnected(f"{label} is not connected; use 'Request access token' in the admin.")


def access_token_get(secret: Secret, *, rejected_token: str | None = None) -> str:
    """A valid access token for ``secret``, refreshed first when it expires soon (within
    the leeway, which a short-lived token's lifetime caps: see ``refresh_leeway``).

    ``rejected_token``: the API just answered 401 to this token. It is refreshed unless
    another process already replaced it, so a burst of 401s causes one refresh.
    """
    connection = connection_for(secret)
    config = OAuth2Config.from_secret(secret)
    raise_unless_usable(connection, config)
    token = connection.tokens.get("access_token")
    if token and token != rejected_token and not is_expiring(connection):
        return token
    connection = refresh(connection, config)
    return connection.tokens["access_token"]


def refresh(stale: OAuth2Connection, config: OAuth2Config, *, attempts: int = MAX_ATTEMPTS) -> OAuth2Connection:
    """Refresh (or, for client credentials, fetch) the tokens of ``stale``'s version, once.

    Returns the connection as stored afterwards, by this process or another. A transient
    failure is retried in process up to ``attempts`` calls in all, for a caller waiting for
    the token now; a background caller with retries of its own (the proactive refresh
    task) passes 1, so that one outage costs one call per retry, not one per layer.
    """
    owner = uuid.uuid4().hex
    waiting_since = timezone.now()
    if not _take_lease(stale, owner, failed_before=waiting_since):
        current = _wait_for_refresher(stale, config, owner, waiting_since)
        if current is not None:
            return current
    try:
        with _LeaseKeeper(stale.pk, owner), metrics.oauth2_refresh_counted():
            result = _ask_provider(stale, config, attempts)
    except ReauthorizationRequired as exc:
        exc.args = (failure_message(stale.secret, str(exc), permanent=True),)
        _store_failure(stale, owner, str(exc), permanent=True)
        raise
    except (TokenEndpointUnavailable, SecretMisconfigured) as exc:
        exc.args = (failure_message(stale.secret, str(exc), permanent=False),)
        _store_failure(stale, owner, str(exc), permanent=False, retry_after=getattr(exc, "retry_after", None))
        raise
    except BaseException:
        _release_lease(stale, owner)
        raise
    return store_tokens(stale, result)


def _wait_for_refresher(
    stale: OAuth2Connection, config: OAuth2Config, owner: str, waiting_since: datetime
) -> OAuth2Connection | None:
    """Wait while another process refreshes ``stale``'s version.

    Returns the connection it stored, or None when this process took the lease over (the
    refresher died and its lease expired). A failure the refresher recorded after we
    started waiting is raised here, not retried: during a provider outage every waiter
    retrying in turn would multiply the calls by the number of waiters.
    """
    deadline = time.monotonic() + vault_settings.oauth2_refresh_lock_seconds * MAX_ATTEMPTS + 5
    polls = 0
    while True:
        polls += 1
        time.sleep(retry_delay(polls, base=0.04, cap=1.0))
        current = OAuth2Connection.objects.select_related("secret").get(pk=stale.pk)
        if current.version != stale.version:
            raise_unless_usable(current, config)
            return current
        if current.last_error_at and current.last_error_at >= waiting_since:
            raise TokenEndpointUnavailable(
                current.last_error or failure_message(stale.secret, "the refresh failed.", permanent=False)
            )
        if _take_lease(stale, owner, failed_before=waiting_since):
            return None
        if time.monotonic() > deadline:
            raise TokenEndpointUnavailable(
                failure_message(stale.secret, "timed out waiting for another process to refresh the token.", permanent=False)
            )


def _take_lease(connection: OAuth2Connection, owner: str, *, failed_before: datetime | None = None) -> bool:
    """Compare-and-set the lease on ``connection``'s version.

    ``failed_before``: only if no failure was recorded since then, in the same statement,
    so a waiter cannot slip in between the refresher's failure and its own check of it.
    """
    now = timezone.now()
    target = OAuth2Connection.objects.filter(pk=connection.pk, version=connection.version).filter(
        Q(lease_owner="") | Q(lease_expires_at__lt=now)
    )
    if failed_before is not None:
        target = target.filter(Q(last_error_at__isnull=True) | Q(last_error_at__lt=failed_before))
    lease = timedelta(seconds=vault_settings.oauth2_refresh_lock_seconds)
    return bool(target.update(lease_owner=owner, lease_expires_at=now + lease))


def _release_lease(connection: OAuth2Connection, owner: str) -> None:
    OAuth2Connection.objects.filter(pk=connection.pk, lease_owner=owner).update(lease_owner="", lease_expires_at=None)


class _LeaseKeeper(Heartbeat):
    """Extends a held refresh lease while the provider is being asked.

    A token request can outlast the lease (connect and read timeouts apply per socket
    operation, and retries sleep in between); if the lease lapsed meanwhile, a second
    process would send the same refresh token and a provider with reuse protection would
    revoke the grant.
    """

    def __init__(self, connection_pk: int, owner: str):
        super().__init__(interval=vault_settings.oauth2_refresh_lock_seconds / 3, name=f"oauth2-lease-{connection_pk}")
        self.connection_pk, self.owner = connection_pk, owner

    def beat(self) -> bool:
        lease = timedelta(seconds=vault_settings.oauth2_refresh_lock_seconds)
        return bool(
            OAuth2Connection.objects.filter(pk=self.connection_pk, lease_owner=self.owner).update(
                lease_expires_at=timezone.now() + lease
            )
        )


def _ask_provider(connection: OAuth2Connection, config: OAuth2Config, attempts: int) -> TokenResult:
    """Up to ``attempts`` calls to the provider, with backoff while the failure is transient."""
    hooks = hooks_for(config)
    refresh_token = connection.tokens.get("refresh_token")
    if config.grant_type != "client_credentials" and not refresh_token:
        raise ReauthorizationRequired("The access token expired and the provider gave no refresh token; reconnect.")
    for attempt in range(1, attempts + 1):
        try:
            if config.grant_type == "client_credentials":
                return hooks.fetch_client_credentials(config)
            return hooks.refresh(config, refresh_token=refresh_token)
        except TokenEndpointUnavailable as exc:
            pause = retry_delay(attempt, base=1.0, cap=3600, retry_after=exc.retry_after)
            if attempt == attempts or pause > 5:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def next_refresh_at(connection_id: int, expires_at: datetime | None, expires_in: float | None) -> datetime | None:
    """When the beat job should refresh: between half the window and the whole window
    before expiry, spread by the connection's id so that many connections issued at the
    same moment do not reach the provider together. The window is capped by the token's
    lifetime as use is (``refresh_leeway``): a token is never refreshed early in its life."""
    if expires_at is None:
        return None
    window = refresh_leeway(expires_in, at_most=vault_settings.oauth2_proactive_window_seconds)
    spread = (connection_id * 2654435761 % 2**32) / 2**32
    return expires_at - timedelta(seconds=window * (0.5 + 0.5 * spread))


def token_data_kept(extra: dict, config: OAuth2Config) -> dict:
    """What is kept of a token response's extra fields: those the secret's
    ``token_data_fields`` name (its preset fills them), or all the hooks returned."""
    if not config.token_data_fields:
        return dict(extra)
    return {name: extra[name] for name in config.token_data_fields if name in extra}


def refresh_token_expiry(result: TokenResult, config: OAuth2Config, now: datetime) -> datetime | None:
    """When the refresh token stored with ``result`` stops working: the provider's
    ``refresh_token_expires_in``, else the secret's idle-expiry rule (each use of the
    refresh token starts the idle time again). None: unknown, the stored date stands."""
    if result.refresh_token_expires_in:
        return now + timedelta(seconds=result.refresh_token_expires_in)
    if config.refresh_token_idle_days and config.grant_type != "client_credentials":
        return now + timedelta(days=config.refresh_token_idle_days)
    return None


def store_tokens(
    stale: OAuth2Connection,
    result: TokenResult,
    *,
    identity: str | None = None,
    connected: bool = False,
    acting_user=None,
) -> OAuth2Connection:
    """Save a provider's answer in one compare-and-set on ``stale.version``.

    ``connected``: the answer to a new authorization (not a refresh): nothing of the old
    grant is kept, and the identity and connection time are recorded.
    """
    now = timezone.now()
    tokens = {
        "access_token": result.token,
        "refresh_token": result.refresh_token or (None if connected else stale.tokens.get("refresh_token")),
        "id_token": result.id_token or (None if connected else stale.tokens.get("id_token")),
    }
    expires_in = round(result.expires_in) if result.expires_in else None
    expires_at = now + timedelta(seconds=expires_in) if expires_in else None
    changes = {
        "tokens": {key: value for key, value in tokens.items() if value},
        "token_type": result.token_type[:40],
        "expires_at": expires_at,
        "expires_in": expires_in,
        "status": OAuth2Connection.Status.CONNECTED,
        "version": F("version") + 1,
        "last_refreshed_at": now,
        "last_error": "",
        "last_error_at": None,
        "failure_count": 0,
        "lease_owner": "",
        "lease_expires_at": None,
        "next_refresh_at": next_refresh_at(stale.pk, expires_at, expires_in),
    }
    config = OAuth2Config.from_secret(stale.secret)
    if result.scope is not None or connected:
        changes["granted_scope"] = result.scope if result.scope is not None else config.scope
    if identity is not None:
        changes["identity"] = identity[:255]
    if result.extra or connected:
        changes["provider_data"] = token_data_kept(result.extra, config)
    reconnect_by = refresh_token_expiry(result, config, now)
    if reconnect_by is not None or connected:
        changes["reconnect_by"] = reconnect_by
    if connected:
        changes["connected_at"] = now
    # A new grant from the user always wins; a refresh only replaces the version it read.
    target = OAuth2Connection.objects.filter(pk=stale.pk)
    if not connected:
        target = target.filter(version=stale.version)
    with transaction.atomic():
        # Leaving a failure is recorded (and signalled) by the one UPDATE that does it:
        # concurrent stores (two reconnects, a refresh racing a reconnect) re-check the
        # condition after the first commits, so the others store without recovering.
        failed = Q(status=OAuth2Connection.Status.NEEDS_REAUTHORIZATION) | Q(failure_count__gt=0)
        recovered = bool(target.filter(failed).update(**changes))
        stored = recovered or target.update(**changes)
        if not stored:
            # Only when our lease expired mid-request and another process stored first.
            logger.warning(
                "OAuth2 secret %r: a concurrent refresh stored first; keeping its tokens.", stale.secret.name
            )
        else:
            audit_record(
                acting_user=acting_user,
                actor_label="oauth2",
                action="oauth2.connect" if connected else "oauth2.refresh",
                target_type="secret",
                target_name=stale.secret.name,
                detail={
                    "refresh_token_rotated": bool(result.refresh_token)
                    and result.refresh_token != stale.tokens.get("refresh_token")
                },
            )
            if recovered:
                audit_record(
                    actor_label="oauth2", action="oauth2.recovered", target_type="secret", target_name=stale.secret.name
                )
                secret = stale.secret
                transaction.on_commit(lambda: signals.oauth2_connection_recovered.send(sender=Secret, secret=secret))
    current = OAuth2Connection.objects.select_related("secret").get(pk=stale.pk)
    return current


def _store_failure(
    stale: OAuth2Connection, owner: str, reason: str, *, permanent: bool, retry_after: float | None = None
) -> None:
    now = timezone.now()
    changes = {
        "last_error": reason[:500],
        "last_error_at": now,
        "failure_count": F("failure_count") + 1,
        "lease_owner": "",
        "lease_expires_at": None,
    }
    target = OAuth2Connection.objects.filter(pk=stale.pk, lease_owner=owner)
    if permanent:
        changes.update(
            status=OAuth2Connection.Status.NEEDS_REAUTHORIZATION, version=F("version") + 1, next_refresh_at=None
        )
        # Entering "needs re-authorization" happens (and is signalled) once, whoever noticed.
        target = target.exclude(status=OAuth2Connection.Status.NEEDS_REAUTHORIZATION)
    else:
        backoff = max(retry_after or 0, 60 * min(2**stale.failure_count, 32))
        changes["next_refresh_at"] = now + timedelta(seconds=backoff)
    with transaction.atomic():
        if not target.update(**changes):
            _release_lease(stale, owner)
            return
        audit_record(
            actor_label="oauth2",
            action="oauth2.needs_reauthorization" if permanent else "oauth2.refresh_failed",
            target_type="secret",
            target_name=stale.secret.name,
            detail={"reason": reason[:300]},
        )
        if permanent:
            secret = stale.secret
            transaction.on_commit(
                lambda: signals.oauth2_connection_needs_reauthorization.send(
                    sender=Secret, secret=secret, reason=reason
                )
            )


def _acquire_lease(connection: OAuth2Connection) -> tuple[OAuth2Connection, str]:
    """Take the lease on whatever version is current (for revocation), waiting if held."""
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + vault_settings.oauth2_refresh_lock_seconds * MAX_ATTEMPTS + 5
    while True:
        current = OAuth2Connection.objects.select_related("secret").get(pk=connection.pk)
        if _take_lease(current, owner):
            return current, owner
        if time.monotonic() > deadline:
            raise TokenEndpointUnavailable("Timed out waiting for a refresh in progress.")
        time.sleep(retry_delay(1, base=0.1, cap=0.1))


def revoke(connection: OAuth2Connection, config: OAuth2Config) -> bool:
    """Revoke at the provider (refresh token first, then access token, RFC 7009) and
    forget the tokens. Returns whether the provider was asked (it has an endpoint).

    If the provider cannot be reached the tokens are kept, so revocation can be retried.
    """
    current, owner = _acquire_lease(connection)
    asked = bool(config.revocation_url)
    try:
        if asked:
            hooks = hooks_for(config)
            with _LeaseKeeper(current.pk, owner):
                for hint in ("refresh_token", "access_token"):
                    if current.tokens.get(hint):
                        hooks.revoke(config, token=current.tokens[hint], token_type_hint=hint)
    except BaseException:
        _release_lease(current, owner)
        raise
    OAuth2Connection.objects.filter(pk=current.pk, lease_owner=owner).update(
        tokens={},
        status=OAuth2Connection.Status.REVOKED,
        version=F("version") + 1,
        expires_at=None,
        next_refresh_at=None,
        last_error="",
        last_error_at=None,
        failure_count=0,
        lease_owner="",
        lease_expires_at=None,
    )
    return asked
