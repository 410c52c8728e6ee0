"""Notices to the people behind connections: a flow (and optionally an e-mail) when a
connection needs re-authorization, when it recovers, and before its refresh token expires.

The vault signals each change once however many workers notice it
(``secrets_app.signals``, sent after commit); the receivers here pick the flow — the
connection's app's ``notice_flow``, else ``FLOWGATE_CONNECTION_NOTICE_FLOW``, which also
serves plain OAuth2 secrets — and queue it with the input::

    {"event": "needs_reauthorization" | "recovered" | "expiring", "app": "<slug or ''>",
     "connection_id": 12, "identity": "ann@example.com", "end_user": "customer-42",
     "reason": "...", "reconnect_url": "https://... or null", "reconnect_by": "<ISO date or null>"}

Each notice is claimed in the vault first (``oauth2_notice_claim``, which records when it
went out for the connections manager), in the same transaction as the run it starts. A
notice that cannot be sent is logged; it never breaks the token code that signalled it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction

from apps_app.app_settings import apps_settings
from apps_app.models import App, Connection
from apps_app.services.connect_links import connect_link_create
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import flow_run_start
from secrets_app import signals
from secrets_app.models import Secret
from secrets_app.services.audit import audit_record
from secrets_app.services.connection_notices import oauth2_notice_claim

logger = logging.getLogger(__name__)

NOTICE_TRIGGER = "notice"
SUBJECTS = {
    "needs_reauthorization": "{name} needs to be connected again",
    "recovered": "{name} works again",
    "expiring": "{name} must be reconnected by {date}",
}


def _reconnect_url(secret: Secret) -> str | None:
    """A fresh connect link the person behind an app's connection opens to connect it again,
    keeping its id (made by the operator, who may manage every connection). None for a
    plain OAuth2 secret: its owner reconnects it in the admin."""
    connection = Connection.objects.filter(secret=secret).select_related("app", "secret").first()
    if connection is None:
        return None
    return connect_link_create(app=connection.app, connection=connection).url


def notice_flow_slug(secret: Secret) -> str:
    """The flow for notices about ``secret``: its app's, else the global default ('' for none)."""
    app = App.objects.filter(slug=secret.app_slug).only("notice_flow").first() if secret.app_slug else None
    return (app.notice_flow if app is not None else "") or apps_settings.connection_notice_flow


def notice_input(secret: Secret, event: str, *, reason: str = "", reconnect_by: datetime | None = None) -> dict[str, Any]:
    """What a notice says (no value of the secret): the flow's input and the e-mail's facts."""
    connection = Connection.objects.filter(secret=secret).only("end_user").first()
    return {
        "event": event,
        "app": secret.app_slug,
        "connection_id": secret.pk,
        "identity": secret.handler.identity(),
        "end_user": connection.end_user if connection is not None else "",
        "reason": reason,
        "reconnect_url": _reconnect_url(secret),
        "reconnect_by": reconnect_by.isoformat() if reconnect_by is not None else None,
    }


def notice_send(
    *, secret: Secret, event: str, reason: str = "", reconnect_by: datetime | None = None
) -> FlowRun | None:
    """Send the notice ``event`` about ``secret``: queue the notice flow and e-mail the owner,
    as configured. Returns the run (None when no flow is configured or the notice is not
    due: a recovery nobody was told the failure of).

    Raises ``Flow.DoesNotExist`` for a configured flow that does not exist, and what
    ``flow_run_start`` raises; nothing is recorded then.
    """
    slug = notice_flow_slug(secret)
    owner_email = secret.owner.email if apps_settings.connection_notice_email and secret.owner_id else ""
    if not slug and not owner_email:
        return None
    with transaction.atomic():
        if not oauth2_notice_claim(secret=secret, event=event):
            return None
        payload = notice_input(secret, event, reason=reason, reconnect_by=reconnect_by)  # a link only when it goes out
        run = None
        if slug:
            flow = Flow.objects.get(slug=slug)
            run = flow_run_start(
                flow=flow,
                input=payload,
                trigger=NOTICE_TRIGGER,
                trigger_detail=f"{event} {secret.name}",
                # An app's own flow runs with the connection it is about; any other without.
                connection=secret if flow.app_slug and flow.app_slug == secret.app_slug else None,
                # The reconnect link connects it for whoever holds it: no one without a grant on it sees the run's data.
                input_secrets=[secret],
            )
        audit_record(
            actor_label="notices",
            action=f"notice.{event}",
            target_type="secret",
            target_name=secret.name,
            detail={"flow": slug, "run": run.pk if run else None, "email": bool(owner_email)},
        )
    if owner_email:
        _notice_email(secret, payload, owner_email)
    return run


def _notice_email(secret: Secret, payload: dict[str, Any], address: str) -> None:
    name = payload["identity"] or secret.name
    if secret.app_slug:
        name = f"{name} ({secret.app_slug})"
    subject = SUBJECTS[payload["event"]].format(name=name, date=(payload["reconnect_by"] or "")[:10])
    lines = [subject + "."]
    if payload["reason"]:
        lines.append(f"Reason: {payload['reason']}")
    if payload["reconnect_url"]:
        lines.append(f"Reconnect here: {payload['reconnect_url']}")
    send_mail(subject, "\n\n".join(lines), None, [address])


def _receiver(event: str):
    def receive(sender, secret: Secret, reason: str = "", reconnect_by: datetime | None = None, **kwargs) -> None:
        try:
            notice_send(secret=secret, event=event, reason=reason, reconnect_by=reconnect_by)
        except Exception:  # a notice must never break the token code path that signalled it
            logger.exception("The %s notice about secret %r could not be sent.", event, secret.name)

    return receive


def notice_receivers_connect() -> None:
    """Listen to the vault's signals (``AppConfig.ready``)."""
    for signal, event in (
        (signals.oauth2_connection_needs_reauthorization, "needs_reauthorization"),
        (signals.oauth2_connection_recovered, "recovered"),
        (signals.oauth2_connection_expiring, "expiring"),
    ):
        signal.connect(_receiver(event), sender=Secret, weak=False, dispatch_uid=f"apps_app.notices.{event}")


def notice_flow_check(flow_slug: str) -> str:
    """``flow_slug`` stripped, when blank or a flow's: ValidationError otherwise."""
    flow_slug = flow_slug.strip()
    if flow_slug and not Flow.objects.filter(slug=flow_slug).exists():
        raise ValidationError({"notice_flow": f"There is no flow {flow_slug!r}."})
    return flow_slug


def app_notice_flow_set(*, app: App, flow_slug: str, acting_user=None) -> App:
    """Set the flow run for notices about ``app``'s connections ('' for the global default).

    ValidationError when no flow has that slug; nothing is saved then.
    """
    flow_slug = notice_flow_check(flow_slug)
    with transaction.atomic():
        App.objects.filter(pk=app.pk).update(notice_flow=flow_slug)
        audit_record(
            acting_user=acting_user,
            action="app.notice_flow",
            target_type="app",
            target_name=app.slug,
            detail={"flow": flow_slug},
        )
    app.notice_flow = flow_slug
    return app
