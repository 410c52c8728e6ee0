"""Sending the engine's run tasks (ids only). Callers send after their transaction commits.

A run's first message goes to the main queue, behind the runs queued before it. A run
sent again (its worker died, its message was lost, or a concurrency slot of its flow came
free) goes to the housekeeping queue, which every worker consumes besides the main one,
so a backlog cannot delay it; the run records when (``FlowRun.dispatched_at``), which
keeps recovery from sending it again while that message can still arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from flows_app.models import FlowRun
from project.celery import housekeeping_queue


def enqueue_run(run_id: int, countdown: float = 0) -> None:
    """Send the run's task, to run after ``countdown`` seconds."""
    from flows_app.tasks import flow_run_execute  # the task module imports the engine, which imports this one

    flow_run_execute.apply_async(args=[run_id], countdown=countdown if countdown > 0 else None)


def runs_send_again(run_ids: Iterable[int]) -> None:
    """Send these runs' tasks again, on the housekeeping queue, and record when."""
    from flows_app.tasks import flow_run_execute

    run_ids = list(run_ids)
    FlowRun.objects.filter(pk__in=run_ids).update(dispatched_at=timezone.now())
    for run_id in run_ids:
        flow_run_execute.apply_async(args=[run_id], queue=housekeeping_queue())


def enqueue_item_lanes(run_id: int, step_key: str, count: int, *, again: bool = False) -> None:
    """Send ``count`` tasks that run the items of the run's ``for_each`` step (``flows_app.fanout``);
    ``again`` (a lane died) on the housekeeping queue."""
    from flows_app.tasks import flow_run_items_execute

    queue = {"queue": housekeeping_queue()} if again else {}
    for _ in range(count):
        flow_run_items_execute.apply_async(args=[run_id, step_key], **queue)
