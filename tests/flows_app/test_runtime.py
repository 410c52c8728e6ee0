"""How a run proceeds, as the interpreter decides it: no database, no worker, no clock."""

import pytest

from flows_app import runtime
from flows_app.runtime import (
    CANCELLED,
    FAILED,
    STOP,
    SUCCEEDED,
    Checkpoint,
    Failed,
    Finish,
    Park,
    Plan,
    Recorded,
    RunStep,
    Sleep,
    StepPlan,
    Succeeded,
    decide,
)


def plan(*steps: StepPlan, timeout: float = 60, called: bool = False, max_retry_delay: float = 300) -> Plan:
    return Plan(steps=steps, timeout_seconds=timeout, max_retry_delay=max_retry_delay, called=called)


PURE = StepPlan("shape")
HTTP = StepPlan("fetch", effectful=True)
REPLY = StepPlan("reply")
THREE = plan(HTTP, PURE, REPLY)


def retrying(key="fetch", *, attempts=3, backoff=0.1, **fields) -> StepPlan:
    return StepPlan(key, effectful=True, max_attempts=attempts, retry_backoff_seconds=backoff, **fields)


class TestWhichStepRuns:
    def test_a_new_run_starts_at_the_first_step(self):
        assert decide(THREE, [], remaining=60) == RunStep(HTTP, attempt=1, checkpoint_first=True)

    def test_a_flow_without_steps_succeeds_at_once(self):
        assert decide(plan(), [], remaining=60) == Finish(SUCCEEDED)

    def test_a_success_goes_on_with_the_following_step_and_records_where_it_goes(self):
        decision = decide(THREE, [], Succeeded(), remaining=60)
        assert decision == RunStep(
            PURE, attempt=1, checkpoint_first=False, recorded=Recorded(Checkpoint("fetch", True, 1, "shape"), write_now=True)
        )

    def test_the_last_steps_success_finishes_the_run(self):
        history = [Checkpoint("fetch", True, 1, "shape"), Checkpoint("shape", True, 1, "reply")]
        decision = decide(THREE, history, Succeeded(), remaining=60)
        assert decision == Finish(SUCCEEDED, recorded=Recorded(Checkpoint("reply", True, 1, ""), write_now=False))

    def test_a_step_may_choose_the_next_step_or_stop_the_run(self):
        jumped = decide(THREE, [], Succeeded(next_step="reply"), remaining=60)
        assert (jumped.step, jumped.recorded.checkpoint.next_step_key) == (REPLY, "reply")
        stopped = decide(THREE, [], Succeeded(next_step=STOP), remaining=60)
        assert stopped == Finish(SUCCEEDED, recorded=Recorded(Checkpoint("fetch", True, 1, ""), write_now=True))

    def test_going_to_a_step_the_flow_does_not_have_fails_the_run(self):
        decision = decide(THREE, [], Succeeded(next_step="gone"), remaining=60)
        assert (decision.status, decision.reason) == (FAILED, "The flow has no step 'gone' to go to.")
        assert decision.recorded.checkpoint == Checkpoint("fetch", True, 1, "gone")

    def test_a_run_taken_up_again_continues_after_its_last_checkpoint(self):
        history = [Checkpoint("fetch", True, 1, "shape")]
        assert decide(THREE, history, remaining=60) == RunStep(PURE, attempt=1, checkpoint_first=False)

    def test_a_run_whose_last_checkpoint_ended_it_has_nothing_left_to_do(self):
        assert decide(THREE, [Checkpoint("fetch", True, 1, "")], remaining=60) == Finish(SUCCEEDED)


