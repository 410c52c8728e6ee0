"""Validating and saving flows and their steps (from the admin and from ``apply``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from flows_app import templating
from flows_app.models import STEP_KEY, Flow, Step
from flows_app.selectors import endpoint_cache_clear
from flows_app.services.access import (
    access_problems,
    app_flow_change_refusal,
    flow_bindings_save,
    flow_run_refusal,
    step_access_problems,
)
from flows_app.services.specs import EndpointSpec, FlowSpec, ScheduleSpec, StepSpec, spec_of, spec_values
from flows_app.services.triggers import endpoints_save, schedules_save, schedules_sync
from flows_app.steps import STEP_KINDS
from flows_app.steps.base import StepKind
from project.declarative import is_template, secret_kind_check
from secrets_app.models import Secret
from secrets_app.services.audit import audit_record


def step_kind_get(kind: Any) -> type[StepKind]:
    if kind not in STEP_KINDS:
        raise ValidationError({"kind": f"Unknown step kind {kind!r}; known kinds: {', '.join(STEP_KINDS)}."})
    return STEP_KINDS[kind]


def step_secret_check(kind_class: type[StepKind], secret: Secret | None) -> None:
    secret_kind_check(
        owner=f"a {kind_class.label} step", kinds=kind_class.secret_kinds, required=kind_class.secret_required, secret=secret
    )


def step_for_each_errors(kind_class: type[StepKind], for_each: str, concurrency: Any, policy: Any) -> dict[str, list[str]]:
    """The ``for_each`` options as a step may have them: one template giving a list (its
    type is known only when it runs), how many items at once, what failed items do."""
    errors: dict[str, list[str]] = {}
    if for_each and not kind_class.fans_out:
        errors["for_each"] = [f"A {kind_class.label} step cannot run once per item."]
    elif for_each and not is_template(for_each):
        errors["for_each"] = ["Write a template giving a list, e.g. {{ steps.users.body.items }}."]
    elif for_each:
        try:
            templating.check(for_each)
            if templating.secret_names(for_each):
                errors["for_each"] = ["for_each cannot read secrets; read them in the step's fields."]
        except templating.TemplateFailed as exc:
            errors["for_each"] = [f"Template error: {exc}"]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 100:
        errors["for_each_concurrency"] = ["Expected a whole number from 1 to 100."]
    if policy not in Step.ForEachErrors.values:
        errors["for_each_errors"] = [f"Use one of: {', '.join(Step.ForEachErrors.values)}."]
    return errors


def step_permission_check(kind_class: type[StepKind], acting_user) -> None:
    if kind_class.slug == "script" and acting_user is not None and not acting_user.has_perm("flows_app.edit_script_steps"):
        raise ValidationError({"kind": "Saving a script step needs the 'Can save script steps' permission."})


def flow_steps_check(steps: Sequence[StepSpec]) -> dict[str, list[str]]:
    """Checks across steps: unique keys, jumps to steps that exist, templates that read only
    steps that may have run before. Errors keyed ``steps[i].field``."""
    errors: dict[str, list[str]] = {}
    keys = [step.key for step in steps]
    for index, step in enumerate(steps):
        if keys.count(step.key) > 1:
            errors.setdefault(f"steps[{index}].key", []).append(f"Another step is also called {step.key!r}.")
        if step.on_error == Step.OnError.GOTO and step.error_step_key not in keys:
            errors.setdefault(f"steps[{index}].error_step", []).append(f"{step.error_step_key!r} is not a step of this flow.")
        if step.kind == "condition":
            for branch in ("then", "otherwise"):
                target = step.config.get(branch, "")
                if target not in ("continue", "stop") and target not in keys:
                    errors.setdefault(f"steps[{index}].{branch}", []).append(f"{target!r} is not a step of this flow.")
    ran_before = _steps_run_before(steps)
    for index, step in enumerate(steps):
        references = STEP_KINDS[step.kind].step_references(step.config)
        if step.for_each:
            references["for_each"] = templating.step_names(step.for_each)
        for field, names in references.items():
            for name in sorted(names - ran_before[index]):
                errors.setdefault(f"steps[{index}].{field}", []).append(f"steps.{name}: there is no step {name!r} before this one.")
    return errors


def _steps_run_before(steps: Sequence[StepSpec]) -> list[set[str]]:
    """For each step, the keys of the steps that may have run before it on some path of the
    run: the following step, a condition's branches and an error step are the jumps (as the
    engine takes them), so a step after this one counts when a jump leads back here."""
    first_index = {}
    for index, step in enumerate(steps):
        first_index.setdefault(step.key, index)

    def going_to(choice: str, index: int) -> set[int]:
        if choice == "continue":
            return {index + 1} if index + 1 < len(steps) else set()
        return {first_index[choice]} if choice != "stop" and choice in first_index else set()

    jumps = []
    for index, step in enumerate(steps):
        branches = [step.config.get("then", ""), step.config.get("otherwise", "")] if step.kind == "condition" else ["continue"]
        if step.on_error == Step.OnError.CONTINUE:
            branches.append("continue")
        elif step.on_error == Step.OnError.GOTO:
            branches.append(step.error_step_key)
        jumps.append(set().union(*(going_to(choice, index) for choice in branches)))

    def after(index: int) -> set[int]:  # reached in one jump or more
        reached, pending = set(), list(jumps[index])
        while pending:
            current = pending.pop()
            if current not in reached:
                reached.add(current)
                pending.extend(jumps[current])
        return reached

    reached_after = [after(index) for index in range(len(steps))]
    run_at_all = ({0} | reached_after[0]) if steps else set()
    return [
        {steps[before].key for before in run_at_all if index in reached_after[before]} for index in range(len(steps))
    ]


def flow_changed_fields(flow: Flow, spec: FlowSpec) -> list[str]:
    changed = [
        name
        for name, current, wanted in (
            ("slug", flow.slug, spec.slug),
            ("name", flow.name, spec.name),
            ("description", flow.description, spec.description),
            ("enabled", flow.enabled, spec.enabled),
            ("timeout", flow.timeout_seconds, spec.timeout_seconds),
            ("concurrency_limit", flow.concurrency_limit, spec.concurrency_limit),
            ("error_handler", flow.error_handler.slug if flow.error_handler else "", spec.error_handler),
            ("app_private", flow.app_private, spec.app_private),
        )
        if current != wanted
    ]
    current_steps = [spec_of(StepSpec, step) for step in flow.steps.select_related("secret").order_by("position", "id")]
    if current_steps != spec.steps:
        changed.append("steps")
    if spec.endpoints is not None:
        current_endpoints = {endpoint.path: spec_of(EndpointSpec, endpoint) for endpoint in flow.endpoints.select_related("auth_secret")}
        if current_endpoints != {endpoint.path: endpoint for endpoint in spec.endpoints}:
            changed.append("endpoints")
    if spec.schedules is not None:
        current_schedules = sorted(spec_of(ScheduleSpec, schedule).identity() for schedule in flow.schedules.all())
        if current_schedules != sorted(schedule.identity() for schedule in spec.schedules):
            changed.append("schedules")
    return changed


def flow_error_handler_check(*, slug: str, handler_slug: str) -> None:
    """A flow cannot handle its own errors: its handler's failure would start the handler again."""
    if slug and handler_slug == slug:
        raise ValidationError({"error_handler": "A flow cannot handle its own errors; choose another flow, or none."})


