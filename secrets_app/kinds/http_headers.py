"""HTTP headers: several custom headers with static values, all kept secret."""

from django.core.exceptions import ValidationError

from project.declarative import Field
from secrets_app.kinds.base import HEADER_NAME, HeaderAuth, SecretKind


class HttpHeaders(SecretKind):
    slug = "http_headers"
    label = "HTTP headers"
    description = "Custom headers with static values, for APIs with their own scheme."
    testable = True
    fields = (
        Field(
            "headers",
            "Headers",
            type="mapping",
            secret=True,
            separator=":",
            help_text="One 'Header-Name: value' per line.",
        ),
        Field("probe_url", "Test URL", type="url", required=False, help_text="GET with these headers by 'Test'."),
    )

    @classmethod
    def validate(cls, config, values):
        for name, value in values["headers"].items():
            if not HEADER_NAME.match(name):
                raise ValidationError({"headers": f"{name!r} is not a valid HTTP header name."})
            if any(ch in value for ch in "\r\n"):
                raise ValidationError({"headers": f"The value of {name!r} cannot contain line breaks."})

    def auth(self):
        return HeaderAuth(self.value("headers"))

    def probe(self):
        return self.http_probe(self.value("probe_url"))
