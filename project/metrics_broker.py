"""How many messages wait in each Celery queue, asked of the broker when /metrics is read.

The broker is the truth about its queues, so nothing is counted along the way: a passive
``queue_declare`` through kombu answers with the queue's message count on every broker
Flowgate runs on. For Redis kombu adds up ``LLEN`` of the queue's list keys (one per
priority step), for the file-system broker it counts the queue's message files, and
RabbitMQ answers the passive declare itself. Passive, so a scrape never creates a queue.

A queue the broker does not know holds nothing: Redis deletes a list once it is empty,
and RabbitMQ has no queue before a worker or a publish declared it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery
from kombu import Connection
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

#: A scrape waits at most this long for the broker (Prometheus gives up after 10 s by default).
CONNECT_TIMEOUT_SECONDS = 3


def queue_depths(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues``."""
    depths = {}
    for name in queues:
        # A channel per queue: RabbitMQ closes the channel that asked about an unknown queue.
        with connection.channel() as channel:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except connection.channel_errors:
                depths[name] = 0
    return depths


class QueueDepthCollector:
    """``flowgate_queue_depth{queue}`` for the queues ``app`` sends to (its default queue
    and ``task_queues``); nothing, and a log line, when the broker cannot be reached."""

    def __init__(self, app: Celery):
        self.app = app

    def collect(self):
        with self.app.connection_for_read(connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            try:
                depths = queue_depths(connection, sorted(self.app.amqp.queues))
            except (*connection.connection_errors, OSError) as exc:
                logger.warning("Metrics: the broker did not answer for queue depths: %s", type(exc).__name__)
                return
        family = GaugeMetricFamily("flowgate_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"])
        for name, depth in depths.items():
            family.add_metric([name], depth)
        yield family
