"""The flow engine's metrics (README, "Metrics"). How they reach /metrics from every
process, and why they are counted here rather than from the database: ``project.metrics``.

Each function is the one hook its caller needs, so the engine and the endpoint service
carry a line each. A run counts when its change is committed: a rolled-back start or
cancel did not happen.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from django.db import transaction
from prometheus_client import Counter, Histogram

from flows_app.models import FlowRun
from flows_app.selectors import endpoint_get

#: The label of calls to a path no endpoint trigger has: what callers make up stays out of labels.
UNKNOWN_PATH = "(none)"

RUNS_STARTED = Counter("flowgate_runs_started", "Runs created, by flow and trigger.", ["flow", "trigger"])
RUNS_FINISHED = Counter("flowgate_runs_finished", "Runs that ended, by flow and status.", ["flow", "status"])
STEP_DURATION = Histogram(
    "flowgate_step_duration_seconds",
    "How long a step's attempt took, by step kind and its outcome.",
    ["kind", "status"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ENDPOINT_LATENCY = Histogram(
    "flowgate_webhook_latency_seconds",
    "Time from a call to an endpoint trigger to its answer, by trigger path and status class.",
    ["path", "status_class"],
    # Synchronous endpoints wait for their flow up to 300 s.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def run_created(sender, instance: FlowRun, created: bool, **kwargs) -> None:
    """``post_save`` of FlowRun: every way a run is made (trigger, re-run, called flow) saves one."""
    if created:
        labels = RUNS_STARTED.labels(flow=instance.flow.slug, trigger=instance.trigger)
        transaction.on_commit(labels.inc)


def run_finished(run: FlowRun, status: str) -> None:
    """Called where a run's end is stored."""
    transaction.on_commit(RUNS_FINISHED.labels(flow=run.flow.slug, status=status).inc)


def step_finished(kind: str, *, failed: bool, seconds: float) -> None:
    STEP_DURATION.labels(kind=kind, status="failed" if failed else "succeeded").observe(seconds)


def endpoint_timed(answer: Callable) -> Callable:
    """Decorates the service answering ``/hooks/<path>``: its time and its answer's status class."""

    @functools.wraps(answer)
    def timed(*, path: str, **kwargs):
        started, status_class = time.perf_counter(), "5xx"  # unless it answers: an exception is a 500
        try:
            result = answer(path=path, **kwargs)
            status_class = f"{result.status // 100}xx"
            return result
        finally:
            label = path if endpoint_get(path) is not None else UNKNOWN_PATH  # a known path is cached
            ENDPOINT_LATENCY.labels(path=label, status_class=status_class).observe(time.perf_counter() - started)

    return timed
