"""Celery tasks of the flow engine. Thin: ids in, one service call, idempotent."""

from celery import shared_task
from celery.signals import worker_ready

from flows_app import engine, fanout
from flows_app.services.runs import flow_runs_prune, flow_runs_recover
from flows_app.services.triggers import schedule_fire


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def flow_run_execute(run_id: int) -> None:
    """Run or continue one flow run.

    Idempotent: the engine claims the run with a compare-and-set, so a duplicate or
    redelivered message finds it taken or finished and does nothing. Not retried by
    Celery: step retries and worker loss are the engine's business (checkpoints, leases,
    ``flow_runs_recover``).
    """
    engine.Engine().execute(run_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def flow_run_items_execute(run_id: int, step_key: str) -> None:
    """Run items of a run's ``for_each`` step until none is left to take (``flows_app.fanout``).

    Idempotent: each item is claimed with a compare-and-set lease, so a duplicate or
    redelivered message takes only items nobody holds and never a finished one. Not
    retried by Celery: an item's retries and a lost lane are the fan-out's business.
    """
    fanout.items_execute(engine.Engine(), run_id, step_key)


@shared_task(bind=True, ignore_result=True)
def flow_schedule_fire(self, schedule_id: int) -> None:
    """Beat, per schedule: start the schedule's flow.

    Idempotent: the message id is the run's idempotency key, so a redelivered message
    finds the run it started. Not retried: a schedule that could not fire fires again at
    its next time.
    """
    schedule_fire(schedule_id=schedule_id, message_id=self.request.id or "")


@shared_task(ignore_result=True, housekeeping=True)
def flow_runs_recover_stalled() -> int:
    """Beat, every FLOWGATE_RECOVER_INTERVAL_SECONDS, and once when a worker starts: hand
    out runs whose worker died or whose message was lost. Idempotent (claims decide).
    On the housekeeping queue (project/celery.py), like the runs it sends again."""
    return flow_runs_recover()


@shared_task(ignore_result=True)
def flow_runs_prune_old() -> int:
    """Beat, daily: delete finished runs older than FLOWGATE_RUN_RETENTION_DAYS. Idempotent."""
    return flow_runs_prune()


@worker_ready.connect
def _recover_on_worker_start(sender=None, **kwargs):
    flow_runs_recover_stalled.delay()
