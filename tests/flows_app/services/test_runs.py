"""run_flow, re-runs from the failed step, recovery and pruning."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from flows_app.models import FlowRun
from flows_app.services.runs import flow_run_rerun, flow_runs_prune, flow_runs_recover
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


@pytest.mark.django_db(transaction=True)
def test_recovery_hands_out_runs_with_expired_leases_and_lost_messages(monkeypatch):
    flow = make_flow("stalled", [{"key": "x", "kind": "transform", "value": 1}])
    now = timezone.now()
    dead = FlowRun.objects.create(flow=flow, status="running", lease_owner="gone", lease_expires_at=now - timedelta(seconds=1))
    lost = FlowRun.objects.create(flow=flow, status="queued", queued_at=now - timedelta(minutes=5))
    FlowRun.objects.create(flow=flow, status="queued")  # just queued: its message is on its way
    FlowRun.objects.create(flow=flow, status="running", lease_owner="alive", lease_expires_at=now + timedelta(seconds=30))
    sent = []
    monkeypatch.setattr("flows_app.engine.enqueue_run", lambda run_id, countdown=0: sent.append(run_id))
    assert flow_runs_recover() == 2
    assert sorted(sent) == sorted([dead.pk, lost.pk])


@pytest.mark.django_db(transaction=True)
def test_old_finished_runs_are_pruned():
    flow = make_flow("old", [{"key": "x", "kind": "transform", "value": 1}])
    old = execute(flow)
    FlowRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))
    recent = execute(flow)
    assert flow_runs_prune() >= 1
    assert list(FlowRun.objects.values_list("pk", flat=True)) == [recent.pk]
