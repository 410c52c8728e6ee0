"""The vault's metrics (README, "Metrics"); how they reach /metrics: ``project.metrics``."""

from __future__ import annotations

from contextlib import contextmanager

from prometheus_client import Counter

from secrets_app.exceptions import ReauthorizationRequired

OAUTH2_REFRESHES = Counter(
    "flowgate_oauth2_refreshes",
    "Token requests to OAuth2 providers (refresh, or a client-credentials fetch), by result: "
    "succeeded, failed (the provider or the network; tried again later) or "
    "needs_reauthorization (the grant was refused; a person must reconnect).",
    ["result"],
)


@contextmanager
def oauth2_refresh_counted():
    """Counts the refresh asked of the provider inside the block, by how it ended.

    Only the process that holds the lease asks, so this counts requests to providers,
    not the callers who waited for them.
    """
    try:
        yield
    except ReauthorizationRequired:
        OAUTH2_REFRESHES.labels(result="needs_reauthorization").inc()
        raise
    except Exception:
        OAUTH2_REFRESHES.labels(result="failed").inc()
        raise
    OAUTH2_REFRESHES.labels(result="succeeded").inc()
