"""Installing, upgrading, exporting and uninstalling apps.

Installing an app saves its flows with ``flow_save`` (the one service every path uses) as
``<app>/<flow>``, owned by the operator: an app's flows reach only the connection their
run uses, and who may use that connection is checked when a run starts. An upgrade (a
manifest with the slug of an installed app) keeps the app's connections, brings their
settings up to date, and says what changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from apps_app.app_settings import apps_settings
from apps_app.exceptions import AppInUse
from apps_app.manifest import Manifest, ManifestError
from apps_app.models import App, Connection
from flows_app.models import Flow
from flows_app.services.access import step_secret_names
from flows_app.services.config import flow_export, flow_spec_from_data
from flows_app.services.endpoints import app_trigger_path
from flows_app.services.flows import flow_save
from flows_app.services.specs import FlowSpec
from flows_app.steps import STEP_KINDS
from secrets_app import access
from secrets_app.services.audit import audit_record
from secrets_app.services.secrets import secret_delete, secret_update

#: The keys of a manifest's ``connection`` copied to each OAuth2 connection's secret.
OAUTH2_SETTINGS = (
    "preset", "grant_type", "client_auth", "issuer", "authorize_url", "token_url", "revocation_url", "userinfo_url",
    "jwks_url", "identity_url", "identity_field", "test_url", "scope", "pkce", "extra_authorize_params",
    "token_data_fields", "refresh_token_idle_days",
)  # fmt: skip


@dataclass
class AppChange:
    app: App
    action: str  # "install", "upgrade" or "unchanged"
    changes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        done = {"install": "installed", "upgrade": "upgraded", "unchanged": "unchanged."}[self.action]
        return f"{self.app.slug} {self.app.version}: {done}"

    def __str__(self) -> str:
        return self.headline + "".join(f"\n  - {line}" for line in self.changes)


def app_flow_slug(app_slug: str, name: str) -> str:
    return f"{app_slug}/{name}"


def _flow_specs(manifest: Manifest) -> list[FlowSpec]:
    """Every flow of the manifest, checked as ``apply`` checks flows, plus the app's rules."""
    slug, kind = manifest.slug, manifest.connection["kind"]
    specs, errors = [], {}
    for name, definition in manifest.data["flows"].items():
        place = f"flows.{name}"
        definition = dict(definition)
        public = definition.pop("public", False)
        if not isinstance(public, bool):
            errors[f"{place}.public"] = ["Expected true or false."]
            continue
        try:
            spec = flow_spec_from_data(name, definition, app_slug=slug)
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors[place if key == "__all__" else f"{place}.{key}"] = messages
            continue
        spec.app_private = not public
        if spec.endpoints and not public:
            errors[f"{place}.triggers"] = ["A private flow has no triggers; make it public: true."]
        if spec.schedules:  # its runs would be refused, at every tick, for want of a connection
            errors[f"{place}.triggers"] = ["A schedule names no connection; an app's flows run for one (use an endpoint)."]
        if spec.error_handler and not spec.error_handler.startswith(f"{slug}/"):
            errors[f"{place}.error_handler"] = [
                f"{spec.error_handler!r} is not this app's flow; an app's flows call only the app's own flows ({slug}/<flow>)."
            ]
        for endpoint in spec.endpoints or []:
            endpoint.path = app_trigger_path(slug, endpoint.path)
        for index, step in enumerate(spec.steps):
            kind_class = STEP_KINDS[step.kind]
            if names := step_secret_names(kind_class, step.config, None):
                errors[f"{place}.steps[{index}]"] = [
                    f"Reads the secret(s) {', '.join(sorted(names))}; an app's flows reach only their connection."
                ]
            elif outside := sorted(name for name in kind_class.called_flows(step.config) if not name.startswith(f"{slug}/")):
                errors[f"{place}.steps[{index}]"] = [
                    f"Calls the flow(s) {', '.join(outside)}; an app's flows call only the app's own flows ({slug}/<flow>)."
                ]
            elif step.uses_connection and kind_class.secret_kinds and kind not in kind_class.secret_kinds:
                errors[f"{place}.steps[{index}].secret"] = [
                    f"A {kind} connection cannot authenticate a {kind_class.label} step; use its fields in the step."
                ]
        specs.append(spec)
    names = set(manifest.data["flows"])
    connection = manifest.connection
    for key, name in [("test", connection.get("test")), *((f"operations.{op}", flow) for op, flow in connection.get("operations", {}).items())]:
        if name and name not in names:
            errors[f"connection.{key}"] = [f"There is no flow {name!r} in this app."]
    if connection.get("operations") and connection.get("grant_type") == "client_credentials":
        errors["connection.operations"] = ["Operations replace the authorization code grant's steps."]
    if errors:
        raise ManifestError([f"{place}: {message}" for place, messages in errors.items() for message in messages])
    return specs


