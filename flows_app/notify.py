"""Waking whoever waits for a run: a synchronous endpoint, ``run_flow --wait``.

The engine calls ``publish(run_id)`` when a respond step has run and when the run ends.
With Redis (``FLOWGATE_REDIS_URL``, or a ``redis://`` broker) that is a message on the
run's channel and a waiter wakes at once, reading the run from the database only then
(and once a second as a safety net). Redis shares pub/sub channels between all its
databases, so a channel names this installation too: two installations on one Redis
server do not wake each other's waiters. Without Redis, waiters read the run at a growing
interval (10 ms up to 250 ms): never a tight loop.

A run executing in this process (``flows_app.local_runs``) is registered here while it
runs: a waiter in this process then wakes on an event and reads the runner's own copy of
the run, which the run store updates before it publishes (no pub/sub, no database read).
Such a run goes through Redis as well only when it has an idempotency key: a waiter in
another process can only have found it through that key (a retried call).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings

from flows_app.models import FlowRun

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)


def _client():
    url = getattr(settings, "FLOWGATE_REDIS_URL", "")
    return _redis(url) if url else None


def channel(run_id: int) -> str:
    return f"flowgate:{_installation()}:run:{run_id}"


def _installation() -> str:
    """A short name for this installation: its database and its SECRET_KEY, hashed (the
    key keeps two installations apart even when their databases have the same name)."""
    database = settings.DATABASES["default"]
    identity = (database["ENGINE"], database.get("HOST") or "", database.get("PORT") or "", database["NAME"])
    return _digest(repr(identity), settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


#: Runs executing in this process, by id: the runner's copy, and the event that wakes waiters.
_here: dict[int, tuple[FlowRun, threading.Event]] = {}


def executing_here(run: FlowRun) -> None:
    """``run`` (this very object) executes in this process from now on."""
    _here[run.pk] = (run, threading.Event())


def left_here(run_id: int) -> None:
    """The run stopped executing in this process (ended, parked, given up): waiters here
    read the database from now on."""
    entry = _here.pop(run_id, None)
    if entry is not None:
        entry[1].set()


def publish(run_id: int) -> None:
    entry = _here.get(run_id)
    if entry is not None:
        entry[1].set()
        if not entry[0].idempotency_key:
            # Its caller waits here; a waiter in another process has found the run through
            # its idempotency key (a retried call), so without one nobody waits elsewhere.
            return
    client = _client()
    if client is None:
        return
    try:
        client.publish(channel(run_id), b"1")
    except Exception as exc:  # a waiter falls back to its safety poll
        logger.warning("Could not publish run %s: %s", run_id, type(exc).__name__)


# What a waiter reads: enough to decide and to answer (other fields load when used).
WAIT_FIELDS = ("id", "flow_id", "endpoint_id", "status", "response", "output", "error", "finished_at")
SAFETY_NET_SECONDS = 1.0


def wait(run_id: int, *, ready: Callable[[FlowRun], bool], timeout: float) -> FlowRun | None:
    """The run once ``ready(run)`` holds, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    entry = _here.get(run_id)
    if entry is not None:
        return _wait_here(*entry, ready=ready, deadline=deadline)
    client = _client()
    if client is None:
        return _read_until(run_id, ready, deadline, _growing_pause())
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel(run_id))
        # The first read comes after Redis confirmed the subscription, so no wake-up sent
        # after it can be missed; the confirmation is consumed here, not by the first pause
        # (where it would end the pause at once and cost a second read).
        if not _confirmed(pubsub, deadline):
            return _read_until(run_id, ready, deadline, _growing_pause())
        return _read_until(run_id, ready, deadline, lambda remaining: _woken(pubsub, remaining))
    finally:
        pubsub.close()


def _wait_here(run: FlowRun, woken: threading.Event, *, ready: Callable[[FlowRun], bool], deadline: float) -> FlowRun | None:
    """Wait for a run executing in this process. The runner writes the run's fields before
    it sets the event, and the waiter clears the event before it looks: no wake-up is missed."""
    while not ready(run):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if _here.get(run.pk, (None,))[0] is not run:  # it left this process unfinished (parked)
            return wait(run.pk, ready=ready, timeout=remaining)
        woken.wait(remaining)
        woken.clear()
    return run


def _confirmed(pubsub, deadline: float) -> bool:
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=min(remaining, SAFETY_NET_SECONDS))
        if message is not None and message["type"] == "subscribe":
            return True
    return False


def _woken(pubsub, remaining: float) -> None:
    """Pause until a wake-up, or for the safety net's second (a lost message)."""
    pubsub.get_message(timeout=min(remaining, SAFETY_NET_SECONDS))


def _growing_pause() -> Callable[[float], None]:
    pause = 0.01

    def sleep(remaining: float) -> None:
        nonlocal pause
        time.sleep(min(pause, remaining))
        pause = min(pause * 1.5, 0.25)

    return sleep


def _read_until(run_id: int, ready: Callable[[FlowRun], bool], deadline: float, pause: Callable[[float], None]) -> FlowRun | None:
    """Read the run until it is ready, pausing between reads (a wake-up or a sleep)."""
    while True:
        run = FlowRun.objects.only(*WAIT_FIELDS).get(pk=run_id)
        if ready(run):
            return run
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        pause(remaining)
