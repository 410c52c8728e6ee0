"""Waking whoever waits for a run (flows_app/notify.py), on the machine's Redis."""

import threading

import redis
from django.conf import settings as django_settings

from django.db import connection, connections
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


def test_a_run_executing_in_this_process_wakes_its_waiter_here_without_a_database_read(db):

    flow = make_flow("here", [{"key": "echo", "kind": "transform", "value": "{{ trigger }}"}])
    run = FlowRun.objects.create(flow=flow, input={})
    notify.executing_here(run)  # as flows_app.local_runs registers the runner's copy
    woken = []
    waiter = threading.Thread(target=lambda: woken.append(notify.wait(run.pk, ready=lambda current: current.finished, timeout=30)))
    try:
        waiter.start()
        run.status = FlowRun.Status.SUCCEEDED  # the run store updates the runner's copy, then publishes
        notify.publish(run.pk)
        waiter.join(30)
    finally:
        notify.left_here(run.pk)
    assert woken and woken[0] is run  # the runner's own copy...
    assert FlowRun.objects.get(pk=run.pk).status == FlowRun.Status.QUEUED  # ...not the row, which still says queued


def test_a_waiter_of_a_run_that_left_this_process_unfinished_goes_on_waiting_through_the_database(transactional_db):

    flow = make_flow("parked", [{"key": "echo", "kind": "transform", "value": "{{ trigger }}"}])
    run = FlowRun.objects.create(flow=flow, input={})
    notify.executing_here(run)
    woken = []

    def wait():
        woken.append(notify.wait(run.pk, ready=lambda current: current.finished, timeout=30))
        connections.close_all()  # this thread's own

    waiter = threading.Thread(target=wait)
    waiter.start()
    notify.left_here(run.pk)  # parked: a worker will finish it
    FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
    notify.publish(run.pk)
    waiter.join(30)
    assert woken and woken[0] is not run and woken[0].status == FlowRun.Status.SUCCEEDED


def test_a_run_executing_here_is_published_through_redis_only_when_a_retried_call_could_wait_for_it_elsewhere(db):
    require_service("Redis", "127.0.0.1", 6379)
    flow = make_flow("keyed", [{"key": "echo", "kind": "transform", "value": "{{ trigger }}"}])
    plain = FlowRun.objects.create(flow=flow, input={})
    keyed = FlowRun.objects.create(flow=flow, input={}, idempotency_key="retried-call")
    client = redis.Redis.from_url(django_settings.FLOWGATE_REDIS_URL)
    elsewhere = client.pubsub(ignore_subscribe_messages=True)
    elsewhere.subscribe(notify.channel(plain.pk), notify.channel(keyed.pk), "sentinel")
    try:
        for run in (plain, keyed):
            notify.executing_here(run)
            notify.publish(run.pk)
            notify.left_here(run.pk)
        client.publish("sentinel", b"after")  # pub/sub keeps order: anything that reached us came first
        received = []
        for message in elsewhere.listen():
            received.append(message["channel"])
            if message["channel"] == b"sentinel":
                break
        assert received == [notify.channel(keyed.pk).encode(), b"sentinel"]
    finally:
        elsewhere.close()
        client.close()