def _registration_from_environment(slug: str) -> tuple[str, str]:
    """``FLOWGATE_APP_<SLUG>_CLIENT_ID`` and ``_CLIENT_SECRET`` (slug upper-cased, '-' as '_')."""
    prefix = f"FLOWGATE_APP_{slug.upper().replace('-', '_')}_"
    return os.environ.get(prefix + "CLIENT_ID", ""), os.environ.get(prefix + "CLIENT_SECRET", "")


def connection_secret_data(app: App) -> dict[str, Any]:
    """What a connection's secret holds for its app: the OAuth2 settings and registration."""
    connection = app.manifest["connection"]
    data = {key: connection[key] for key in OAUTH2_SETTINGS if key in connection}
    operations = connection.get("operations", {})
    data.update(
        client_id=app.client_id,
        client_secret=app.client_values.get("client_secret", ""),
        redirect_uri=app_redirect_uri(app),
        operations={name: app_flow_slug(app.slug, flow) for name, flow in operations.items()},
    )
    if not data["client_secret"]:
        data["client_auth"] = data.get("client_auth") or "none"
    return data


def app_redirect_uri(app: App) -> str:
    return f"{apps_settings.base_url}/apps/{app.slug}/oauth2/callback/"


@transaction.atomic
def app_install(*, manifest: Manifest, acting_user=None) -> AppChange:
    """Install ``manifest``, or upgrade the installed app with its slug (idempotent)."""
    specs = _flow_specs(manifest)
    meta = manifest.data["app"]
    app = App.objects.select_for_update().filter(slug=manifest.slug).first()
    if app is not None and app.connection_kind != manifest.connection["kind"]:
        raise ManifestError([
            f"connection.kind: {app.slug} is installed with {app.connection_kind} connections; "
            "uninstall it first to change their kind."
        ])  # fmt: skip
    action = "install" if app is None else "upgrade"
    if app is None:
        app = App(slug=manifest.slug, installed_by=acting_user if getattr(acting_user, "is_authenticated", False) else None)
        client_id, client_secret = _registration_from_environment(manifest.slug)
        app.client_id, app.client_values = client_id, {"client_secret": client_secret} if client_secret else {}
    changes = []
    if action == "upgrade" and app.version != meta["version"]:
        changes.append(f"version {app.version} → {meta['version']}")
    if action == "upgrade" and (app.name, app.description) != (meta["name"], meta.get("description", "")):
        changes.append("name or description")
    if action == "upgrade" and app.icon != manifest.icon:
        changes.append("icon")
    connection_changed = action == "upgrade" and app.manifest.get("connection") != manifest.connection
    if connection_changed:
        changes.append("connection settings")
    app.name, app.version, app.description = meta["name"], meta["version"], meta.get("description", "")
    app.icon, app.connection_kind, app.manifest = manifest.icon, manifest.connection["kind"], manifest.data
    app.save()
    wanted = set()
    for spec in specs:
        wanted.add(spec.slug)
        try:
            flow, flow_action, _changed = flow_save(spec=spec, acting_user=None, actor_label=f"app {app.slug}")
        except ValidationError as exc:
            name = spec.slug.split("/", 1)[1]
            raise ManifestError([
                f"flows.{name}" + ("" if key == "__all__" else f".{key}") + f": {message}"
                for key, messages in exc.message_dict.items() for message in messages
            ]) from None  # fmt: skip
        if action == "upgrade" and flow_action != "unchanged":
            changes.append(f"flow {spec.slug}: {'added' if flow_action == 'create' else 'changed'}")
    for flow in Flow.objects.filter(app_slug=app.slug).exclude(slug__in=wanted):
        changes.append(f"flow {flow.slug}: removed")
        flow.delete()
    if connection_changed and app.connection_kind == App.ConnectionKind.OAUTH2:
        connections_settings_sync(app=app)
    if action == "upgrade" and not changes:
        return AppChange(app, "unchanged")
    audit_record(
        acting_user=acting_user, action=f"app.{action}", target_type="app", target_name=app.slug,
        detail={"version": app.version, "changes": changes},
    )  # fmt: skip
    return AppChange(app, action, changes)


