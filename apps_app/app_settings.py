"""The apps' settings, read from ``settings.FLOWGATE_*`` (and BASE_URL) with documented defaults.

Read through ``apps_settings`` so that tests can override Django settings and see the
change at once (nothing is cached at import time).
"""

from django.conf import settings


class AppsSettings:
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

    @property
    def connection_notice_flow(self) -> str:
        """Slug of the flow run for notices about connections whose app names none (and
        plain OAuth2 secrets); blank: none."""
        return getattr(settings, "FLOWGATE_CONNECTION_NOTICE_FLOW", "")

    @property
    def connection_notice_email(self) -> bool:
        """Whether notices are also e-mailed to the connection's owner (Django's e-mail backend)."""
        return getattr(settings, "FLOWGATE_CONNECTION_NOTICE_EMAIL", False)


apps_settings = AppsSettings()
