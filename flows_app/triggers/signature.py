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

A delivery is named by what its signature covers (``Caller.replay_key``), so the same
delivery sent again starts no second run: within the tolerance for stripe and slack
(after it the timestamp is refused anyway), within the 24 h idempotency window for
github and generic, whose signatures never expire. GitHub's ``X-GitHub-Delivery`` is not
signed, so it cannot name a delivery: a redelivery has the same body, hence the same key.
Two deliveries with the same body and no signed timestamp are indistinguishable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
    def curl_arguments(cls, config):
        return {
            "github": ["-H", "X-Hub-Signature-256: sha256=$SIGNATURE"],
            "stripe": ["-H", "Stripe-Signature: t=$TIMESTAMP,v1=$SIGNATURE"],
            "slack": ["-H", "X-Slack-Request-Timestamp: $TIMESTAMP", "-H", "X-Slack-Signature: v0=$SIGNATURE"],
            "generic": ["-H", f"{config.get('header', '')}: {config.get('prefix', '')}$SIGNATURE"],
        }[config["scheme"]]

    @classmethod
    def validate(cls, config):
        if config["scheme"] == "generic":
            header = config.get("header", "")
            if not header:
                raise ValidationError({"header": "Name the header that carries the signature."})
            if not HEADER_NAME.match(header):
                raise ValidationError({"header": "Not a valid HTTP header name."})

    def authenticate(self, request, *, config, secret):
        # Each scheme answers with the message its signature covers, or None when it fails.
        signed = getattr(self, f"_{config['scheme']}")(request, config, secret.handler)
        if signed is None:
            raise self.refuse()
        return Caller(mode=self.slug, replay_key=hashlib.sha256(signed).hexdigest())

    @staticmethod
    def _verified(message: bytes, matched: bool) -> bytes | None:
        return message if matched else None

    def _github(self, request, config, key) -> bytes | None:
        scheme, _, digest = request.headers.get("X-Hub-Signature-256", "").partition("=")
        presented = _hex(digest) if scheme == "sha256" else None
        matched = presented is not None and key.signature_matches(request.body, presented, digest="sha256")
        return self._verified(request.body, matched)

    @staticmethod
    def _fresh(timestamp: str, tolerance: int) -> bool:
        return timestamp.isdigit() and abs(time.time() - int(timestamp)) <= tolerance

    def _stripe(self, request, config, key) -> bytes | None:
        parts = [item.partition("=") for item in request.headers.get("Stripe-Signature", "").split(",")]
        timestamps = [value.strip() for name, _, value in parts if name.strip() == "t"]
        signatures = [_hex(value) for name, _, value in parts if name.strip() == "v1"]
        if len(timestamps) != 1 or not self._fresh(timestamps[0], config["tolerance_seconds"]):
            return None
        message = timestamps[0].encode() + b"." + request.body
        # Every candidate is checked, so the time taken does not say which one matched.
        matched = [key.signature_matches(message, value, digest="sha256") for value in signatures if value is not None]
        return self._verified(message, any(matched))

    def _slack(self, request, config, key) -> bytes | None:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "").strip()
        version, _, digest = request.headers.get("X-Slack-Signature", "").partition("=")
        presented = _hex(digest) if version == "v0" else None
        if presented is None or not self._fresh(timestamp, config["tolerance_seconds"]):
            return None
        message = b"v0:" + timestamp.encode() + b":" + request.body
        return self._verified(message, key.signature_matches(message, presented, digest="sha256"))

    def _generic(self, request, config, key) -> bytes | None:
        value = request.headers.get(config["header"], "").strip()
        prefix = config.get("prefix", "")
        if prefix:
            if not value.startswith(prefix):
                return None
            value = value[len(prefix) :]
        if config["encoding"] == "hex":
            presented = _hex(value)
        else:
            try:
                presented = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                presented = None
        matched = presented is not None and key.signature_matches(request.body, presented, digest=config["algorithm"])
        return self._verified(request.body, matched)
