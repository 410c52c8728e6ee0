"""Who the connected account is: a name to show beside the connection.

In order: a name the provider's hooks already found; a configured identity URL and
field (``data.username`` for X's ``/2/users/me``); OpenID userinfo; a validated ID token.
Failing to find one is a warning, never a failed connection.
"""

from __future__ import annotations

from typing import Any

import requests

from project import jsonsafe, outbound
from secrets_app import jose
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import VaultError
from secrets_app.kinds.base import bearer_auth
from secrets_app.oauth2.client import OAuth2Config, TokenResult

CLAIMS = ("email", "preferred_username", "username", "login", "name", "sub")


def _pick(document: Any, field: str | None) -> str | None:
    if not isinstance(document, dict):
        return None
    if field:
        value: Any = document
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return str(value) if isinstance(value, (str, int)) else None
    for claim in CLAIMS:
        if isinstance(document.get(claim), (str, int)) and document[claim] != "":
            return str(document[claim])
    return None


def _fetch_json(url: str, token: str) -> Any:
    response = outbound.request(
        "GET",
        url,
        auth=bearer_auth(token),
        headers={"Accept": "application/json"},
        limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=256 * 1024),
    )
    response.raise_for_status()
    return jsonsafe.loads(response.content)


def id_token_claims(config: OAuth2Config, id_token: str) -> dict[str, Any]:
    """Verify an ID token: signature by the issuer's keys (or the client secret for
    HS256), ``iss`` equal to the configured issuer, ``aud`` holding our client id."""
    algorithm = jose.decode_header(id_token).get("alg")
    if algorithm == "RS256" and config.jwks_url:
        keys = jose.jwks_cache.keys(config.jwks_url, kid=jose.decode_header(id_token).get("kid"))
    elif algorithm == "HS256" and config.client_secret:
        from jwcrypto import jwk

        keys = jwk.JWKSet()
        keys.add(jose.symmetric_key(config.client_secret.encode()))
    else:
        raise VaultError("The ID token cannot be verified (no JWKS URL, or an algorithm we do not accept).")
    return jose.verify(id_token, keys, algorithm=algorithm, audience=config.client_id, issuer=config.issuer or None)


def identity_resolve(config: OAuth2Config, result: TokenResult) -> tuple[str | None, str | None]:
    """(identity name, warning)."""
    if result.identity_name:
        return result.identity_name, None
    try:
        if config.identity_url:
            return _pick(_fetch_json(config.identity_url, result.token), config.identity_field), None
        if config.userinfo_url:
            return _pick(_fetch_json(config.userinfo_url, result.token), config.identity_field), None
        if result.id_token:
            return _pick(id_token_claims(config, result.id_token), config.identity_field), None
    except (VaultError, outbound.OutboundError, requests.RequestException, ValueError) as exc:
        return None, f"The connected account's name could not be read: {exc}"
    return None, None