class TestCheckpoints:
    """Effectful steps are written as soon as they ran, and pending pure ones before them."""

    def test_an_effectful_step_runs_after_the_pending_checkpoints_are_written(self):
        flow = plan(PURE, HTTP)
        decision = decide(flow, [], Succeeded(), remaining=60)
        assert decision.checkpoint_first and decision.step == HTTP
        assert decision.recorded.write_now is False  # the pure step's own checkpoint is pending until then

    def test_a_pure_step_runs_without_writing_and_its_success_waits_for_the_next_write(self):
        flow = plan(PURE, REPLY)
        first = decide(flow, [], remaining=60)
        assert first == RunStep(PURE, attempt=1, checkpoint_first=False)
        assert decide(flow, [], Succeeded(), remaining=60).recorded.write_now is False

    def test_an_effectful_steps_success_is_written_at_once(self):
        assert decide(plan(HTTP, PURE), [], Succeeded(), remaining=60).recorded.write_now is True

    def test_every_failure_is_written_at_once(self):
        for step in (PURE, StepPlan("shape", on_error="continue"), StepPlan("shape", max_attempts=2)):
            assert decide(plan(step, REPLY), [], Failed("boom", retryable=True), remaining=60).recorded.write_now


class TestRetries:
    def test_a_transient_failure_with_a_short_backoff_is_retried_in_place(self):
        step = retrying(backoff=0.1)
        decision = decide(plan(step), [], Failed("HTTP 503", retryable=True), remaining=60)
        assert isinstance(decision, Sleep) and 0.05 <= decision.seconds <= 0.1
        assert decision.recorded == Recorded(Checkpoint("fetch", False, 1, "fetch"), write_now=True)

    def test_the_retry_is_the_next_attempt_of_the_same_step(self):
        step = retrying()
        history = [Checkpoint("fetch", False, 1, "fetch")]
        assert decide(plan(step), history, remaining=60) == RunStep(step, attempt=2, checkpoint_first=True)

    def test_each_attempt_waits_twice_as_long_with_jitter_up_to_the_cap(self):
        step = retrying(attempts=5, backoff=1.0)
        history = [Checkpoint("fetch", False, 1, "fetch"), Checkpoint("fetch", False, 2, "fetch")]
        decision = decide(plan(step), history, Failed("timeout", retryable=True), remaining=600)
        assert isinstance(decision, Park) and 2.0 <= decision.seconds <= 4.0  # after attempt 3: base * 2**2, jittered
        capped = decide(plan(step, max_retry_delay=3), history, Failed("timeout", retryable=True), remaining=600)
        assert 1.5 <= capped.seconds <= 3.0

    def test_retry_after_is_honoured(self):
        decision = decide(plan(retrying()), [], Failed("HTTP 429", retryable=True, retry_after=30), remaining=600)
        assert isinstance(decision, Park) and 30 <= decision.seconds <= 33

    def test_a_long_wait_parks_the_run_and_frees_the_worker(self):
        decision = decide(plan(retrying(backoff=10)), [], Failed("HTTP 503", retryable=True), remaining=600)
        assert isinstance(decision, Park) and 5 <= decision.seconds <= 10
        assert decision.recorded.checkpoint.next_step_key == "fetch"

    def test_a_called_flow_waits_for_a_long_retry_in_place(self):
        decision = decide(plan(retrying(backoff=10), called=True), [], Failed("HTTP 503", retryable=True), remaining=600)
        assert isinstance(decision, Sleep) and 5 <= decision.seconds <= 10

    def test_a_called_flow_whose_retry_would_come_after_its_deadline_fails_at_once(self):
        flow = plan(retrying(backoff=10), called=True, timeout=8)
        decision = decide(flow, [], Failed("HTTP 503", retryable=True), remaining=4)
        assert decision == Finish(
            FAILED, "The flow took longer than its timeout of 8 s.", Recorded(Checkpoint("fetch", False, 1, "fetch"), write_now=True)
        )

    def test_a_short_retry_that_would_come_after_the_deadline_parks_instead_of_sleeping(self):
        decision = decide(plan(retrying(backoff=1)), [], Failed("HTTP 503", retryable=True), remaining=0.1)
        assert isinstance(decision, Park)

    def test_the_last_attempt_fails_the_step(self):
        step = retrying(attempts=2)
        history = [Checkpoint("fetch", False, 1, "fetch")]
        decision = decide(plan(step), history, Failed("HTTP 503", retryable=True), remaining=60)
        assert decision == Finish(FAILED, "Step 'fetch' failed: HTTP 503", Recorded(Checkpoint("fetch", False, 2, ""), write_now=True))

    def test_a_permanent_failure_is_not_retried(self):
        decision = decide(plan(retrying()), [], Failed("HTTP 404"), remaining=60)
        assert decision == Finish(FAILED, "Step 'fetch' failed: HTTP 404", Recorded(Checkpoint("fetch", False, 1, ""), write_now=True))

    def test_attempts_start_again_after_the_step_succeeded(self):
        step = retrying()
        history = [Checkpoint("fetch", False, 1, "fetch"), Checkpoint("fetch", True, 2, "fetch")]  # a loop back to it
        assert decide(plan(step), history, remaining=60).attempt == 1


