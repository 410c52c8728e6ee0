"""The vault as flows, scripts and Python code use it.

    from secrets_app import api
    requests.get(url, auth=api.auth_for("crm"))
    api.get_password("crm-token")
    api.get_access_token("crm")   # raw, for a scheme other than Bearer; audited
    token = api.sign_jws("hook-key", {"sub": "42"})
    with api.db_connection("warehouse") as connection: ...

Module-level functions act as "python api", the operator. The flow engine makes a
``Vault`` per run acting for the flow's owner, limited to the flow's bindings, with the
run's ``Redactor``: the owner's grants are checked where a secret is reached
(``secrets_app.access``), and every value a run touches is registered in the redactor and
masked in what the run stores. Errors name the secret and its kind, never a
value. Plaintext handed to the caller (``get_password``, ``basic_auth``, a secret field
from ``get_field``) is recorded as a reveal in the audit log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import requests

from secrets_app import access, selectors
from secrets_app.exceptions import SecretAccessDenied, SecretNotFound
from secrets_app.models import Secret
from secrets_app.redaction import Redactor
from secrets_app.services.grants import bindings_of, bindings_replace, bindings_resolve  # noqa: F401  (for flows_app)
from secrets_app.services.secrets import secret_mark_used, secret_reveal_record

# What flows_app needs besides the Vault: the access rules and the bindings it records.
may_use, secrets_denied, secret_ids_denied = access.may_use, access.secrets_denied, access.secret_ids_denied
user_label = access.user_label
MANAGE = access.MANAGE


class BasicCredentials:
    """A user name and password; printing it never shows the password."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str):
        self.username, self.password = username, password

    def __iter__(self):
        return iter((self.username, self.password))

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=[secret])"


class _RecordingAuth(requests.auth.AuthBase):
    """Wraps a kind's auth object and tells the redactor which header values it sent.

    The response hook sees the request that finally went out, so a token obtained by a
    forced refresh after a 401 is recorded too.
    """

    def __init__(self, inner: requests.auth.AuthBase, redactor: Redactor):
        self._inner, self._redactor = inner, redactor

    def __call__(self, request):
        before = dict(request.headers)
        request = self._inner(request)
        names = [name for name, value in request.headers.items() if before.get(name) != value]
        self._record(request.headers, names)
        request.register_hook("response", lambda response, **kwargs: self._record(response.request.headers, names))
        return request

    def _record(self, headers, names) -> None:
        for name in names:
            value = headers.get(name, "")
            self._redactor.add(value, *value.split(" ", 1)[1:])

    def __repr__(self) -> str:
        return repr(self._inner)


def app_connections(*, app_slug: str):
    """Every connection of the installed app ``app_slug`` (secrets)."""
    return Secret.objects.filter(app_slug=app_slug)


def app_connection_get(*, app_slug: str, pk: int | None) -> Secret | None:
    """The connection ``pk`` of the installed app ``app_slug`` (a secret), or None."""
    return Secret.objects.filter(pk=pk, app_slug=app_slug).first() if pk is not None else None


def app_connections_usable(*, app_slug: str, user):
    """The connections of the installed app ``app_slug`` that ``user`` may run its flows with."""
    return access.secrets_allowed(user, Secret.objects.filter(app_slug=app_slug).select_related("owner"))


