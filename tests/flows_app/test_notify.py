"""Waking whoever waits for a run (flows_app/notify.py), on the machine's Redis."""

import redis
from django.conf import settings as django_settings

from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows_app import notify
from flows_app.models import FlowRun
from tests.flows_app.conftest import make_flow
from tests.conftest import require_service


def test_installations_sharing_a_redis_server_do_not_wake_each_others_waiters(settings):
    require_service("Redis", "127.0.0.1", 6379)
    client = redis.Redis.from_url(django_settings.FLOWGATE_REDIS_URL)
    waiter = client.pubsub(ignore_subscribe_messages=True)
    waiter.subscribe(notify.channel(7), "sentinel")  # a waiter of this installation, run 7
    try:
        settings.SECRET_KEY = "another-installation-" + "k" * 40  # its run 7, on the same server
        notify.publish(7)
        client.publish("sentinel", b"after")  # pub/sub keeps order: anything that reached us came first
        received = []
        for message in waiter.listen():
            received.append(message)
            if message["channel"] == b"sentinel":
                break
        assert [message["channel"] for message in received] == [b"sentinel"]
    finally:
        waiter.close()
        client.close()


def test_a_waiter_reads_the_run_once_before_a_wake_up_and_once_at_its_timeout(db):
    require_service("Redis", "127.0.0.1", 6379)
    flow = make_flow("waited", [{"key": "echo", "kind": "transform", "value": "{{ trigger }}"}])
    run = FlowRun.objects.create(flow=flow, input={"big": "x" * 1000})
    reads = []

    def ready(current):
        reads.append(current.status)
        return current.finished

    # Never woken, and its timeout comes before the safety net's re-read: the read after
    # subscribing, and the last one at the timeout, nothing in between.
    with CaptureQueriesContext(connection) as queries:
        assert notify.wait(run.pk, ready=ready, timeout=0.3) is None
    assert reads == ["queued", "queued"]
    assert all('"input"' not in query["sql"] for query in queries.captured_queries)  # only what answers a caller
