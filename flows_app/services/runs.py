"""Starting, waiting for, cancelling, re-running and recovering flow runs.

Imports point down: the tasks and the views use this module; it uses the engine (for
``flow_run_inline``), the run store and the dispatcher, and none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from flows_app import dispatch, fanout, metrics, notify, runs
from flows_app.app_settings import flow_settings
from flows_app.engine import Engine
from flows_app.local_runs import local_runner
from flows_app.models import Flow, FlowRun, StepRun
from flows_app.selectors import flow_secret_ids
from flows_app.services.access import flow_bound_secret_ids, flow_run_refusal, run_connection_refusal
from secrets_app.redaction import Redactor
from secrets_app.services.audit import audit_record

#: How long an idempotency key names its first run (a retried call within it gets that run).
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class FlowDisabled(Exception):
    pass


class RunNotAllowed(Exception):
    """The user may not run that flow by hand (``flows_app.services.access``); str() says why."""


def flow_run_start(
    *,
    flow: Flow,
    input: Any,
    trigger: str = "manual",
    trigger_detail: str = "",
    acting_user=None,
    endpoint=None,
    idempotency_key: str = "",
    caller: str = "",
    enforce_enabled: bool = True,
    connection=None,
    input_secrets: Iterable = (),
    here: bool = False,
) -> FlowRun:
    """Queue a run; its task is sent when the transaction commits (ids only).

    ``here``: run it in this process when it can (``flows_app.local_runs``): a sync
    endpoint's caller waits for it in this process anyway. It then starts held under this
    process's lease, and its runner thread starts when the transaction commits.
    ``caller`` is the digest of who called an endpoint (``services.endpoints``).
    ``connection``: the secret an app's flow runs with (``run_connection_refusal``).
    ``input_secrets``: secrets whose power the input carries (a link that reconnects one):
    only who may use them too sees the run's data.
    """
    if enforce_enabled and not flow.enabled:
        raise FlowDisabled(f"Flow {flow.slug!r} is disabled.")
    user = acting_user if getattr(acting_user, "is_authenticated", False) else None
    if refusal := _start_refusal(user, flow, connection):
        raise RunNotAllowed(refusal)
    engine = Engine() if here and local_runner.takes(flow) else None
    run = FlowRun.objects.create(
        flow=flow,
        input=input if input is not None else {},
        trigger=trigger,
        trigger_detail=trigger_detail[:200],
        started_by=user,
        endpoint=endpoint,
        idempotency_key=idempotency_key,
        secret_ids=_run_secret_ids(flow_secret_ids(flow), connection, input_secrets),
        caller=caller,
        connection=connection,
        **(runs.held_by(engine.owner) if engine else {}),
    )
    # At once when the INSERT committed on its own; after the caller's transaction otherwise.
    if engine:
        transaction.on_commit(lambda: local_runner.start(run, engine))
    else:
        transaction.on_commit(lambda: dispatch.enqueue_run(run.pk, 0))
    return run


def _start_refusal(user, flow: Flow, connection) -> str | None:
    if flow.app_private:
        return f"Flow {flow.slug!r} is private to the app {flow.app_slug!r}: only the app runs it."
    return flow_run_refusal(user, flow) or run_connection_refusal(user, flow, connection)


def _run_secret_ids(bound: list[int], connection, input_secrets: Iterable = ()) -> list[int]:
    """Who may see a run's data: the secrets its flow binds, the connection it runs with,
    and those its input stands for."""
    touched = [secret for secret in (connection, *input_secrets) if secret is not None]
    return sorted({*bound, *(secret.pk for secret in touched)}) if touched else bound


def flow_run_inline(
    *,
    flow: Flow,
    input: Any,
    connection=None,
    trigger: str,
    timeout: float,
    sensitive: Iterable[str] = (),
    output_secrets: Callable[[Any], Iterable[str]] | None = None,
) -> FlowRun:
    """Run ``flow`` to its end in this process and return the finished run, its ``output`` exact.

    For what the product itself runs and waits for (an app's connection test and OAuth2
    operations): no queue, no worker, the same engine, redaction and run history.
    Access is the caller's to check. ``sensitive``: strings in ``input`` (or wherever they
    turn up) that the stored run never shows. ``output_secrets(output)``: the secrets the
    run produces (an OAuth2 operation's tokens); the run's history is then written when it
    ends, once they are known, so that they never reach the database unmasked.
    """
    if refusal := run_connection_refusal(None, flow, connection):
        raise RunNotAllowed(refusal)
    engine = Engine()
    redactor = Redactor(sensitive)
    run = FlowRun.objects.create(
        flow=flow,
        input=redactor.data(input),
        trigger=trigger,
        secret_ids=_run_secret_ids(flow_bound_secret_ids(flow), connection),
        connection=connection,
        **runs.held_by(engine.owner, extra_seconds=timeout),
    )
    run.input = input  # the run uses the real values; only the stored copy is masked
    output = engine.run_inline(run, timeout=timeout, redactor=redactor, output_secrets=output_secrets)
    run.refresh_from_db()
    run.output = output  # the exact output (the stored one is redacted)
    return run


def flow_run_start_once(*, flow: Flow, idempotency_key: str, **start: Any) -> tuple[FlowRun, bool]:
    """Start a run unless ``idempotency_key`` named one within the window: (run, started).

    Two calls racing with one key meet at the database's unique constraint: one inserts,
    the other gets that run. A key whose window has passed is released for a new run.
    """
    cutoff = timezone.now() - IDEMPOTENCY_WINDOW
    earlier = FlowRun.objects.filter(flow=flow, idempotency_key=idempotency_key).first()
    if earlier is not None and earlier.queued_at >= cutoff:
        return earlier, False
    if earlier is not None:
        FlowRun.objects.filter(pk=earlier.pk, queued_at__lt=cutoff).update(idempotency_key="")
    try:
        with transaction.atomic():
            return flow_run_start(flow=flow, idempotency_key=idempotency_key, **start), True
    except IntegrityError:
        return FlowRun.objects.get(flow=flow, idempotency_key=idempotency_key), False


def flow_run_wait(*, run: FlowRun, timeout: float, for_response: bool = False) -> FlowRun | None:
    """The run once finished (or, with ``for_response``, once it has a response); None on timeout."""

    def ready(current: FlowRun) -> bool:
        return current.finished or (for_response and current.response is not None)

    return notify.wait(run.pk, ready=ready, timeout=timeout)


def flow_run_error_handler_start(*, run_id: int) -> None:
    """After a run failed: start its flow's error handler with the run's summary, once (the
    failed run names the handler's run: a second call finds it)."""
    run = FlowRun.objects.select_related("flow", "flow__error_handler").get(pk=run_id)
    flow = run.flow
    handler = flow.error_handler
    if run.status == FlowRun.Status.FAILED and handler and run.trigger != "error_handler" and handler.pk != flow.pk:
        failed_step = run.step_runs.filter(status=StepRun.Status.FAILED).order_by("-id").first()
        flow_run_start_once(
            flow=handler,
            idempotency_key=f"error-handler-of-run-{run.pk}",
            trigger="error_handler",
            trigger_detail=f"{flow.slug} #{run.pk}",
            input={
                "run_id": run.pk,
                "flow": flow.slug,
                "status": run.status,
                "error": run.error,
                "failed_step": failed_step.step_key if failed_step else None,
                "trigger": run.trigger,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            },
        )


def flow_run_cancel(*, run: FlowRun, acting_user=None) -> bool:
    """Cancel a queued or waiting run now, a running one at its next step. False if it had ended."""
    with transaction.atomic():
        now = timezone.now()
        stopped = FlowRun.objects.filter(pk=run.pk, status__in=[FlowRun.Status.QUEUED, FlowRun.Status.WAITING]).update(
            status=FlowRun.Status.CANCELLED, cancel_requested=True, finished_at=now, error="Cancelled before it ran."
        )
        if stopped:
            metrics.run_finished(run, FlowRun.Status.CANCELLED)
        else:
            stopped = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING).update(cancel_requested=True)
        if stopped:
            audit_record(acting_user=acting_user, action="run.cancel", target_type="flow", target_name=f"{run.flow.slug} #{run.pk}")
    if stopped:
        notify.publish(run.pk)
    return bool(stopped)


def flow_run_rerun(*, run: FlowRun, acting_user=None) -> FlowRun:
    """A new run with the same input that starts at the step that failed.

    The steps that succeeded before it are copied into the new run (with their exact
    outputs), so later steps see the same data without repeating their effects.
    """
    rows = list(run.step_runs.order_by("id"))
    end = len(rows)
    if rows and rows[-1].status == StepRun.Status.FAILED:
        failed_key = rows[-1].step_key
        while end and rows[end - 1].step_key == failed_key and rows[end - 1].status == StepRun.Status.FAILED:
            end -= 1  # every attempt of the step that failed runs again
    retried = lambda row: row.status == StepRun.Status.FAILED and row.next_step_key == row.step_key  # noqa: E731
    kept = [row for row in rows[:end] if not retried(row)]
    user = acting_user if getattr(acting_user, "is_authenticated", False) else None
    if refusal := _start_refusal(user, run.flow, run.connection):
        raise RunNotAllowed(refusal)
    with transaction.atomic():
        new = FlowRun.objects.create(
            flow=run.flow,
            input=run.input,
            trigger="rerun",
            trigger_detail=f"#{run.pk}",
            rerun_of=run,
            started_by=user,
            secret_ids=sorted(set(run.secret_ids) | set(flow_bound_secret_ids(run.flow))),
            connection=run.connection,
        )
        for step_run in kept:  # each still names the step that followed it: the chain resumes there
            step_run.pk, step_run.run = None, new
        StepRun.objects.bulk_create(kept)
        audit_record(acting_user=acting_user, action="run.rerun", target_type="flow", target_name=f"{run.flow.slug} #{run.pk}")
        transaction.on_commit(lambda: dispatch.enqueue_run(new.pk, 0))
    return new


def flow_runs_recover() -> int:
    """Send again the runs whose message is gone, on the housekeeping queue: a run whose
    lease expired since it was last sent (its worker died), and a queued or due waiting run
    last sent longer ago than FLOWGATE_RUN_RESEND_AFTER_SECONDS (a lost message; within
    that window the broker may still deliver it, and a second one would only add to a
    backlog). Then the same for ``for_each`` items (``fanout.items_recover``)."""
    now = timezone.now()
    window = now - timedelta(seconds=flow_settings.run_resend_after_seconds)
    sent_long_ago = Q(last_sent__lt=window)
    stalled = list(
        FlowRun.objects.alias(last_sent=Coalesce("dispatched_at", "queued_at"))
        .filter(
            Q(status=FlowRun.Status.RUNNING, lease_expires_at__lt=now)
            & (Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=F("lease_expires_at")) | sent_long_ago)
            | Q(status=FlowRun.Status.QUEUED) & sent_long_ago
            | Q(status=FlowRun.Status.WAITING, not_before__lt=window) & sent_long_ago
        )
        .values_list("pk", flat=True)[:1000]
    )
    dispatch.runs_send_again(stalled)
    return len(stalled) + fanout.items_recover()


def flow_runs_prune(*, older_than_days: int | None = None) -> int:
    """Delete finished runs (and their step runs) older than the retention period."""
    days = flow_settings.run_retention_days if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = FlowRun.objects.filter(status__in=FlowRun.FINISHED, finished_at__lt=cutoff).delete()
    return deleted


def flow_run_summary(run: FlowRun) -> dict[str, Any]:
    """The run as ``run_flow`` prints it."""
    return {
        "id": run.pk,
        "flow": run.flow.slug,
        "status": run.status,
        "output": run.output,
        "error": run.error or None,
        "response": run.response,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_ms": run.duration_ms,
        "steps": [
            {"key": step.step_key, "status": step.status, "attempt": step.attempt, "duration_ms": step.duration_ms}
            for step in run.step_runs.order_by("id")
        ],
    }
