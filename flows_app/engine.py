"""Runs a flow: steps in order, checkpoints, retries, timeouts, cancellation.

One Celery task per run (``flows_app.tasks.flow_run_execute``) calls ``Engine.execute``.

Claiming. A run is taken with one compare-and-set ``UPDATE`` that gives this worker a
lease (``lease_owner``, ``lease_expires_at``); a heartbeat thread extends it while the
run executes and watches for cancellation. A worker killed mid-run stops extending its
lease; once it expires, the recovery job (beat, and every worker at start) hands the
run out again and the next worker continues after the last checkpoint. A run taken up
more than ``FLOWGATE_RUN_MAX_PICKUPS`` times fails with the reason, so no run stays
"running" forever. Duplicate task deliveries are harmless: only one claim succeeds.

Checkpoints. Every executed step leaves a ``StepRun`` naming the step that comes next.
Steps with effects outside the run (HTTP, SQL, scripts, called flows) are written as
soon as they finish; pure steps (transform, condition, respond, jwt) are written in one
batch with the next effectful step or at the end, since after a crash they are simply
computed again. So a step in flight when a worker dies runs again (at least once), and
no finished effectful step runs twice.

Retries. A step failing with a transient error (timeout, connection, 5xx, 429) is
retried up to its ``max_attempts`` with exponential backoff and jitter, honouring
``Retry-After``. Short waits happen in place; longer ones park the run (``waiting``) and
schedule the task again, freeing the worker. A called flow always waits in place, inside
its caller's task.

Fan-out. A step with ``for_each`` runs once per item across workers (``flows_app.fanout``):
the run parks (``waiting``) while its items run and is sent again when they are done.

Redaction. Every secret value the run touches is registered in its ``Redactor`` and
masked in what is stored: step inputs, outputs, errors, logs, the run's output.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from flows_app import fanout, metrics, notify, stored
from flows_app.app_settings import flow_settings
from flows_app.dispatch import enqueue_run
from flows_app.models import Flow, FlowRun, Step, StepRun
from flows_app.services.access import flow_bound_secret_ids, flow_bound_secrets, flow_run_refusal
from flows_app.steps import STEP_KINDS
from flows_app.steps.base import STOP, StepContext, StepError, StepResult
from flows_app.stored import jsonable, restore
from project.backoff import retry_delay
from project.heartbeat import Heartbeat
from secrets_app.api import Vault
from secrets_app.exceptions import VaultError
from secrets_app.redaction import Redactor

logger = logging.getLogger(__name__)

MAX_CALL_DEPTH = 5
INLINE_RETRY_SECONDS = 2.0


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

    # -- claiming -------------------------------------------------------------------

    def execute(self, run_id: int) -> None:
        """Run (or continue) ``run_id`` if it can be taken now; otherwise do nothing."""
        run = self._claim(run_id)
        if run is None:
            return
        with _Heartbeat(run.pk, self.owner) as heartbeat:
            self._run(run, heartbeat=heartbeat)

    def run_inline(
        self, run: FlowRun, *, timeout: float, redactor: Redactor | None = None, output_secrets=None
    ) -> Any:
        """Run ``run`` (created RUNNING under this engine's lease) here and now; its output.

        ``output_secrets(output)`` names secrets the run produces: its history waits for its
        end, when they are known and masked (``flow_run_inline``)."""
        return self._run(run, heartbeat=None, redactor=redactor, timeout=timeout, output_secrets=output_secrets)

    def _claim(self, run_id: int) -> FlowRun | None:
        now = timezone.now()
        lease = now + timedelta(seconds=flow_settings.run_lease_seconds)
        # The common case in one statement: a run free to take, with none of the rules below.
        run = self._take(run_id, now, lease, plain=True)
        if run is None:
            return self._claim_otherwise(run_id, now, lease)
        run.flow = Flow.objects.select_related("owner").get(pk=run.flow_id)
        return run

    def _claim_otherwise(self, run_id: int, now: datetime, lease: datetime) -> FlowRun | None:
        """A run the one-statement claim left: held, not due, cancelled, or under a rule."""
        run = FlowRun.objects.select_related("flow", "flow__owner").filter(pk=run_id).first()
        if run is None or run.finished:
            return None
        held = run.status == FlowRun.Status.RUNNING and run.lease_expires_at and run.lease_expires_at > now
        if held:
            return None
        if run.not_before and run.not_before > now:
            enqueue_run(run.pk, (run.not_before - now).total_seconds())
            return None
        if run.cancel_requested:
            self._finish(run, FlowRun.Status.CANCELLED, error="Cancelled before it ran.", lease_check=False)
            return None
        if run.parent_run_id and run.status == FlowRun.Status.RUNNING:
            # A called flow runs inside its caller's worker; when that worker died, the
            # caller resumes and calls the flow again, so this copy must not go on alone.
            self._finish(
                run, FlowRun.Status.FAILED, error="The calling run's worker stopped during this run.", lease_check=False
            )
            return None
        if run.status == FlowRun.Status.RUNNING and run.pickups >= flow_settings.run_max_pickups:
            in_flight = self._next_step_key(run, list(run.flow.steps.values_list("key", flat=True)))
            self._finish(
                run,
                FlowRun.Status.FAILED,
                error=f"The worker running this flow stopped {run.pickups} times (killed or crashed) "
                f"during step {in_flight!r}; it was not taken up again.",
                lease_check=False,
            )
            return None
        if not run.flow.concurrency_limit:
            taken = self._take(run_id, now, lease)  # the compare-and-set alone: no transaction to open
        else:
            with transaction.atomic():
                Flow.objects.select_for_update().filter(pk=run.flow_id).first()  # one claim per flow at a time
                running = FlowRun.objects.holding_slots(run.flow_id, now).exclude(pk=run.pk).count()
                if running >= run.flow.concurrency_limit:
                    # It waits without a message: flow_run_after_finish sends it when a slot
                    # frees (recovery, should that message be lost).
                    return None
                taken = self._take(run_id, now, lease)
        if taken is not None:
            taken.flow = run.flow  # read above, with its owner
        return taken

    def _take(self, run_id: int, now: datetime, lease: datetime, *, plain: bool = False) -> FlowRun | None:
        """The compare-and-set that gives this worker the run: the run as written, or None.

        ``plain`` takes it only when no rule of ``_claim_otherwise`` applies to it. One
        ``UPDATE … RETURNING`` (PostgreSQL; SQLite from 3.35) instead of a read and a write.
        """
        quote, moment = connection.ops.quote_name, connection.ops.adapt_datetimefield_value
        status = FlowRun.Status
        params: list[Any] = [status.RUNNING, self.owner, moment(lease), moment(now), run_id]
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

    # -- running --------------------------------------------------------------------

    @staticmethod
    def _next_step_key(run: FlowRun, order: list[str]) -> str:
        last = run.step_runs.order_by("-id").first()
        if last is None:
            return order[0] if order else ""
        return last.next_step_key

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
        steps = list(flow.steps.select_related("secret").order_by("position", "id"))
        by_key = {step.key: step for step in steps}
        order = [step.key for step in steps]
        redactor = redactor if redactor is not None else Redactor()
        data, vault, bindings = self.run_data(run, redactor)
        # A run taken up for the first time has no checkpoints, unless it re-runs another.
        first_pickup = run.pickups == 1 and not run.rerun_of_id
        history = [] if first_pickup else list(run.step_runs.order_by("id"))
        attempts = restore(history, data, redactor)
        next_key = history[-1].next_step_key if history else (order[0] if order else "")
        flow_seconds = flow.timeout_seconds if timeout is None else min(flow.timeout_seconds, timeout)
        deadline = (run.started_at or timezone.now()) + timedelta(seconds=flow_seconds)
        pending: list[StepRun] = []
        last_output: Any = history[-1].output if history else None
        response: dict[str, Any] | None = None  # a last step's answer, written with the run's end

        def flush(*, ending: bool = True):
            if output_secrets is not None and not ending:
                return  # written at the end, once the secrets in the output are known
            for record in pending:
                record.input = stored.capped(redactor.data(record.input))
                record.output, record.raw_output = stored.kept(record.output, redactor)
                record.error = redactor.text(record.error)
                record.logs = redactor.text(record.logs)
            if len(pending) == 1:
                pending[0].save()  # one INSERT that commits on its own; bulk_create opens a transaction
            else:
                StepRun.objects.bulk_create(pending)
            pending.clear()

        def finish(status: str, error: str = "") -> Any:
            if output_secrets is not None:
                redactor.add(*output_secrets(last_output))
            flush()
            self._finish(
                run, status, output=stored.capped(redactor.data(last_output)), error=redactor.text(error), response=response
            )
            return last_output

        try:
            vault.admit_all(bindings)  # a withdrawn grant fails the run before its first step
        except VaultError as exc:
            return finish(FlowRun.Status.FAILED, str(exc))
        lost = stored.lost_checkpoint_reason(history)
        if lost:
            return finish(FlowRun.Status.FAILED, lost)

        while next_key:
            if heartbeat is not None and (heartbeat.cancelled.is_set() or heartbeat.lost.is_set()):
                if heartbeat.lost.is_set():
                    flush()
                    return None  # another worker owns the run now
                return finish(FlowRun.Status.CANCELLED, "Cancelled while running.")
            step = by_key.get(next_key)
            if step is None:
                return finish(FlowRun.Status.FAILED, f"The flow has no step {next_key!r} to go to.")
            remaining = (deadline - timezone.now()).total_seconds()
            if remaining <= 0:
                return finish(FlowRun.Status.FAILED, f"The flow took longer than its timeout of {flow_seconds} s.")
            kind = STEP_KINDS.get(step.kind)
            effectful = kind is None or not kind.pure or bool(step.for_each)  # a fan-out's items read the history
            if pending and effectful:
                flush(ending=False)  # the history shows what ran before a step that may take a while
            attempt = attempts.get(step.key, 0) + 1
            started = timezone.now()
            rendered: dict[str, Any] = {}
            try:
                if kind is None:
                    raise StepError(f"Unknown step kind {step.kind!r}.")
                if step.for_each:
                    rendered = {"for_each": step.for_each}
                    result = fanout.step_result(self, run, step, data, vault=vault, deadline=deadline)
                    if result is None:
                        return None  # parked until its items are done (or another worker owns the run now)
                else:
                    rendered = kind.render(step.config, data)
                    result = kind().execute(self.step_context(run, step, rendered, data, vault, remaining))
            except StepError as exc:
                failure = exc
            except Exception as exc:  # a bug or an unexpected library error: fail the step, keep the worker
                logger.error(
                    "Step %s of run %s failed unexpectedly:\n%s", step.key, run.pk, redactor.text(traceback.format_exc())
                )
                failure = StepError(f"Unexpected error: {type(exc).__name__}: {exc}")
            else:
                failure = None
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
                output = jsonable(result.output)
                data["steps"][step.key] = output
                last_output = output
                next_key = self._after(result, step, order)
                record.status, record.output, record.logs, record.next_step_key = StepRun.Status.SUCCEEDED, output, result.logs, next_key
                pending.append(record)
                if result.response is not None:
                    # A waiting caller gets the answer before any later step runs; the pure
                    # respond step is checkpointed with the next flush (after a crash it
                    # simply runs again). Answered by the last step, the run's end brings it.
                    response = redactor.data(jsonable(result.response))
                    if next_key:
                        self._respond(run, response)
                        response = None
                if effectful:
                    flush(ending=False)
                continue
            record.status, record.error, record.output = StepRun.Status.FAILED, str(failure), jsonable(failure.output)
            record.logs = (failure.output or {}).get("logs", "") if isinstance(failure.output, dict) else ""
            if timezone.now() >= deadline:  # the step ran out of the flow's time, not its own
                record.next_step_key = ""
                pending.append(record)
                return finish(FlowRun.Status.FAILED, f"The flow took longer than its timeout of {flow_seconds} s.")
            if failure.retryable and attempt < step.max_attempts:
                delay = self._backoff(step, attempt, failure.retry_after)
                record.next_step_key = step.key
                pending.append(record)
                flush(ending=False)
                attempts[step.key] = attempt
                # A called flow runs inside its caller's task: it waits there, never parked alone.
                if delay < remaining and (delay <= INLINE_RETRY_SECONDS or run.parent_run_id):
                    time.sleep(delay)
                    continue
                if run.parent_run_id:  # its retry would come after the deadline
                    return finish(FlowRun.Status.FAILED, f"The flow took longer than its timeout of {flow_seconds} s.")
                flush()  # what waited for the end (nothing, unless the run names output secrets)
                self._park(run, delay)
                return None
            data["steps"][step.key] = {"error": str(failure), "output": record.output}
            if step.on_error == Step.OnError.CONTINUE:
                next_key = self._following(step, order)
            elif step.on_error == Step.OnError.GOTO and step.error_step_key:
                next_key = step.error_step_key
            else:
                record.next_step_key = ""
                pending.append(record)
                return finish(FlowRun.Status.FAILED, f"Step {step.key!r} failed: {failure}")
            record.next_step_key = next_key
            pending.append(record)
            flush(ending=False)
        return finish(FlowRun.Status.SUCCEEDED)

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

    @staticmethod
    def _following(step: Step, order: list[str]) -> str:
        index = order.index(step.key) + 1
        return order[index] if index < len(order) else ""

    def _after(self, result: StepResult, step: Step, order: list[str]) -> str:
        if result.next_step == STOP:
            return ""
        if result.next_step:
            return result.next_step
        return self._following(step, order)

    @staticmethod
    def _backoff(step: Step, attempt: int, retry_after: float | None) -> float:
        return retry_delay(
            attempt, base=step.retry_backoff_seconds, cap=flow_settings.max_retry_delay_seconds, retry_after=retry_after
        )

    def _park(self, run: FlowRun, delay: float) -> None:
        """Free the worker while a step waits for its retry; the task comes back later."""
        parked = FlowRun.objects.filter(pk=run.pk, lease_owner=self.owner).update(
            status=FlowRun.Status.WAITING,
            not_before=timezone.now() + timedelta(seconds=delay),
            lease_owner="",
            lease_expires_at=None,
        )
        if parked:
            enqueue_run(run.pk, delay)

    def _respond(self, run: FlowRun, response: dict[str, Any]) -> None:
        FlowRun.objects.filter(pk=run.pk).update(response=response)
        run.response = response
        notify.publish(run.pk)

    def _finish(
        self, run: FlowRun, status: str, *, output: Any = None, error: str = "", response: Any = None, lease_check: bool = True
    ) -> None:
        now = timezone.now()
        target = FlowRun.objects.filter(pk=run.pk)
        target = target.filter(lease_owner=self.owner) if lease_check else target.exclude(status__in=FlowRun.FINISHED)
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
        if flow.concurrency_limit or (status == FlowRun.Status.FAILED and flow.error_handler_id):
            from flows_app.services.runs import flow_run_after_finish

            transaction.on_commit(lambda: flow_run_after_finish(run_id=run.pk))

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
            status=FlowRun.Status.RUNNING,
            started_at=timezone.now(),
            lease_owner=self.owner,
            lease_expires_at=timezone.now() + timedelta(seconds=timeout + flow_settings.run_lease_seconds),
            pickups=1,
        )
        child.input = input  # the child runs with the real values; only the stored copy is masked
        output = self._run(child, heartbeat=None, redactor=redactor, timeout=timeout)
        child.refresh_from_db()
        child.output = output  # the exact output (the stored one is redacted)
        return child
