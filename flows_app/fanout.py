"""``for_each``: a step run once per item of a list, across workers (``Step.for_each``).

The run's worker renders the step's ``for_each`` template to a list and, in one
transaction, writes one ``StepItem`` per item and parks the run (``waiting``, without a
time), so the worker is free. When that commits it sends ``min(concurrency, items)`` item
tasks (``flows_app.dispatch``). Each task is a lane: it claims the next item, runs the step
with ``item`` and ``item_index`` in its templates, writes the item's result (redacted and
capped like a step's output, the exact value encrypted), and claims the next, until none
is left to take. The lane that finds every item finished sends the run again; the run
gathers the results in item order and goes on with its next step.

Claims. An item is taken with one ``UPDATE … RETURNING`` that gives the lane a lease,
extended by a heartbeat while it runs, under a lock on the run's row, so at most
``for_each_concurrency`` items run at once however many lanes there are. A worker killed
mid-item stops extending its lease; recovery (``items_recover``) sends a lane again, and
the item runs again (at least once); a finished item never runs again. An item taken up
more than FLOWGATE_RUN_MAX_PICKUPS times fails with the reason.

Failures. Each item retries transient errors in place, as the step would
(``max_attempts``). Then ``for_each_errors`` decides: ``fail``, no item starts after one
failed and the step fails naming the failed items; ``skip``, the results leave failed items
out; ``collect``, a failed item's result is ``{"error": "..."}``.

A called flow runs inside its caller's worker (``call_flow``), so a ``for_each`` step of a
called flow runs its items there, one after another, without item rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from flows_app import dispatch, metrics, runtime, stored, templating
from flows_app.app_settings import flow_settings
from flows_app.models import FlowRun, Step, StepItem
from flows_app.steps import STEP_KINDS
from flows_app.steps.base import StepError, StepResult
from project.heartbeat import Heartbeat
from secrets_app.redaction import Redactor

if TYPE_CHECKING:
    from flows_app.engine import Engine
    from secrets_app.api import Vault


Status = StepItem.Status
UNFINISHED = (Status.PENDING, Status.RUNNING)


@dataclass
class Outcome:
    """What one item gave: its output (exact), or the error that ended it."""

    succeeded: bool
    output: Any
    error: str = ""
    attempts: int = 1


def items_of(step: Step, data: dict[str, Any]) -> list:
    """The list the step's ``for_each`` template gives, or a StepError saying what it gave."""
    try:
        value = templating.render(step.for_each, data)
    except templating.TemplateFailed as exc:
        raise StepError(f"Template in 'for_each' failed: {exc}") from None
    if not isinstance(value, list):
        shown = stored.capped(stored.jsonable(value))
        raise StepError(
            f"for_each must give a list; it gave {type(value).__name__} {str(shown)[:200]!r}. "
            "Write a template that is one expression giving a list, e.g. {{ steps.users.body.items }}."
        )
    return stored.jsonable(value)


# -- the run's side -------------------------------------------------------------------


def step_result(engine: Engine, run: FlowRun, step: Step, data: dict[str, Any], *, vault: Vault, deadline: datetime):
    """The step's result once every item ran; None when the run parked to wait for its items
    (or lost its lease meanwhile). Raises StepError for a step that failed as a whole."""
    if run.parent_run_id:
        return _in_place(engine, run, step, data, vault, deadline)
    round_ = run.step_runs.filter(step_key=step.key).count()  # earlier visits of this step in the run
    items = StepItem.objects.filter(run=run, step_key=step.key, round=round_)
    counts = dict(items.values_list("status").annotate(Count("id")).order_by())
    if not counts:
        values = items_of(step, data)
        if not values:
            return StepResult(output=[])
        new_items = [
            StepItem(run=run, step_key=step.key, round=round_, index=index, item={"value": value})
            for index, value in enumerate(values)
        ]
        _park(engine, run, step, len(values), new_items)
        return None
    if not _done(counts, step):
        # Sent again before its items finished (a duplicate message): lanes may be gone, so
        # send them again; the claims keep to the concurrency cap whatever their number.
        _park(engine, run, step, counts.get(Status.PENDING, 0) + counts.get(Status.RUNNING, 0), [])
        return None
    outcomes = [_stored_outcome(item, vault.redactor) for item in items.order_by("index")]
    return _gathered(step, outcomes)


