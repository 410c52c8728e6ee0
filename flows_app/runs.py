"""The run store: what the engine writes about a run, and the rules for taking one.

Claim. A run is taken with one compare-and-set ``UPDATE … RETURNING`` that gives the worker
a lease (``lease_owner``, ``lease_expires_at``). A run under a rule (held by a live lease,
not due yet, cancelled, a called flow whose caller died, taken up too often, or of a flow
with a concurrency limit) falls to ``_claim_otherwise``, which reads it and applies the rule.
Duplicate task deliveries are harmless: only one claim succeeds.

Admission. A flow's concurrency limit counts the runs holding a slot
(``FlowRun.objects.holding_slots``); a run over it waits without a message, and
``release_slots`` sends the oldest waiting runs when a run of the flow finishes.

Checkpoints. Every executed step leaves a ``StepRun`` naming the step that comes next
(``Checkpoints``): written at once when the interpreter says so (``flows_app.runtime``),
else kept until the next write or the run's end, in one statement.

Park and finish. ``park`` frees the worker until a retry is due; ``finish`` writes the run's
end (with a last step's answer) only while the worker still holds the lease.

Imports point down: ``flows_app.engine`` (and ``flows_app.services.runs``) use this module;
it uses the models, ``dispatch`` (which sends tasks by name, importing no task module),
``notify`` and ``metrics``, never the engine, the tasks or the services.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from flows_app import dispatch, metrics, notify, stored
from flows_app.app_settings import flow_settings
from flows_app.models import Flow, FlowRun, StepRun
from secrets_app.redaction import Redactor

# -- claim and admission -----------------------------------------------------------------


def claim(run_id: int, owner: str) -> FlowRun | None:
    """The run with a lease for ``owner``, its flow and owner read; None when it cannot be taken now."""
    now = timezone.now()
    lease = now + timedelta(seconds=flow_settings.run_lease_seconds)
    # The common case in one statement: a run free to take, with none of the rules below.
    run = _take(run_id, owner, now, lease, plain=True)
    if run is None:
        return _claim_otherwise(run_id, owner, now, lease)
    run.flow = Flow.objects.select_related("owner").get(pk=run.flow_id)
    return run


def _claim_otherwise(run_id: int, owner: str, now: datetime, lease: datetime) -> FlowRun | None:
    """A run the one-statement claim left: held, not due, cancelled, or under a rule."""
    run = FlowRun.objects.select_related("flow", "flow__owner").filter(pk=run_id).first()
    if run is None or run.finished:
        return None
    held = run.status == FlowRun.Status.RUNNING and run.lease_expires_at and run.lease_expires_at > now
    if held:
        return None
    if run.not_before and run.not_before > now:
        dispatch.enqueue_run(run.pk, (run.not_before - now).total_seconds())
        return None
    if run.cancel_requested:
        finish(run, owner, FlowRun.Status.CANCELLED, error="Cancelled before it ran.", lease_check=False)
        return None
    if run.parent_run_id and run.status == FlowRun.Status.RUNNING:
        # A called flow runs inside its caller's worker; when that worker died, the
        # caller resumes and calls the flow again, so this copy must not go on alone.
        finish(run, owner, FlowRun.Status.FAILED, error="The calling run's worker stopped during this run.", lease_check=False)
        return None
    if run.status == FlowRun.Status.RUNNING and run.pickups >= flow_settings.run_max_pickups:
        in_flight = _step_in_flight(run)
        finish(
            run,
            owner,
            FlowRun.Status.FAILED,
            error=f"The worker running this flow stopped {run.pickups} times (killed or crashed) "
            f"during step {in_flight!r}; it was not taken up again.",
            lease_check=False,
        )
        return None
    if not run.flow.concurrency_limit:
        taken = _take(run_id, owner, now, lease)  # the compare-and-set alone: no transaction to open
    else:
        with transaction.atomic():
            Flow.objects.select_for_update().filter(pk=run.flow_id).first()  # one claim per flow at a time
            running = FlowRun.objects.holding_slots(run.flow_id, now).exclude(pk=run.pk).count()
            if running >= run.flow.concurrency_limit:
                # It waits without a message: release_slots sends it when a slot frees
                # (recovery, should that message be lost).
                return None
            taken = _take(run_id, owner, now, lease)
    if taken is not None:
        taken.flow = run.flow  # read above, with its owner
    return taken


def _take(run_id: int, owner: str, now: datetime, lease: datetime, *, plain: bool = False) -> FlowRun | None:
    """The compare-and-set that gives ``owner`` the run: the run as written, or None.

    ``plain`` takes it only when no rule of ``_claim_otherwise`` applies to it. One
    ``UPDATE … RETURNING`` (PostgreSQL; SQLite from 3.35) instead of a read and a write.
    """
    quote, moment = connection.ops.quote_name, connection.ops.adapt_datetimefield_value
    status = FlowRun.Status
    params: list[Any] = [status.RUNNING, owner, moment(lease), moment(now), run_id]
    params += [status.QUEUED, status.WAITING, status.RUNNING, moment(now)]
    rules = ""
    if plain:
        rules = (
            " AND NOT cancel_requested AND (not_before IS NULL OR not_before <= %s)"
            " AND (status <> %s OR (parent_run_id IS NULL AND pickups < %s))"
            f" AND flow_id IN (SELECT id FROM {quote(Flow._meta.db_table)} WHERE concurrency_limit = 0)"
        )
        params += [moment(now), status.RUNNING, flow_settings.run_max_pickups]
    columns = ", ".join(quote(field.column) for field in FlowRun._meta.concrete_fields)
    sql = (
        f"UPDATE {quote(FlowRun._meta.db_table)} SET status = %s, lease_owner = %s, lease_expires_at = %s,"
        " pickups = pickups + 1, started_at = COALESCE(started_at, %s), not_before = NULL"
        " WHERE id = %s AND (status IN (%s, %s) OR (status = %s AND lease_expires_at < %s))"
        f"{rules} RETURNING {columns}"
    )
    return next(iter(FlowRun.objects.raw(sql, params)), None)


def held_by(owner: str, *, extra_seconds: float = 0) -> dict[str, Any]:
    """The fields of a run inserted already taken by ``owner``, which runs it in the process
    that starts it (no claim): its lease lasts ``extra_seconds`` longer than a claim's."""
    now = timezone.now()
    lease = now + timedelta(seconds=flow_settings.run_lease_seconds + extra_seconds)
    return {"status": FlowRun.Status.RUNNING, "started_at": now, "lease_owner": owner, "lease_expires_at": lease, "pickups": 1}


