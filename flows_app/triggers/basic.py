"""basic: HTTP Basic credentials (RFC 7617), checked against a basic-auth secret."""

import base64
import binascii

from flows_app.triggers.base import REALM, Caller, EndpointAuth


class BasicAuthentication(EndpointAuth):
    slug = "basic"
    label = "Basic auth"
    description = "The caller sends the user name and password of a basic-auth secret."
    secret_kinds = ("basic_auth",)
    challenge = f'Basic {REALM}, charset="UTF-8"'

    @classmethod
    def curl_arguments(cls, config):
        return ["-u", "$USERNAME:$PASSWORD"]

    def authenticate(self, request, *, config, secret):
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise self.refuse()
        try:
            username, separator, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self.refuse() from None
        if not separator or not secret.handler.matches(username, password):
            raise self.refuse()
        return Caller(mode=self.slug, subject=username, identity=username)