def _park(engine: Engine, run: FlowRun, step: Step, unfinished: int, new_items: list[StepItem]) -> None:
    with transaction.atomic():
        parked = FlowRun.objects.filter(pk=run.pk, lease_owner=engine.owner).update(
            status=FlowRun.Status.WAITING, not_before=None, lease_owner="", lease_expires_at=None
        )
        if not parked:
            return  # another worker owns the run now
        StepItem.objects.bulk_create(new_items, batch_size=500)
        lanes = min(step.for_each_concurrency, unfinished)
        transaction.on_commit(lambda: dispatch.enqueue_item_lanes(run.pk, step.key, lanes))


def _done(counts: dict[str, int], step: Step) -> bool:
    if counts.get(Status.RUNNING):
        return False
    stopped = step.for_each_errors == Step.ForEachErrors.FAIL and counts.get(Status.FAILED)
    return not counts.get(Status.PENDING) or bool(stopped)


def _stored_outcome(item: StepItem, redactor: Redactor) -> Outcome | None:
    """An item's outcome as its lane stored it; None for one that did not run."""
    if item.status in UNFINISHED:
        return None
    if item.raw_output is not None:
        output = item.raw_output["value"]
        redactor.learn(output, item.output)  # what the lane masked, the run masks too
    elif item.status == Status.SUCCEEDED and stored.is_truncated(item.output):
        raise StepError(
            f"Item {item.index} produced {item.output['size']} bytes, more than FLOWGATE_MAX_STORED_OUTPUT_BYTES, "
            "so only a truncated copy was stored and the step cannot give it on. Raise the setting."
        )
    else:
        output = item.output
    return Outcome(item.status == Status.SUCCEEDED, output, item.error, item.attempts)


def _gathered(step: Step, outcomes: list[Outcome | None]) -> StepResult:
    policy = step.for_each_errors
    results, failed = [], []
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            continue
        if outcome.succeeded:
            results.append(outcome.output)
        else:
            failed.append((index, outcome.error))
            if policy == Step.ForEachErrors.COLLECT:
                results.append({"error": outcome.error})
    if failed and policy == Step.ForEachErrors.FAIL:
        first_index, first_error = failed[0]
        not_run = outcomes.count(None)
        listed = ", ".join(str(index) for index, _error in failed[:20]) + (", …" if len(failed) > 20 else "")
        raise StepError(
            f"{len(failed)} of {len(outcomes)} items failed (item {listed})"
            + (f" and {not_run} did not run" if not_run else "")
            + f"; item {first_index}: {first_error}",
            output=results,
        )
    return StepResult(output=results)


def _in_place(engine: Engine, run: FlowRun, step: Step, data: dict[str, Any], vault: Vault, deadline: datetime):
    kind = STEP_KINDS[step.kind]
    outcomes: list[Outcome | None] = []
    stop = False
    for index, value in enumerate(items_of(step, data)):
        outcome = None if stop else run_item(engine, run, step, kind, data, vault, deadline, index, value)
        stop = stop or (outcome is not None and not outcome.succeeded and step.for_each_errors == Step.ForEachErrors.FAIL)
        outcomes.append(outcome)
    return _gathered(step, outcomes)


