"""OAuth2 connection: a client registration at a provider, and (once connected) its tokens.

The configuration lives here; the authorization dance, token storage and refresh live in
``secrets_app.oauth2`` and ``secrets_app.services.oauth2``.
"""

from django.core.exceptions import ValidationError

from secrets_app.kinds.base import KindField, SecretKind

GRANT_TYPES = (
    ("authorization_code", "Authorization code with PKCE (a user connects an account)"),
    ("client_credentials", "Client credentials (machine to machine)"),
)
CLIENT_AUTH_METHODS = (
    ("basic", "client_secret_basic (HTTP Basic)"),
    ("post", "client_secret_post (in the form body)"),
    ("none", "none (public client, PKCE only)"),
)


class OAuth2(SecretKind):
    slug = "oauth2"
    label = "OAuth2 connection"
    description = "An OAuth2 client at a provider; connect an account once and flows keep a fresh token."
    testable = True
    fields = (
        KindField("grant_type", "Grant type", type="choice", choices=GRANT_TYPES, default="authorization_code"),
        KindField("client_id", "Client ID"),
        KindField("client_secret", "Client secret", secret=True, required=False),
        KindField("client_auth", "Client authentication", type="choice", choices=CLIENT_AUTH_METHODS, default="basic"),
        KindField("authorize_url", "Authorization URL", type="url", required=False),
        KindField("token_url", "Token URL", type="url", required=False),
        KindField("revocation_url", "Revocation URL", type="url", required=False, help_text="RFC 7009 endpoint."),
        KindField("userinfo_url", "Userinfo URL", type="url", required=False),
        KindField("scope", "Scope", required=False, help_text="Space-separated scopes to request."),
        KindField(
            "extra_authorize_params",
            "Extra authorization parameters",
            type="mapping",
            required=False,
            separator="=",
            help_text="One 'name=value' per line, e.g. access_type=offline, prompt=consent.",
        ),
        KindField("test_url", "Test URL", type="url", required=False, help_text="GET with the access token by 'Test'."),
    )

    @classmethod
    def validate(cls, config, values):
        errors = {}
        if config["grant_type"] == "authorization_code" and not config.get("authorize_url"):
            errors["authorize_url"] = "Required for the authorization code grant."
        if not config.get("token_url"):
            errors["token_url"] = "This field is required."
        if config["client_auth"] != "none" and not values.get("client_secret"):
            errors["client_secret"] = "Required unless client authentication is 'none'."
        if config["client_auth"] == "none" and config["grant_type"] == "client_credentials":
            errors["client_auth"] = "The client credentials grant needs a client secret."
        if errors:
            raise ValidationError(errors)
