"""The OAuth2 protocol, through requests-oauthlib, behind one class a provider can override.

``OAuth2Hooks`` does the operations every connection needs: build the authorization URL
(RFC 6749 §4.1.1 with PKCE), exchange a code, refresh, fetch a client-credentials token,
revoke (RFC 7009). A provider that answers differently gets a subclass in ``quirks/``,
named on the secret by dotted path; the core never asks which provider it talks to.

Every request goes through the outbound guard, never follows a redirect, and reports
failures as one of two errors: ``ReauthorizationRequired`` when the provider refused the
grant or the client (the user must reconnect or fix the settings), and
``TokenEndpointUnavailable`` for everything that may pass (timeouts, 5xx, 429, a body
that is not a token), which keeps the stored token.
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from oauthlib.common import urldecode
from oauthlib.oauth2 import BackendApplicationClient, WebApplicationClient
from oauthlib.oauth2.rfc6749 import errors as oauthlib_errors
from requests_oauthlib import OAuth2Session

from project import jsonsafe, outbound
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import (
    OAuth2Error,
    ReauthorizationRequired,
    SecretMisconfigured,
    TokenEndpointUnavailable,
)
from secrets_app.kinds.base import HeaderAuth, basic_authorization

# oauthlib and requests-oauthlib log request bodies and token responses at DEBUG. Capped
# here, in code, so that no logging configuration can turn it back on.
for _logger_name in ("oauthlib", "requests_oauthlib"):
    logging.getLogger(_logger_name).setLevel(logging.WARNING)

#: Error codes (RFC 6749 §5.2) after which retrying cannot help: the grant or the client
#: itself was refused.
PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"}
)
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024
#: The secrets of a token response: never kept as token data, whatever a preset names.
TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token"})
DEFAULT_HOOKS = "secrets_app.oauth2.client.OAuth2Hooks"


@dataclass(frozen=True)
class OAuth2Config:
    """An OAuth2 secret's settings, as the protocol code needs them."""

    name: str
    grant_type: str
    client_id: str
    client_secret: str
    client_auth: str
    authorize_url: str
    token_url: str
    revocation_url: str
    userinfo_url: str
    scope: str
    extra_authorize_params: dict[str, str]
    issuer: str
    jwks_url: str
    identity_url: str
    identity_field: str
    test_url: str
    pkce: bool
    require_iss: bool
    hooks: str
    token_data_fields: tuple[str, ...] = ()
    refresh_token_idle_days: int | None = None
    #: operation -> flow slug (``secrets_app.oauth2.operations``), and the secret they run for
    operations: dict[str, str] = field(default_factory=dict)
    secret: Any = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"<OAuth2Config {self.name!r}>"

    @classmethod
    def from_secret(cls, secret) -> OAuth2Config:
        config, values = secret.config, secret.values
        return cls(
            name=secret.name,
            grant_type=config.get("grant_type", "authorization_code"),
            client_id=config.get("client_id", ""),
            client_secret=values.get("client_secret", ""),
            client_auth=config.get("client_auth", "basic"),
            authorize_url=config.get("authorize_url", ""),
            token_url=config.get("token_url", ""),
            revocation_url=config.get("revocation_url", ""),
            userinfo_url=config.get("userinfo_url", ""),
            scope=config.get("scope", ""),
            extra_authorize_params=dict(config.get("extra_authorize_params", {})),
            issuer=config.get("issuer", ""),
            jwks_url=config.get("jwks_url", ""),
            identity_url=config.get("identity_url", ""),
            identity_field=config.get("identity_field", ""),
            test_url=config.get("test_url", ""),
            pkce=config.get("pkce", True),
            require_iss=config.get("require_iss", False),
            hooks=config.get("hooks", "") or DEFAULT_HOOKS,
            token_data_fields=tuple(config.get("token_data_fields") or ()),
            refresh_token_idle_days=config.get("refresh_token_idle_days"),
            operations=dict(config.get("operations", {})),
            secret=secret,
        )


@dataclass
class TokenResult:
    """What an exchange, refresh or client-credentials fetch produced.

    ``refresh_token`` is None when the provider sent none (the stored one is kept);
    ``scope`` is None when the provider did not say (the requested scope was granted).
    ``extra``: what flows need of the answer besides the tokens (``token_data_fields``, and
    what a provider's hooks add); ``refresh_token_expires_in``: seconds, when the provider says.
    """

    token: str
    refresh_token: str | None = None
    expires_in: float | None = None
    scope: str | None = None
    id_token: str | None = None
    token_type: str = "Bearer"
    identity_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    refresh_token_expires_in: float | None = None

    def __repr__(self) -> str:
        return f"<TokenResult expires_in={self.expires_in} refresh_token={'yes' if self.refresh_token else 'no'}>"