def run_item(engine: Engine, run, step, kind, data, vault, deadline: datetime, index: int, value: Any) -> Outcome:
    """Run the step for one item, retrying transient errors in place as the step would."""
    scope = {**data, "item": value, "item_index": index}
    attempt = 0
    while True:
        attempt += 1
        remaining = (deadline - timezone.now()).total_seconds()
        if remaining <= 0:
            return Outcome(False, None, f"The flow took longer than its timeout of {run.flow.timeout_seconds} s.", attempt)
        started = time.monotonic()
        _rendered, result, failure = engine.attempt(
            run, step, kind, scope, vault, remaining, what=f"Item {index} of step {step.key}"
        )
        metrics.step_finished(step.kind, failed=failure is not None, seconds=time.monotonic() - started)
        if failure is None:
            return Outcome(True, stored.jsonable(result.output), "", attempt)
        if failure.retryable and attempt < step.max_attempts:
            delay = runtime.retry_wait(step, attempt, failure.retry_after, cap=flow_settings.max_retry_delay_seconds)
            if delay < remaining:
                time.sleep(delay)
                continue
        return Outcome(False, stored.jsonable(failure.output), str(failure), attempt)


# -- the lanes ------------------------------------------------------------------------


class _ItemHeartbeat(Heartbeat):
    """Extends the leases of the items a lane is running."""

    def __init__(self, run_id: int, owner: str):
        super().__init__(interval=flow_settings.run_lease_seconds / 3, name=f"flowgate-items-{run_id}")
        self.run_id, self.owner = run_id, owner

    def beat(self) -> bool:
        lease = timezone.now() + timedelta(seconds=flow_settings.run_lease_seconds)
        StepItem.objects.filter(run_id=self.run_id, lease_owner=self.owner, status=Status.RUNNING).update(
            lease_expires_at=lease
        )
        return True


def items_execute(engine: Engine, run_id: int, step_key: str) -> None:
    """One lane: run the run's items of ``step_key`` until none is left to take, then send
    the run again when every item finished."""
    run = FlowRun.objects.select_related("flow", "flow__owner").filter(pk=run_id).first()
    if run is None or run.finished:
        return
    step = Step.objects.select_related("secret").filter(flow_id=run.flow_id, key=step_key).first()
    if step is None or not step.for_each or step.kind not in STEP_KINDS:
        dispatch.enqueue_run(run.pk)  # the flow changed under the run: the run decides what now
        return
    kind, lane = STEP_KINDS[step.kind], None
    with _ItemHeartbeat(run.pk, engine.owner):
        while (item := _claim(engine.owner, run, step)) is not None:
            if item.pickups > flow_settings.run_max_pickups:
                outcome = Outcome(
                    False, None, f"The worker running this item stopped {item.pickups - 1} times (killed or crashed); "
                    "it was not taken up again.", item.attempts,
                )
                _record(engine.owner, item, outcome, lane[2].redactor if lane else Redactor())
                continue
            if lane is None:
                lane = _lane_data(engine, run)
            data, deadline, vault = lane
            outcome = run_item(engine, run, step, kind, data, vault, deadline, item.index, item.item["value"])
            _record(engine.owner, item, outcome, vault.redactor)
    rounds = StepItem.objects.filter(run_id=run.pk, step_key=step.key)
    current = rounds.aggregate(Max("round"))["round__max"]
    counts = dict(rounds.filter(round=current).values_list("status").annotate(Count("id")).order_by())
    if _done(counts, step):
        dispatch.enqueue_run(run.pk)  # several lanes may: only one claim of the run succeeds


def _lane_data(engine: Engine, run: FlowRun) -> tuple[dict[str, Any], datetime, Vault]:
    """What the step's templates see, as the run saw it when it parked: its checkpoints."""
    redactor = Redactor()
    data, vault, _bindings = engine.run_data(run, redactor)
    stored.restore(list(run.step_runs.order_by("id")), data, redactor)
    deadline = (run.started_at or timezone.now()) + timedelta(seconds=run.flow.timeout_seconds)
    return data, deadline, vault