def flow_slug_check(*, slug: str, app_slug: str) -> None:
    """``<app>/<flow>`` names an installed app's flow, and only that: the prefix is the app's."""
    app_part, _, _name = slug.rpartition("/")
    if app_part != app_slug:
        message = (
            f"An app's flow is named {app_slug}/<flow>." if app_slug else "'/' is kept for installed apps' flows (<app>/<flow>)."
        )
        raise ValidationError({"slug": message})


@transaction.atomic
def flow_save(
    *, spec: FlowSpec, acting_user=None, actor_label: str = "", flow_id: int | None = None
) -> tuple[Flow, str, list[str]]:
    """Create or update a flow and replace its steps. Returns (flow, action, changed fields).

    The flow to update is the one with ``spec.slug``, or the one with ``flow_id`` (the
    admin edits a flow by id, and may change its slug).
    """
    flow_error_handler_check(slug=spec.slug, handler_slug=spec.error_handler)
    flow_slug_check(slug=spec.slug, app_slug=spec.app_slug)
    handler = None
    if spec.error_handler:
        handler = Flow.objects.filter(slug=spec.error_handler).first()
        if handler is None:
            raise ValidationError({"error_handler": f"There is no flow {spec.error_handler!r}."})
    flow = Flow.objects.filter(**({"pk": flow_id} if flow_id else {"slug": spec.slug})).first()
    if flow is not None:
        changed = flow_changed_fields(flow, spec)
        if not changed:
            return flow, "unchanged", []
        action = "update"
    else:
        flow, changed, action = Flow(slug=spec.slug, owner=_user(acting_user)), ["created"], "create"
    flow_access_check(flow=flow, spec=spec, acting_user=acting_user, handler=handler)
    flow.slug, flow.name, flow.description, flow.enabled = spec.slug, spec.name, spec.description, spec.enabled
    flow.timeout_seconds, flow.concurrency_limit, flow.error_handler = spec.timeout_seconds, spec.concurrency_limit, handler
    flow.app_slug, flow.app_private = spec.app_slug, spec.app_private
    flow.save()
    if spec.endpoints is not None:
        endpoints_save(flow=flow, specs=spec.endpoints)
    if spec.schedules is not None:
        schedules_save(flow=flow, specs=spec.schedules)
    else:
        schedules_sync(flow=flow)  # the flow's enabled flag decides whether its schedules fire
    flow.steps.all().delete()
    Step.objects.bulk_create(
        Step(flow=flow, position=position, **spec_values(step)) for position, step in enumerate(spec.steps)
    )
    flow_bindings_save(flow)
    # The Flow's post_save cleared this process's caches before the bindings changed.
    transaction.on_commit(endpoint_cache_clear)
    audit_record(
        acting_user=acting_user,
        actor_label=actor_label,
        action=f"flow.{action}",
        target_type="flow",
        target_name=flow.slug,
        detail={"changed": changed},
    )
    return flow, action, changed


