"""The ``flows:`` section of the config-as-code file.

    flows:
      whoami:
        name: Who am I
        timeout: 300
        steps:
          - {key: me, kind: http_request, method: GET, url: "https://crm.example.com/api/me", secret: crm}
          - {key: reply, kind: respond, status: 200, body: {user: "{{ steps.me.body.name }}"}}

        triggers:
          - {kind: endpoint, path: whoami, methods: [POST], auth: {kind: jwt, secret: hook-key, scopes: ["orders:write"]}, response: sync}
          - {kind: schedule, cron: "*/5 * * * *", timezone: Europe/Paris}

A step is its common settings (``key``, ``kind``, ``secret``, ``max_attempts``,
``retry_backoff``, ``timeout``, ``on_error``, ``error_step``) beside its kind's own fields.
A flow without a ``triggers`` key keeps the triggers it has; ``triggers: []`` removes them.
Flows are applied in file order, after the secrets; ``error_handler`` may name a flow
defined earlier in the file or already in the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug

from flows_app.models import Flow
from flows_app.services.flows import APP_CONNECTION, flow_save, flow_steps_check, step_spec_from_data
from flows_app.services.specs import FlowSpec
from flows_app.services.triggers import triggers_export, triggers_from_data
from flows_app.steps import STEP_KINDS
from project.declarative import is_whole_number, unknown_keys
from secrets_app.services.config import Change

FLOW_KEYS = {"name", "description", "enabled", "timeout", "concurrency_limit", "error_handler", "steps", "triggers"}


def flow_spec_from_data(slug: Any, definition: Any, *, acting_user=None, app_slug: str = "") -> FlowSpec:
    """Validate one flow as written in the ``apply`` file or an app's manifest.

    ``app_slug``: a flow of that app, saved as ``<app_slug>/<slug>``; its steps reach only
    their run's connection.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(slug, str):
        raise ValidationError({"__all__": "A flow's name in the file must be text."})
    try:
        validate_slug(slug)
    except ValidationError:
        raise ValidationError({"__all__": f"{slug!r} is not a valid flow slug: use letters, digits, '-' and '_'."}) from None
    if not isinstance(definition, Mapping):
        raise ValidationError({"__all__": "Expected a mapping with 'steps'."})
    if unknown := unknown_keys(definition, FLOW_KEYS):
        errors["__all__"] = unknown
    steps_data = definition.get("steps", [])
    if not isinstance(steps_data, list):
        raise ValidationError({"steps": "Expected a list of steps."})
    steps = []
    for index, step_data in enumerate(steps_data):
        if not isinstance(step_data, Mapping):
            errors[f"steps[{index}]"] = ["Expected a mapping with key, kind and the kind's fields."]
            continue
        try:
            steps.append(step_spec_from_data(step_data, acting_user=acting_user, in_app=bool(app_slug)))
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors[f"steps[{index}].{name}"] = messages
    if not errors:
        errors.update(flow_steps_check(steps))
    endpoints = schedules = None
    if "triggers" in definition:
        try:
            endpoints, schedules = triggers_from_data(definition["triggers"])
        except ValidationError as exc:
            errors.update(exc.message_dict)
    spec = FlowSpec(
        slug=f"{app_slug}/{slug}" if app_slug else slug,
        app_slug=app_slug,
        name=str(definition.get("name") or slug),
        description=str(definition.get("description") or ""),
        enabled=definition.get("enabled", True),
        timeout_seconds=definition.get("timeout", 300),
        concurrency_limit=definition.get("concurrency_limit", 0),
        error_handler=str(definition.get("error_handler") or ""),
        steps=steps,
        endpoints=endpoints,
        schedules=schedules,
    )
    if not isinstance(spec.enabled, bool):
        errors["enabled"] = ["Expected true or false."]
    for name, value in (("timeout", spec.timeout_seconds), ("concurrency_limit", spec.concurrency_limit)):
        if not is_whole_number(value, low=1 if name == "timeout" else 0):
            errors[name] = ["Expected a whole number" + (" of at least 1." if name == "timeout" else ".")]
    if errors:
        raise ValidationError(errors)
    return spec


def flows_apply(spec: Any, *, env: Mapping[str, str], acting_user=None) -> list[Change]:
    """Create or update every flow in ``spec`` (values are taken literally: no ``${VAR}``)."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ValidationError({"__all__": "Expected a mapping of flow slugs to definitions."})
    changes, errors = [], {}
    for slug, definition in spec.items():
        try:
            flow_spec = flow_spec_from_data(slug, definition, acting_user=acting_user)
            flow, action, changed = flow_save(spec=flow_spec, acting_user=acting_user, actor_label="apply")
            changes.append(Change(action, "flow", slug, [] if action == "create" else changed))
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors[str(slug) if name == "__all__" else f"{slug}.{name}"] = messages
    if errors:
        raise ValidationError(errors)
    return changes


def _step_export(step) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": step.key, "kind": step.kind}
    kind = STEP_KINDS.get(step.kind)
    defaults = {field.name: field.default for field in kind.fields} if kind else {}
    entry.update({name: value for name, value in step.config.items() if defaults.get(name) != value})
    if step.uses_connection:
        entry["secret"] = APP_CONNECTION
    elif step.secret_id:
        entry["secret"] = step.secret.name
    for name, value, default in (
        ("max_attempts", step.max_attempts, 1),
        ("retry_backoff", step.retry_backoff_seconds, 1.0),
        ("timeout", step.timeout_seconds, 30),
        ("on_error", step.on_error, "stop"),
        ("error_step", step.error_step_key, ""),
        ("for_each", step.for_each, ""),
        ("for_each_concurrency", step.for_each_concurrency, 4),
        ("for_each_errors", step.for_each_errors, "fail"),
    ):
        if value != default:
            entry[name] = value
    return entry


def flows_export() -> dict[str, Any]:
    """Every flow but the installed apps' (``app export`` writes those, with their app)."""
    return {flow.slug: flow_export(flow) for flow in Flow.objects.filter(app_slug="").select_related("error_handler").order_by("pk")}


def flow_export(flow: Flow) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": flow.name}
    if flow.description:
        entry["description"] = flow.description
    if not flow.enabled:
        entry["enabled"] = False
    if flow.timeout_seconds != 300:
        entry["timeout"] = flow.timeout_seconds
    if flow.concurrency_limit:
        entry["concurrency_limit"] = flow.concurrency_limit
    if flow.error_handler:
        entry["error_handler"] = flow.error_handler.slug
    entry["steps"] = [_step_export(step) for step in flow.steps.select_related("secret").order_by("position", "id")]
    triggers = triggers_export(flow)
    if triggers:
        entry["triggers"] = triggers
    return entry