def _claim(owner: str, run: FlowRun, step: Step) -> StepItem | None:
    """The next item to run (pending, or running under an expired lease), with a lease for
    ``owner``; None when there is none, the cap is reached, or the run has ended."""
    now = timezone.now()
    lease = now + timedelta(seconds=flow_settings.run_lease_seconds)
    quote, moment = connection.ops.quote_name, connection.ops.adapt_datetimefield_value
    table, index, round_ = quote(StepItem._meta.db_table), quote("index"), quote("round")
    stop_after_failure = ""
    if step.for_each_errors == Step.ForEachErrors.FAIL:
        stop_after_failure = (
            f" AND NOT EXISTS (SELECT 1 FROM {table} f WHERE f.run_id = c.run_id AND f.step_key = c.step_key"
            f" AND f.{round_} = c.{round_} AND f.status = %s)"
        )
    columns = ", ".join(quote(field.column) for field in StepItem._meta.concrete_fields)
    sql = (
        f"UPDATE {table} SET status = %s, lease_owner = %s, lease_expires_at = %s, pickups = pickups + 1,"
        " started_at = COALESCE(started_at, %s)"
        f" WHERE id = (SELECT c.id FROM {table} c WHERE c.run_id = %s AND c.step_key = %s"
        " AND (c.status = %s OR (c.status = %s AND c.lease_expires_at < %s))"
        f"{stop_after_failure} ORDER BY c.{round_}, c.{index} LIMIT 1)"
        f" AND (SELECT COUNT(*) FROM {table} r WHERE r.run_id = %s AND r.step_key = %s"
        " AND r.status = %s AND r.lease_expires_at >= %s) < %s"
        f" RETURNING {columns}"
    )
    params: list[Any] = [Status.RUNNING, owner, moment(lease), moment(now), run.pk, step.key]
    params += [Status.PENDING, Status.RUNNING, moment(now)]
    params += [Status.FAILED] if stop_after_failure else []
    params += [run.pk, step.key, Status.RUNNING, moment(now), step.for_each_concurrency]
    with transaction.atomic():
        # Claims of one run take turns, so the count of running items is the truth.
        status = FlowRun.objects.select_for_update().filter(pk=run.pk).values_list("status", flat=True).first()
        if status is None or status in FlowRun.FINISHED:
            return None
        return next(iter(StepItem.objects.raw(sql, params)), None)


def _record(owner: str, item: StepItem, outcome: Outcome, redactor: Redactor) -> None:
    shown, exact = stored.kept(outcome.output, redactor)
    StepItem.objects.filter(pk=item.pk, lease_owner=owner).update(
        status=Status.SUCCEEDED if outcome.succeeded else Status.FAILED,
        output=shown,
        raw_output=None if exact is None else {"value": exact},
        error=redactor.text(outcome.error),
        attempts=item.attempts + outcome.attempts,
        finished_at=timezone.now(),
        lease_owner="",
        lease_expires_at=None,
    )


# -- recovery -------------------------------------------------------------------------


def items_recover() -> int:
    """Send lanes again for items whose lane died (lease expired), and send again a parked
    run whose items are all finished (its last lane died before sending it)."""
    now = timezone.now()
    expired = set(
        StepItem.objects.filter(status=Status.RUNNING, lease_expires_at__lt=now, run__status=FlowRun.Status.WAITING)
        .values_list("run_id", "step_key")
        .distinct()[:1000]
    )
    for run_id, step_key in expired:
        dispatch.enqueue_item_lanes(run_id, step_key, 1, again=True)
    items = StepItem.objects.filter(run_id=OuterRef("pk"))
    forgotten = list(
        FlowRun.objects.filter(status=FlowRun.Status.WAITING, not_before__isnull=True)
        .filter(Exists(items))
        .exclude(Exists(items.filter(status=Status.RUNNING)))
        .exclude(Q(Exists(items.filter(status=Status.PENDING))) & ~Q(Exists(items.filter(status=Status.FAILED))))
        .values_list("pk", flat=True)[:1000]
    )
    dispatch.runs_send_again(forgotten)
    return len(expired) + len(forgotten)

