"""API token / password: one secret string.

Sent as ``Authorization: Bearer <token>`` or, when a header name is chosen, as
``<header>: <token>`` (``X-API-KEY: abc``). Endpoint triggers use it to check an API key
that a caller presents, or as the shared key of webhook signatures (HMAC of the body).
"""

import hmac

from django.core.exceptions import ValidationError

from project.declarative import Field
from secrets_app.kinds.base import HEADER_NAME, HeaderAuth, SharedKeyKind, bearer_auth


class ApiToken(SharedKeyKind):
    slug = "api_token"
    label = "API token / password"
    description = "A static token or password, sent as a Bearer token or in a header you name."
    testable = True
    fields = (
        Field("token", "Token", secret=True),
        Field(
            "header",
            "Header name",
            required=False,
            help_text="Leave blank to send 'Authorization: Bearer <token>'; "
            "or name a header such as X-API-KEY to send the bare token in it.",
        ),
        Field("probe_url", "Test URL", type="url", required=False, help_text="GET with this token by 'Test'."),
    )

    @classmethod
    def validate(cls, config, values):
        header = config.get("header")
        if header and not HEADER_NAME.match(header):
            raise ValidationError({"header": "Not a valid HTTP header name."})
        if any(ch in values["token"] for ch in "\r\n"):
            raise ValidationError({"token": "A token cannot contain line breaks."})

    def password(self) -> str:
        return self.value("token")

    def auth(self):
        header = self.value("header")
        if header and header.lower() != "authorization":
            return HeaderAuth({header: self.value("token")})
        return bearer_auth(self.value("token"))

    def shared_key(self) -> bytes:
        return self.value("token").encode()

    def matches(self, presented: str) -> bool:
        """Constant-time check of a token a caller presented."""
        return hmac.compare_digest(presented.encode(), self.value("token").encode())

    def probe(self):
        return self.http_probe(self.value("probe_url"))
