"""Endpoints from an issuer's published metadata.

OpenID Connect Discovery (``<issuer>/.well-known/openid-configuration``) first, then
RFC 8414 (``/.well-known/oauth-authorization-server`` inserted before the issuer's path).
The document must name exactly the issuer that was asked for (RFC 8414 §3.3), or an
attacker-controlled document could redirect tokens elsewhere.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import requests

from project import jsonsafe, outbound
from secrets_app.app_settings import vault_settings

#: metadata name -> OAuth2 secret field
ENDPOINTS = {
    "authorization_endpoint": "authorize_url",
    "token_endpoint": "token_url",
    "revocation_endpoint": "revocation_url",
    "userinfo_endpoint": "userinfo_url",
    "jwks_uri": "jwks_url",
}


class DiscoveryFailed(Exception):
    pass


def metadata_urls(issuer: str) -> list[str]:
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return [
        issuer.rstrip("/") + "/.well-known/openid-configuration",
        urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")),
    ]


def discover(issuer: str) -> dict[str, object]:
    """The secret fields the issuer's metadata fills in, plus ``require_iss`` (RFC 9207)."""
    problems = []
    for url in metadata_urls(issuer):
        try:
            response = outbound.request(
                "GET",
                url,
                headers={"Accept": "application/json"},
                limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=512 * 1024),
            )
        except outbound.OutboundBlocked as exc:
            raise DiscoveryFailed(str(exc)) from None
        except (outbound.OutboundError, requests.RequestException) as exc:
            problems.append(f"{url}: {type(exc).__name__}")
            continue
        if response.status_code != 200:
            problems.append(f"{url}: HTTP {response.status_code}")
            continue
        try:
            metadata = jsonsafe.loads(response.content)
        except ValueError:
            problems.append(f"{url}: not JSON")
            continue
        if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
            named = metadata.get("issuer") if isinstance(metadata, dict) else None
            raise DiscoveryFailed(f"The metadata at {url} names the issuer {named!r}, not {issuer!r}.")
        found: dict[str, object] = {
            field: metadata[name] for name, field in ENDPOINTS.items() if isinstance(metadata.get(name), str)
        }
        found["require_iss"] = metadata.get("authorization_response_iss_parameter_supported") is True
        return found
    raise DiscoveryFailed("No metadata found (" + "; ".join(problems) + ").")
