"""api_key: a key in a header of the trigger's choosing, checked against an API-token secret.

With the header ``Authorization`` the key is sent as ``Authorization: Bearer <key>``.
"""

import hashlib

from django.core.exceptions import ValidationError

from flows_app.triggers.base import REALM, Caller, EndpointAuth
from project.declarative import Field
from secrets_app.kinds.base import HEADER_NAME


class ApiKey(EndpointAuth):
    slug = "api_key"
    label = "API key in a header"
    description = "The caller sends the token of an API-token secret in a header."
    secret_kinds = ("api_token",)
    challenge = f"ApiKey {REALM}"
    fields = (Field("header", "Header", default="X-API-Key", help_text="e.g. X-API-Key, or Authorization for a Bearer key."),)

    @classmethod
    def credential_headers(cls, config):
        return {str(config.get("header", "")).lower()}

    @classmethod
    def curl_arguments(cls, config):
        header = config["header"]
        return ["-H", "Authorization: Bearer $API_KEY" if header.lower() == "authorization" else f"{header}: $API_KEY"]

    @classmethod
    def validate(cls, config):
        if not HEADER_NAME.match(config["header"]):
            raise ValidationError({"header": "Not a valid HTTP header name."})

    def authenticate(self, request, *, config, secret):
        presented = request.headers.get(config["header"], "")
        if config["header"].lower() == "authorization":
            scheme, _, presented = presented.partition(" ")
            if scheme.lower() != "bearer":
                raise self.refuse()
        presented = presented.strip()
        if not presented or not secret.handler.matches(presented):
            raise self.refuse()
        return Caller(mode=self.slug, identity=hashlib.sha256(presented.encode()).hexdigest())
