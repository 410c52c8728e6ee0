"""What a secret kind is: declared fields, validation, and the jobs it can do.

A kind is a small class. It declares its fields with ``project.declarative.Field`` (which
are secret, which are required, what type); ``clean()`` turns input from the admin form, ``apply`` YAML or a
service call into the ``config`` (plain) and ``values`` (encrypted) dicts stored on the
``Secret``. Bound to a stored secret (``secret.handler``) it does its jobs: authenticate an
outgoing request (``auth()``), verify an incoming one, sign, connect, probe. A kind that
cannot do a job raises ``WrongSecretKind`` naming the secret and the kind.

What a kind's secrets need besides their row (an OAuth2 connection to create, tokens to
revoke before deleting) happens in its life-cycle hooks, which the services call; what
the admin offers for it follows its ``capabilities`` and ``status_display()``. Only modules
in this package build authentication headers or decide by a kind's slug.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from django.core.exceptions import ValidationError

from project import outbound
from project.declarative import Field, clean_fields
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import ProbeFailed, WrongSecretKind
from secrets_app.redaction import Redactor

if TYPE_CHECKING:
    from secrets_app.models import Secret

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token


@dataclass(frozen=True)
class CleanedSecret:
    config: dict[str, Any]
    values: dict[str, Any]


@dataclass(frozen=True)
class ProbeResult:
    """What "Test" found. ``excerpt`` is a short piece of a response, secret values masked."""

    ok: bool
    summary: str
    excerpt: str = ""
    identity: str = ""  # the account it found, when it can tell


class Capability(StrEnum):
    """What a kind's secrets offer beyond the common jobs; the admin asks for these."""

    #: Holds OAuth2 tokens: its "Manage tokens" page connects, refreshes, tests and revokes them.
    TOKENS = "tokens"
    #: A provider sends the user back here: the admin shows the redirect URI to register.
    REDIRECT_URI = "redirect_uri"
    #: Generates its own key pair ("Generate key pair and save", "Generate new key pair").
    GENERATE_KEY = "generate_key"


@dataclass(frozen=True)
class StatusDisplay:
    """A secret's status as the admin shows it; ``tone`` ("ok", "failing", "neutral") picks the colour."""

    label: str
    tone: str


class HeaderAuth(requests.auth.AuthBase):
    """Adds fixed headers to a request; its repr names the headers, never their values."""

    def __init__(self, headers: Mapping[str, str]):
        self._headers = dict(headers)

    def __call__(self, request):
        request.headers.update(self._headers)
        return request

    def __repr__(self) -> str:
        return f"<HeaderAuth {', '.join(self._headers)}>"


