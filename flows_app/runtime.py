"""The interpreter: how a run proceeds, decided without touching anything.

``decide(plan, history, last_result, remaining=…)`` answers one question: given the flow
(``Plan``), what the run has checkpointed so far (``history``, oldest first, written or
still pending) and the outcome of the step that just ran (``last_result``, or None when
nothing ran since the history was read), what now?

- ``RunStep``: run that step (its attempt number says which try it is); ``checkpoint_first``
  when it has effects outside the run, so pending checkpoints of pure steps are written
  before it ("flush before an effectful step");
- ``Sleep``: wait here, then ask again (a short retry, or any retry of a called flow);
- ``Park``: free the worker and come back after that many seconds (a long retry);
- ``Finish``: the run ends ``succeeded``, ``failed`` or ``cancelled``, with the reason.

Every decision that follows a ``last_result`` carries the ``Checkpoint`` that records it
(the step, whether it succeeded, its attempt, the step that comes next) and whether it must
be written now (``write_now``): an effectful step's success and every failure are written
at once; a pure step's success waits for the next write (a pure step simply runs again
after a crash). The caller appends that checkpoint to the history it passes next time.

Pure: no ORM, no clock (``remaining`` is the flow's time left, measured by the caller),
no Celery, no sleeping. The one random input is the backoff's jitter
(``project.backoff.retry_delay``, the product's one backoff rule).

Imports point down: ``flows_app.engine`` and ``flows_app.fanout`` use this module; it uses
only ``project.backoff``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from project.backoff import retry_delay

#: Retries that wait at most this long wait in the worker; longer ones park the run.
INLINE_RETRY_SECONDS = 2.0

#: ``Succeeded.next_step`` that ends the run successfully (``flows_app.steps.base.STOP``).
STOP = "__stop__"

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ON_ERROR_STOP, ON_ERROR_CONTINUE, ON_ERROR_GOTO = "stop", "continue", "goto"


@dataclass(frozen=True)
class StepPlan:
    """A step as the interpreter sees it."""

    key: str
    #: Has effects outside the run (HTTP, SQL, scripts, called flows, a fan-out): its
    #: checkpoint is written as soon as it ran, and pending ones before it runs.
    effectful: bool = False
    max_attempts: int = 1
    retry_backoff_seconds: float = 1.0
    on_error: str = ON_ERROR_STOP
    error_step_key: str = ""


@dataclass(frozen=True)
class Plan:
    """The flow as the interpreter sees it: its steps in order, and its limits."""

    steps: tuple[StepPlan, ...]
    timeout_seconds: float
    #: Retries wait at most this long (FLOWGATE_MAX_RETRY_DELAY_SECONDS).
    max_retry_delay: float
    #: A called flow runs inside its caller's task: it never parks alone.
    called: bool = False

    def step(self, key: str) -> StepPlan | None:
        return next((step for step in self.steps if step.key == key), None)

    def following(self, key: str) -> str:
        keys = [step.key for step in self.steps]
        index = keys.index(key) + 1
        return keys[index] if index < len(keys) else ""

    @property
    def timed_out(self) -> str:
        return f"The flow took longer than its timeout of {self.timeout_seconds} s."


@dataclass(frozen=True)
class Checkpoint:
    """What the history keeps of one executed step (a ``StepRun``, seen by the interpreter)."""

    step_key: str
    succeeded: bool
    attempt: int
    #: The step that comes next: the step itself awaiting its retry; "" when the run ended.
    next_step_key: str


@dataclass(frozen=True)
class Succeeded:
    """The step ran. ``next_step``: None for the following step, ``STOP``, or a step key."""

    next_step: str | None = None


@dataclass(frozen=True)
class Failed:
    message: str
    retryable: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class Recorded:
    """How a decision records the last result: the checkpoint, and whether to write it now."""

    checkpoint: Checkpoint
    write_now: bool


@dataclass(frozen=True)
class RunStep:
    step: StepPlan
    attempt: int
    checkpoint_first: bool
    recorded: Recorded | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float
    recorded: Recorded | None = None


@dataclass(frozen=True)
class Park:
    seconds: float
    recorded: Recorded | None = None


@dataclass(frozen=True)
class Finish:
    status: str
    reason: str = ""
    recorded: Recorded | None = None


Decision = RunStep | Sleep | Park | Finish


def decide(
    plan: Plan,
    history: Sequence[Checkpoint],
    last_result: Succeeded | Failed | None = None,
    *,
    remaining: float,
    cancelled: bool = False,
) -> Decision:
    """What the run does now (see the module's docstring)."""
    if last_result is None:
        return _next(plan, history, remaining=remaining, cancelled=cancelled)
    step, attempt = _current(plan, history)
    if isinstance(last_result, Succeeded):
        if last_result.next_step == STOP:
            next_key = ""
        else:
            next_key = last_result.next_step or plan.following(step.key)
        recorded = Recorded(Checkpoint(step.key, True, attempt, next_key), write_now=step.effectful)
        decision = _next(plan, [*history, recorded.checkpoint], remaining=remaining, cancelled=cancelled)
        return _with(decision, recorded)
    if remaining <= 0:  # the step ran out of the flow's time, not its own
        return Finish(FAILED, plan.timed_out, _ended(step, attempt))
    if last_result.retryable and attempt < step.max_attempts:
        delay = retry_wait(step, attempt, last_result.retry_after, cap=plan.max_retry_delay)
        recorded = Recorded(Checkpoint(step.key, False, attempt, step.key), write_now=True)
        if delay < remaining and (delay <= INLINE_RETRY_SECONDS or plan.called):
            return Sleep(delay, recorded)
        if plan.called:  # its retry would come after the deadline
            return Finish(FAILED, plan.timed_out, recorded)
        return Park(delay, recorded)
    if step.on_error == ON_ERROR_CONTINUE:
        next_key = plan.following(step.key)
    elif step.on_error == ON_ERROR_GOTO and step.error_step_key:
        next_key = step.error_step_key
    else:
        return Finish(FAILED, f"Step {step.key!r} failed: {last_result.message}", _ended(step, attempt))
    recorded = Recorded(Checkpoint(step.key, False, attempt, next_key), write_now=True)
    return _with(_next(plan, [*history, recorded.checkpoint], remaining=remaining, cancelled=cancelled), recorded)


def retry_wait(step, attempt: int, retry_after: float | None, *, cap: float) -> float:
    """Seconds before ``step`` (anything with ``retry_backoff_seconds``) is tried again after
    failed attempt ``attempt``: the product's backoff rule, honouring a ``Retry-After``."""
    return retry_delay(attempt, base=step.retry_backoff_seconds, cap=cap, retry_after=retry_after)


def next_step_key(plan: Plan, history: Sequence[Checkpoint]) -> str:
    """The step the run is at: the one its last checkpoint names, or the first ("" at the end)."""
    if history:
        return history[-1].next_step_key
    return plan.steps[0].key if plan.steps else ""


def attempts_so_far(history: Sequence[Checkpoint], key: str) -> int:
    """Failed attempts of ``key`` since it last succeeded (0 after a success)."""
    for checkpoint in reversed(history):
        if checkpoint.step_key == key:
            return 0 if checkpoint.succeeded else checkpoint.attempt
    return 0


def _next(plan: Plan, history: Sequence[Checkpoint], *, remaining: float, cancelled: bool) -> Decision:
    key = next_step_key(plan, history)
    if not key:
        return Finish(SUCCEEDED)
    if cancelled:
        return Finish(CANCELLED, "Cancelled while running.")
    step = plan.step(key)
    if step is None:
        return Finish(FAILED, f"The flow has no step {key!r} to go to.")
    if remaining <= 0:
        return Finish(FAILED, plan.timed_out)
    return RunStep(step, attempts_so_far(history, key) + 1, checkpoint_first=step.effectful)


def _current(plan: Plan, history: Sequence[Checkpoint]) -> tuple[StepPlan, int]:
    """The step that just ran, and its attempt: where the history stood when it was asked."""
    key = next_step_key(plan, history)
    step = plan.step(key)
    if step is None:
        raise ValueError(f"No step {key!r} ran: the history does not lead to it.")
    return step, attempts_so_far(history, key) + 1


def _ended(step: StepPlan, attempt: int) -> Recorded:
    return Recorded(Checkpoint(step.key, False, attempt, ""), write_now=True)


def _with(decision: Decision, recorded: Recorded) -> Decision:
    return replace(decision, recorded=recorded)