class Vault:
    """Access to secrets on behalf of one actor.

    ``acting_user`` is whose grants apply (None: the operator, who may use everything).
    ``allowed``, when given, limits which secret names this vault hands out (a flow's
    bindings; a script step's own list). ``cache`` keeps each secret for the vault's
    lifetime (one run); the module-level vault reads afresh every time. With a
    ``redactor``, every value touched is registered in it.
    """

    def __init__(
        self,
        *,
        acting_user=None,
        actor_label: str = "python api",
        redactor: Redactor | None = None,
        allowed: Iterable[str] | None = None,
        cache: bool = False,
    ):
        self.acting_user = acting_user
        self.actor_label = actor_label
        self.redactor = redactor
        self.allowed = frozenset(allowed) if allowed is not None else None
        self._cache: dict[str, Secret] | None = {} if cache else None

    def secret(self, name: str) -> Secret:
        if not isinstance(name, str):
            raise SecretNotFound(str(name))
        if self.allowed is not None and name not in self.allowed:
            raise SecretAccessDenied(name, "it is not among the secrets this flow binds (saved with the flow)")
        secret = self._cache.get(name) if self._cache is not None else None
        if secret is None:
            secret = selectors.secret_get(name=name)
            self._admit([secret])
        secret_mark_used(secret=secret)
        return secret

    def admit_all(self, secrets: Iterable[Secret]) -> None:
        """Check and keep every secret at once (a run's bindings, as read at its start).

        SecretAccessDenied for the first that cannot be used, so a run whose owner lost a
        grant fails before its first step, naming the secret.
        """
        self._admit(list(secrets))

    def _admit(self, secrets: list[Secret]) -> None:
        denied = access.secrets_denied(self.acting_user, secrets)
        if denied:
            raise SecretAccessDenied(denied[0].name, f"{access.user_label(self.acting_user)} holds no use grant for it")
        for secret in secrets:
            if self._cache is not None:
                self._cache[secret.name] = secret
            if self.redactor is not None:
                self.redactor.add(*secret.handler.secret_strings())

    def _reveal(self, secret: Secret, field: str) -> None:
        secret_reveal_record(secret=secret, field=field, acting_user=self.acting_user, actor_label=self.actor_label)

    def get_password(self, name: str) -> str:
        secret = self.secret(name)
        value = secret.handler.password()
        self._reveal(secret, "password")
        return value

    def basic_auth(self, name: str) -> BasicCredentials:
        secret = self.secret(name)
        credentials = BasicCredentials(*secret.handler.credentials())
        self._reveal(secret, "password")
        return credentials

    def get_access_token(self, name: str) -> str:
        """The raw access token of an OAuth2 connection, fresh, for an API whose scheme is not
        Bearer (``auth_for`` is the way for Bearer). A reveal, audited, and redacted in the run."""
        secret = self.secret(name)
        token = secret.handler.access_token()
        self._reveal(secret, "access_token")
        if self.redactor is not None:
            self.redactor.add(token)
        return token

    def auth_for(self, name: str) -> requests.auth.AuthBase:
        auth = self.secret(name).handler.auth()
        return _RecordingAuth(auth, self.redactor) if self.redactor is not None else auth

    def connection_identity(self, name: str) -> str:
        """The account a connection stands for (who connected it, or what its test found)."""
        return self.secret(name).handler.identity()

    def connection_data(self, name: str) -> dict[str, Any]:
        """What the provider returned beside the tokens (Salesforce's ``instance_url``)."""
        return self.secret(name).handler.token_data()

    def get_field(self, name: str, field: str) -> Any:
        secret = self.secret(name)
        value, is_secret = secret.handler.get_field(field)
        if is_secret:
            self._reveal(secret, field)
        return value

    def sign_jws(self, name: str, claims: Mapping[str, Any], *, expires_in: int | None = 300, headers=None) -> str:
        return self._jose(name, "sign_jws").sign_jws(claims, expires_in=expires_in, headers=headers)

    def verify_jws(self, name: str, token: str, *, audience=None, issuer=None, scopes=(), leeway=None) -> dict:
        return self._jose(name, "verify_jws").verify_jws(
            token, audience=audience, issuer=issuer, scopes=scopes, leeway=leeway
        )

    def encrypt_jwe(self, name: str, plaintext) -> str:
        return self._jose(name, "encrypt_jwe").encrypt_jwe(plaintext)

    def decrypt_jwe(self, name: str, token: str) -> bytes:
        return self._jose(name, "decrypt_jwe").decrypt_jwe(token)

    def _jose(self, name: str, operation: str):
        handler = self.secret(name).handler
        if not hasattr(handler, operation):
            raise handler.refuse(f"{operation} needs an hs256 or rs256 secret")
        return handler

    @contextlib.contextmanager
    def db_connection(self, name: str, *, statement_timeout_ms: int | None = None) -> Iterator[Any]:
        handler = self.secret(name).handler
        if not hasattr(handler, "connect"):
            raise handler.refuse("db_connection needs a postgresql or mysql secret")
        connection = handler.connect(statement_timeout_ms=statement_timeout_ms)
        try:
            yield connection
        finally:
            connection.close()


_default = Vault()

get_password = _default.get_password
basic_auth = _default.basic_auth
auth_for = _default.auth_for
get_field = _default.get_field
get_access_token = _default.get_access_token
sign_jws = _default.sign_jws
verify_jws = _default.verify_jws
encrypt_jwe = _default.encrypt_jwe
decrypt_jwe = _default.decrypt_jwe
db_connection = _default.db_connection
