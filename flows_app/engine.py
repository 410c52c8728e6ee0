"""Runs a flow: the loop that asks the interpreter what now, runs steps, and tells the run store.

One Celery task per run (``flows_app.tasks.flow_run_execute``) calls ``Engine.execute``; a
sync endpoint's run, inserted already held, is run by ``flows_app.local_runs`` in the web
process through ``Engine.run_held``.
Three parts, each in its own module:

- ``flows_app.runtime`` decides (pure): which step runs next, retry in place or park, how
  each outcome is checkpointed, when the run ends and why;
- ``flows_app.runs`` writes (the run store): claim, checkpoints, park, respond, finish,
  concurrency slots;
- this module executes: it reads the run's steps and checkpoints, sets up the vault and the
  run's connection (``run_data``), renders and executes each step kind (a ``for_each`` step
  through ``flows_app.fanout``), and keeps the heartbeat.

Claiming. A run is taken with one compare-and-set ``UPDATE`` that gives this worker a
lease; a heartbeat thread extends it while the run executes and watches for cancellation.
A worker killed mid-run stops extending its lease; once it expires, the recovery job hands
the run out again and the next worker continues after the last checkpoint. A run taken up
more than ``FLOWGATE_RUN_MAX_PICKUPS`` times fails with the reason.

Checkpoints. Every executed step leaves a ``StepRun`` naming the step that comes next.
Steps with effects outside the run (HTTP, SQL, scripts, called flows, fan-outs) are written
as soon as they finish; pure steps (transform, condition, respond, jwt) are written in one
batch with the next effectful step or at the end, since after a crash they are simply
computed again. So a step in flight when a worker dies runs again (at least once), and no
finished effectful step runs twice.

Retries. A step failing with a transient error (timeout, connection, 5xx, 429) is retried
up to its ``max_attempts`` with the product's backoff, honouring ``Retry-After``. Short
waits happen in place; longer ones park the run (``waiting``) and schedule the task again,
freeing the worker. A called flow always waits in place, inside its caller's task.

Fan-out. A step with ``for_each`` runs once per item across workers (``flows_app.fanout``):
the run parks (``waiting``) while its items run and is sent again when they are done.

Redaction. Every secret value the run touches is registered in its ``Redactor`` and
masked in what is stored: step inputs, outputs, errors, logs, the run's output.

Imports point down: tasks and ``flows_app.services.runs`` import this module; it imports
the interpreter, the run store, ``fanout``, the step kinds and ``secrets_app.api``, none of
which imports it (``fanout`` and the step kinds name ``Engine`` for type checking only).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from flows_app import fanout, metrics, runs, runtime, stored
from flows_app.app_settings import flow_settings
from flows_app.models import Flow, FlowRun, Step, StepRun
from flows_app.selectors import flow_steps
from flows_app.services.access import flow_bound_secret_ids, flow_bound_secrets, flow_run_refusal
from flows_app.steps import STEP_KINDS
from flows_app.steps.base import StepContext, StepError, StepResult
from flows_app.stored import jsonable, restore
from project.heartbeat import Heartbeat
from secrets_app.api import Vault
from secrets_app.exceptions import VaultError
from secrets_app.redaction import Redactor

logger = logging.getLogger(__name__)

MAX_CALL_DEPTH = 5


class SecretsInTemplates:
    """``secrets`` in templates: the run's vault, reading only (each reveal is audited)."""

    def __init__(self, vault: Vault):
        self._vault = vault

    def get_password(self, name: str) -> str:
        return self._vault.get_password(name)

    def get_field(self, name: str, field: str):
        return self._vault.get_field(name, field)

    def get_access_token(self, name: str) -> str:
        return self._vault.get_access_token(name)


class ConnectionInTemplates:
    """``connection`` in an app flow's templates: the connection its run uses.

    ``connection.id``, ``connection.identity``, ``connection.data`` (what the provider
    returned beside the tokens), and each field of a generic connection by its key
    (``connection.region``); reading a sensitive field is a reveal, audited and redacted.
    """

    def __init__(self, vault: Vault, secret):
        self._vault, self._secret = vault, secret

    @property
    def id(self) -> int:
        return self._secret.pk

    @property
    def identity(self) -> str:
        return self._read(self._vault.connection_identity)

    @property
    def data(self) -> dict[str, Any]:
        return self._read(self._vault.connection_data)

    @property
    def access_token(self) -> str:
        """The raw token, for a scheme other than Bearer: a reveal, audited and redacted."""
        return self._read(self._vault.get_access_token)

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        return self._read(self._vault.get_field, key)

    def _read(self, read, *args):
        try:
            return read(self._secret.name, *args)
        except VaultError as exc:
            raise StepError(str(exc)) from None

    def __getitem__(self, key: str):
        return getattr(self, key)


