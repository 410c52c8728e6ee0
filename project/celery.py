"""The Celery application. Tasks live in each app's ``tasks.py``.

Queues. Runs go to the main queue (``FLOWGATE_CELERY_QUEUE``, ``flowgate``). Housekeeping
(tasks declared with ``housekeeping=True``: recovery, OAuth2 refresh scheduling) and runs
sent again after their worker died go to ``<main>.housekeeping``, which every worker
consumes besides the main one, so a backlog of runs cannot delay them. Both names follow
the main queue's name at the moment of sending.
"""

import gc
import os

from celery import Celery, bootsteps
from celery.signals import beat_init, worker_init
from click import Option
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Celery's Django fix-up runs every system check when a worker or beat starts, and the URL
# checks import every view, the API's django-ninja and pydantic with them, which a worker
# never serves. gunicorn runs none either: the full checks run with migrate, check and
# runserver, and worker_init below runs the deployment's own (refuse_start_unless_ready).
os.environ.setdefault("CELERY_SKIP_CHECKS", "true")

app = Celery("flowgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def housekeeping_queue() -> str:
    return f"{app.conf.task_default_queue}.housekeeping"


def _route(name, args, kwargs, options, task=None, **kw):
    task = task or app.tasks.get(name)
    return {"queue": housekeeping_queue()} if getattr(task, "housekeeping", False) else None


def _queue(name: str) -> Queue:
    # RabbitMQ: quorum queues (replicated; they have no priorities), as settings.py chooses
    arguments = {"x-queue-type": "quorum"} if app.conf.task_default_queue_type == "quorum" else None
    return Queue(name, routing_key=name, queue_arguments=arguments)


@app.on_after_configure.connect
def _declare_queues(sender, **kwargs):
    # Once the settings are read (not at import: settings modules import this package).
    sender.conf.task_routes = (_route,)
    # What a worker consumes unless told otherwise (-Q): the main queue and housekeeping.
    sender.conf.task_queues = (_queue(sender.conf.task_default_queue), _queue(housekeeping_queue()))


@worker_init.connect
@beat_init.connect
def _refuse_start_unless_ready(**kwargs):
    import django

    django.setup()
    from project.checks import refuse_start_unless_ready

    refuse_start_unless_ready()


class BeatThread(bootsteps.StartStopStep):
    """``worker --beat-thread``: beat in a thread of the worker, where ``--beat`` forks a
    child process for it. The embedded set-up (the Procfile) runs one worker process with a
    pool of threads: its beat child was a third Python process of about 80 MB RSS."""

    label = "Beat thread"
    conditional = True

    def __init__(self, w, beat_thread=False, **kwargs):
        self.enabled = beat_thread
        super().__init__(w, **kwargs)

    def create(self, w):
        from celery.beat import EmbeddedService

        return EmbeddedService(w.app, schedule_filename=w.schedule_filename, scheduler_cls=w.scheduler, thread=True)


app.steps["worker"].add(BeatThread)
app.user_options["worker"].add(
    Option(["--beat-thread"], is_flag=True, default=False, help="Run beat in a thread of this worker (embedded set-up).")
)


@worker_init.connect
def _freeze_start_up_objects(**kwargs):
    # Prefork children (and beat, started with --beat) are forked from this process after this
    # signal. Frozen, the objects of the start-up are left alone by a child's garbage
    # collections, so their pages stay shared with this process instead of being copied.
    gc.collect()
    gc.freeze()
