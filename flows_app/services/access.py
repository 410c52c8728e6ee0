"""What a flow may use, and who may run it.

A flow's **bindings** are the secrets it uses: each step's ``secret``, the names its
templates read (``secrets.get_password('crm')``), a script step's list, and the secrets its
endpoint triggers verify callers with. They are found when the flow is saved and recorded
with the vault (``SecretBinding``); at run time the vault hands the run only those, and
only while the flow's owner still holds a use grant on each (``secrets_app.access``).

- Saving a flow needs a use grant on every binding, for the saving user and for the
  flow's owner (the user it runs as; the saving user for a new flow).
- A run's stored inputs and outputs are shown only to users who may use every secret
  the run could touch (its flow's bindings when it started).
- Changing an app's flow needs manage on every connection of the app: it runs with each.
- Running a flow from the admin, re-running it, or calling it from another flow needs
  ``flows_app.run_flow`` and use grants on its bindings: whoever chooses a run's input
  steers the requests it makes with those secrets.
"""

from __future__ import annotations

from collections.abc import Iterable

from flows_app.models import Flow
from flows_app.steps.base import StepKind
from flows_app.templating import TemplateFailed
from secrets_app import api


def step_secret_names(kind_class: type[StepKind], config: dict, secret_name: str | None) -> set[str]:
    """The secrets one step binds; a template that does not check binds nothing (its own error shows)."""
    try:
        return kind_class.secret_names(config, secret_name)
    except TemplateFailed:
        return {secret_name} if secret_name else set()


def access_problems(names: Iterable[str], users: Iterable) -> list[str]:
    """Why ``users`` may not bind ``names``: an unknown secret, or a missing use grant."""
    names = set(names)
    if not names:
        return []
    try:
        secrets = api.bindings_resolve(names)
    except api.SecretNotFound as exc:
        return [str(exc)]
    return grant_problems(secrets, users)


def grant_problems(secrets: Iterable, users: Iterable) -> list[str]:
    """Which of ``users`` hold no use grant on which of ``secrets``."""
    secrets = list(secrets)
    problems = []
    for user in {getattr(user, "pk", None): user for user in users}.values():
        problems += [
            f"{api.user_label(user)} holds no use grant for the secret {secret.name!r}."
            for secret in api.secrets_denied(user, secrets)
        ]
    return problems


def step_access_problems(kind_class: type[StepKind], config: dict, secret_name: str | None, users: Iterable) -> list[str]:
    """Why ``users`` may not save this step: secrets it binds, flows it calls."""
    users = list(users)
    problems = access_problems(step_secret_names(kind_class, config, secret_name), users)
    for called in Flow.objects.filter(slug__in=kind_class.called_flows(config)):
        problems += [refusal for user in users if (refusal := flow_run_refusal(user, called))]
    return problems


def flow_bound_secrets(flow: Flow) -> list:
    """The secrets the flow binds, read in one query (a run hands them to its vault)."""
    return [binding.secret for binding in api.bindings_of(flow).select_related("secret")] if flow.pk else []


def flow_bound_secret_ids(flow: Flow) -> list[int]:
    return sorted(api.bindings_of(flow).values_list("secret_id", flat=True))


def flow_run_refusal(user, flow: Flow) -> str | None:
    """Why ``user`` may not start ``flow`` by hand or call it from another flow; None if allowed."""
    if user is None:
        return None
    if not user.has_perm("flows_app.run_flow"):
        return f"{api.user_label(user)} may not run flows (the 'Can run flows' permission)."
    problems = grant_problems(flow_bound_secrets(flow), [user])
    return f"Flow {flow.slug!r} cannot be run by {api.user_label(user)}: {problems[0]}" if problems else None


def app_flow_change_refusal(user, app_slug: str) -> str | None:
    """Why ``user`` may not change a flow of the app ``app_slug``; None if they may.

    An app's flow runs with each of the app's connections (its operations see their tokens)
    whoever started the run: only who may manage every one of them changes it.
    """
    if not app_slug:
        return None
    denied = api.secrets_denied(user, api.app_connections(app_slug=app_slug), api.MANAGE)
    if not denied:
        return None
    return (
        f"{api.user_label(user)} may not change the app {app_slug!r}'s flows: they run with each of its "
        f"connections, and {api.user_label(user)} may not manage {denied[0].name!r}."
    )


def run_connection_refusal(user, flow: Flow, connection) -> str | None:
    """Why a run of ``flow`` may not use ``connection`` (a secret, or None); None if it may.

    An app's flow runs with one connection of its app, which whoever starts the run must
    be allowed to use (its owner, a grant, or the operator); any other flow runs without one.
    """
    if not flow.app_slug:
        return f"Flow {flow.slug!r} is not an app's flow: it runs without a connection." if connection else None
    if connection is None:
        return f"Flow {flow.slug!r} belongs to the app {flow.app_slug!r}: name one of its connections."
    if connection.app_slug != flow.app_slug:
        return f"Secret {connection.name!r} is not a connection of the app {flow.app_slug!r}."
    if api.secrets_denied(user, [connection]):
        return f"{api.user_label(user)} holds no use grant for the connection {connection.name!r}."
    return None


def run_data_refusal(user, secret_ids: Iterable[int]) -> str | None:
    """Why ``user`` may not see a run's stored inputs and outputs (statuses, timings and
    errors stay visible); None when they may use every secret the run could touch."""
    denied = api.secret_ids_denied(user, secret_ids)
    if not denied:
        return None
    return f"Inputs and outputs are hidden: you hold no use grant for {', '.join(repr(name) for name in denied)}."


def flow_bindings_save(flow: Flow) -> list[str]:
    """Record the flow's bindings from its saved steps and endpoint triggers; returns the names."""
    from flows_app.steps import STEP_KINDS

    names: set[str] = set()
    for step in flow.steps.select_related("secret"):
        kind_class = STEP_KINDS.get(step.kind)
        secret_name = step.secret.name if step.secret_id else None
        names |= step_secret_names(kind_class, step.config, secret_name) if kind_class else set()
    names |= set(flow.endpoints.filter(auth_secret__isnull=False).values_list("auth_secret__name", flat=True))
    api.bindings_replace(holder=flow, secrets=api.bindings_resolve(names))
    return sorted(names)
