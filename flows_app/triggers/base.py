"""What an endpoint trigger's authentication mode is.

A mode is a small class: it declares its configuration ``fields`` and the secret kinds it
checks against, and answers one question for a request: who is calling, if anyone with
the key? ``authenticate()`` returns the ``Caller`` or raises ``Unauthenticated`` (401) or
``Forbidden`` (403, a valid JWT without a required scope). Each carries the
``WWW-Authenticate`` challenge of its scheme and nothing else: a caller never learns which
check failed beyond RFC 6750's error codes.

Checking a presented credential is the secret kind's job (``matches``,
``signature_matches``, ``verify_jws``): modes only find the credential in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from project.declarative import Field, clean_config

if TYPE_CHECKING:
    from secrets_app.models import Secret


@dataclass(frozen=True)
class IncomingRequest:
    """The parts of an HTTP request that authentication and the flow's input use."""

    method: str
    path: str
    headers: Mapping[str, str] = field(repr=False)  # case-insensitive (Django's request.headers); credentials
    query: Mapping[str, list[str]]
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class Caller:
    """Who called: ``subject`` names them (a user name, a JWT's ``sub``), ``claims`` of a JWT.

    ``identity`` tells the callers of one trigger apart: a run's status URL answers only
    the identity that started it. It is empty where the mode cannot tell callers apart
    (open access, a shared signing key), and never a credential: a caller known only by
    a key is named by the key's digest. ``replay_key`` names a signed delivery by what its
    signature covers, so the same delivery sent again starts no second run.
    """

    mode: str
    subject: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    identity: str = field(default="", repr=False)
    replay_key: str = field(default="", repr=False)

    def as_input(self) -> dict[str, Any]:
        return {"auth": self.mode, "subject": self.subject, "claims": self.claims}


class Unauthenticated(Exception):
    def __init__(self, challenge: str):
        self.challenge = challenge
        super().__init__(challenge)


class Forbidden(Exception):
    def __init__(self, challenge: str):
        self.challenge = challenge
        super().__init__(challenge)


REALM = 'realm="flowgate"'


class EndpointAuth:
    slug: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()
    #: Secret kinds this mode checks against; empty: it takes no secret.
    secret_kinds: ClassVar[tuple[str, ...]] = ()
    #: The challenge sent with a 401.
    challenge: ClassVar[str] = ""
    do_not_call_in_templates = True

    @classmethod
    def credential_headers(cls, config: Mapping[str, Any]) -> set[str]:
        """Headers, lower-cased, that carry this mode's credential besides Authorization."""
        return set()

    @classmethod
    def curl_arguments(cls, config: Mapping[str, Any]) -> list[str]:
        """How a caller presents the credential, as curl arguments. Shell variables
        (``$TOKEN``) stand for every credential: the admin shows these, never a value."""
        return []

    @classmethod
    def clean_config(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return clean_config(cls.fields, data, owner=f"authentication {cls.slug!r}", validate=cls.validate)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        """Cross-field checks. Raise ValidationError({field: message})."""

    def authenticate(self, request: IncomingRequest, *, config: dict[str, Any], secret: Secret | None) -> Caller:
        raise NotImplementedError

    def refuse(self) -> Unauthenticated:
        return Unauthenticated(self.challenge)
