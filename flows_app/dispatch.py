"""Sending the engine's run tasks (ids only). Callers send after their transaction commits.

A run's first message goes to the main queue, behind the runs queued before it. A run
sent again (its worker died, its message was lost, or a concurrency slot of its flow came
free) goes to the housekeeping queue, which every worker consumes besides the main one,
so a backlog cannot delay it; the run records when (``FlowRun.dispatched_at``), which
keeps recovery from sending it again while that message can still arrive.

Tasks are sent by their registered name: this module imports no task module, so the import
graph points one way (tasks -> services -> engine -> run store -> dispatch).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from flows_app.models import FlowRun
from project.celery import app, housekeeping_queue

RUN_EXECUTE = "flows_app.tasks.flow_run_execute"
ITEMS_EXECUTE = "flows_app.tasks.flow_run_items_execute"
ERROR_HANDLER_START = "flows_app.tasks.flow_run_error_handler_start"


def enqueue_run(run_id: int, countdown: float = 0) -> None:
    """Send the run's task, to run after ``countdown`` seconds."""
    app.tasks[RUN_EXECUTE].apply_async(args=[run_id], countdown=countdown if countdown > 0 else None)


def enqueue_runs(run_ids: Iterable[int], **options) -> None:
    """Send these runs' tasks, in one round trip to the broker where kombu can batch
    publishes (Redis; one at a time elsewhere)."""
    _send_all(RUN_EXECUTE, [[run_id] for run_id in run_ids], **options)


def runs_send_again(run_ids: Iterable[int]) -> None:
    """Send these runs' tasks again, on the housekeeping queue, and record when."""
    run_ids = list(run_ids)
    FlowRun.objects.filter(pk__in=run_ids).update(dispatched_at=timezone.now())
    enqueue_runs(run_ids, queue=housekeeping_queue())


def enqueue_item_lanes(run_id: int, step_key: str, count: int, *, again: bool = False) -> None:
    """Send ``count`` tasks that run the items of the run's ``for_each`` step (``flows_app.fanout``);
    ``again`` (a lane died) on the housekeeping queue."""
    queue = {"queue": housekeeping_queue()} if again else {}
    _send_all(ITEMS_EXECUTE, [[run_id, step_key]] * count, **queue)


def _send_all(task_name: str, argument_lists: list[list], **options) -> None:
    if not argument_lists:
        return
    task = app.tasks[task_name]
    with app.producer_or_acquire() as producer, producer.batch():
        for args in argument_lists:
            task.apply_async(args=args, producer=producer, **options)


def error_handler_start(run_id: int) -> None:
    """Send the task that starts the error handler of the failed run's flow."""
    app.tasks[ERROR_HANDLER_START].delay(run_id)
