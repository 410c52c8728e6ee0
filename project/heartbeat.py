"""Keeping a lease alive from a thread while slow work holds it.

A lease is a row's ``lease_owner`` and ``lease_expires_at``: short enough that work
abandoned by a dead process is taken over soon, so a live process must extend it while
it works. The flow engine does so for a run, the OAuth2 token life cycle for a refresh.
The thread lives in the process that holds the lease, so the lease still lapses soon
after that process dies.
"""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError, connections, transaction

logger = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds while the ``with`` block runs.

    ``beat()`` extends the lease; returning False ends the heartbeat (the lease is lost).
    A database error is logged and the next beat tries again: with beats every third of
    the lease, one failure still leaves time.

    Inside a caller's transaction there is no thread, and none is needed: the lease
    ``UPDATE`` keeps the row locked until that transaction ends, so no other process can
    take the lease meanwhile (and the thread's own connection would wait for that lock,
    held by the thread waiting for it).
    """

    def __init__(self, *, interval: float, name: str):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        if not transaction.get_connection().in_atomic_block:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def beat(self) -> bool:
        raise NotImplementedError

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            # A beat still waiting on the database changes nothing once the holder has
            # released the lease: every beat filters on the lease owner.
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.beat():
                        return
                except DatabaseError as exc:
                    logger.warning("%s: could not extend the lease: %s", self._thread.name, type(exc).__name__)
        finally:
            connections.close_all()  # this thread's own database connection, if it opened one
