"""OAuth2 operations that an app replaces with its own flows.

An OAuth2 secret's ``operations`` map an operation to the slug of a flow (an installed app
sets them for its connections). ``hooks_for`` then wraps the secret's hooks in
``OperationHooks``: a named operation runs its flow, synchronously, where the standard one
would have run, so everything around it stays as it is: a refresh still happens inside the
single-flight lease and is stored by ``tokens.store_tokens``; failures are stored as the
connection's last error; the flow's requests go through the outbound guard and its run
is bounded by the outbound timeout; the run's history is redacted. The contract is
FlowRunner's (``getOAuth2ConnectionURL``, ``executeCallback``, ``refreshToken``):

    authorize_url  {redirect_uri, state, code_challenge, scope}     -> {authorize_url}
    exchange       {code, redirect_uri, code_verifier, callback}    -> {access_token, expires_in,
                                                                        refresh_token, identity, data}
    refresh        {refresh_token}                                  -> the same; no refresh_token
                                                                        keeps the old one

Only ``access_token`` (or ``authorize_url``) is required. Instead of tokens a flow may
answer ``{error, error_description}`` with an RFC 6749 §5.2 code (what the provider said):
a code that refuses the grant or the client asks the user to reconnect, as the standard
operation does. A wrong shape fails with a message naming the flow and the key.

The vault runs no flows itself (imports point down): the flows layer installs the runner
at startup with ``runner_install``. The runner receives the strings to mask from the
start (``sensitive``) and a function naming the secrets in the flow's output, which the
run's history must never show (``OUTPUT_SECRETS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from secrets_app.exceptions import ReauthorizationRequired, SecretMisconfigured, TokenEndpointUnavailable
from secrets_app.oauth2.client import PERMANENT_ERRORS, OAuth2Config, OAuth2Hooks, TokenResult

#: The keys of an exchange or refresh output whose values are tokens.
TOKEN_KEYS = ("access_token", "refresh_token", "id_token")


class OperationFailed(Exception):
    """The runner's report of a run that did not succeed; ``str()`` says which run and why."""


class Runner(Protocol):
    def __call__(
        self,
        flow_slug: str,
        input: dict[str, Any],
        secret,
        *,
        sensitive: Iterable[str],
        output_secrets: Callable[[Any], Iterable[str]],
    ) -> Any:
        """Run ``flow_slug`` with ``input`` for the connection ``secret`` and return its output.

        Raises OperationFailed when the run fails, SecretMisconfigured when the flow
        cannot run for this secret (no such flow, not the secret's app)."""


_runner: Runner | None = None


def runner_install(runner: Runner | None) -> None:
    """Set the function that runs operation flows (the flows layer, at startup)."""
    global _runner
    _runner = runner


def output_secrets(output: Any) -> list[str]:
    """The strings of an operation's output that must never be shown: its tokens, or,
    when the output does not have the contract's shape, every string outside ``identity``
    and ``data`` (a token under a name we do not know is still a token)."""
    if not isinstance(output, Mapping):
        return _strings(output)
    if isinstance(output.get("access_token"), str) or isinstance(output.get("authorize_url"), str):
        return [output[key] for key in TOKEN_KEYS if isinstance(output.get(key), str)]
    return _strings({key: value for key, value in output.items() if key not in ("identity", "data", "error")})


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [string for item in value.values() for string in _strings(item)]
    if isinstance(value, (list, tuple)):
        return [string for item in value for string in _strings(item)]
    return []


