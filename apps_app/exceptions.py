"""What the apps services raise.

- ``manifest.ManifestError``: a manifest that cannot be installed (messages name the place).
- ``django.core.exceptions.ValidationError``: bad input to a service (a connection's fields).
- ``AppInUse``: uninstalling an app that still has connections, without ``force``.
- ``ConnectionTestFailed`` is not raised: a failed test is the connection's status.
- ``ConnectLinkError``: a connect link that cannot be used (``status``: the HTTP status its
  page answers with): ``ConnectLinkInvalid`` (changed, cut short: 400), ``ConnectLinkGone``
  (expired or already used: 410).
"""


class AppInUse(Exception):
    def __init__(self, app_slug: str, count: int):
        self.count = count
        super().__init__(
            f"The app {app_slug!r} has {count} connection(s); remove them first, or uninstall with --force "
            "(which revokes and deletes them)."
        )


class ConnectLinkError(Exception):
    status = 400


class ConnectLinkInvalid(ConnectLinkError):
    status = 400


class ConnectLinkGone(ConnectLinkError):
    status = 410