class TestOnError:
    def test_continue_goes_on_with_the_following_step(self):
        flow = plan(StepPlan("risky", on_error="continue"), REPLY)
        decision = decide(flow, [], Failed("division by zero"), remaining=60)
        assert decision == RunStep(
            REPLY, attempt=1, checkpoint_first=False, recorded=Recorded(Checkpoint("risky", False, 1, "reply"), write_now=True)
        )

    def test_go_to_goes_to_the_error_step(self):
        flow = plan(StepPlan("risky", on_error="goto", error_step_key="reply"), PURE, REPLY)
        decision = decide(flow, [], Failed("division by zero"), remaining=60)
        assert (decision.step, decision.recorded.checkpoint.next_step_key) == (REPLY, "reply")

    def test_go_to_without_an_error_step_stops_the_run(self):
        flow = plan(StepPlan("risky", on_error="goto"), REPLY)
        assert decide(flow, [], Failed("boom"), remaining=60).status == FAILED

    def test_on_error_applies_once_retries_are_spent(self):
        flow = plan(retrying("risky", attempts=2, on_error="continue"), REPLY)
        first = decide(flow, [], Failed("HTTP 503", retryable=True), remaining=60)
        assert isinstance(first, Sleep)
        then = decide(flow, [first.recorded.checkpoint], Failed("HTTP 503", retryable=True), remaining=60)
        assert then.step == REPLY and then.recorded.checkpoint == Checkpoint("risky", False, 2, "reply")


class TestTimeAndCancellation:
    def test_no_step_starts_once_the_flows_time_is_up(self):
        assert decide(plan(HTTP, timeout=5), [], remaining=0) == Finish(FAILED, "The flow took longer than its timeout of 5 s.")

    def test_a_step_that_failed_after_the_deadline_fails_the_run_with_the_timeout(self):
        decision = decide(plan(retrying(), timeout=5), [], Failed("timed out", retryable=True), remaining=-0.5)
        assert decision == Finish(
            FAILED, "The flow took longer than its timeout of 5 s.", Recorded(Checkpoint("fetch", False, 1, ""), write_now=True)
        )

    def test_a_cancelled_run_stops_before_its_next_step_and_keeps_what_ran(self):
        decision = decide(THREE, [], Succeeded(), remaining=60, cancelled=True)
        assert decision == Finish(CANCELLED, "Cancelled while running.", Recorded(Checkpoint("fetch", True, 1, "shape"), write_now=True))

    def test_a_run_cancelled_after_its_last_step_has_succeeded(self):
        history = [Checkpoint("fetch", True, 1, "shape"), Checkpoint("shape", True, 1, "reply")]
        assert decide(THREE, history, Succeeded(), remaining=60, cancelled=True).status == SUCCEEDED


def test_a_result_for_a_step_the_history_does_not_lead_to_is_a_bug_not_a_decision():
    with pytest.raises(ValueError):
        decide(THREE, [Checkpoint("fetch", True, 1, "gone")], Succeeded(), remaining=60)


def test_the_interpreter_imports_nothing_that_reaches_a_database_or_a_broker():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(runtime))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported <= {"__future__", "collections.abc", "dataclasses", "project.backoff"}