def _user(acting_user):
    return acting_user if getattr(acting_user, "is_authenticated", False) else None


def flow_access_check(*, flow: Flow, spec: FlowSpec, acting_user, handler: Flow | None = None) -> None:
    """The saving user and the flow's owner must both be allowed every step's secrets and
    called flows, the endpoint triggers' secrets, and to run the error handler (whose input
    this flow's failures choose, as a caller chooses a called flow's)."""
    users = [_user(acting_user), flow.owner]
    errors: dict[str, list[str]] = {}
    if refusal := app_flow_change_refusal(_user(acting_user), flow.app_slug or spec.app_slug):
        errors["__all__"] = [refusal]
    if handler is not None and handler.slug != flow.slug:
        if problems := [refusal for user in users if (refusal := flow_run_refusal(user, handler))]:
            errors["error_handler"] = problems
    for index, step in enumerate(spec.steps):
        secret_name = step.secret.name if step.secret is not None else None
        if problems := step_access_problems(STEP_KINDS[step.kind], step.config, secret_name, users):
            errors[f"steps[{index}]"] = problems
    if spec.endpoints is not None:
        names = {endpoint.auth_secret.name for endpoint in spec.endpoints if endpoint.auth_secret is not None}
        if problems := access_problems(names, users):
            errors["triggers"] = problems
    if errors:
        raise ValidationError(errors)


#: ``secret: connection`` in an app's flow: the connection its run uses.
APP_CONNECTION = "connection"


def step_spec_from_data(data: Mapping[str, Any], *, acting_user=None, in_app: bool = False) -> StepSpec:
    """Validate one step as written in the ``apply`` file (common keys and the kind's fields).

    ``in_app``: a step of an app's flow, whose only secret is its run's connection.
    """
    data = dict(data)
    errors: dict[str, list[str]] = {}

    def collect(exc: ValidationError):
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, []).extend(messages)

    key = data.pop("key", None)
    if not isinstance(key, str) or not key:
        errors["key"] = ["A step needs a key."]
    else:
        try:
            STEP_KEY(key)
        except ValidationError as exc:
            errors["key"] = exc.messages
    kind_name = data.pop("kind", None)
    try:
        kind_class = step_kind_get(kind_name)
    except ValidationError as exc:
        raise ValidationError({**errors, **exc.message_dict}) from None
    secret_name = data.pop("secret", None)
    secret, uses_connection = None, False
    if in_app:
        uses_connection = secret_name == APP_CONNECTION
        if secret_name is not None and not uses_connection:
            errors.setdefault("secret", []).append(
                f"An app's flows reach only their connection: write 'secret: {APP_CONNECTION}'."
            )
    elif secret_name is not None:
        secret = Secret.objects.filter(name=str(secret_name)).first()
        if secret is None:
            errors.setdefault("secret", []).append(f"There is no secret {secret_name!r}.")
    common = {
        "max_attempts": data.pop("max_attempts", 1),
        "retry_backoff_seconds": data.pop("retry_backoff", 1.0),
        "timeout_seconds": data.pop("timeout", 30),
        "on_error": data.pop("on_error", Step.OnError.STOP),
        "error_step_key": data.pop("error_step", ""),
        "for_each": data.pop("for_each", ""),
        "for_each_concurrency": data.pop("for_each_concurrency", 4),
        "for_each_errors": data.pop("for_each_errors", Step.ForEachErrors.FAIL),
    }
    for name, expected in (("max_attempts", int), ("timeout_seconds", int), ("retry_backoff_seconds", (int, float))):
        value = common[name]
        if isinstance(value, bool) or not isinstance(value, expected) or value < (1 if expected is int else 0):
            errors.setdefault(name, []).append("Expected a positive number.")
    if common["on_error"] not in Step.OnError.values:
        errors.setdefault("on_error", []).append(f"Use one of: {', '.join(Step.OnError.values)}.")
    if common["on_error"] == Step.OnError.GOTO and not common["error_step_key"]:
        errors.setdefault("error_step", []).append("Name the step to go to.")
    if not isinstance(common["for_each"], str):
        errors.setdefault("for_each", []).append("Write a template giving a list, e.g. {{ steps.users.body.items }}.")
    else:
        fan_out = step_for_each_errors(kind_class, common["for_each"], common["for_each_concurrency"], common["for_each_errors"])
        for name, messages in fan_out.items():
            errors.setdefault(name, []).extend(messages)
    config = {}
    try:
        config = kind_class.clean_config(data)
    except ValidationError as exc:
        collect(exc)
    checks = [lambda: step_permission_check(kind_class, acting_user)]
    if not uses_connection:  # the connection's kind is the app's, checked when the app is installed
        checks.append(lambda: step_secret_check(kind_class, secret))
    for check in checks:
        try:
            if "secret" not in errors:
                check()
        except ValidationError as exc:
            collect(exc)
    if errors:
        raise ValidationError(errors)
    return StepSpec(key=key, kind=kind_class.slug, config=config, secret=secret, uses_connection=uses_connection, **common)