class NoConnection:
    """``connection`` in a run without one: using it says why, instead of rendering blank."""

    def __getattr__(self, key: str):
        raise StepError("This run has no connection: only an app's flows, run for one of its connections, have one.")

    __getitem__ = __getattr__


class _Heartbeat(Heartbeat):
    """Extends the run's lease while it executes and notices cancellation and a lost lease."""

    def __init__(self, run_id: int, owner: str):
        super().__init__(interval=flow_settings.run_lease_seconds / 3, name=f"flowgate-run-{run_id}")
        self.run_id, self.owner = run_id, owner
        self.cancelled = threading.Event()
        self.lost = threading.Event()

    def beat(self) -> bool:
        lease = timezone.now() + timedelta(seconds=flow_settings.run_lease_seconds)
        if not FlowRun.objects.filter(pk=self.run_id, lease_owner=self.owner).update(lease_expires_at=lease):
            self.lost.set()
            return False
        if FlowRun.objects.filter(pk=self.run_id, cancel_requested=True).exists():
            self.cancelled.set()
        return True


class Engine:
    def __init__(self):
        self.owner = uuid.uuid4().hex

    # -- running --------------------------------------------------------------------

    def execute(self, run_id: int) -> None:
        """Run (or continue) ``run_id`` if it can be taken now; otherwise do nothing."""
        run = runs.claim(run_id, self.owner)
        if run is not None:
            self.run_held(run)

    def run_held(self, run: FlowRun) -> None:
        """Run (or continue) ``run``, held under this engine's lease (claimed, or inserted
        held by ``flows_app.local_runs``), extending the lease while it runs."""
        with _Heartbeat(run.pk, self.owner) as heartbeat:
            self._run(run, heartbeat=heartbeat)

    def run_inline(
        self, run: FlowRun, *, timeout: float, redactor: Redactor | None = None, output_secrets=None
    ) -> Any:
        """Run ``run`` (created RUNNING under this engine's lease) here and now; its output.

        ``output_secrets(output)`` names secrets the run produces: its history waits for its
        end, when they are known and masked (``flow_run_inline``)."""
        return self._run(run, heartbeat=None, redactor=redactor, timeout=timeout, output_secrets=output_secrets)

    def _run(
        self,
        run: FlowRun,
        *,
        heartbeat: _Heartbeat | None,
        redactor: Redactor | None = None,
        timeout: float | None = None,
        output_secrets=None,
    ) -> Any:
        flow = run.flow
        steps = flow_steps(flow)
        by_key = {step.key: step for step in steps}
        redactor = redactor if redactor is not None else Redactor()
        data, vault, bindings = self.run_data(run, redactor)
        written = runs.history(run)
        restore(written, data, redactor)
        history = [
            runtime.Checkpoint(row.step_key, row.status == StepRun.Status.SUCCEEDED, row.attempt, row.next_step_key)
            for row in written
        ]
        flow_seconds = flow.timeout_seconds if timeout is None else min(flow.timeout_seconds, timeout)
        plan = runtime.Plan(
            steps=tuple(_step_plan(step) for step in steps),
            timeout_seconds=flow_seconds,
            max_retry_delay=flow_settings.max_retry_delay_seconds,
            called=bool(run.parent_run_id),
        )
        deadline = (run.started_at or timezone.now()) + timedelta(seconds=flow_seconds)
        # With output secrets, the history waits for the run's end, when they are known.
        checkpoints = runs.Checkpoints(redactor, held=output_secrets is not None)
        last_output: Any = written[-1].output if written else None
        response: dict[str, Any] | None = None  # a last step's answer, written with the run's end

        def finish(status: str, error: str = "") -> Any:
            if output_secrets is not None:
                redactor.add(*output_secrets(last_output))
            checkpoints.write(leaving=True)
            runs.finish(
                run, self.owner, status, output=stored.capped(redactor.data(last_output)), error=redactor.text(error), response=response
            )
            return last_output

        try:
            vault.admit_all(bindings)  # a withdrawn grant fails the run before its first step
        except VaultError as exc:
            return finish(FlowRun.Status.FAILED, str(exc))
        lost = stored.lost_checkpoint_reason(written)
        if lost:
            return finish(FlowRun.Status.FAILED, lost)

        outcome: runtime.Succeeded | runtime.Failed | None = None  # of the step that just ran
        record: StepRun | None = None  # its step run
        answer: dict[str, Any] | None = None  # its answer to the caller
        while True:
            remaining = (deadline - timezone.now()).total_seconds()
            cancelled = heartbeat is not None and heartbeat.cancelled.is_set()
            decision = runtime.decide(plan, history, outcome, remaining=remaining, cancelled=cancelled)
            if decision.recorded is not None:
                checkpoint = decision.recorded.checkpoint
                history.append(checkpoint)
                record.next_step_key = checkpoint.next_step_key
                if checkpoint.succeeded:
                    data["steps"][record.step_key] = last_output = record.output
                elif checkpoint.next_step_key != record.step_key:  # the run goes on from the failure
                    data["steps"][record.step_key] = {"error": record.error, "output": record.output}
                checkpoints.add(record)
                if answer is not None:
                    # A waiting caller gets the answer before any later step runs; the pure
                    # respond step is checkpointed with the next write (after a crash it
                    # simply runs again). Answered by the last step, the run's end brings it.
                    response = redactor.data(jsonable(answer))
                    if checkpoint.next_step_key:
                        runs.respond(run, response)
                        response = None
                if decision.recorded.write_now:
                    checkpoints.write()
            if heartbeat is not None and heartbeat.lost.is_set():
                checkpoints.write(leaving=True)
                return None  # another worker owns the run now
            if isinstance(decision, runtime.Finish):
                return finish(decision.status, decision.reason)
            if isinstance(decision, runtime.Park):
                checkpoints.write(leaving=True)
                runs.park(run, self.owner, decision.seconds)
                return None
            if isinstance(decision, runtime.Sleep):
                time.sleep(decision.seconds)
                outcome = None
                continue
            if decision.checkpoint_first:
                checkpoints.write()  # the history shows what ran before a step that may take a while
            step = by_key[decision.step.key]
            executed = self._execute(run, step, decision.attempt, data, vault, deadline, remaining)
            if executed is None:
                return None  # parked until its items are done (or another worker owns the run now)
            outcome, record, answer = executed

    def _execute(
        self, run: FlowRun, step: Step, attempt: int, data: dict[str, Any], vault: Vault, deadline: datetime, remaining: float
    ) -> tuple[runtime.Succeeded | runtime.Failed, StepRun, dict[str, Any] | None] | None:
        """Render and execute one step: what happened, its step run (without the step that
        comes next), and the answer it gives the caller; None when a fan-out parked the run."""
        kind = STEP_KINDS.get(step.kind)
        started = timezone.now()
        rendered: dict[str, Any] = {}
        result = None
        if kind is None:
            failure = StepError(f"Unknown step kind {step.kind!r}.")
        elif step.for_each:
            rendered = {"for_each": step.for_each}
            result, failure = self.guarded(
                run, vault, f"Step {step.key}", lambda: fanout.step_result(self, run, step, data, vault=vault, deadline=deadline)
            )
            if result is None and failure is None:
                return None
        else:
            rendered, result, failure = self.attempt(run, step, kind, data, vault, remaining, what=f"Step {step.key}")
        finished = timezone.now()
        metrics.step_finished(step.kind, failed=failure is not None, seconds=(finished - started).total_seconds())
        record = StepRun(
            run=run,
            step_key=step.key,
            step_kind=step.kind,
            attempt=attempt,
            input=jsonable(rendered),
            started_at=started,
            finished_at=finished,
            duration_ms=int((finished - started).total_seconds() * 1000),
        )
        if failure is None:
            record.status, record.output, record.logs = StepRun.Status.SUCCEEDED, jsonable(result.output), result.logs
            return runtime.Succeeded(result.next_step), record, result.response
        record.status, record.error, record.output = StepRun.Status.FAILED, str(failure), jsonable(failure.output)
        record.logs = (failure.output or {}).get("logs", "") if isinstance(failure.output, dict) else ""
        return runtime.Failed(str(failure), failure.retryable, failure.retry_after), record, None

    def attempt(
        self, run: FlowRun, step: Step, kind, scope: dict[str, Any], vault: Vault, remaining: float, *, what: str
    ) -> tuple[dict[str, Any], StepResult | None, StepError | None]:
        """Render ``step`` against ``scope`` and execute it once: (rendered config, result,
        failure). A run's step and a fan-out's item both go through here."""
        rendered: dict[str, Any] = {}

        def render_and_execute() -> StepResult:
            rendered.update(kind.render(step.config, scope))
            return kind().execute(self.step_context(run, step, rendered, scope, vault, remaining))

        result, failure = self.guarded(run, vault, what, render_and_execute)
        return rendered, result, failure

    @staticmethod
    def guarded(run: FlowRun, vault: Vault, what: str, work) -> tuple[Any, StepError | None]:
        """``work()``'s value and no failure, or None and the StepError it failed with. A bug
        or an unexpected library error fails the step too (logged, redacted), keeping the worker."""
        try:
            return work(), None
        except StepError as exc:
            return None, exc
        except Exception as exc:
            logger.error("%s of run %s failed unexpectedly:\n%s", what, run.pk, vault.redactor.text(traceback.format_exc()))
            return None, StepError(f"Unexpected error: {type(exc).__name__}: {exc}")

    def step_context(
        self, run: FlowRun, step: Step, rendered: dict[str, Any], data: dict[str, Any], vault: Vault, remaining: float
    ) -> StepContext:
        return StepContext(
            run=run,
            step=step,
            config=rendered,
            vault=vault,
            timeout=min(step.timeout_seconds, remaining),
            data=data,
            engine=self,
            secret_name=self._step_secret_name(step, run.connection if run.connection_id else None),
        )

    def run_data(self, run: FlowRun, redactor: Redactor) -> tuple[dict[str, Any], Vault, list]:
        """What the run's templates see (its steps' outputs still to restore), the vault the
        run reaches secrets through, and the flow's bindings."""
        flow = run.flow
        bindings = flow_bound_secrets(flow)
        connection = run.connection if run.connection_id else None
        if connection is not None:
            bindings.append(connection)  # admitted for the flow's owner at the start, like every binding
        bound = [secret.name for secret in bindings]
        if unrecorded := {secret.pk for secret in bindings} - set(run.secret_ids):
            # Its start read the bindings from a cache a save in another process had not
            # cleared yet: the run history must still know every secret the run may touch.
            run.secret_ids = sorted(set(run.secret_ids) | unrecorded)
            FlowRun.objects.filter(pk=run.pk).update(secret_ids=run.secret_ids)
        # The run acts for the flow's owner and reaches only the flow's bindings.
        vault = Vault(acting_user=flow.owner, actor_label=f"flow run {run.pk}", redactor=redactor, allowed=bound, cache=True)
        data: dict[str, Any] = {
            "trigger": run.input,
            "steps": {},
            "run": {"id": run.pk, "trigger": run.trigger, "flow": flow.slug},
            "secrets": SecretsInTemplates(vault),
            "connection": ConnectionInTemplates(vault, connection) if connection is not None else NoConnection(),
        }
        return data, vault, bindings

    @staticmethod
    def _step_secret_name(step: Step, connection) -> str | None:
        if step.uses_connection:
            return connection.name if connection is not None else None
        return step.secret.name if step.secret_id else None

    # -- called flows ---------------------------------------------------------------

    def call_flow(self, *, parent: FlowRun, slug: str, input: Any, timeout: float, redactor: Redactor) -> FlowRun:
        """Run another flow inside this worker as a child run, and return it finished.

        Parent and child share one ``redactor``: a secret either touches is masked in both.
        """
        flow = Flow.objects.select_related("owner").filter(slug=slug).first()
        if flow is None or not flow.enabled:
            raise StepError(f"There is no enabled flow {slug!r} to call.")
        if refusal := flow_run_refusal(parent.flow.owner, flow):
            raise StepError(refusal)
        if flow.app_slug and flow.app_slug != parent.flow.app_slug:
            raise StepError(f"Flow {flow.slug!r} belongs to the app {flow.app_slug!r}; only its own flows call it.")
        if parent.flow.app_slug and flow.app_slug != parent.flow.app_slug:
            # The app's flows run as the operator, who may use every secret: a call out would
            # steer another flow's secrets for whoever may use the connection.
            raise StepError(f"Flow {parent.flow.slug!r} belongs to the app {parent.flow.app_slug!r}; it calls only that app's flows.")
        depth, ancestor = 1, parent
        while ancestor.parent_run_id:
            depth += 1
            ancestor = FlowRun.objects.only("parent_run_id").get(pk=ancestor.parent_run_id)
        if depth >= MAX_CALL_DEPTH:
            raise StepError(f"Flows call each other more than {MAX_CALL_DEPTH} deep.")
        child = FlowRun.objects.create(
            flow=flow,
            trigger="call_flow",
            trigger_detail=f"{parent.flow.slug} #{parent.pk}",
            input=redactor.data(input),
            parent_run=parent,
            started_by=parent.started_by,
            secret_ids=flow_bound_secret_ids(flow) + ([parent.connection_id] if flow.app_slug else []),
            connection_id=parent.connection_id if flow.app_slug else None,
            **runs.held_by(self.owner, extra_seconds=timeout),
        )
        child.input = input  # the child runs with the real values; only the stored copy is masked
        output = self._run(child, heartbeat=None, redactor=redactor, timeout=timeout)
        child.refresh_from_db()
        child.output = output  # the exact output (the stored one is redacted)
        return child


def _step_plan(step: Step) -> runtime.StepPlan:
    kind = STEP_KINDS.get(step.kind)
    return runtime.StepPlan(
        key=step.key,
        effectful=kind is None or not kind.pure or bool(step.for_each),  # a fan-out's items read the history
        max_attempts=step.max_attempts,
        retry_backoff_seconds=step.retry_backoff_seconds,
        on_error=step.on_error,
        error_step_key=step.error_step_key,
    )
