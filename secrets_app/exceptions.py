"""Errors raised by the vault.

    VaultError                      base; str() is a short reason that never holds a value
    ├── SecretNotFound              no secret with that name
    ├── WrongSecretKind             the secret exists but its kind cannot do what was asked
    ├── SecretMisconfigured         stored configuration cannot be used (e.g. no private key)
    ├── SecretAccessDenied          the acting user (a flow's owner) holds no grant for it,
    │                               or the secret is not among the flow's bindings
    ├── EncryptionKeyError          ciphertext cannot be decrypted with the configured keys
    ├── JoseError                   signing, verification, encryption or decryption failed
    │   └── TokenRejected           a JWT/JWS failed verification (signature, time, claims)
    │       └── InsufficientScope   a valid token that lacks a required scope
    ├── ProbeFailed                 "Test" could not reach or use the service
    └── OAuth2Error                 OAuth2 connection problems (see secrets_app.oauth2)
        ├── AuthorizationFailed     the authorization dance failed (state, iss, provider error)
        ├── NotConnected            no usable token: never connected, revoked, or needs re-authorization
        ├── ReauthorizationRequired the provider refused the grant (invalid_grant); user must reconnect
        ├── TokenEndpointUnavailable a transient failure at the provider (timeout, 5xx, 429)
        └── RevocationFailed        a secret was not deleted because its tokens could not be revoked

Views map these to HTTP statuses in one place (``secrets_app.views``); nothing here carries
a secret value, so messages can be shown to users and logged.
"""


class VaultError(Exception):
    """Base of every vault error."""


class SecretNotFound(VaultError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"No secret named {name!r}.")


class WrongSecretKind(VaultError):
    def __init__(self, name: str, kind: str, wanted: str):
        self.name, self.kind, self.wanted = name, kind, wanted
        super().__init__(f"Secret {name!r} is of kind {kind!r}; {wanted}.")


class SecretMisconfigured(VaultError):
    pass


class SecretAccessDenied(VaultError):
    def __init__(self, name: str, reason: str):
        self.name = name
        super().__init__(f"Secret {name!r} cannot be used here: {reason}.")


class EncryptionKeyError(VaultError):
    pass


class JoseError(VaultError):
    pass


class TokenRejected(JoseError):
    pass


class InsufficientScope(TokenRejected):
    pass


class ProbeFailed(VaultError):
    pass


class OAuth2Error(VaultError):
    pass


class AuthorizationFailed(OAuth2Error):
    pass


class NotConnected(OAuth2Error):
    pass


class ReauthorizationRequired(NotConnected):
    def __init__(self, message: str, *, error: str = ""):
        self.error = error  # the provider's error code, e.g. invalid_grant
        super().__init__(message)


class TokenEndpointUnavailable(OAuth2Error):
    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after  # seconds, from a Retry-After header
        super().__init__(message)


class SecretInUse(VaultError):
    """Deleting a secret stopped before anything happened: steps or triggers still use it."""

    def __init__(self, name: str, users: list[str]):
        self.name = name
        super().__init__(f"Secret {name!r} was not deleted: it is used by {', '.join(users)}.")


class RevocationFailed(OAuth2Error):
    """Deleting an OAuth2 secret stopped: its tokens would have stayed valid at the provider."""

    def __init__(self, name: str, reason: str):
        self.name = name
        super().__init__(
            f"Secret {name!r} was not deleted: revoking its tokens at the provider failed ({reason}). "
            "Try again later, or delete it anyway (the tokens then stay valid at the provider "
            "until they expire or are revoked there)."
        )