class TransientTokenError(Exception):
    """Raised by the response hook for answers worth retrying (5xx, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(reason)


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class OAuth2Hooks:
    """RFC 6749 (with RFC 7636 PKCE and RFC 7009 revocation) as most providers speak it."""

    #: Revoking any one token ends the user's whole grant to the client (every token of
    #: it, including one issued later for the same account), not only that token.
    revocation_ends_the_grant: bool = False

    # -- the pieces subclasses override ---------------------------------------------

    def token_response(self, response: requests.Response) -> requests.Response:
        """Look at a token endpoint's answer before oauthlib parses it.

        Subclasses fix a provider's body here (nested tokens, odd error shapes) and call
        ``super()`` first, which turns 5xx and 429 into ``TransientTokenError``.
        """
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientTokenError(f"HTTP {response.status_code}", retry_after_seconds(response))
        return response

    def token_result(self, token: dict[str, Any], config: OAuth2Config) -> TokenResult:
        """Turn oauthlib's parsed token into a ``TokenResult``."""
        scope = token.get("scope")
        if isinstance(scope, (list, tuple)):
            scope = " ".join(scope)
        expires_in = token.get("expires_in")
        return TokenResult(
            token=token["access_token"],
            refresh_token=token.get("refresh_token") or None,
            expires_in=float(expires_in) if expires_in not in (None, "") else None,
            scope=scope,
            id_token=token.get("id_token"),
            token_type=str(token.get("token_type") or "Bearer"),
            extra={
                name: token[name]
                for name in config.token_data_fields
                if name in token and name not in TOKEN_FIELDS and isinstance(token[name], (str, int, float, bool))
            },
            refresh_token_expires_in=_seconds(token.get("refresh_token_expires_in")),
        )

    def session(
        self, config: OAuth2Config, *, redirect_uri: str | None = None, scope: list[str] | None = None
    ) -> OAuth2Session:
        client_class = BackendApplicationClient if config.grant_type == "client_credentials" else WebApplicationClient
        session = OAuth2Session(client=client_class(config.client_id), redirect_uri=redirect_uri, scope=scope)
        outbound.configure_session(
            session, max_response_bytes=MAX_TOKEN_RESPONSE_BYTES, total_timeout=vault_settings.outbound_timeout_seconds
        )
        session.max_redirects = 0  # a token endpoint that redirects is misconfigured
        session.register_compliance_hook("access_token_response", self.token_response)
        session.register_compliance_hook("refresh_token_response", self.token_response)
        return session

    def client_authentication(self, config: OAuth2Config) -> tuple[requests.auth.AuthBase | None, dict[str, str]]:
        """(auth object, body parameters) for the secret's client authentication method.

        ``client_secret_basic`` form-encodes id and secret before Base64 (RFC 6749 §2.3.1).
        """
        if config.client_auth == "basic":
            header = basic_authorization(quote(config.client_id, safe=""), quote(config.client_secret, safe=""))
            return HeaderAuth({"Authorization": header}), {}
        if config.client_auth == "post":
            return None, {"client_id": config.client_id, "client_secret": config.client_secret}
        return None, {"client_id": config.client_id}

    # -- the three operations (and two more) ----------------------------------------

    def authorization_url(
        self, config: OAuth2Config, *, redirect_uri: str, state: str, code_challenge: str | None
    ) -> str:
        client = WebApplicationClient(config.client_id)
        pkce = {"code_challenge": code_challenge, "code_challenge_method": "S256"} if code_challenge else {}
        return self._call(
            lambda: client.prepare_request_uri(
                config.authorize_url,
                redirect_uri=redirect_uri,
                scope=config.scope.split() or None,
                state=state,
                **pkce,
                **config.extra_authorize_params,
            )
        )

    def exchange_code(
        self,
        config: OAuth2Config,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        callback: Mapping[str, str] | None = None,  # the whole redirect, for hooks that read more
    ) -> TokenResult:
        session = self.session(config, redirect_uri=redirect_uri, scope=config.scope.split() or None)
        auth, body = self.client_authentication(config)
        client_secret = body.pop("client_secret", None)
        if code_verifier:
            body["code_verifier"] = code_verifier
        body.pop("client_id", None)
        token = self._call(
            lambda: session.fetch_token(
                config.token_url,
                code=code,
                auth=auth,
                include_client_id=auth is None,
                client_secret=client_secret,
                timeout=vault_settings.outbound_timeout_seconds,
                **body,
            )
        )
        return self.token_result(token, config)

    def refresh(self, config: OAuth2Config, *, refresh_token: str) -> TokenResult:
        session = self.session(config)
        auth, body = self.client_authentication(config)
        token = self._call(
            lambda: session.refresh_token(
                config.token_url,
                refresh_token=refresh_token,
                auth=auth,
                timeout=vault_settings.outbound_timeout_seconds,
                **body,
            )
        )
        return self.token_result(token, config)

    def fetch_client_credentials(self, config: OAuth2Config) -> TokenResult:
        session = self.session(config)
        auth, body = self.client_authentication(config)
        client_secret = body.pop("client_secret", None)
        body.pop("client_id", None)
        token = self._call(
            lambda: session.fetch_token(
                config.token_url,
                auth=auth,
                include_client_id=auth is None,
                client_secret=client_secret,
                scope=config.scope or None,
                timeout=vault_settings.outbound_timeout_seconds,
                **body,
            )
        )
        return self.token_result(token, config)

    def revoke(self, config: OAuth2Config, *, token: str, token_type_hint: str) -> None:
        """Revoke one token at the provider (RFC 7009 §2.1)."""
        client = WebApplicationClient(config.client_id)
        url, headers, body = self._call(
            lambda: client.prepare_token_revocation_request(
                config.revocation_url, token, token_type_hint=token_type_hint
            )
        )
        auth, extra = self.client_authentication(config)
        try:
            response = outbound.request(
                "POST",
                url,
                auth=auth,
                headers=headers,
                data={**dict(urldecode(body)), **extra},
                limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=64 * 1024),
            )
        except outbound.OutboundBlocked as exc:
            raise SecretMisconfigured(str(exc)) from None
        except (outbound.OutboundError, requests.RequestException) as exc:
            raise TokenEndpointUnavailable(f"Revocation request failed: {type(exc).__name__}.") from None
        if response.status_code == 200:
            return
        if response.status_code == 429 or response.status_code >= 500:
            raise TokenEndpointUnavailable(f"Revocation endpoint answered HTTP {response.status_code}.")
        error = _json_error(response)
        if error == "unsupported_token_type":
            return  # RFC 7009 §2.2.1: this provider cannot revoke that kind of token
        raise OAuth2Error(f"Revocation refused: HTTP {response.status_code}{f' ({error})' if error else ''}.")

    # -- error handling -------------------------------------------------------------

    def _call(self, operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except Warning as changed:
            # oauthlib raises when the granted scope differs from the requested one; the
            # token is valid, and the caller compares scopes and tells the user.
            if hasattr(changed, "token"):
                return changed.token
            raise
        except TransientTokenError as exc:
            raise TokenEndpointUnavailable(f"The token endpoint answered {exc}.", retry_after=exc.retry_after) from None
        except oauthlib_errors.InsecureTransportError:
            raise SecretMisconfigured(
                "OAuth2 endpoints must use https (OAUTHLIB_INSECURE_TRANSPORT=1 allows http, for local development only)."
            ) from None
        except oauthlib_errors.OAuth2Error as exc:
            code = exc.error or "invalid_request"
            description = f": {exc.description[:200]}" if exc.description else ""
            if code in PERMANENT_ERRORS:
                raise ReauthorizationRequired(
                    f"The provider refused the grant ({code}{description}).", error=code
                ) from None
            raise TokenEndpointUnavailable(f"The token endpoint answered an error ({code}{description}).") from None
        except outbound.OutboundBlocked as exc:
            raise SecretMisconfigured(str(exc)) from None
        except requests.TooManyRedirects:
            raise SecretMisconfigured("The token endpoint answered with a redirect; check the token URL.") from None
        except (outbound.OutboundError, requests.RequestException, ValueError) as exc:
            raise TokenEndpointUnavailable(f"The token endpoint could not be used: {type(exc).__name__}.") from None


def _seconds(value: Any) -> float | None:
    """A refresh token's lifetime in a token response (a number, or digits as text); None
    when absent, not a number, or beyond ten years (a date that far is no date)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds <= 10 * 365 * 86400 else None


def _json_error(response: requests.Response) -> str:
    try:
        body = jsonsafe.loads(response.content)
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def hooks_for(config: OAuth2Config) -> OAuth2Hooks:
    """The hooks class named on the secret, instantiated; operations it names as flows
    replace theirs (``secrets_app.oauth2.operations``)."""
    hooks = load_hooks_class(config.hooks)()
    if config.operations:
        from secrets_app.oauth2.operations import OperationHooks

        return OperationHooks(hooks, config)
    return hooks


def load_hooks_class(dotted_path: str) -> type[OAuth2Hooks]:
    """Import an OAuth2Hooks subclass by dotted path, from an allowed module prefix only.

    Raises ValueError with a short reason (it ends up in a form error).
    """
    allowed = ("secrets_app.oauth2.", *vault_settings.oauth2_hook_modules)
    if not dotted_path.startswith(allowed):
        raise ValueError(f"Hooks must live under {', '.join(allowed)} (FLOWGATE_OAUTH2_HOOK_MODULES adds more).")
    module_name, _, class_name = dotted_path.rpartition(".")
    try:
        hooks_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"Cannot import {dotted_path!r}.") from None
    if not (isinstance(hooks_class, type) and issubclass(hooks_class, OAuth2Hooks)):
        raise ValueError(f"{dotted_path!r} is not an OAuth2Hooks subclass.")
    return hooks_class