def operation_run(config: OAuth2Config, operation: str, input: dict[str, Any], *, sensitive: Iterable[str]) -> Mapping:
    """Run the flow ``config`` names for ``operation``; its output, checked to be a mapping."""
    flow = config.operations[operation]
    if _runner is None:
        raise SecretMisconfigured(f"The {operation} operation is the flow {flow!r}, but no flow runner is installed.")
    try:
        output = _runner(
            flow, input, config.secret, sensitive=[value for value in sensitive if value], output_secrets=output_secrets
        )
    except OperationFailed as exc:
        raise TokenEndpointUnavailable(f"The {operation} operation flow {flow!r} failed: {exc}") from None
    if not isinstance(output, Mapping):
        raise SecretMisconfigured(f"The {operation} operation flow {flow!r} must output an object, not {_kind(output)}.")
    error = output.get("error")
    if isinstance(error, str) and error:
        description = str(output.get("error_description") or "")[:200]
        reason = f"{error[:50]}{f': {description}' if description else ''}"
        if error in PERMANENT_ERRORS:
            raise ReauthorizationRequired(f"The provider refused the grant ({reason}), said flow {flow!r}.", error=error)
        raise TokenEndpointUnavailable(f"The provider answered an error ({reason}), said flow {flow!r}.")
    return output


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _required_string(config: OAuth2Config, operation: str, output: Mapping, key: str) -> str:
    value = output.get(key)
    if not isinstance(value, str) or not value:
        found = "is missing" if value in (None, "") else f"must be text, not {_kind(value)}"
        raise SecretMisconfigured(
            f"The {operation} operation flow {config.operations[operation]!r} gave no {key!r}: the key {found}."
        )
    return value


def token_result(config: OAuth2Config, operation: str, output: Mapping) -> TokenResult:
    """An exchange or refresh output as the ``TokenResult`` the standard operation makes."""
    flow = config.operations[operation]
    access_token = _required_string(config, operation, output, "access_token")
    refresh_token, identity, data = output.get("refresh_token"), output.get("identity"), output.get("data")
    expires_in = output.get("expires_in")
    try:
        expires_in = float(expires_in) if expires_in not in (None, "") else None
    except (TypeError, ValueError):
        raise SecretMisconfigured(
            f"The {operation} operation flow {flow!r} gave 'expires_in' {str(expires_in)[:40]!r}: expected seconds."
        ) from None
    for key, value, expected in (("refresh_token", refresh_token, str), ("identity", identity, str), ("data", data, Mapping)):
        if value not in (None, "") and not isinstance(value, expected):
            raise SecretMisconfigured(
                f"The {operation} operation flow {flow!r} gave {key!r} as {_kind(value)}; "
                f"expected {'an object' if expected is Mapping else 'text'}."
            )
    return TokenResult(
        token=access_token,
        refresh_token=refresh_token or None,
        expires_in=expires_in,
        identity_name=identity or None,
        extra=dict(data or {}),
    )


class OperationHooks:
    """A secret's hooks, with the operations it names replaced by its flows.

    Everything else (client credentials, revocation) is the wrapped hooks' own.
    """

    def __init__(self, hooks: OAuth2Hooks, config: OAuth2Config):
        self._hooks, self._config = hooks, config

    def __getattr__(self, name: str):
        return getattr(self._hooks, name)

    def _named(self, operation: str) -> bool:
        return operation in self._config.operations

    def authorization_url(self, config: OAuth2Config, *, redirect_uri: str, state: str, code_challenge: str | None) -> str:
        if not self._named("authorize_url"):
            return self._hooks.authorization_url(
                config, redirect_uri=redirect_uri, state=state, code_challenge=code_challenge
            )
        input = {"redirect_uri": redirect_uri, "state": state, "code_challenge": code_challenge, "scope": config.scope}
        output = operation_run(config, "authorize_url", input, sensitive=[state])
        url = _required_string(config, "authorize_url", output, "authorize_url")
        if not url.lower().startswith(("https://", "http://")):
            flow = config.operations["authorize_url"]
            raise SecretMisconfigured(f"The authorize_url operation flow {flow!r} gave a URL that is not http(s).")
        return url

    def exchange_code(
        self,
        config: OAuth2Config,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        callback: Mapping[str, str] | None = None,
    ) -> TokenResult:
        if not self._named("exchange"):
            return self._hooks.exchange_code(
                config, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier, callback=callback
            )
        callback = dict(callback or {"code": code})
        input = {"code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier, "callback": callback}
        output = operation_run(config, "exchange", input, sensitive=[code, code_verifier, callback.get("state")])
        return token_result(config, "exchange", output)

    def refresh(self, config: OAuth2Config, *, refresh_token: str) -> TokenResult:
        if not self._named("refresh"):
            return self._hooks.refresh(config, refresh_token=refresh_token)
        output = operation_run(config, "refresh", {"refresh_token": refresh_token}, sensitive=[refresh_token])
        return token_result(config, "refresh", output)
