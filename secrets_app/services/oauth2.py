"""Connecting, refreshing, testing and revoking OAuth2 connections."""

from __future__ import annotations

import hashlib
import logging
import random
import secrets as random_secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from secrets_app import access
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import (
    AuthorizationFailed,
    OAuth2Error,
    ReauthorizationRequired,
    SecretNotFound,
    VaultError,
)
from secrets_app.kinds.base import ProbeResult
from secrets_app.models import OAuth2AuthorizationRequest, OAuth2Connection, Secret
from secrets_app.oauth2 import pkce, tokens
from secrets_app.oauth2.client import OAuth2Config, hooks_for
from secrets_app.oauth2.identity import identity_resolve
from secrets_app.schedules import proactive_refresh_interval_seconds
from secrets_app.services.audit import audit_record
from secrets_app.services.secrets import secret_probe

logger = logging.getLogger(__name__)

#: Client settings whose change can undo the provider's refusal of the client.
CLIENT_FIELDS = frozenset({"client_id", "client_secret", "client_auth", "token_url"})


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def oauth2_redirect_uri(*, secret: Secret) -> str:
    """The URI to register at the provider: its own (an app's, shared by its connections),
    or one built from BASE_URL and the secret's name."""
    return secret.config.get("redirect_uri") or f"{vault_settings.base_url}/oauth/{secret.name}/callback/"


def oauth2_authorization_secret(*, state: str) -> Secret | None:
    """The secret an authorization attempt was started for (a shared redirect URI's callback
    learns it from ``state``); None for an unknown state. Checks happen on completion."""
    attempt = OAuth2AuthorizationRequest.objects.select_related("secret").filter(state_hash=_hash(state)).first()
    return attempt.secret if attempt is not None else None


def oauth2_secret_get(*, name: str) -> Secret:
    secret = Secret.objects.filter(name=name, kind="oauth2").first()
    if secret is None:
        raise SecretNotFound(name)
    return secret


def oauth2_authorization_start(*, secret: Secret, user, session_key: str, bound_to: str = "") -> str:
    """Record a new authorization attempt and return the provider URL to send the user to.

    ``bound_to``: a caller that checked its own authority (a connect link) starts one for no
    user; only a completion in the same session naming the same ``bound_to`` finishes it."""
    if user is None and not bound_to:
        raise OAuth2Error("An authorization without a user must be bound to what started it.")
    access.require_manage(user, secret)
    config = OAuth2Config.from_secret(secret)
    if config.grant_type != "authorization_code":
        raise OAuth2Error(f"OAuth2 secret {secret.name!r} uses client credentials; it connects without a browser.")
    state = random_secrets.token_urlsafe(32)
    verifier = pkce.code_verifier() if config.pkce else None
    redirect_uri = oauth2_redirect_uri(secret=secret)
    url = hooks_for(config).authorization_url(
        config,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=pkce.code_challenge(verifier) if verifier else None,
    )
    now = timezone.now()
    OAuth2AuthorizationRequest.objects.filter(expires_at__lt=now).delete()
    OAuth2AuthorizationRequest.objects.create(
        state_hash=_hash(state),
        secret=secret,
        user=user,
        bound_to=bound_to,
        session_hash=_hash(session_key),
        pkce={"code_verifier": verifier} if verifier else {},
        redirect_uri=redirect_uri,
        requested_scope=config.scope,
        expires_at=now + timedelta(seconds=vault_settings.oauth2_state_lifetime_seconds),
    )
    audit_record(acting_user=user, action="oauth2.authorize", target_type="secret", target_name=secret.name)
    return url


@dataclass
class AuthorizationOutcome:
    secret: Secret
    connection: OAuth2Connection
    warnings: list[str] = field(default_factory=list)


def _consume(state: str, secret_name: str, user, session_key: str, bound_to: str) -> OAuth2AuthorizationRequest:
    """The attempt ``state`` belongs to, consumed (single use) and checked against the caller."""
    attempt = OAuth2AuthorizationRequest.objects.select_related("secret").filter(state_hash=_hash(state)).first()
    consumed = attempt is not None and OAuth2AuthorizationRequest.objects.filter(
        pk=attempt.pk, consumed_at__isnull=True
    ).update(consumed_at=timezone.now())
    if not consumed:
        raise AuthorizationFailed("This authorization attempt is unknown or was already used. Start again.")
    if (
        attempt.user_id != getattr(user, "pk", None)
        or attempt.bound_to != bound_to
        or attempt.session_hash != _hash(session_key or "")
    ):
        raise AuthorizationFailed("This authorization was started in another session. Start again from the admin.")
    if attempt.expires_at < timezone.now():
        raise AuthorizationFailed("This authorization attempt expired. Start again.")
    if attempt.secret.name != secret_name:
        raise AuthorizationFailed("This authorization was started for another secret. Start again.")
    return attempt


