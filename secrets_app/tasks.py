"""Celery tasks of the vault. Thin: they take ids, call one service, and are idempotent."""

from celery import shared_task

from secrets_app.exceptions import TokenEndpointUnavailable
from secrets_app.services.connection_notices import oauth2_expiry_notices_send
from secrets_app.services.oauth2 import oauth2_connection_refresh_due, oauth2_due_refreshes_schedule


@shared_task(ignore_result=True, housekeeping=True)  # its own queue: a backlog of runs cannot delay it
def oauth2_refresh_due_connections():
    """Beat, every minute: queue a refresh for each connection whose time comes before the
    next run, to run at that time.

    On retry or a duplicate run: connections handed out are claimed (their next refresh
    time moves forward), so none is queued twice.
    """
    oauth2_due_refreshes_schedule(
        enqueue=lambda connection_id, version, countdown: oauth2_refresh_connection.apply_async(
            args=[connection_id, version], countdown=countdown
        ),
    )


@shared_task(
    autoretry_for=(TokenEndpointUnavailable,),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
    ignore_result=True,
)
def oauth2_refresh_connection(connection_id: int, version: int):
    """Refresh one connection if it is still at ``version``.

    Idempotent: a refresh done meanwhile (by a flow using the token, or another task)
    changes the version and makes this a no-op. Retried with backoff while the provider
    fails transiently (timeouts, 5xx, 429); never after the grant was refused.
    """
    return oauth2_connection_refresh_due(connection_id=connection_id, version=version)


@shared_task(ignore_result=True, housekeeping=True)
def oauth2_expiry_notices():
    """Beat, every hour: signal each connection whose refresh token expires soon.

    On retry or a duplicate run: each connection and expiry date is claimed once, so none
    is signalled twice.
    """
    oauth2_expiry_notices_send()
