"""A worker killed with kill -9 in the middle of a run: the run is never lost."""

import time

import pytest

from flows_app.models import FlowRun
from flows_app.services.runs import flow_run_start, flow_runs_recover
from project.celery import app
from tests.flows_app.conftest import make_flow
from tests.servers import RecordingServer, Reply
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_queue(monkeypatch):
    """Workers of this test serve their own queue, so the session's worker cannot take the run."""
    queue = f"worker-loss-{time.monotonic_ns()}"
    monkeypatch.setitem(app.conf, "task_default_queue", queue)
    return queue


@pytest.fixture
def api():
    """Step two hangs the first time it is called (the worker is killed meanwhile)."""
    calls = {"one": 0, "two": 0}

    def handle(request):
        name = request.path.strip("/")
        calls[name] += 1
        if name == "two" and calls["two"] == 1:
            time.sleep(30)
        return Reply(body={"step": name})

    server = RecordingServer(handle)
    server.calls = calls
    yield server
    server.stop()


def start_run_and_kill_its_worker(own_queue, api):
    flow = make_flow(
        "survivor",
        [
            {"key": "one", "kind": "http_request", "url": f"{api.url}/one"},
            {"key": "two", "kind": "http_request", "url": f"{api.url}/two", "timeout": 60},
            {"key": "three", "kind": "transform", "value": "{{ steps.one.body.step }}+{{ steps.two.body.step }}"},
        ],
    )
    first = WorkerProcess(concurrency=1, env={"FLOWGATE_CELERY_QUEUE": own_queue, "FLOWGATE_RUN_LEASE_SECONDS": "2"}, name="doomed").start()
    run = flow_run_start(flow=flow, input={})
    deadline = time.monotonic() + 30
    while api.calls["two"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.calls["two"] == 1, first.log()
    first.kill()
    assert FlowRun.objects.get(pk=run.pk).status == "running"
    return run


def wait_for_end(run, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = FlowRun.objects.get(pk=run.pk)
        if current.finished:
            return current
        flow_runs_recover()  # what beat does every FLOWGATE_RECOVER_INTERVAL_SECONDS
        time.sleep(0.5)
    raise AssertionError(f"run still {FlowRun.objects.get(pk=run.pk).status}")


def test_the_run_resumes_after_the_last_finished_step(own_queue, api):
    run = start_run_and_kill_its_worker(own_queue, api)
    second = WorkerProcess(concurrency=1, env={"FLOWGATE_CELERY_QUEUE": own_queue, "FLOWGATE_RUN_LEASE_SECONDS": "2"}, name="heir").start()
    try:
        finished = wait_for_end(run)
    finally:
        second.stop()
    assert finished.status == "succeeded", finished.error
    assert finished.output == "one+two"
    assert api.calls == {"one": 1, "two": 2}  # the finished step did not run again; the one in flight did
    assert finished.pickups == 2
    assert [step.step_key for step in finished.step_runs.order_by("id")] == ["one", "two", "three"]


def test_a_run_whose_workers_keep_dying_fails_with_the_reason(own_queue, api):
    run = start_run_and_kill_its_worker(own_queue, api)
    env = {"FLOWGATE_CELERY_QUEUE": own_queue, "FLOWGATE_RUN_LEASE_SECONDS": "2", "FLOWGATE_RUN_MAX_PICKUPS": "1"}
    second = WorkerProcess(concurrency=1, env=env, name="strict").start()
    try:
        finished = wait_for_end(run)
    finally:
        second.stop()
    assert finished.status == "failed"
    assert "stopped 1 times" in finished.error and "'two'" in finished.error
    assert api.calls["two"] == 1