def _check_issuer(config: OAuth2Config, params: Mapping[str, str]) -> str | None:
    """RFC 9207: the ``iss`` parameter must be the configured issuer, character for character.

    Checked before anything else in the answer, errors included: an answer from another
    issuer (a mix-up attack) must not even be reported as that provider's error. Returns
    a warning when the provider names an issuer but the secret has none to compare with.
    """
    iss = params.get("iss")
    if iss is None:
        if config.require_iss:
            raise AuthorizationFailed("The provider's answer has no 'iss' parameter, which this secret requires.")
        return None
    if not config.issuer:
        return (
            f"The provider identifies itself as issuer {iss[:200]!r}, but this secret has no issuer URL to check "
            "that against (RFC 9207). Set the secret's issuer URL if this is your provider."
        )
    if iss != config.issuer:
        raise AuthorizationFailed("The answer came from a different issuer than this secret's. Nothing was stored.")
    return None


def oauth2_authorization_complete(
    *, secret_name: str, user, session_key: str, params: Mapping[str, str], bound_to: str = ""
) -> AuthorizationOutcome:
    """Check the provider's redirect, exchange the code, store the tokens.

    Raises AuthorizationFailed with a reason fit for the user; no token is stored then,
    and once the attempt is known to be the caller's, the reason is recorded as the
    connection's last error.
    """
    state = params.get("state")
    if not state:
        raise AuthorizationFailed("The provider's answer has no state parameter.")
    with transaction.atomic():
        attempt = _consume(state, secret_name, user, session_key, bound_to)
    try:
        return _authorization_finish(attempt, user=user, params=params)
    except AuthorizationFailed as exc:
        # The attempt was this user's: what went wrong belongs on the tokens page.
        _connection_error_record(attempt.secret, str(exc))
        raise


def _connection_error_record(secret: Secret, reason: str) -> None:
    connection = tokens.connection_for(secret)
    message = tokens.failure_message(secret, reason, permanent=False)
    OAuth2Connection.objects.filter(pk=connection.pk).update(last_error=message[:500], last_error_at=timezone.now())


def _authorization_finish(
    attempt: OAuth2AuthorizationRequest, *, user, params: Mapping[str, str]
) -> AuthorizationOutcome:
    secret = attempt.secret
    config = OAuth2Config.from_secret(secret)
    issuer_warning = _check_issuer(config, params)
    error = params.get("error")
    if error:
        audit_record(
            acting_user=user,
            action="oauth2.authorize_failed",
            target_type="secret",
            target_name=secret.name,
            detail={"error": error[:50]},
        )
        if error == "access_denied":
            raise AuthorizationFailed("Access was denied at the provider; nothing changed.")
        description = (params.get("error_description") or "")[:200]
        raise AuthorizationFailed(f"The provider answered '{error[:50]}'{f': {description}' if description else ''}.")
    code = params.get("code")
    if not code:
        raise AuthorizationFailed("The provider's answer has no authorization code.")
    try:
        result = hooks_for(config).exchange_code(
            config,
            code=code,
            redirect_uri=attempt.redirect_uri,
            code_verifier=attempt.pkce.get("code_verifier"),
            callback={key: params[key] for key in params},
        )
    except ReauthorizationRequired as exc:
        raise AuthorizationFailed(f"The provider refused the code: {exc}") from None
    except VaultError as exc:  # the provider, the network, or a refused endpoint (SecretMisconfigured)
        raise AuthorizationFailed(f"The code could not be exchanged: {exc}") from None
    identity, identity_warning = identity_resolve(config, result)
    previous = tokens.connection_for(secret)
    connection = tokens.store_tokens(previous, result, identity=identity or "", connected=True, acting_user=user)
    warnings = []

    def previous_grant_revoke():
        warning = _previous_grant_revoke(previous, connection, config, acting_user=user)
        if warning:
            warnings.append(warning)

    # Only once the new tokens are committed: revoking first and then losing them would
    # leave no grant at all. The callback opens no transaction, so this runs right here
    # and its warning reaches the user.
    transaction.on_commit(previous_grant_revoke)
    if not connection.has_refresh_token:
        warnings.append(
            "No refresh token came back: the connection stops working when the access token expires. "
            "Providers usually issue one only for a scope such as offline_access or offline.access, "
            "or a parameter such as access_type=offline."
        )
    missing = sorted(set(attempt.requested_scope.split()) - set(connection.granted_scope.split()))
    if missing:
        warnings.append(f"The provider granted fewer scopes than requested; missing: {' '.join(missing)}.")
    if identity_warning:
        warnings.append(identity_warning)
    if issuer_warning:
        warnings.append(issuer_warning)
    return AuthorizationOutcome(secret=secret, connection=connection, warnings=warnings)


