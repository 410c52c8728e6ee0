"""Group commit: the runs that a process's callers start in one moment, stored in one
statement and sent in one round trip.

An async endpoint answers 202 once its run is stored and its task sent. Under load many
request threads of a web process do that at once, and each INSERT and each publish is a
statement to compile and a round trip to wait for. A caller that finds no batch being
stored leads: it stores every run waiting at that moment (its own included) with one
INSERT, sends their tasks in one round trip (``dispatch.enqueue_runs``), wakes their
callers, and hands the lead to the first caller that arrived meanwhile. Nobody waits for
a timer: a run that comes alone is stored at once, as before.

Only runs started outside a transaction come here: the leader commits them on its own
connection. A batch whose INSERT fails is stored again one run at a time, so a bad row
fails its own call only.
"""

from __future__ import annotations

import threading

from django.db import DatabaseError

from flows_app import dispatch, metrics
from flows_app.models import FlowRun


class _Waiting:
    __slots__ = ("run", "woken", "done", "error")

    def __init__(self, run: FlowRun):
        self.run, self.woken, self.done, self.error = run, threading.Event(), False, None


class RunIntake:
    def __init__(self):
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._leading = False  # a caller is storing a batch, or has been asked to

    def store_and_send(self, run: FlowRun) -> None:
        """Store ``run`` (not saved yet, outside any transaction) and send its task; raises
        what storing or sending it raised."""
        mine = _Waiting(run)
        with self._lock:
            self._waiting.append(mine)
            lead, self._leading = not self._leading, True
        if not lead:
            mine.woken.wait()  # stored by a leader, or asked to lead the next batch
        if not mine.done:
            with self._lock:
                batch, self._waiting = self._waiting, []
            self._store_and_send(batch)  # its own run included
            with self._lock:
                # One batch per leader, so none waits behind an endless stream of others:
                # the next caller in line leads the next one.
                if self._waiting:
                    self._waiting[0].woken.set()
                else:
                    self._leading = False
        if mine.error is not None:
            raise mine.error

    @staticmethod
    def _store_and_send(batch: list[_Waiting]) -> None:
        try:
            try:
                FlowRun.objects.bulk_create([waiting.run for waiting in batch])
                for waiting in batch:
                    metrics.run_created(FlowRun, waiting.run, created=True)  # bulk_create sends no post_save
            except DatabaseError:
                for waiting in batch:  # one at a time (post_save counts each): only a bad row's call fails
                    try:
                        waiting.run.save(force_insert=True)
                    except DatabaseError as exc:
                        waiting.error = exc
            stored = [waiting for waiting in batch if waiting.error is None]
            dispatch.enqueue_runs([waiting.run.pk for waiting in stored])
        except Exception as exc:
            # Each call fails as it would have alone (a stored run is sent again by recovery).
            for waiting in batch:
                waiting.error = waiting.error or exc
        finally:
            for waiting in batch:
                waiting.done = True
                waiting.woken.set()


run_intake = RunIntake()
