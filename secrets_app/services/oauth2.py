"""Connecting, refreshing, testing and revoking OAuth2 connections."""

from __future__ import annotations

import hashlib
import random
import secrets as random_secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import (
    AuthorizationFailed,
    OAuth2Error,
    ReauthorizationRequired,
    SecretNotFound,
    TokenEndpointUnavailable,
)
from secrets_app.kinds.base import ProbeResult
from secrets_app.models import OAuth2AuthorizationRequest, OAuth2Connection, Secret
from secrets_app.oauth2 import pkce, tokens
from secrets_app.oauth2.client import OAuth2Config, hooks_for
from secrets_app.oauth2.identity import identity_resolve
from secrets_app.services.audit import audit_record
from secrets_app.services.secrets import secret_probe


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def oauth2_redirect_uri(*, secret: Secret) -> str:
    """The URI to register at the provider: built from BASE_URL, right behind a proxy."""
    return f"{vault_settings.base_url}/oauth/{secret.name}/callback/"


def oauth2_secret_get(*, name: str) -> Secret:
    secret = Secret.objects.filter(name=name, kind="oauth2").first()
    if secret is None:
        raise SecretNotFound(name)
    return secret


def oauth2_authorization_start(*, secret: Secret, user, session_key: str) -> str:
    """Record a new authorization attempt and return the provider URL to send the user to."""
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


def _consume(state: str, secret_name: str, user, session_key: str) -> OAuth2AuthorizationRequest:
    """The attempt ``state`` belongs to, consumed (single use) and checked against the caller."""
    attempt = OAuth2AuthorizationRequest.objects.select_related("secret").filter(state_hash=_hash(state)).first()
    consumed = attempt is not None and OAuth2AuthorizationRequest.objects.filter(
        pk=attempt.pk, consumed_at__isnull=True
    ).update(consumed_at=timezone.now())
    if not consumed:
        raise AuthorizationFailed("This authorization attempt is unknown or was already used. Start again.")
    if attempt.user_id != getattr(user, "pk", None) or attempt.session_hash != _hash(session_key or ""):
        raise AuthorizationFailed("This authorization was started in another session. Start again from the admin.")
    if attempt.expires_at < timezone.now():
        raise AuthorizationFailed("This authorization attempt expired. Start again.")
    if attempt.secret.name != secret_name:
        raise AuthorizationFailed("This authorization was started for another secret. Start again.")
    return attempt


def _check_issuer(config: OAuth2Config, params: Mapping[str, str]) -> None:
    """RFC 9207: the ``iss`` parameter must be the configured issuer, character for character."""
    iss = params.get("iss")
    if iss is None:
        if config.require_iss:
            raise AuthorizationFailed("The provider's answer has no 'iss' parameter, which this secret requires.")
        return
    if config.issuer and iss != config.issuer:
        raise AuthorizationFailed("The answer came from a different issuer than this secret's. Nothing was stored.")


def oauth2_authorization_complete(
    *, secret_name: str, user, session_key: str, params: Mapping[str, str]
) -> AuthorizationOutcome:
    """Check the provider's redirect, exchange the code, store the tokens.

    Raises AuthorizationFailed with a reason fit for the user; nothing is stored then.
    """
    state = params.get("state")
    if not state:
        raise AuthorizationFailed("The provider's answer has no state parameter.")
    with transaction.atomic():
        attempt = _consume(state, secret_name, user, session_key)
    secret = attempt.secret
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
    config = OAuth2Config.from_secret(secret)
    _check_issuer(config, params)
    code = params.get("code")
    if not code:
        raise AuthorizationFailed("The provider's answer has no authorization code.")
    try:
        result = hooks_for(config).exchange_code(
            config, code=code, redirect_uri=attempt.redirect_uri, code_verifier=attempt.pkce.get("code_verifier")
        )
    except ReauthorizationRequired as exc:
        raise AuthorizationFailed(f"The provider refused the code: {exc}") from None
    except (TokenEndpointUnavailable, OAuth2Error) as exc:
        raise AuthorizationFailed(f"The code could not be exchanged: {exc}") from None
    identity, identity_warning = identity_resolve(config, result)
    connection = tokens.store_tokens(
        tokens.connection_for(secret), result, identity=identity or "", connected=True, acting_user=user
    )
    warnings = []
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
    return AuthorizationOutcome(secret=secret, connection=connection, warnings=warnings)


def oauth2_connection_refresh(*, secret: Secret, acting_user=None) -> OAuth2Connection:
    """Refresh now (or, for client credentials, fetch a token). Raises the refresh's error."""
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
    connection = OAuth2Connection.objects.filter(secret=secret).first()
    if connection is None or not connection.tokens:
        return "There were no tokens to revoke."
    asked = tokens.revoke(connection, OAuth2Config.from_secret(secret))
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


def oauth2_due_refreshes_claim(*, batch_size: int = 500) -> list[tuple[int, int]]:
    """Connections whose proactive refresh time has come, as (id, version).

    Claimed by moving ``next_refresh_at`` forward, so the next beat does not hand them
    out again while their refresh task waits in the queue.
    """
    now = timezone.now()
    due = list(
        OAuth2Connection.objects.filter(status=OAuth2Connection.Status.CONNECTED, next_refresh_at__lte=now)
        .order_by("next_refresh_at")
        .values_list("pk", "version")[:batch_size]
    )
    OAuth2Connection.objects.filter(pk__in=[pk for pk, _ in due], next_refresh_at__lte=now).update(
        next_refresh_at=now + timedelta(minutes=10)
    )
    return due


def oauth2_due_refreshes_schedule(*, enqueue, interval_seconds: float = 60.0) -> int:
    """Hand every due connection to ``enqueue(connection_id, version, countdown)``, spread
    at random over one beat interval so that thousands of connections issued together
    do not reach a provider in the same second. Returns how many were handed out."""
    due = oauth2_due_refreshes_claim()
    for connection_id, version in due:
        enqueue(connection_id, version, random.uniform(0, interval_seconds))
    return len(due)


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
        tokens.refresh(connection, config)
    except ReauthorizationRequired:
        return "needs re-authorization"
    return "refreshed"
