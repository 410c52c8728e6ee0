"""What the vault knows about notices to the people behind OAuth2 connections.

The vault signals the changes a person must hear about (``secrets_app.signals``), each once
however many processes notice it; whoever listens (``apps_app.services.notices``) sends
the notice, claiming it here first, which records when it went out for the connections
manager to show.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from secrets_app import signals
from secrets_app.app_settings import vault_settings
from secrets_app.models import OAuth2Connection, Secret

#: The notice events, and the field recording when each last went out.
NOTICE_FIELDS = {
    "needs_reauthorization": "reauthorization_notice_at",
    "recovered": "recovery_notice_at",
    "expiring": "expiry_notice_at",
}


def oauth2_notice_claim(*, secret: Secret, event: str) -> bool:
    """Record that the notice ``event`` about ``secret``'s connection goes out now; False
    when it should not. A recovery is told only when the latest notice said the connection
    needs re-authorization: a recovery from transient failures nobody heard of is no news,
    and the condition sits in the UPDATE, so two processes cannot both tell it."""
    target = OAuth2Connection.objects.filter(secret=secret)
    if event == "recovered":
        target = target.filter(reauthorization_notice_at__isnull=False).filter(
            Q(recovery_notice_at__isnull=True) | Q(recovery_notice_at__lt=F("reauthorization_notice_at"))
        )
    return bool(target.update(**{NOTICE_FIELDS[event]: timezone.now()}))


def oauth2_expiry_notices_send() -> int:
    """Signal ``oauth2_connection_expiring`` for each connection whose refresh token expires
    within the notice time, once per connection and ``reconnect_by`` date: each is claimed
    by an UPDATE that only the first of concurrent runs wins. Returns how many were sent."""
    soon = timezone.now() + timedelta(days=vault_settings.oauth2_reconnect_notice_days)
    due = (
        OAuth2Connection.objects.filter(status=OAuth2Connection.Status.CONNECTED, reconnect_by__lte=soon)
        .filter(Q(expiry_notice_for__isnull=True) | ~Q(expiry_notice_for=F("reconnect_by")))
        .values_list("pk", "reconnect_by")
    )
    sent = 0
    for pk, reconnect_by in list(due):
        with transaction.atomic():
            claimed = OAuth2Connection.objects.filter(pk=pk, reconnect_by=reconnect_by).filter(
                Q(expiry_notice_for__isnull=True) | ~Q(expiry_notice_for=reconnect_by)
            )
            if not claimed.update(expiry_notice_for=reconnect_by):
                continue
            secret = Secret.objects.get(oauth2_connection__pk=pk)
            transaction.on_commit(
                lambda secret=secret, date=reconnect_by: signals.oauth2_connection_expiring.send(
                    sender=Secret, secret=secret, reconnect_by=date
                )
            )
        sent += 1
    return sent
