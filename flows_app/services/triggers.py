"""Endpoint and schedule triggers: validation, saving, and the beat entries of schedules.

Each schedule has its own django-celery-beat ``PeriodicTask`` (visible and editable under
*Periodic tasks*), kept in step with the schedule and its flow by ``schedules_sync``: a
disabled schedule or flow disables its entry, so beat does not fire it at all, and the
task checks again when it runs (an entry edited by hand cannot start a disabled flow).
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.validators import crontab_validator

from flows_app.models import ENDPOINT_PATH, EndpointTrigger, Flow, FlowRun, ScheduleTrigger
from flows_app.services.runs import flow_run_start_once
from flows_app.services.specs import EndpointSpec, ScheduleSpec, spec_of, spec_values
from flows_app.triggers import ENDPOINT_AUTH
from project.declarative import is_whole_number, secret_kind_check, unknown_keys
from secrets_app.models import Secret

FIRE_TASK = "flows_app.tasks.flow_schedule_fire"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


# -- endpoint triggers ----------------------------------------------------------------


def endpoint_methods_clean(value: Any) -> str:
    """``POST`` or ``GET, POST`` (text or a list) as stored; ValidationError otherwise."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    methods = [str(item).strip().upper() for item in items if str(item).strip()]
    unknown = [method for method in methods if method not in HTTP_METHODS]
    if not methods or unknown:
        raise ValidationError(f"Use one or more of: {', '.join(HTTP_METHODS)}.")
    return ", ".join(dict.fromkeys(methods))


