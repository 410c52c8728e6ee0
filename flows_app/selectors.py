"""Reads of the flow engine's configuration on hot paths.

``endpoint_get(path)`` serves every call to ``/hooks/<path>``. It keeps what it read (the
endpoint trigger with its flow and secret) in a per-process cache for at most
``FLOWGATE_ENDPOINT_CACHE_SECONDS`` (1 s): a busy endpoint costs one query a second per
process instead of one per call. A change saved in a process clears that process's cache
at once (signals, connected in ``apps.py``); other processes see it within the second.
Unknown paths are not cached, so a probe for random paths cannot fill the cache.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from flows_app.models import EndpointTrigger

_lock = threading.Lock()
_endpoints: dict[str, tuple[float, EndpointTrigger]] = {}


def _lifetime() -> float:
    return float(getattr(settings, "FLOWGATE_ENDPOINT_CACHE_SECONDS", 1.0))


def endpoint_get(path: str) -> EndpointTrigger | None:
    now = time.monotonic()
    cached = _endpoints.get(path)
    if cached is not None and now - cached[0] < _lifetime():
        return cached[1]
    endpoint = EndpointTrigger.objects.select_related("flow", "auth_secret").filter(path=path).first()
    with _lock:
        if endpoint is None:
            _endpoints.pop(path, None)
        else:
            _endpoints[path] = (now, endpoint)
    return endpoint


def endpoint_cache_clear(**kwargs) -> None:
    with _lock:
        _endpoints.clear()
