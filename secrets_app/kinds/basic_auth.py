"""Basic auth: a user name and a password.

Outgoing: ``Authorization: Basic base64(user:password)`` (RFC 7617, UTF-8). Incoming: an
endpoint trigger checks presented credentials against it in constant time.
"""

import hmac

from django.core.exceptions import ValidationError

from project.declarative import Field
from secrets_app.kinds.base import HeaderAuth, SecretKind, basic_authorization


class BasicAuth(SecretKind):
    slug = "basic_auth"
    label = "Basic auth"
    description = "A user name and password for HTTP Basic authentication, outgoing or incoming."
    testable = True
    fields = (
        Field("username", "User name"),
        Field("password", "Password", secret=True),
        Field(
            "probe_url", "Test URL", type="url", required=False, help_text="GET with these credentials by 'Test'."
        ),
    )

    @classmethod
    def validate(cls, config, values):
        if ":" in config["username"]:
            raise ValidationError({"username": "A Basic auth user name cannot contain ':'."})

    def password(self) -> str:
        return self.value("password")

    def credentials(self) -> tuple[str, str]:
        return self.value("username"), self.value("password")

    def auth(self):
        return HeaderAuth({"Authorization": basic_authorization(*self.credentials())})

    def secret_strings(self) -> set[str]:
        username, password = self.credentials()
        return super().secret_strings() | {basic_authorization(username, password).split(" ", 1)[1]}

    def matches(self, username: str, password: str) -> bool:
        """Constant-time check of presented credentials (both compared, always)."""
        expected_user, expected_password = self.credentials()
        user_ok = hmac.compare_digest(username.encode(), expected_user.encode())
        password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
        return user_ok & password_ok

    def probe(self):
        return self.http_probe(self.value("probe_url"))