def bearer_auth(token: str) -> HeaderAuth:
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1)."""
    return HeaderAuth({"Authorization": f"Bearer {token}"})


def basic_authorization(username: str, password: str) -> str:
    """``Authorization`` value for HTTP Basic (RFC 7617), UTF-8 encoded."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class SecretKind:
    """Base of every kind. Subclasses declare ``slug``, ``label`` and ``fields``."""

    slug: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()
    #: Whether "Test" means something for this kind (a probe URL, a connection).
    testable: ClassVar[bool] = False
    #: What the admin offers for its secrets besides editing and testing them.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: Templates show kind classes; they must not try to instantiate them.
    do_not_call_in_templates = True

    def __init__(self, secret):
        self.secret = secret
        self.name = secret.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- declaration and validation -------------------------------------------------

    @classmethod
    def field(cls, name: str) -> Field:
        return next(field for field in cls.fields if field.name == name)

    @classmethod
    def clean(cls, data: Mapping[str, Any], previous: CleanedSecret | None = None) -> CleanedSecret:
        """Validate input and split it into config and secret values.

        A blank secret field keeps the previous value (write-only fields). Raises
        ValidationError with messages keyed by field name.
        """
        cleaned, errors = clean_fields(
            cls.fields,
            data,
            owner=f"kind {cls.slug!r}",
            keep=lambda field: previous.values.get(field.name) if previous is not None and field.secret else None,
        )
        config = {name: value for name, value in cleaned.items() if not cls.field(name).secret}
        values = {name: value for name, value in cleaned.items() if cls.field(name).secret}
        if not errors:
            try:
                cls.validate(config, values)
            except ValidationError as exc:
                for key, messages in exc.message_dict.items():
                    errors.setdefault(key, []).extend(messages)
        if errors:
            raise ValidationError(errors)
        return CleanedSecret(config=config, values=values)

    @classmethod
    def validate(cls, config: dict[str, Any], values: dict[str, Any]) -> None:
        """Cross-field checks; may add derived config. Raise ValidationError({field: msg})."""

    @classmethod
    def save_warnings(cls, config: Mapping[str, Any]) -> list[str]:
        """What is valid but will not work here (shown after saving; the save happens)."""
        return []

    @classmethod
    def choice_notes(cls) -> dict[str, dict[str, str]]:
        """Notes on the choices of choice fields, shown on the form under the field for the
        choice made: ``{field name: {choice: note}}``."""
        return {}

    @classmethod
    def exportable_config(cls, config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """The config ``export`` writes: what ``clean`` derives by itself is left out."""
        return config

    # -- life cycle: the services call these; by default a secret is just its row -----------

    def created(self, acting_user) -> None:
        """After ``secret_create`` stored the secret, inside its transaction."""

    def changed(self, changed_fields: list[str], acting_user) -> None:
        """After ``secret_update`` stored changed fields (``changed_fields``), inside its transaction."""

    def before_delete(self, acting_user, *, force: bool) -> list[str]:
        """Before ``secret_delete`` removes the secret, outside any transaction (it may call out).

        Raises a VaultError to keep the secret; with ``force`` it reports the problem in the
        returned warnings instead and the secret is deleted anyway.
        """
        return []

    def deletion_preview(self) -> str:
        """What deleting this secret does besides removing it, for the confirmation page ("" when nothing)."""
        return ""

    @classmethod
    def deletion_previews(cls, secrets: Sequence[Secret]) -> list[str]:
        """``deletion_preview()`` of each of ``secrets`` (all of this kind), in order; a kind
        whose preview reads other rows reads them here, for all the secrets at once."""
        return [secret.handler.deletion_preview() for secret in secrets]

    def status_display(self) -> StatusDisplay:
        """The status the admin shows: by default the outcome of the last "Test"."""
        tone = self.secret.status if self.secret.status in ("ok", "failing") else "neutral"
        return StatusDisplay(label=self.secret.get_status_display(), tone=tone)

    # -- jobs -----------------------------------------------------------------------

    def value(self, field: str, default: Any = None) -> Any:
        if field in self.secret.values:
            return self.secret.values[field]
        return self.secret.config.get(field, default)

    def get_field(self, field: str) -> tuple[Any, bool]:
        """The value of a declared field and whether it is secret."""
        declared = {item.name: item for item in self.fields}
        if field not in declared:
            raise self.refuse(f"it has no field {field!r}")
        return self.value(field), declared[field].secret

    def rename_consequences(self, new_name: str) -> list[str]:
        """What renaming this secret to ``new_name`` changes besides its name, for the
        user to confirm first (``selectors.secret_rename_consequences``)."""
        return []

    def secret_strings(self) -> set[str]:
        """Every string that must never appear in stored output or logs."""
        return {value for value in _leaf_strings(self.secret.values)}

    def refuse(self, wanted: str):
        return WrongSecretKind(self.name, self.slug, wanted)

    def auth(self) -> requests.auth.AuthBase:
        """A requests auth object that authenticates an outgoing request."""
        raise self.refuse("it cannot authenticate HTTP requests")

    def password(self) -> str:
        raise self.refuse("get_password needs an api_token or basic_auth secret")

    def access_token(self) -> str:
        """The raw access token, for a scheme other than Bearer (``Vault.get_access_token``)."""
        raise self.refuse("get_access_token needs an oauth2 secret")

    def credentials(self) -> tuple[str, str]:
        """User name and password."""
        raise self.refuse("basic_auth needs a basic_auth secret")

    def probe(self) -> ProbeResult:
        raise self.refuse("it has nothing to test")

    def identity(self) -> str:
        """The account this secret stands for: set when it is connected or tested."""
        return self.secret.identity

    def token_data(self) -> dict[str, Any]:
        """Non-secret details a provider returned with the tokens; none for most kinds."""
        return {}

    def http_probe(self, url: str | None) -> ProbeResult:
        """GET ``url`` with this secret's authentication and report what came back."""
        if not url:
            raise ProbeFailed(f"Secret {self.name!r} has no test URL; set one to test it.")
        try:
            response = outbound.request(
                "GET",
                url,
                auth=self.auth(),
                limits=outbound.Limits(timeout=vault_settings.outbound_timeout_seconds, max_response_bytes=1024 * 1024),
            )
        except outbound.OutboundError as exc:
            return ProbeResult(ok=False, summary=str(exc))
        except requests.RequestException as exc:
            return ProbeResult(ok=False, summary=f"Request to {url} failed: {type(exc).__name__}.")
        excerpt = Redactor(self.secret_strings()).text(response.text[:500])
        return ProbeResult(ok=response.ok, summary=f"HTTP {response.status_code} from {url}", excerpt=excerpt)


def _leaf_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaf_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaf_strings(item)


class JoseKind(SecretKind):
    """A kind holding a JOSE key: signs and verifies JWTs, encrypts and decrypts JWEs.

    Subclasses name their one signing ``algorithm`` and JWE ``key_management`` algorithm
    and provide the keys; every operation passes those names down to ``secrets_app.jose``.
    """

    algorithm: ClassVar[str]
    key_management: ClassVar[str]

    def signing_key(self):
        raise self.refuse("it holds no private key to sign with")

    def verification_keys(self, kid: str | None = None):
        raise NotImplementedError

    def encryption_key(self):
        raise self.refuse("it cannot encrypt")

    def decryption_key(self):
        raise self.refuse("it holds no private key to decrypt with")

    def sign_jws(
        self, claims: Mapping[str, Any], *, expires_in: int | None = 300, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` as a JWT; ``iat`` is added, and ``exp`` unless given or ``expires_in`` is None."""
        from secrets_app import jose

        claims = dict(claims)
        now = int(time.time())
        claims.setdefault("iat", now)
        if expires_in is not None:
            claims.setdefault("exp", now + expires_in)
        extra = {
            key: value for key, value in (headers or {}).items() if key not in {"alg", "crit", "jku", "x5u", "jwk"}
        }
        return jose.sign(claims, self.signing_key(), self.algorithm, headers=extra)

    def verify_jws(self, token: str, *, audience=None, issuer=None, scopes=(), leeway=None) -> dict[str, Any]:
        from secrets_app import jose

        kid = jose.decode_header(token).get("kid")
        keys = self.verification_keys(kid=kid if isinstance(kid, str) else None)
        return jose.verify(
            token, keys, algorithm=self.algorithm, audience=audience, issuer=issuer, scopes=scopes, leeway=leeway
        )

    def encrypt_jwe(self, plaintext: bytes | str | Mapping) -> str:
        from secrets_app import jose

        if isinstance(plaintext, Mapping):
            plaintext = json.dumps(dict(plaintext), separators=(",", ":"))
        if isinstance(plaintext, str):
            plaintext = plaintext.encode()
        return jose.encrypt(plaintext, self.encryption_key(), algorithm=self.key_management)

    def decrypt_jwe(self, token: str) -> bytes:
        from secrets_app import jose

        return jose.decrypt(token, self.decryption_key(), algorithm=self.key_management)


class SharedKeyKind(SecretKind):
    """A kind whose secret can key an HMAC: it checks the signature of a webhook body."""

    def shared_key(self) -> bytes:
        raise NotImplementedError

    def signature_matches(self, message: bytes, presented: bytes, *, digest: str) -> bool:
        """Constant-time check of ``presented`` against HMAC-``digest`` of ``message``."""
        expected = hmac.new(self.shared_key(), message, digest).digest()
        return hmac.compare_digest(expected, presented)


def database_fields(
    *, default_port: int, tls_choices: tuple[tuple[str, str], ...], tls_default: str
) -> tuple[Field, ...]:
    return (
        Field("host", "Host", help_text="Host name or address; reached through the outbound guard."),
        Field("port", "Port", type="integer", default=default_port, min_value=1, max_value=65535),
        Field("database", "Database"),
        Field("user", "User"),
        Field("password", "Password", secret=True),
        Field("tls", "TLS", type="choice", choices=tls_choices, default=tls_default),
        Field(
            "ca_certificate",
            "CA certificate (PEM)",
            type="textarea",
            required=False,
            help_text="Trust anchor for the verify modes; the system's CAs are used when blank.",
        ),
        Field("connect_timeout", "Connect timeout (s)", type="integer", default=10, min_value=1, max_value=120),
    )


class DatabaseKind(SecretKind):
    """Credentials for a database server, connected through the outbound guard."""

    testable = True

    @classmethod
    def validate(cls, config, values):
        host = config["host"]
        if host.startswith("/") or "," in host or any(ch.isspace() for ch in host):
            raise ValidationError({"host": "Give one host name or address (no socket paths or host lists)."})

    def connect(self, *, statement_timeout_ms: int | None = None):
        """An open DB-API connection; the caller closes it."""
        raise NotImplementedError

    def server_version(self, connection) -> str:
        raise NotImplementedError

    def probe(self) -> ProbeResult:
        try:
            connection = self.connect(statement_timeout_ms=10_000)
        except outbound.OutboundError as exc:
            return ProbeResult(ok=False, summary=str(exc))
        except Exception as exc:  # driver errors; the message names host and user, never the password
            return ProbeResult(ok=False, summary=Redactor(self.secret_strings()).text(f"Cannot connect: {exc}"[:300]))
        try:
            version = self.server_version(connection)
        finally:
            connection.close()
        return ProbeResult(ok=True, summary=f"Connected to {self.value('host')}:{self.value('port')}: {version}")