def _previous_grant_revoke(
    previous: OAuth2Connection, current: OAuth2Connection, config: OAuth2Config, *, acting_user
) -> str | None:
    """After a reconnect, revoke the refresh token of the grant the new tokens replaced, so
    that the old grant does not stay alive at the provider with nothing here to use or
    revoke it (RFC 7009). Never undoes the new connection: a failure is logged, audited and
    returned as a warning for the user.
    """
    replaced = previous.tokens.get("refresh_token")
    if not replaced or replaced == current.tokens.get("refresh_token") or not config.revocation_url:
        return None
    hooks = hooks_for(config)
    if hooks.revocation_ends_the_grant and (not previous.identity or previous.identity == current.identity):
        return None  # the same account's grant: revoking the old token would end the new connection too
    secret = current.secret
    try:
        hooks.revoke(config, token=replaced, token_type_hint="refresh_token")
    except VaultError as exc:
        reason = f"The previous grant's refresh token could not be revoked at the provider ({exc}); revoke it there."
        logger.warning("OAuth2 %s: %s", secret.label, reason)
        audit_record(
            acting_user=acting_user,
            action="oauth2.revoke_replaced_failed",
            target_type="secret",
            target_name=secret.name,
            detail={"reason": str(exc)[:300]},
        )
        return reason
    audit_record(acting_user=acting_user, action="oauth2.revoke_replaced", target_type="secret", target_name=secret.name)
    return None


def oauth2_connection_refresh(*, secret: Secret, acting_user=None) -> OAuth2Connection:
    """Refresh now (or, for client credentials, fetch a token). Raises the refresh's error."""
    access.require_manage(acting_user, secret)
    connection = tokens.connection_for(secret)
    config = OAuth2Config.from_secret(secret)
    if config.grant_type == "authorization_code" and not connection.has_refresh_token:
        raise ReauthorizationRequired(f"OAuth2 secret {secret.name!r} has no refresh token; request an access token.")
    audit_record(
        acting_user=acting_user, action="oauth2.refresh_requested", target_type="secret", target_name=secret.name
    )
    return tokens.refresh(connection, config)


def oauth2_connection_revoke(*, secret: Secret, acting_user=None) -> str:
    """Revoke at the provider and forget the tokens. Returns a note for the user."""
    access.require_manage(acting_user, secret)
    connection = OAuth2Connection.objects.filter(secret=secret).first()
    if connection is None or not connection.tokens:
        return "There were no tokens to revoke."
    try:
        asked = tokens.revoke(connection, OAuth2Config.from_secret(secret))
    except VaultError as exc:  # the tokens are kept; the tokens page says why
        _connection_error_record(secret, f"Revocation failed: {exc}")
        raise
    audit_record(
        acting_user=acting_user,
        action="oauth2.revoke",
        target_type="secret",
        target_name=secret.name,
        detail={"at_provider": asked},
    )
    if not asked:
        return "The provider has no revocation endpoint: the tokens were removed here only."
    return "The tokens were revoked at the provider and removed here."


def oauth2_connection_test(*, secret: Secret, acting_user=None) -> ProbeResult:
    return secret_probe(secret=secret, acting_user=acting_user)


#: How long a handed-out connection is left alone after its refresh time, in case its
#: task is lost; a refresh (or a failure) sets the real next time long before.
CLAIM_SECONDS = 10 * 60
CLAIM_BATCH_SIZE = 500


