"""The baseline task: a Celery round trip that does nothing (imported by the bench worker)."""

from celery import shared_task


@shared_task(name="bench.noop", ignore_result=False)
def noop() -> None:
    return None
