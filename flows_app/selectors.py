"""Reads of the flow engine's configuration on hot paths, and of runs for the admin.

``endpoint_get(path)`` serves every call to ``/hooks/<path>``. It keeps what it read (the
endpoint trigger with its flow and secret) in a per-process cache for at most
``FLOWGATE_ENDPOINT_CACHE_SECONDS`` (1 s): a busy endpoint costs one query a second per
process instead of one per call. A change saved in a process clears that process's cache
at once (signals, connected in ``apps.py``); other processes see it within the second.
Unknown paths are not cached, so a probe for random paths cannot fill the cache.
``flow_secret_ids(flow)`` (the secrets a run may touch, stored on every run at its start)
is kept the same way, and cleared when a save of the flow, its bindings included, commits.
So are a flow's steps (``flow_steps``), which every run reads: keyed by the flow's
``updated_at`` as well, since ``flow_save`` saves the flow whenever it replaces them.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, F, OuterRef, Q, Subquery

from flows_app.models import EndpointTrigger, Flow, FlowRun, Step, StepRun
from flows_app.services.access import flow_bound_secret_ids, step_secret_names
from flows_app.steps import STEP_KINDS
from flows_app.steps.base import StepKind
from secrets_app.models import AuditEvent
from secrets_app.selectors import secrets_exist, token_refreshes

_lock = threading.Lock()
_endpoints: dict[str, tuple[float, EndpointTrigger]] = {}
_secret_ids: dict[int, tuple[float, list[int]]] = {}
_steps: dict[tuple[int, datetime], tuple[float, list[Step]]] = {}


def _lifetime() -> float:
    return float(getattr(settings, "FLOWGATE_ENDPOINT_CACHE_SECONDS", 1.0))


def _cached(store: dict, key, load):
    """``load()``'s value for ``key``, kept in ``store`` for the cache's lifetime. None is
    not kept: a probe for paths that do not exist cannot fill the cache."""
    now = time.monotonic()
    cached = store.get(key)
    if cached is not None and now - cached[0] < _lifetime():
        return cached[1]
    value = load()
    with _lock:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = (now, value)
    return value


def endpoint_get(path: str) -> EndpointTrigger | None:
    return _cached(
        _endpoints,
        path,
        # The flow's owner too: a sync endpoint's run acts for it in this process (``local_runs``).
        lambda: EndpointTrigger.objects.select_related("flow", "flow__owner", "auth_secret").filter(path=path).first(),
    )


def flow_secret_ids(flow: Flow) -> list[int]:
    """The ids of the secrets ``flow`` binds (``flow_bound_secret_ids``), cached as endpoints are."""
    return _cached(_secret_ids, flow.pk, lambda: flow_bound_secret_ids(flow))


def flow_steps(flow: Flow) -> list[Step]:
    """The flow's steps in their order, each with its secret: copies of which a run may
    change anything (its threads share the cache)."""
    steps = _cached(_steps, (flow.pk, flow.updated_at), lambda: list(flow.steps.select_related("secret").order_by("position", "id")))
    return [_step_copy(step) for step in steps]


def _step_copy(step: Step) -> Step:
    copied = copy.copy(step)  # its own field values and related-object cache (the secret is shared: read only)
    copied.config = copy.deepcopy(step.config)
    return copied


def endpoint_cache_clear(**kwargs) -> None:
    with _lock:
        _endpoints.clear()
        _secret_ids.clear()
        _steps.clear()


# -- the front page ------------------------------------------------------------------------


def runs_by_status(*, since: datetime) -> dict[str, int]:
    """How many runs were queued since ``since``, for every status (0 when none): one query."""
    counts = dict(FlowRun.objects.filter(queued_at__gte=since).values_list("status").annotate(Count("id")).order_by())
    return {status: counts.get(status, 0) for status in FlowRun.Status.values}


def flows_failed_since(*, since: datetime, limit: int = 10) -> list[Flow]:
    """Flows with runs queued since ``since`` that failed, the latest failure first: one query.

    Each flow carries ``failures`` (how many) and its latest failed run's ``last_failure_pk``,
    ``last_failure_at`` and ``last_failure_error``.
    """
    failed = Q(runs__status=FlowRun.Status.FAILED, runs__queued_at__gte=since)
    latest = FlowRun.objects.filter(flow=OuterRef("pk"), status=FlowRun.Status.FAILED).order_by("-queued_at", "-id")
    return list(
        Flow.objects.annotate(
            failures=Count("runs", filter=failed),
            last_failure_pk=Subquery(latest.values("pk")[:1]),
            last_failure_at=Subquery(latest.values("finished_at")[:1]),
            last_failure_error=Subquery(latest.values("error")[:1]),
        )
        .filter(failures__gt=0)
        .order_by(F("last_failure_at").desc(nulls_last=True), "name")[:limit]
    )


@dataclass(frozen=True)
class GettingStarted:
    """The first three things a new installation needs; the front page shows them until done."""

    account_connected: bool  # a secret exists (an OAuth2 connection is one)
    flow_built: bool
    flow_called: bool  # a run came in through an endpoint trigger

    @property
    def done(self) -> bool:
        return self.account_connected and self.flow_built and self.flow_called


def getting_started() -> GettingStarted:
    return GettingStarted(
        account_connected=secrets_exist(),
        flow_built=Flow.objects.exists(),
        flow_called=FlowRun.objects.filter(trigger="endpoint").exists(),
    )


# -- the run page --------------------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    """One step of a run's flow: its attempts in this run (none: it did not run), the secrets
    it uses as the flow is configured now, and the token refreshes of those secrets that
    happened while one of its attempts ran."""

    key: str
    kind: str
    attempts: list[StepRun]
    secret_names: list[str]
    refreshes: list[AuditEvent]


def run_step_reports(run: FlowRun, step_runs: list[StepRun]) -> list[StepReport]:
    """The run's flow's steps in their order, then steps that ran but are no longer in the flow."""
    attempts: dict[str, list[StepRun]] = {}
    for step_run in step_runs:
        attempts.setdefault(step_run.step_key, []).append(step_run)
    steps = {step.key: step for step in run.flow.steps.select_related("secret")}
    names: dict[str, list[str]] = {}
    for key, step in steps.items():
        secret_name = step.secret.name if step.secret_id else None
        kind_class = STEP_KINDS.get(step.kind, StepKind)  # a kind since removed: only its secret
        names[key] = sorted(step_secret_names(kind_class, step.config, secret_name))
    refreshes = []
    if step_runs and any(names.values()):
        refreshes = token_refreshes(
            names={name for group in names.values() for name in group},
            since=min(step_run.started_at for step_run in step_runs),
            until=max(step_run.finished_at for step_run in step_runs),
        )
    reports = []
    for key in [*steps, *(key for key in attempts if key not in steps)]:
        ran = attempts.get(key, [])
        reports.append(
            StepReport(
                key=key,
                kind=steps[key].kind if key in steps else ran[0].step_kind,
                attempts=ran,
                secret_names=names.get(key, []),
                refreshes=[
                    event
                    for event in refreshes
                    if event.target_name in names.get(key, [])
                    and any(attempt.started_at <= event.at <= attempt.finished_at for attempt in ran)
                ],
            )
        )
    return reports
