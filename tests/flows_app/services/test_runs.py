"""run_flow, re-runs from the failed step, recovery and pruning."""

import io
import json
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from flows_app.models import FlowRun
from flows_app.services.runs import flow_run_rerun, flow_runs_prune, flow_runs_recover
from project.celery import app
from tests.flows_app.conftest import execute, make_flow, run_flow
from tests.servers import Reply


@pytest.mark.worker
def test_run_flow_waits_and_prints_the_run(worker):
    make_flow("greet", [{"key": "hello", "kind": "transform", "value": "Hello {{ trigger.name }}"}])
    out = io.StringIO()
    call_command("run_flow", "greet", "--input", '{"name": "Ada"}', "--wait", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["status"] == "succeeded" and printed["output"] == "Hello Ada"
    assert printed["steps"] == [{"key": "hello", "status": "succeeded", "attempt": 1, "duration_ms": printed["steps"][0]["duration_ms"]}]
    assert printed["started_at"] and printed["finished_at"] and printed["duration_ms"] >= 0


@pytest.mark.worker
def test_a_failed_run_reruns_from_the_failed_step(worker, local_server):
    calls = []

    def handle(request):
        calls.append(request.path)
        return Reply(status=500 if request.path == "/two" and calls.count("/two") == 1 else 200, body={"at": request.path})

    local_server.handler = handle
    flow = make_flow(
        "twice",
        [
            {"key": "one", "kind": "http_request", "url": f"{local_server.url}/one"},
            {"key": "two", "kind": "http_request", "url": f"{local_server.url}/two"},
            {"key": "three", "kind": "transform", "value": "{{ steps.one.body.at }} then {{ steps.two.body.at }}"},
        ],
    )
    failed = run_flow(flow)
    assert failed.status == "failed"
    rerun = flow_run_rerun(run=failed)
    from flows_app.services.runs import flow_run_wait

    rerun = flow_run_wait(run=rerun, timeout=60)
    assert rerun.status == "succeeded" and rerun.output == "/one then /two"
    assert calls == ["/one", "/two", "/two"]  # step one was not repeated
    assert rerun.rerun_of_id == failed.pk


def sent_runs(queue: str) -> list[int]:
    """The run ids whose tasks wait in ``queue`` on the real broker (taken off it)."""
    ids = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        app.amqp.queues[queue](channel).declare()
        while (message := channel.basic_get(queue=queue, no_ack=True)) is not None:
            ids.append(json.loads(message.body)[0][0])  # the task's args: [run_id]
    return ids


@pytest.fixture
def unconsumed_queue(monkeypatch):
    """This test's tasks go to queues that no worker consumes, to be read from the broker."""
    queue = f"recovery-{time.monotonic_ns()}"
    monkeypatch.setitem(app.conf, "task_default_queue", queue)
    return queue


@pytest.mark.django_db(transaction=True)
def test_recovery_sends_lease_expired_and_lost_runs_again_on_the_housekeeping_queue(unconsumed_queue, settings):
    settings.FLOWGATE_RUN_RESEND_AFTER_SECONDS = 3600
    flow = make_flow("stalled", [{"key": "x", "kind": "transform", "value": 1}])
    now = timezone.now()
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    dead = FlowRun.objects.create(flow=flow, status="running", lease_owner="gone", lease_expires_at=ago(1))
    lost = FlowRun.objects.create(flow=flow, status="queued", queued_at=ago(7200))
    lost_waiting = FlowRun.objects.create(flow=flow, status="waiting", queued_at=ago(9000), not_before=ago(7200))
    FlowRun.objects.create(flow=flow, status="running", lease_owner="gone", lease_expires_at=ago(9), dispatched_at=ago(5))
    FlowRun.objects.create(flow=flow, status="queued", queued_at=ago(300))  # behind a backlog: its message is there
    FlowRun.objects.create(flow=flow, status="queued", queued_at=ago(7200), dispatched_at=ago(60))  # sent again lately
    FlowRun.objects.create(flow=flow, status="waiting", queued_at=ago(7200), not_before=ago(10))  # its retry is due
    FlowRun.objects.create(flow=flow, status="running", lease_owner="alive", lease_expires_at=ago(-30))

    assert flow_runs_recover() == 3
    assert sorted(sent_runs(f"{unconsumed_queue}.housekeeping")) == sorted([dead.pk, lost.pk, lost_waiting.pk])
    assert sent_runs(unconsumed_queue) == []  # not behind the backlog
    assert FlowRun.objects.filter(pk__in=[dead.pk, lost.pk, lost_waiting.pk], dispatched_at__gte=now).count() == 3
    assert flow_runs_recover() == 0  # each is sent once, until its window passes or its next worker dies too


@pytest.mark.django_db(transaction=True)
def test_old_finished_runs_are_pruned():
    flow = make_flow("old", [{"key": "x", "kind": "transform", "value": 1}])
    old = execute(flow)
    FlowRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))
    recent = execute(flow)
    assert flow_runs_prune() >= 1
    assert list(FlowRun.objects.values_list("pk", flat=True)) == [recent.pk]


@pytest.mark.django_db(transaction=True)
def test_a_failed_runs_error_handler_is_started_by_a_housekeeping_task_once(unconsumed_queue):
    from flows_app.services.runs import flow_run_error_handler_start

    handler = make_flow("on-failure", [{"key": "keep", "kind": "transform", "value": "{{ trigger }}"}])
    flow = make_flow("fragile", [{"key": "boom", "kind": "transform", "value": "{{ nope }}"}], error_handler="on-failure")
    failed = execute(flow)
    assert failed.status == "failed"
    assert sent_runs(f"{unconsumed_queue}.housekeeping") == [failed.pk]  # the run's end sent it, behind no backlog
    flow_run_error_handler_start(run_id=failed.pk)
    flow_run_error_handler_start(run_id=failed.pk)  # a redelivered message
    started = FlowRun.objects.get(flow=handler)
    assert (started.trigger, started.input["run_id"], started.input["failed_step"]) == ("error_handler", failed.pk, "boom")