def _due_refreshes_claim(*, until, claimed_until, batch_size: int) -> list[tuple[int, int, datetime]]:
    """One batch of connections whose refresh time is before ``until``, as (id, version,
    refresh time), claimed by moving ``next_refresh_at`` to ``claimed_until`` so that the
    next beat run does not hand them out again while their tasks wait in the queue.
    Rows another beat run is claiming at the same moment are skipped (PostgreSQL)."""
    with transaction.atomic():
        due = list(
            OAuth2Connection.objects.select_for_update(skip_locked=True)
            .filter(status=OAuth2Connection.Status.CONNECTED, next_refresh_at__lte=until)
            .order_by("next_refresh_at")
            .values_list("pk", "version", "next_refresh_at")[:batch_size]
        )
        OAuth2Connection.objects.filter(pk__in=[pk for pk, _, _ in due]).update(next_refresh_at=claimed_until)
    return due


def oauth2_due_refreshes_schedule(*, enqueue, interval_seconds: float | None = None) -> int:
    """Hand every connection whose refresh time comes before the next beat run to
    ``enqueue(connection_id, version, countdown)``. Returns how many were handed out.

    ``interval_seconds``: how often beat runs this; by default read from its beat entry,
    which an admin may change. Everything due is handed out, batch after batch, so ten
    thousand connections issued together are all refreshed in time. Each connection is
    refreshed at its own moment (its ``next_refresh_at``, already spread by
    ``tokens.next_refresh_at``); those already late (beat was down, a backoff ended) are
    spread at random over one interval, so they do not reach the provider in one burst.
    """
    if interval_seconds is None:
        interval_seconds = proactive_refresh_interval_seconds()
    until = timezone.now() + timedelta(seconds=interval_seconds)
    claimed_until = until + timedelta(seconds=CLAIM_SECONDS)
    handed_out = 0
    while due := _due_refreshes_claim(until=until, claimed_until=claimed_until, batch_size=CLAIM_BATCH_SIZE):
        now = timezone.now()
        for connection_id, version, refresh_at in due:
            countdown = (refresh_at - now).total_seconds()
            enqueue(connection_id, version, countdown if countdown > 0 else random.uniform(0, interval_seconds))
        handed_out += len(due)
    return handed_out


def oauth2_connection_client_changed(*, secret: Secret, changed: list[str], acting_user=None) -> bool:
    """Let a connection the provider refused try again once the client settings changed.

    ``invalid_client`` (a wrong or rotated client secret) moves a connection to "needs
    re-authorization" although the user's grant may be intact. When client id, secret,
    authentication or token URL changed and a refresh token is still stored, the
    connection goes back to connected with its access token treated as expired: the
    next use, or the beat job at once, refreshes. Success confirms the fix; another
    refusal moves it back with the provider's reason. Returns whether it was reset.
    """
    if not CLIENT_FIELDS.intersection(changed):
        return False
    connection = OAuth2Connection.objects.filter(secret=secret).first()
    if (
        connection is None
        or connection.status != OAuth2Connection.Status.NEEDS_REAUTHORIZATION
        or not connection.has_refresh_token
    ):
        return False
    now = timezone.now()
    reset = OAuth2Connection.objects.filter(pk=connection.pk, version=connection.version).update(
        status=OAuth2Connection.Status.CONNECTED,
        version=F("version") + 1,
        expires_at=now,
        next_refresh_at=now,
        last_error="The client settings changed; not verified yet: the next refresh tries them.",
        last_error_at=None,
    )
    if reset:
        audit_record(
            acting_user=acting_user,
            action="oauth2.client_changed",
            target_type="secret",
            target_name=secret.name,
            detail={"changed": sorted(CLIENT_FIELDS.intersection(changed))},
        )
    return bool(reset)


def oauth2_connection_refresh_due(*, connection_id: int, version: int) -> str:
    """Refresh a connection the beat job handed out, unless someone already did.

    Returns what happened: refreshed, skipped (already refreshed or not connected).
    Raises TokenEndpointUnavailable for a transient failure (the task retries).
    """
    connection = OAuth2Connection.objects.select_related("secret").filter(pk=connection_id).first()
    if connection is None or connection.version != version or connection.status != OAuth2Connection.Status.CONNECTED:
        return "skipped"
    config = OAuth2Config.from_secret(connection.secret)
    if config.grant_type == "authorization_code" and not connection.has_refresh_token:
        return "skipped"
    try:
        tokens.refresh(connection, config, attempts=1)  # the task's retries are the one retry layer here
    except ReauthorizationRequired:
        return "needs re-authorization"
    return "refreshed"
