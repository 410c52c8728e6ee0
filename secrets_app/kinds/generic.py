"""Generic: named fields the user defines, some public, some secret.

For anything the other kinds do not cover (an account id and an API key, a tenant and a
signing secret). Flows and scripts read fields by name with ``get_field``.
"""

from django.core.exceptions import ValidationError

from project.declarative import Field
from secrets_app.kinds.base import SecretKind


class Generic(SecretKind):
    slug = "generic"
    label = "Generic fields"
    description = "Named fields you define; each is public or secret."
    fields = (
        Field(
            "public",
            "Public fields",
            type="mapping",
            required=False,
            separator="=",
            help_text="One 'name=value' per line; shown in the admin.",
        ),
        Field(
            "secret",
            "Secret fields",
            type="mapping",
            secret=True,
            required=False,
            separator="=",
            help_text="One 'name=value' per line; encrypted and never shown again.",
        ),
    )

    @classmethod
    def validate(cls, config, values):
        public, secret = config.get("public", {}), values.get("secret", {})
        if not public and not secret:
            raise ValidationError({"public": "Define at least one field, public or secret."})
        both = sorted(set(public) & set(secret))
        if both:
            raise ValidationError({"secret": f"Fields cannot be both public and secret: {', '.join(both)}."})

    def get_field(self, field: str):
        public, secret = self.secret.config.get("public", {}), self.secret.values.get("secret", {})
        if field in secret:
            return secret[field], True
        if field in public:
            return public[field], False
        raise self.refuse(f"it has no field {field!r}")

    def access_token(self) -> str:
        """A secret field named ``access_token`` (an app's connection that holds one)."""
        value, is_secret = self.get_field("access_token")
        if not is_secret:
            raise self.refuse("get_access_token needs a secret field 'access_token'")
        return value
