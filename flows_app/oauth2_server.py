"""The OAuth2 server for callers of endpoint triggers (django-oauth-toolkit at ``/o/``).

Admins register client applications in the admin; an application with a token policy
(``ClientPolicy``) gets, with the client-credentials grant at ``/o/token/``, an access
token that is a JWT signed by the policy's RS256 key pair from the vault:

    {"iss": BASE_URL, "aud": <audience or BASE_URL>, "sub": <client id>,
     "client_id": <client id>, "scope": "orders:write", "iat": ..., "exp": ..., "jti": ...}

so that a JWT endpoint trigger verifies it on the same path as any other JWT (the
public key is at ``/.well-known/jwks.json`` when the key pair is published). A client
may ask only for the scopes its policy lists; asking for none gets all of them. An
application without a policy gets django-oauth-toolkit's ordinary random tokens.

Wired in settings: ``OAUTH2_PROVIDER["ACCESS_TOKEN_GENERATOR"]`` and
``["OAUTH2_VALIDATOR_CLASS"]``.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import generate_token

from flows_app.models import ClientPolicy
from secrets_app.api import Vault


def _policy(client) -> ClientPolicy | None:
    if client is None:
        return None
    try:
        return client.flowgate_policy
    except ClientPolicy.DoesNotExist:
        return None


def access_token(request) -> str:
    """django-oauth-toolkit's token generator: a signed JWT for clients with a policy."""
    policy = _policy(getattr(request, "client", None))
    if policy is None:
        return generate_token()
    client_id = request.client.client_id
    claims = {
        "iss": settings.BASE_URL,
        "aud": policy.audience or settings.BASE_URL,
        "sub": client_id,
        "client_id": client_id,
        "scope": " ".join(request.scopes or []),
        "jti": secrets.token_urlsafe(16),
    }
    vault = Vault(actor_label=f"oauth2 client {client_id}")
    return vault.sign_jws(policy.signing_secret.name, claims, expires_in=policy.token_lifetime_seconds)


class CallerValidator(OAuth2Validator):
    """Scopes and lifetimes per client application, from its token policy."""

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        policy = _policy(client)
        if policy is None:
            return super().validate_scopes(client_id, scopes, client, request, *args, **kwargs)
        return set(scopes) <= set(policy.scope_list())

    def get_default_scopes(self, client_id, request, *args, **kwargs):
        policy = _policy(getattr(request, "client", None))
        if policy is None:
            return super().get_default_scopes(client_id, request, *args, **kwargs)
        return policy.scope_list()

    def save_bearer_token(self, token, request, *args, **kwargs):
        policy = _policy(request.client)
        if policy is not None:
            # The JWT's exp and the stored token's expiry come from the same policy.
            token["expires_in"] = policy.token_lifetime_seconds
        return super().save_bearer_token(token, request, *args, **kwargs)
