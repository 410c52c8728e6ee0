"""Connections: one account connected to one installed app.

A connection is a vault secret (``Secret.app_slug`` set) plus its ``Connection`` row; the
vault's services create, change and delete it, so grants, encryption, the OAuth2 token
life cycle and the audit apply to it unchanged. Its owner is whoever added it.

- A **generic** app's connection holds the fields the manifest declares: sensitive ones
  encrypted (the generic kind's secret fields), the others plain.
- An **OAuth2** app's connection holds the app's settings and registration; it connects
  through the vault's authorization flow, with the app's shared redirect URI.

After it is added (and whenever "Test" is pressed) the app's test flow runs with it; its
outcome is the connection's status, and an ``identity`` in its output names the account.
"""

from __future__ import annotations

import secrets as random
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps_app.models import App, Connection
from apps_app.services.apps import app_flow_slug, connection_secret_data
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import flow_run_inline
from project.declarative import Field, clean_fields
from secrets_app.models import Secret
from secrets_app.kinds.base import ProbeResult
from secrets_app.services.secrets import secret_create, secret_probe, secret_update

#: How long "Test" waits for an app's test flow.
TEST_TIMEOUT_SECONDS = 60


def connection_fields(app: App) -> tuple[Field, ...]:
    """A generic app's declared fields, as the vault's declarative fields."""
    return tuple(
        Field(
            spec["key"],
            spec["label"],
            type="choice" if spec.get("choices") else "text",
            choices=tuple((choice, choice) for choice in spec.get("choices", ())),
            secret=spec.get("sensitive", False),
            required=spec.get("required", False),
            default=spec.get("default"),
            help_text=spec.get("help", ""),
        )
        for spec in app.manifest["connection"].get("fields", ())
    )


def _generic_values(app: App, data: Mapping[str, Any], previous: Secret | None) -> dict[str, Any]:
    """The generic secret's data from the declared fields; a blank sensitive field keeps its value."""
    fields = connection_fields(app)
    kept = previous.values.get("secret", {}) if previous is not None else {}
    cleaned, errors = clean_fields(
        fields, data, owner=f"app {app.slug!r}", keep=lambda field: kept.get(field.name) if field.secret else None
    )
    if errors:
        raise ValidationError(errors)
    sensitive = {field.name for field in fields if field.secret}
    public = {key: value for key, value in cleaned.items() if key not in sensitive and value not in (None, "")}
    secret = {key: value for key, value in cleaned.items() if key in sensitive and value not in (None, "")}
    return {"public": public, "secret": secret}


def _secret_name(app: App) -> str:
    return f"{app.slug}-{random.token_hex(4)}"


@transaction.atomic
def connection_create(
    *, app: App, data: Mapping[str, Any] | None = None, acting_user=None, end_user: str = ""
) -> Connection:
    """Add a connection (not yet tested; an OAuth2 one not yet connected)."""
    if app.connection_kind == App.ConnectionKind.OAUTH2:
        if not app.client_id:
            raise ValidationError({"__all__": f"Set {app.name}'s OAuth2 client (its registration) first."})
        kind, values = "oauth2", connection_secret_data(app)
    else:
        kind, values = "generic", _generic_values(app, data or {}, None)
    secret = secret_create(
        name=_secret_name(app),
        kind=kind,
        data=values,
        description=f"A connection of {app.name}.",
        acting_user=acting_user,
        app_slug=app.slug,
    )
    return Connection.objects.create(secret=secret, app=app, end_user=end_user)


def connection_update(*, connection: Connection, data: Mapping[str, Any], acting_user=None) -> list[str]:
    """Change a generic connection's fields (blank sensitive fields keep their values)."""
    app = connection.app
    if app.connection_kind != App.ConnectionKind.GENERIC:
        raise ValidationError({"__all__": "An OAuth2 connection changes by connecting again."})
    values = _generic_values(app, data, connection.secret)
    return secret_update(secret=connection.secret, data=values, acting_user=acting_user)


def connection_test(*, connection: Connection, acting_user=None) -> ProbeResult | None:
    """Run the app's test flow with ``connection``; its outcome becomes the connection's
    status (``secret_probe``), and an ``identity`` in its output the account's name.
    None when the app has no test flow."""
    app = connection.app
    name = app.manifest["connection"].get("test")
    if not name:
        return None
    flow = Flow.objects.get(slug=app_flow_slug(app.slug, name))

    def run_test_flow() -> ProbeResult:
        run = flow_run_inline(
            flow=flow, input={}, connection=connection.secret, trigger="connection_test", timeout=TEST_TIMEOUT_SECONDS
        )
        if run.status != FlowRun.Status.SUCCEEDED:
            return ProbeResult(ok=False, summary=f"Test flow run #{run.pk} failed: {run.error}")
        identity = run.output.get("identity") if isinstance(run.output, Mapping) else None
        return ProbeResult(
            ok=True, summary=f"Test flow run #{run.pk} succeeded.", identity=identity if isinstance(identity, str) else ""
        )

    return secret_probe(secret=connection.secret, acting_user=acting_user, probe=run_test_flow)
