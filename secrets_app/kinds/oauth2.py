"""OAuth2 connection: a client registration at a provider, and (once connected) its tokens.

The configuration lives here: a preset fills what is left blank, an issuer URL fills the
endpoints from the provider's metadata. The authorization dance, token storage and
refresh live in ``secrets_app.oauth2`` and ``secrets_app.services.oauth2``; ``auth()``
gives requests a Bearer token that is refreshed before it expires and once more when the
API answers 401. Its life-cycle hooks keep the secret's ``OAuth2Connection``: created with
it, reset when the client settings change, revoked at the provider before it is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ValidationError
from oauthlib.oauth2.rfc6749.utils import is_secure_transport

from project import outbound
from project.declarative import Field
from secrets_app.exceptions import RevocationFailed, VaultError
from secrets_app.kinds.base import Capability, CleanedSecret, SecretKind, StatusDisplay, bearer_auth
from secrets_app.oauth2.providers import FIELDS as PRESET_FIELDS
from secrets_app.oauth2.providers import preset_choices, presets

GRANT_TYPES = (
    ("authorization_code", "Authorization code with PKCE (a user connects an account)"),
    ("client_credentials", "Client credentials (machine to machine)"),
)
CLIENT_AUTH_METHODS = (
    ("basic", "client_secret_basic (HTTP Basic)"),
    ("post", "client_secret_post (in the form body)"),
    ("none", "none (public client, PKCE only)"),
)
#: Endpoints Flowgate requests, and those of them that oauthlib allows only over https.
ENDPOINT_FIELDS = ("authorize_url", "token_url", "revocation_url", "userinfo_url", "jwks_url", "identity_url", "test_url")
HTTPS_ONLY_FIELDS = frozenset({"authorize_url", "token_url", "revocation_url"})
LOCAL_DEVELOPMENT_HINT = (
    "For a provider on this machine during development, start with FLOWGATE_LOCAL_DEVELOPMENT on "
    "(./scripts/run does, with DEBUG on)."
)
#: OAuth2 operations an app may replace with one of its flows (``secrets_app.oauth2.operations``).
OPERATIONS = ("authorize_url", "exchange", "refresh")
#: Authorization request parameters we set ourselves; extra parameters cannot replace them.
RESERVED_PARAMETERS = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}
)


class OAuth2BearerAuth(requests.auth.AuthBase):
    """Bearer auth with a token that is always fresh, retried once after a 401.

    On a 401 the token that was refused is refreshed (once, across all processes, see
    ``secrets_app.oauth2.tokens``) and the request is sent again with the new token.
    """

    def __init__(self, secret):
        self._secret = secret

    def __repr__(self) -> str:
        return f"<OAuth2BearerAuth {self._secret.name!r}>"

    def __call__(self, request):
        from secrets_app.oauth2.tokens import access_token_get

        token = access_token_get(self._secret)
        request = bearer_auth(token)(request)
        request.register_hook("response", self._retry_after_401(token))
        return request

    def _retry_after_401(self, sent_token: str):
        def hook(response, **kwargs):
            if response.status_code != 401 or getattr(response.request, "_flowgate_retried", False):
                return response
            from secrets_app.oauth2.tokens import access_token_get

            token = access_token_get(self._secret, rejected_token=sent_token)
            response.content  # noqa: B018  (read the body so the connection can be reused)
            response.close()
            retry = bearer_auth(token)(response.request.copy())
            retry._flowgate_retried = True
            again = response.connection.send(retry, **kwargs)
            again.history.append(response)
            again.request = retry
            return again

        return hook


class OAuth2(SecretKind):
    slug = "oauth2"
    label = "OAuth2 connection"
    description = "An OAuth2 client at a provider; connect an account once and flows keep a fresh token."
    testable = True
    capabilities = frozenset({Capability.TOKENS, Capability.REDIRECT_URI})
    fields = (
        Field(
            "preset",
            "Provider preset",
            type="choice",
            choices=(("", "— none —"), *preset_choices()),
            required=False,
            help_text="Fills the fields you leave blank with the provider's endpoints, scopes and quirks.",
        ),
        Field("grant_type", "Grant type", type="choice", choices=GRANT_TYPES, default="authorization_code"),
        Field("client_id", "Client ID"),
        Field("client_secret", "Client secret", secret=True, required=False),
        Field("client_auth", "Client authentication", type="choice", choices=CLIENT_AUTH_METHODS, default="basic"),
        Field(
            "issuer",
            "Issuer URL",
            type="url",
            required=False,
            help_text="With an issuer, blank endpoints are discovered from its metadata, and the "
            "authorization response's 'iss' must match it exactly (RFC 9207).",
        ),
        Field("authorize_url", "Authorization URL", type="url", required=False),
        Field("token_url", "Token URL", type="url", required=False),
        Field("revocation_url", "Revocation URL", type="url", required=False, help_text="RFC 7009 endpoint."),
        Field("userinfo_url", "Userinfo URL", type="url", required=False),
        Field(
            "jwks_url", "JWKS URL", type="url", required=False, help_text="The issuer's keys, to verify ID tokens."
        ),
        Field("scope", "Scope", required=False, help_text="Space-separated scopes to request."),
        Field(
            "extra_authorize_params",
            "Extra authorization parameters",
            type="mapping",
            required=False,
            separator="=",
            help_text="One 'name=value' per line, e.g. access_type=offline, prompt=consent, duration=permanent.",
        ),
        Field(
            "identity_url",
            "Identity URL",
            type="url",
            required=False,
            help_text="GET with the token to name the connected account (when there is no userinfo).",
        ),
        Field(
            "identity_field",
            "Identity field",
            required=False,
            help_text="Dotted path of the name in the identity or userinfo answer, e.g. data.username.",
        ),
        Field("test_url", "Test URL", type="url", required=False, help_text="GET with the access token by 'Test'."),
        Field("pkce", "Use PKCE", type="boolean", default=True, help_text="RFC 7636 with S256. Leave on."),
        Field(
            "require_iss",
            "Require 'iss' in the authorization response",
            type="boolean",
            default=False,
            help_text="Set by discovery when the provider supports RFC 9207.",
        ),
        Field(
            "redirect_uri",
            "Redirect URI",
            type="url",
            required=False,
            help_text="Blank: this secret's own (shown above). An installed app sets one for all its connections.",
        ),
        Field(
            "operations",
            "Operations as flows",
            type="mapping",
            required=False,
            separator="=",
            help_text="One 'operation=flow slug' per line (authorize_url, exchange, refresh): a flow that does it "
            "instead of the standard request. Installed apps set these.",
        ),
        Field(
            "token_data_fields",
            "Token data fields",
            type="list",
            required=False,
            help_text="Fields of the token response to keep (encrypted) for flows, as {{ connection.data.NAME }}, "
            "e.g. instance_url. Blank: what the provider hooks keep.",
        ),
        Field(
            "refresh_token_idle_days",
            "Refresh token idle expiry (days)",
            type="integer",
            required=False,
            min_value=1,
            help_text="The provider ends a refresh token unused this long: the connection shows a "
            "'reconnect by' date and a notice goes out before it.",
        ),
        Field(
            "hooks",
            "Provider hooks",
            required=False,
            help_text="Dotted path of an OAuth2Hooks class for a provider that does not follow the standard.",
        ),
    )

    @classmethod
    def clean(cls, data: Mapping[str, Any], previous: CleanedSecret | None = None) -> CleanedSecret:
        """A preset, then the issuer's metadata, fill what the user left blank."""
        data = dict(data)
        preset = presets().get(data.get("preset") or "")
        if preset:
            for field in PRESET_FIELDS:
                if field in preset and not data.get(field):
                    data[field] = preset[field]
        issuer = data.get("issuer")
        if issuer and isinstance(issuer, str) and not (data.get("token_url") and data.get("authorize_url")):
            from secrets_app.oauth2.discovery import DiscoveryFailed, discover

            try:
                discovered = discover(issuer)
            except DiscoveryFailed as exc:
                raise ValidationError({"issuer": str(exc)}) from None
            for field, value in discovered.items():
                if data.get(field) in (None, "", False):
                    data[field] = value
        return super().clean(data, previous)

    @classmethod
    def validate(cls, config, values):
        errors: dict[str, str] = {}
        authorization_code = config["grant_type"] == "authorization_code"
        if authorization_code and not config.get("authorize_url"):
            errors["authorize_url"] = "Required for the authorization code grant."
        if not config.get("token_url"):
            errors["token_url"] = "This field is required."
        if config["client_auth"] != "none" and not values.get("client_secret"):
            errors["client_secret"] = "Required unless client authentication is 'none'."
        if config["client_auth"] == "none" and not authorization_code:
            errors["client_auth"] = "The client credentials grant needs a client secret."
        if config["client_auth"] == "none" and not config.get("pkce"):
            errors["pkce"] = "A public client (client authentication 'none') must use PKCE."
        if unknown := sorted(set(config.get("operations", {})) - set(OPERATIONS)):
            errors["operations"] = f"Unknown operation(s): {', '.join(unknown)}; use {', '.join(OPERATIONS)}."
        reserved = sorted(RESERVED_PARAMETERS & set(config.get("extra_authorize_params", {})))
        if reserved:
            errors["extra_authorize_params"] = f"Set by Flowgate, not here: {', '.join(reserved)}."
        if config.get("hooks"):
            from secrets_app.oauth2.client import load_hooks_class

            try:
                load_hooks_class(config["hooks"])
            except ValueError as exc:
                errors["hooks"] = str(exc)
        if errors:
            raise ValidationError(errors)

    @classmethod
    def save_warnings(cls, config: Mapping[str, Any]) -> list[str]:
        """Endpoints that are valid but would be refused when used: http where oauthlib wants
        https, or an address the outbound guard does not open. Checked on save so that the
        user learns it now, not after logging in at the provider."""
        warnings = []
        for name in ENDPOINT_FIELDS:
            url = config.get(name)
            if not url:
                continue
            label = cls.field(name).label
            if name in HTTPS_ONLY_FIELDS and not is_secure_transport(url):
                warnings.append(f"{label} uses http, which OAuth2 refuses outside development. {LOCAL_DEVELOPMENT_HINT}")
                continue
            _scheme, host, port = outbound.origin(url)
            try:
                outbound.resolve(host, port)
            except outbound.OutboundBlocked as exc:
                warnings.append(f"{label}: {exc} {LOCAL_DEVELOPMENT_HINT}")
            except outbound.OutboundError:
                pass  # does not resolve from here now; using it will say so
        return warnings

    @classmethod
    def choice_notes(cls) -> dict[str, dict[str, str]]:
        """A preset's caveats (which scope brings a refresh token, why Test cannot work)."""
        notes = {}
        for slug, preset in presets().items():
            untestable = preset.get("no_test_url")
            notes[slug] = f"{preset['notes']} No test URL: {untestable}" if untestable else preset["notes"]
        return {"preset": notes}

    # -- life cycle ------------------------------------------------------------------

    def created(self, acting_user) -> None:
        from secrets_app.models import OAuth2Connection

        # The connections manager lists connections: one never connected shows there as
        # "not connected", instead of being missing.
        OAuth2Connection.objects.create(secret=self.secret)

    def changed(self, changed_fields, acting_user) -> None:
        from secrets_app.services.oauth2 import oauth2_connection_client_changed

        oauth2_connection_client_changed(secret=self.secret, changed=changed_fields, acting_user=acting_user)

    def before_delete(self, acting_user, *, force):
        """Revoke the tokens at the provider first. When that fails the secret is kept (its
        tokens would stay valid at the provider with nothing here to revoke them later):
        RevocationFailed, unless ``force``."""
        from secrets_app.services.oauth2 import oauth2_connection_revoke

        try:
            oauth2_connection_revoke(secret=self.secret, acting_user=acting_user)
        except VaultError as exc:
            if not force:
                raise RevocationFailed(self.name, str(exc)) from None
            return [f"Revocation at the provider failed: {exc}"]
        return []

    @classmethod
    def deletion_previews(cls, secrets: Sequence) -> list[str]:
        from secrets_app.models import OAuth2Connection

        connections = {
            connection.secret_id: connection for connection in OAuth2Connection.objects.filter(secret__in=secrets)
        }
        return [_revocation_note(secret, connections.get(secret.pk)) for secret in secrets]

    def deletion_preview(self) -> str:
        return self.deletion_previews([self.secret])[0]

    def status_display(self) -> StatusDisplay:
        """The connection's status rather than the last "Test"."""
        from secrets_app.models import OAuth2Connection

        connection = OAuth2Connection.objects.filter(secret=self.secret).first()
        status = connection.status if connection else OAuth2Connection.Status.NOT_CONNECTED
        tone = {"connected": "ok", "needs_reauthorization": "failing"}.get(status, "neutral")
        return StatusDisplay(label=OAuth2Connection.Status(status).label, tone=tone)

    # -- jobs -----------------------------------------------------------------------

    def auth(self):
        return OAuth2BearerAuth(self.secret)

    def rename_consequences(self, new_name: str) -> list[str]:
        from secrets_app.models import Secret
        from secrets_app.services.oauth2 import oauth2_redirect_uri

        old, new = oauth2_redirect_uri(secret=self.secret), oauth2_redirect_uri(secret=Secret(name=new_name))
        return [
            f"Its redirect URI changes from {old} to {new}: register the new one at the provider before "
            "connecting again (the stored tokens keep working)."
        ]

    def secret_strings(self) -> set[str]:
        from secrets_app.models import OAuth2Connection

        strings = super().secret_strings()
        connection = OAuth2Connection.objects.filter(secret=self.secret).only("tokens").first()
        if connection is not None:
            strings |= {value for value in connection.tokens.values() if isinstance(value, str)}
        return strings

    def probe(self):
        return self.http_probe(self.value("test_url"))

    def access_token(self) -> str:
        from secrets_app.oauth2.tokens import access_token_get

        return access_token_get(self.secret)

    def identity(self) -> str:
        from secrets_app.oauth2.tokens import connection_for

        return connection_for(self.secret).identity

    def token_data(self) -> dict[str, Any]:
        from secrets_app.oauth2.tokens import connection_for

        return dict(connection_for(self.secret).provider_data)


def _revocation_note(secret, connection) -> str:
    """What deleting ``secret`` does to its tokens at the provider."""
    revocation_url = secret.config.get("revocation_url", "")
    if connection is None or not connection.tokens:
        return "Not connected: no tokens to revoke."
    if revocation_url:
        return f"Its tokens are revoked at the provider ({urlsplit(revocation_url).netloc}) first."
    return (
        "The provider has no revocation endpoint: its tokens are removed here only and stay "
        "valid at the provider until they expire."
    )
