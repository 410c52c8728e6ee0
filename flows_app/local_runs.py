"""Sync endpoints' runs, executed by the web process that holds their caller.

A caller of a sync endpoint holds a web thread until its run answers. Sending that run
through the broker to a worker and waking the web thread again through pub/sub cost more
than a short flow itself (``bench/sync_roundtrip.py``). So the web process runs it on one
of its own runner threads, the way a worker would: the run is inserted already taken under
this process's lease (``runs.held_by``), a heartbeat extends the lease, effectful steps are
checkpointed. Durability is a worker's: if the web process dies mid-run, the lease lapses,
recovery hands the run to a worker, and it resumes after its last effectful step.

The caller's thread waits on an in-process event (``notify.executing_here``), reading the
runner's own copy of the run: no pub/sub and no read of the row. A runner thread is not the
caller's thread, so the caller still gets its 504 at the sync timeout while the run goes on
here. When every runner thread is busy, the run is given back to the queue (one UPDATE) and
a worker runs it. A flow with a concurrency limit always goes through the queue: admission
is the claim's business (``runs.claim``).

FLOWGATE_SYNC_RUN_THREADS sets the threads per web process (0: every run goes to workers).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

from flows_app import notify, runs
from flows_app.app_settings import flow_settings
from flows_app.engine import Engine
from flows_app.models import Flow, FlowRun

logger = logging.getLogger(__name__)


class LocalRunner:
    """The runner threads of this process, created at first use (after gunicorn forks)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._made_for: tuple[int, int] | None = None  # (pid, size) of the pool below
        self._pool: ThreadPoolExecutor | None = None
        self._free: threading.BoundedSemaphore | None = None

    def takes(self, flow: Flow) -> bool:
        """Whether a run of ``flow`` may run here (it then starts held: ``runs.held_by``)."""
        return flow_settings.sync_run_threads > 0 and not flow.concurrency_limit

    def start(self, run: FlowRun, engine: Engine) -> None:
        """After the run's INSERT committed: run it on a free runner thread, or give it to
        the workers when none is free."""
        pool, free = self._threads()
        if not free.acquire(blocking=False):
            runs.give_back(run, engine.owner)
            return
        notify.executing_here(run)
        try:
            pool.submit(self._execute, run, engine, free)
        except RuntimeError:  # the interpreter is shutting down
            notify.left_here(run.pk)
            free.release()
            runs.give_back(run, engine.owner)

    def _threads(self) -> tuple[ThreadPoolExecutor, threading.BoundedSemaphore]:
        size = flow_settings.sync_run_threads
        with self._lock:
            # A new pool at first use, after a fork (which copies a parent's pool without its
            # threads), or when the setting changed; runs on an old pool release their own slot.
            if self._made_for != (os.getpid(), size):
                self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="flowgate-sync-run")
                self._free = threading.BoundedSemaphore(size)
                self._made_for = (os.getpid(), size)
            return self._pool, self._free

    @staticmethod
    def _execute(run: FlowRun, engine: Engine, free: threading.BoundedSemaphore) -> None:
        close_old_connections()  # this thread's connection: renewed as a request's would be
        try:
            # The run's flow (and its owner) is the one its caller started it from: an
            # endpoint's comes from the endpoint cache (``selectors.endpoint_get``), at most
            # a second old, as the endpoint itself; its steps are those of that version.
            engine.run_held(run)
        except Exception:
            # Its lease lapses with no heartbeat; recovery then hands it to a worker.
            logger.exception("Run %s stopped in the web process; a worker takes it up when its lease lapses.", run.pk)
        finally:
            notify.left_here(run.pk)
            free.release()
            close_old_connections()


local_runner = LocalRunner()
