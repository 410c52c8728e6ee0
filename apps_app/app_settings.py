"""The apps' settings, read from ``settings.FLOWGATE_*`` with documented defaults.

Read through ``apps_settings`` so that tests can override Django settings and see the
change at once (nothing is cached at import time).
"""

from django.conf import settings


class AppsSettings:
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
