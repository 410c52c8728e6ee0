"""The vault's settings, read from ``settings.FLOWGATE_*`` with documented defaults.

Read through ``vault_settings`` so that tests can override Django settings and see the
change at once (nothing is cached at import time).
"""

from django.conf import settings


class VaultSettings:
    @property
    def encryption_keys(self) -> list[str]:
        """Fernet keys, newest first: the first encrypts, all of them decrypt."""
        return list(getattr(settings, "FLOWGATE_ENCRYPTION_KEYS", []))

    @property
    def base_url(self) -> str:
        """Public URL of this installation; redirect URIs are built from it."""
        return settings.BASE_URL.rstrip("/")

    @property
    def last_used_resolution_seconds(self) -> int:
        """``Secret.last_used_at`` is written at most this often per secret (saves writes)."""
        return getattr(settings, "FLOWGATE_LAST_USED_RESOLUTION_SECONDS", 60)

    @property
    def generated_rsa_bits(self) -> int:
        return getattr(settings, "FLOWGATE_GENERATED_RSA_BITS", 3072)

    @property
    def jwt_leeway_seconds(self) -> int:
        """Clock skew allowed when checking ``exp`` and ``nbf``."""
        return getattr(settings, "FLOWGATE_JWT_LEEWAY_SECONDS", 30)

    @property
    def jwks_cache_seconds(self) -> int:
        """How long a downloaded JWKS is used before it is fetched again."""
        return getattr(settings, "FLOWGATE_JWKS_CACHE_SECONDS", 3600)

    @property
    def jwks_min_refetch_seconds(self) -> int:
        """An unknown ``kid`` triggers a new download at most this often per URL."""
        return getattr(settings, "FLOWGATE_JWKS_MIN_REFETCH_SECONDS", 60)

    @property
    def oauth2_refresh_leeway_seconds(self) -> int:
        """A token expiring within this many seconds is refreshed before use (within at most
        a third of its lifetime, for short-lived tokens: ``oauth2.tokens.refresh_leeway``)."""
        return getattr(settings, "FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS", 60)

    @property
    def oauth2_proactive_window_seconds(self) -> int:
        """The beat job refreshes tokens that expire within this window (capped like the leeway)."""
        return getattr(settings, "FLOWGATE_OAUTH2_PROACTIVE_WINDOW_SECONDS", 15 * 60)

    @property
    def oauth2_hook_modules(self) -> list[str]:
        """Module prefixes, besides ``secrets_app.oauth2.``, that provider hooks may be imported from."""
        return list(getattr(settings, "FLOWGATE_OAUTH2_HOOK_MODULES", []))

    @property
    def oauth2_state_lifetime_seconds(self) -> int:
        return getattr(settings, "FLOWGATE_OAUTH2_STATE_LIFETIME_SECONDS", 600)

    @property
    def oauth2_refresh_lock_seconds(self) -> int:
        """How long a refresher holds a connection's lease before others may take over."""
        return getattr(settings, "FLOWGATE_OAUTH2_REFRESH_LOCK_SECONDS", 30)

    @property
    def oauth2_reconnect_notice_days(self) -> float:
        """How long before a refresh token's ``reconnect_by`` its expiry notice goes out."""
        return getattr(settings, "FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS", 7)

    @property
    def outbound_timeout_seconds(self) -> float:
        return getattr(settings, "FLOWGATE_OUTBOUND_TIMEOUT_SECONDS", 20.0)


vault_settings = VaultSettings()