def endpoint_auth_clean(*, auth: Any, secret: Secret | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a trigger's authentication: the mode, its secret's kind, its fields.

    Returns the cleaned configuration; raises ValidationError keyed ``auth``, ``secret``
    or the mode's field names.
    """
    mode = ENDPOINT_AUTH.get(auth)
    if mode is None:
        raise ValidationError({"auth": f"Unknown authentication {auth!r}; use one of: {', '.join(ENDPOINT_AUTH)}."})
    errors: dict[str, list[str]] = {}
    try:
        secret_kind_check(owner=mode.label, kinds=mode.secret_kinds, required=bool(mode.secret_kinds), secret=secret)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    cleaned: dict[str, Any] = {}
    try:
        cleaned = mode.clean_config(config)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return cleaned


#: Headers that carry credentials: a flow never sees them, so they never reach a stored run.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


def endpoint_headers_check(headers: Iterable[str], *, auth: str, config: Mapping[str, Any]) -> None:
    """Refuse passing the caller's credentials to the flow (they would be stored in its runs)."""
    private = {*CREDENTIAL_HEADERS, *ENDPOINT_AUTH[auth].credential_headers(config)}
    refused = [header for header in headers if header.lower() in private]
    if refused:
        raise ValidationError(
            {"pass_headers": f"{', '.join(refused)} carries the caller's credentials; the flow cannot receive it."}
        )


def endpoint_path_check(path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise ValidationError({"path": "An endpoint needs a path."})
    try:
        ENDPOINT_PATH(path)
    except ValidationError as exc:
        raise ValidationError({"path": exc.messages}) from None
    return path


def endpoints_save(*, flow: Flow, specs: Iterable[EndpointSpec]) -> bool:
    """Make the flow's endpoints exactly ``specs`` (matched by path). True if anything changed."""
    specs = list(specs)
    wanted = {spec.path: spec for spec in specs}
    for path in wanted:  # apps/<app>/… is the app's, and an app's endpoints are nowhere else
        if path.startswith("apps/") != bool(flow.app_slug) or not path.startswith(f"apps/{flow.app_slug}/" if flow.app_slug else ""):
            raise ValidationError({"triggers": f"The path {path!r}: 'apps/<app>/' is kept for installed apps' endpoints."})
    taken = EndpointTrigger.objects.filter(path__in=wanted).exclude(flow=flow).values_list("path", flat=True).first()
    if taken:
        raise ValidationError({"triggers": f"The path {taken!r} belongs to another flow's endpoint."})
    changed = bool(flow.endpoints.exclude(path__in=wanted).delete()[0])
    current = {endpoint.path: endpoint for endpoint in flow.endpoints.all()}
    for spec in specs:
        endpoint = current.get(spec.path) or EndpointTrigger(flow=flow, path=spec.path)
        if endpoint.pk and spec_of(EndpointSpec, endpoint) == spec:
            continue
        values = spec_values(spec)
        for name, value in values.items():
            setattr(endpoint, name, value)
        endpoint.save()
        changed = True
    return changed


# -- schedules -------------------------------------------------------------------------


def schedule_clean(*, cron: Any, interval_seconds: Any, timezone_name: Any) -> tuple[str, int | None, str]:
    """(cron, interval_seconds, timezone) checked: exactly one of cron and interval."""
    errors: dict[str, list[str]] = {}
    cron = " ".join(str(cron or "").split())
    if interval_seconds in ("", None):
        interval_seconds = None
    if bool(cron) == (interval_seconds is not None):
        errors["cron"] = ["Give either a cron expression or an interval, not both."]
    if cron:
        if len(cron.split()) != 5:
            errors["cron"] = ["Use five fields: minute hour day-of-month month day-of-week."]
        else:
            try:
                crontab_validator(cron)
            except ValidationError as exc:
                errors["cron"] = [f"Not a valid cron expression: {'; '.join(exc.messages)}"]
    if interval_seconds is not None and not is_whole_number(interval_seconds, low=1):
        errors["interval_seconds"] = ["Expected a whole number of seconds, at least 1."]
    name = str(timezone_name or "UTC")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = [f"Unknown time zone {name!r}; use a name such as Europe/Paris."]
    if errors:
        raise ValidationError(errors)
    return cron, interval_seconds, name


def schedules_save(*, flow: Flow, specs: Iterable[ScheduleSpec]) -> bool:
    """Make the flow's schedules exactly ``specs``; unchanged ones keep their beat entry."""
    specs = list(specs)
    remaining = [spec.identity() for spec in specs]
    specs_by_identity = {spec.identity(): spec for spec in specs}
    changed = False
    for schedule in list(flow.schedules.all()):
        identity = spec_of(ScheduleSpec, schedule).identity()
        if identity in remaining:
            remaining.remove(identity)
        else:
            schedule.delete()
            changed = True
    for identity in remaining:
        ScheduleTrigger.objects.create(flow=flow, **spec_values(specs_by_identity[identity]))
        changed = True
    schedules_sync(flow=flow)
    return changed


def _beat_name(schedule: ScheduleTrigger) -> str:
    return f"Flow {schedule.flow.slug}: schedule #{schedule.pk}"


#: What schedules_sync sets on a beat entry.
BEAT_ENTRY_FIELDS = ("name", "args", "enabled", "description", "interval_id", "crontab_id")


@transaction.atomic
def schedules_sync(*, flow: Flow) -> None:
    """Create or update the beat entry of every schedule of ``flow``.

    An entry that is already right is not saved: every save makes beat reload all its
    entries.
    """
    for schedule in flow.schedules.select_related("periodic_task"):
        entry = schedule.periodic_task or PeriodicTask(task=FIRE_TASK)
        before = [getattr(entry, name) for name in BEAT_ENTRY_FIELDS] if entry.pk else None
        entry.name = _beat_name(schedule)
        entry.args = json.dumps([schedule.pk])
        entry.enabled = schedule.enabled and flow.enabled
        entry.description = f"Starts flow {flow.slug!r}."
        if schedule.interval_seconds:
            entry.interval, _ = IntervalSchedule.objects.get_or_create(
                every=schedule.interval_seconds, period=IntervalSchedule.SECONDS
            )
            entry.crontab = None
        else:
            minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split()
            entry.crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                timezone=zoneinfo.ZoneInfo(schedule.timezone),
            )
            entry.interval = None
        if before != [getattr(entry, name) for name in BEAT_ENTRY_FIELDS]:
            entry.save()
        if schedule.periodic_task_id != entry.pk:
            ScheduleTrigger.objects.filter(pk=schedule.pk).update(periodic_task=entry)
            schedule.periodic_task = entry


def schedule_beat_entry_delete(*, schedule: ScheduleTrigger) -> None:
    """Remove a deleted schedule's beat entry (however the schedule was deleted)."""
    if schedule.periodic_task_id:
        PeriodicTask.objects.filter(pk=schedule.periodic_task_id).delete()


def schedule_next_run(schedule: ScheduleTrigger) -> datetime | None:
    """When beat will next fire this schedule (None when it will not)."""
    entry = schedule.periodic_task
    if entry is None or not entry.enabled:
        return None
    now = timezone.now()
    if entry.interval_id:
        last = entry.last_run_at or entry.date_changed or now
        return max(now, last + timedelta(seconds=entry.interval.every))
    crontab = entry.crontab.schedule
    start, delta, _ = crontab.remaining_delta(now.astimezone(crontab.tz), tz=crontab.tz)
    return start + delta


def schedule_fire(*, schedule_id: int, message_id: str) -> FlowRun | None:
    """Start the schedule's flow (beat's task). None when the schedule or flow is off.

    The Celery message id is the idempotency key: a message delivered twice starts one run.
    """
    schedule = ScheduleTrigger.objects.select_related("flow").filter(pk=schedule_id).first()
    if schedule is None or not schedule.enabled or not schedule.flow.enabled:
        return None
    key = hashlib.sha256(f"schedule\0{schedule.pk}\0{message_id}".encode()).hexdigest()
    run, _ = flow_run_start_once(
        flow=schedule.flow,
        idempotency_key=key,
        input=schedule.input,
        trigger="schedule",
        trigger_detail=str(schedule),
    )
    return run


# -- the ``triggers:`` list of a flow in the config-as-code file ------------------------

ENDPOINT_KEYS = {"kind", "path", "methods", "auth", "response", "sync_timeout", "max_body_kb", "headers", "enabled"}
SCHEDULE_KEYS = {"kind", "cron", "interval", "timezone", "input", "enabled"}


def endpoint_spec_from_data(data: Mapping[str, Any]) -> EndpointSpec:
    """An endpoint trigger as written in the file; ValidationError keyed by its keys."""
    errors: dict[str, list[str]] = {}
    if unknown := unknown_keys(data, ENDPOINT_KEYS):
        errors["__all__"] = unknown
    path = ""
    try:
        path = endpoint_path_check(data.get("path"))
    except ValidationError as exc:
        errors.update(exc.message_dict)
    methods = "POST"
    try:
        methods = endpoint_methods_clean(data.get("methods", ["POST"]))
    except ValidationError as exc:
        errors["methods"] = exc.messages
    auth = data.get("auth")
    secret, auth_kind, config = None, "", {}
    if not isinstance(auth, Mapping) or "kind" not in auth:
        errors["auth"] = [f"Name the authentication: {{kind: {' | '.join(ENDPOINT_AUTH)}, ...}} (open access is kind: open)."]
    else:
        auth = dict(auth)
        auth_kind, secret_name = auth.pop("kind"), auth.pop("secret", None)
        if secret_name is not None:
            secret = Secret.objects.filter(name=str(secret_name)).first()
            if secret is None:
                errors["auth.secret"] = [f"There is no secret {secret_name!r}."]
        if "auth.secret" not in errors:
            try:
                config = endpoint_auth_clean(auth=auth_kind, secret=secret, config=auth)
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    errors[f"auth.{name}" if name != "auth" else "auth.kind"] = messages
    response = data.get("response", EndpointTrigger.Response.ASYNC)
    if response not in EndpointTrigger.Response.values:
        errors["response"] = [f"Use one of: {', '.join(EndpointTrigger.Response.values)}."]
    sync_timeout, max_body_kb = data.get("sync_timeout", 30), data.get("max_body_kb", 1024)
    if not is_whole_number(sync_timeout, low=1, high=300):
        errors["sync_timeout"] = ["Expected whole seconds from 1 to 300."]
    if not is_whole_number(max_body_kb, low=1, high=10240):
        errors["max_body_kb"] = ["Expected a whole number of KB from 1 to 10240."]
    headers = data.get("headers", [])
    if not isinstance(headers, list) or not all(isinstance(header, str) and header for header in headers):
        errors["headers"] = ["Expected a list of header names."]
    elif not errors:
        try:
            endpoint_headers_check(headers, auth=auth_kind, config=config)
        except ValidationError as exc:
            errors["headers"] = exc.message_dict["pass_headers"]
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        errors["enabled"] = ["Expected true or false."]
    if errors:
        raise ValidationError(errors)
    return EndpointSpec(
        path=path,
        auth=auth_kind,
        auth_secret=secret,
        auth_config=config,
        methods=methods,
        response=response,
        sync_timeout_seconds=sync_timeout,
        max_body_kb=max_body_kb,
        pass_headers=", ".join(headers),
        enabled=enabled,
    )


def schedule_spec_from_data(data: Mapping[str, Any]) -> ScheduleSpec:
    errors: dict[str, list[str]] = {}
    if unknown := unknown_keys(data, SCHEDULE_KEYS):
        errors["__all__"] = unknown
    cron, interval, zone = "", None, "UTC"
    try:
        cron, interval, zone = schedule_clean(
            cron=data.get("cron"), interval_seconds=data.get("interval"), timezone_name=data.get("timezone", "UTC")
        )
    except ValidationError as exc:
        errors.update({"interval" if name == "interval_seconds" else name: messages for name, messages in exc.message_dict.items()})
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        errors["enabled"] = ["Expected true or false."]
    schedule_input = data.get("input", {})
    try:
        json.dumps(schedule_input)
    except (TypeError, ValueError):
        errors["input"] = ["Expected JSON data."]
    if errors:
        raise ValidationError(errors)
    return ScheduleSpec(cron=cron, interval_seconds=interval, timezone=zone, input=schedule_input, enabled=enabled)


def triggers_from_data(items: Any) -> tuple[list[EndpointSpec], list[ScheduleSpec]]:
    """The ``triggers:`` list of a flow; ValidationError keyed ``triggers[i].<key>``."""
    if not isinstance(items, list):
        raise ValidationError({"triggers": "Expected a list of triggers."})
    endpoints, schedules, errors = [], [], {}
    for index, item in enumerate(items):
        kind = item.get("kind") if isinstance(item, Mapping) else None
        try:
            if kind == "endpoint":
                endpoints.append(endpoint_spec_from_data(item))
            elif kind == "schedule":
                schedules.append(schedule_spec_from_data(item))
            else:
                raise ValidationError({"kind": "A trigger is {kind: endpoint, ...} or {kind: schedule, ...}."})
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors[f"triggers[{index}]" + ("" if name == "__all__" else f".{name}")] = messages
    paths = [endpoint.path for endpoint in endpoints]
    for path in {path for path in paths if paths.count(path) > 1}:
        errors.setdefault("triggers", []).append(f"Two endpoints have the path {path!r}.")
    if errors:
        raise ValidationError(errors)
    return endpoints, schedules


def triggers_export(flow: Flow) -> list[dict[str, Any]]:
    exported: list[dict[str, Any]] = []
    for endpoint in flow.endpoints.select_related("auth_secret").order_by("path"):
        auth = {"kind": endpoint.auth, **({"secret": endpoint.auth_secret.name} if endpoint.auth_secret else {})}
        mode = ENDPOINT_AUTH[endpoint.auth]
        defaults = {field.name: field.default for field in mode.fields}
        auth.update({name: value for name, value in endpoint.auth_config.items() if defaults.get(name) != value})
        entry: dict[str, Any] = {"kind": "endpoint", "path": endpoint.path, "methods": endpoint.method_list(), "auth": auth}
        for name, value, default in (
            ("response", endpoint.response, EndpointTrigger.Response.ASYNC),
            ("sync_timeout", endpoint.sync_timeout_seconds, 30),
            ("max_body_kb", endpoint.max_body_kb, 1024),
            ("headers", endpoint.header_list(), []),
            ("enabled", endpoint.enabled, True),
        ):
            if value != default:
                entry[name] = value
        exported.append(entry)
    for schedule in flow.schedules.order_by("id"):
        entry = {"kind": "schedule"}
        entry.update({"cron": schedule.cron} if schedule.cron else {"interval": schedule.interval_seconds})
        for name, value, default in (("timezone", schedule.timezone, "UTC"), ("input", schedule.input, {}), ("enabled", schedule.enabled, True)):
            if value != default:
                entry[name] = value
        exported.append(entry)
    return exported
