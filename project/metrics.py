"""``/metrics`` in Prometheus' text format, for every process of the installation.

Off unless ``FLOWGATE_METRICS_TOKEN`` is set (404 without it); with it, a scraper sends
``Authorization: Bearer <token>`` (compared in constant time, 401 otherwise). The metric
names and what to watch are in the README, "Metrics".

Where each number comes from, and why:

- **Counted where it happens, in the process where it happens**: runs started and
  finished (``flows_app.metrics``), step durations (the engine's step loop), endpoint
  latency (the endpoint service, in the web process) and OAuth2 refreshes
  (``secrets_app.metrics``). The work is spread over gunicorn workers, Celery's prefork
  children and the occasional management command, so prometheus_client runs in its
  multiprocess mode: every process writes its counters and histograms to memory-mapped
  files in ``PROMETHEUS_MULTIPROC_DIR`` (``var/metrics`` unless set) and this view adds
  the files up (``MultiProcessCollector``). A process that ended keeps its file, so its
  counts stay in the total, as a counter's must. The folder starts empty with the
  installation (``scripts/run`` clears it; docker-compose mounts a tmpfs volume shared by
  web, worker and beat) so that counts start from zero like any restarted exporter.
  There are no gauges among these metrics, so no gauge mode to choose and no
  ``mark_process_dead`` to call when a worker exits: a dead process's counts are meant
  to stay.
- **Runs are not counted from ``FlowRun`` rows** at scrape time, although the rows hold
  them: the nightly prune deletes finished runs, so a count of rows would fall, which a
  counter must not, and a ``GROUP BY`` over the whole table on every scrape costs more
  than an increment per run.
- **Asked at scrape time**: queue depth, from the broker (``project.metrics_broker``).
  Only the broker knows what waits in it; a count kept by publishers and consumers
  would drift with every lost or redelivered message.

Labels are bounded by configuration (flow slug, trigger kind, step kind, status, an
endpoint's configured path, queue name); never a value, a template result or a path a
caller made up.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from project.celery import app as celery_app
from project.metrics_broker import QueueDepthCollector


def _authorized(request) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    token = settings.FLOWGATE_METRICS_TOKEN
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def exposition() -> bytes:
    """The text Prometheus reads: every process's counts, and the queues as they are now."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(celery_app))
    return generate_latest(registry)


@require_safe
def metrics_view(request):
    if not settings.FLOWGATE_METRICS_TOKEN:
        raise Http404("Metrics are off: set FLOWGATE_METRICS_TOKEN.")
    if not _authorized(request):
        response = HttpResponse("A valid metrics token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response