def give_back(run: FlowRun, owner: str) -> None:
    """A run inserted held by ``owner`` that its process cannot run after all: queued for a worker."""
    FlowRun.objects.filter(pk=run.pk, lease_owner=owner).update(
        status=FlowRun.Status.QUEUED, started_at=None, lease_owner="", lease_expires_at=None, pickups=0
    )
    dispatch.enqueue_run(run.pk)


def _step_in_flight(run: FlowRun) -> str:
    last = run.step_runs.order_by("-id").first()
    if last is not None:
        return last.next_step_key
    first = run.flow.steps.values_list("key", flat=True).first()
    return first or ""


def release_slots(flow: Flow) -> None:
    """A run of ``flow`` ended: let as many of its oldest waiting runs go as there are free
    slots (the due waiting ones, back from a retry, included)."""
    now = timezone.now()
    free = flow.concurrency_limit - FlowRun.objects.holding_slots(flow.pk, now).count()
    if free > 0:
        dispatch.runs_send_again(
            FlowRun.objects.filter(
                Q(status=FlowRun.Status.QUEUED) | Q(status=FlowRun.Status.WAITING, not_before__lte=now), flow=flow
            )
            .order_by("queued_at", "id")
            .values_list("pk", flat=True)[:free]
        )


# -- checkpoints ------------------------------------------------------------------------


def history(run: FlowRun) -> list[StepRun]:
    """The run's checkpoints, oldest first."""
    if run.pickups == 1 and not run.rerun_of_id:
        return []  # taken up for the first time: none, unless it re-runs another
    return list(run.step_runs.order_by("id"))


class Checkpoints:
    """A run's step runs not written yet; ``write`` stores them, redacted and capped.

    ``held``: written only when the run leaves the worker (``write(leaving=True)``: it ends,
    parks, or lost its lease), for a run whose output names secrets known only then."""

    def __init__(self, redactor: Redactor, *, held: bool = False):
        self.redactor, self.held = redactor, held
        self.pending: list[StepRun] = []

    def add(self, record: StepRun) -> None:
        self.pending.append(record)

    def write(self, *, leaving: bool = False) -> None:
        if not self.pending or (self.held and not leaving):
            return
        for record in self.pending:
            record.input = stored.capped(self.redactor.data(record.input))
            record.output, record.raw_output = stored.kept(record.output, self.redactor)
            record.error = self.redactor.text(record.error)
            record.logs = self.redactor.text(record.logs)
        if len(self.pending) == 1:
            self.pending[0].save()  # one INSERT that commits on its own; bulk_create opens a transaction
        else:
            StepRun.objects.bulk_create(self.pending)
        self.pending.clear()


# -- respond, park, finish --------------------------------------------------------------


def respond(run: FlowRun, response: dict[str, Any]) -> None:
    """A step answered the run's waiting caller before the run ended."""
    FlowRun.objects.filter(pk=run.pk).update(response=response)
    run.response = response
    notify.publish(run.pk)


def park(run: FlowRun, owner: str, delay: float) -> None:
    """Free the worker while a step waits for its retry; the task comes back after ``delay``."""
    parked = FlowRun.objects.filter(pk=run.pk, lease_owner=owner).update(
        status=FlowRun.Status.WAITING,
        not_before=timezone.now() + timedelta(seconds=delay),
        lease_owner="",
        lease_expires_at=None,
    )
    if parked:
        dispatch.enqueue_run(run.pk, delay)


def finish(
    run: FlowRun, owner: str, status: str, *, output: Any = None, error: str = "", response: Any = None, lease_check: bool = True
) -> None:
    """Write the run's end, while ``owner`` holds its lease (``lease_check``) or, for a run
    nobody runs, while it has not ended; then wake its waiters, free its slot and start its
    flow's error handler."""
    now = timezone.now()
    target = FlowRun.objects.filter(pk=run.pk)
    target = target.filter(lease_owner=owner) if lease_check else target.exclude(status__in=FlowRun.FINISHED)
    started = run.started_at or now
    answered = {"response": response} if response is not None else {}
    done = target.update(
        status=status,
        output=output,
        error=error,
        finished_at=now,
        duration_ms=int((now - started).total_seconds() * 1000),
        lease_owner="",
        lease_expires_at=None,
        **answered,
    )
    if not done:
        return
    metrics.run_finished(run, status)
    run.status, run.output, run.error = status, output, error
    run.response = response if response is not None else run.response
    notify.publish(run.pk)
    flow = run.flow
    if flow.concurrency_limit:
        transaction.on_commit(lambda: release_slots(flow))
    if status == FlowRun.Status.FAILED and flow.error_handler_id:
        transaction.on_commit(lambda: dispatch.error_handler_start(run.pk))
