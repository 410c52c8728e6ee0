"""signature: an HMAC of the raw body, checked against a shared-key secret.

Schemes:
  github   ``X-Hub-Signature-256: sha256=<hex>`` of the body.
  stripe   ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=...]`` of ``<t>.<body>``;
           a timestamp outside the tolerance is refused, so an old request cannot be
           replayed.
  slack    ``X-Slack-Signature: v0=<hex>`` of ``v0:<timestamp>:<body>``, the timestamp in
           ``X-Slack-Request-Timestamp``, with the same tolerance.
  generic  a header you name, holding ``<prefix><hex or base64>`` of the body with the
           algorithm you choose.
The key is an API-token secret's token or an HS256 secret's key bytes.
"""

from __future__ import annotations

import base64
import binascii
import time

from django.core.exceptions import ValidationError

from flows_app.triggers.base import REALM, Caller, EndpointAuth
from project.declarative import Field
from secrets_app.kinds.base import HEADER_NAME

SCHEMES = (
    ("github", "GitHub (X-Hub-Signature-256)"),
    ("stripe", "Stripe-style signed timestamp (Stripe-Signature)"),
    ("slack", "Slack (X-Slack-Signature, X-Slack-Request-Timestamp)"),
    ("generic", "Generic: a header, an algorithm and an encoding you choose"),
)
ALGORITHMS = (("sha256", "HMAC-SHA256"), ("sha512", "HMAC-SHA512"), ("sha1", "HMAC-SHA1 (legacy)"))
ENCODINGS = (("hex", "hex"), ("base64", "base64"))


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        return None


class Signature(EndpointAuth):
    slug = "signature"
    label = "HMAC signature of the body"
    description = "The caller signs the raw body with the shared key (GitHub, Stripe, Slack, or your own header)."
    secret_kinds = ("api_token", "hs256")
    challenge = f"Signature {REALM}"
    fields = (
        Field("scheme", "Scheme", type="choice", choices=SCHEMES, default="github"),
        Field("tolerance_seconds", "Timestamp tolerance (s)", type="integer", default=300, min_value=1, max_value=3600),
        Field("header", "Header (generic)", required=False, help_text="e.g. X-Signature."),
        Field("algorithm", "Algorithm (generic)", type="choice", choices=ALGORITHMS, default="sha256"),
        Field("encoding", "Encoding (generic)", type="choice", choices=ENCODINGS, default="hex"),
        Field("prefix", "Prefix (generic)", required=False, help_text="Text before the signature, e.g. sha256=."),
    )

    @classmethod
    def credential_headers(cls, config):
        return {"x-hub-signature-256", "stripe-signature", "x-slack-signature", str(config.get("header", "")).lower()}

    @classmethod
    def validate(cls, config):
        if config["scheme"] == "generic":
            header = config.get("header", "")
            if not header:
                raise ValidationError({"header": "Name the header that carries the signature."})
            if not HEADER_NAME.match(header):
                raise ValidationError({"header": "Not a valid HTTP header name."})

    def authenticate(self, request, *, config, secret):
        check = getattr(self, f"_{config['scheme']}")
        if not check(request, config, secret.handler):
            raise self.refuse()
        return Caller(mode=self.slug)

    @staticmethod
    def _github(request, config, key) -> bool:
        scheme, _, digest = request.headers.get("X-Hub-Signature-256", "").partition("=")
        presented = _hex(digest) if scheme == "sha256" else None
        return presented is not None and key.signature_matches(request.body, presented, digest="sha256")

    @staticmethod
    def _fresh(timestamp: str, tolerance: int) -> bool:
        return timestamp.isdigit() and abs(time.time() - int(timestamp)) <= tolerance

    def _stripe(self, request, config, key) -> bool:
        parts = [item.partition("=") for item in request.headers.get("Stripe-Signature", "").split(",")]
        timestamps = [value.strip() for name, _, value in parts if name.strip() == "t"]
        signatures = [_hex(value) for name, _, value in parts if name.strip() == "v1"]
        if len(timestamps) != 1 or not self._fresh(timestamps[0], config["tolerance_seconds"]):
            return False
        message = timestamps[0].encode() + b"." + request.body
        # Every candidate is checked, so the time taken does not say which one matched.
        matched = [key.signature_matches(message, value, digest="sha256") for value in signatures if value is not None]
        return any(matched)

    def _slack(self, request, config, key) -> bool:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "").strip()
        version, _, digest = request.headers.get("X-Slack-Signature", "").partition("=")
        presented = _hex(digest) if version == "v0" else None
        if presented is None or not self._fresh(timestamp, config["tolerance_seconds"]):
            return False
        return key.signature_matches(b"v0:" + timestamp.encode() + b":" + request.body, presented, digest="sha256")

    @staticmethod
    def _generic(request, config, key) -> bool:
        value = request.headers.get(config["header"], "").strip()
        prefix = config.get("prefix", "")
        if prefix:
            if not value.startswith(prefix):
                return False
            value = value[len(prefix) :]
        if config["encoding"] == "hex":
            presented = _hex(value)
        else:
            try:
                presented = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                presented = None
        return presented is not None and key.signature_matches(request.body, presented, digest=config["algorithm"])
