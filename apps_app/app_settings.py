"""The apps' settings, read from ``settings.FLOWGATE_*`` (and BASE_URL) with documented defaults."""

from django.conf import settings


class AppSettings:
    @property
    def base_url(self) -> str:
        return settings.BASE_URL.rstrip("/")

    @property
    def connect_link_lifetime_seconds(self) -> int:
        """How long a connect link can be opened after it was made."""
        return int(getattr(settings, "FLOWGATE_CONNECT_LINK_LIFETIME_SECONDS", 3600))

    @property
    def connect_return_urls(self) -> tuple[str, ...]:
        """Where a connect link may send the person back: a return URL must start with one
        of these (a whole origin, ``https://app.example.com``, or a path prefix under one)."""
        return tuple(getattr(settings, "FLOWGATE_CONNECT_RETURN_URLS", ()))


app_settings = AppSettings()