def connections_settings_sync(*, app: App) -> None:
    """Bring every OAuth2 connection of ``app`` up to its settings and registration."""
    data = connection_secret_data(app)
    for connection in Connection.objects.filter(app=app).select_related("secret"):
        secret_update(secret=connection.secret, data=data, actor_label=f"app {app.slug}")


@transaction.atomic
def app_registration_set(*, app: App, client_id: str, client_secret: str = "", acting_user=None) -> None:
    """The app's OAuth2 client at the provider (one for all its connections); a blank
    client secret keeps the one stored."""
    if app.connection_kind != App.ConnectionKind.OAUTH2:
        raise ValidationError({"client_id": f"{app.name} connects with fields, not OAuth2."})
    if not client_id.strip():
        raise ValidationError({"client_id": "This field is required."})
    app.client_id = client_id.strip()
    if client_secret:
        app.client_values = {"client_secret": client_secret}
    app.save(update_fields=["client_id", "client_values", "updated_at"])
    connections_settings_sync(app=app)
    audit_record(
        acting_user=acting_user, action="app.registration", target_type="app", target_name=app.slug,
        detail={"fields": ["client_id", *(["client_secret"] if client_secret else [])]},
    )  # fmt: skip


def app_export(*, app: App) -> str:
    """The app as a manifest (YAML, its icon inline): what installs it elsewhere. Never a value."""
    flows = {}
    for flow in Flow.objects.filter(app_slug=app.slug).select_related("error_handler").order_by("pk"):
        entry = flow_export(flow)
        for trigger in entry.get("triggers", []):
            if trigger.get("kind") == "endpoint":
                trigger["path"] = trigger["path"].removeprefix(app_trigger_path(app.slug, ""))
        if not flow.app_private:
            entry = {"public": True, **entry}
        flows[flow.slug.split("/", 1)[1]] = entry
    meta = {"slug": app.slug, "name": app.name, "version": app.version}
    if app.description:
        meta["description"] = app.description
    if app.icon:
        meta["icon"] = app.icon
    document = {"app": meta, "connection": app.manifest["connection"], "flows": flows}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def app_uninstall(*, app: App, acting_user=None, force: bool = False) -> list[str]:
    """Remove the app and its flows. With connections, refused unless ``force``: then each is
    revoked at its provider and deleted first. Returns warnings (revocations that failed)."""
    connections = list(Connection.objects.filter(app=app).select_related("secret"))
    if connections and not force:
        raise AppInUse(app.slug, len(connections))
    for connection in connections:  # before anything is revoked: all of them, or none
        access.require_manage(acting_user, connection.secret)
    warnings = []
    for connection in connections:
        warnings += secret_delete(secret=connection.secret, acting_user=acting_user, force=True)
    with transaction.atomic():
        Flow.objects.filter(app_slug=app.slug).delete()
        audit_record(acting_user=acting_user, action="app.uninstall", target_type="app", target_name=app.slug)
        app.delete()
    return warnings
