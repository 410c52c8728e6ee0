"""A sync endpoint's run executes in the web process that holds its caller, as durably as
on a worker: no broker round trip, the same lease, checkpoints and recovery."""

import threading
import time

import pytest
import requests

from flows_app.models import FlowRun
from flows_app.services.runs import flow_runs_recover
from project.celery import app
from tests.flows_app.conftest import make_endpoint_flow
from tests.servers import RecordingServer, Reply
from tests.workers import WebProcess, WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)

OPEN_SYNC = {"auth": {"kind": "open"}, "response": "sync"}


@pytest.fixture
def own_queue(monkeypatch):
    """A queue of this test's own, which only workers it starts serve: a run sent to a
    worker is not taken unless the test starts one."""
    queue = f"local-runs-{time.monotonic_ns()}"
    monkeypatch.setitem(app.conf, "task_default_queue", queue)
    return queue


@pytest.fixture
def api():
    """``/slow`` answers once ``release`` is set; every path is counted."""
    release = threading.Event()
    calls: dict[str, int] = {}

    def handle(request):
        name = request.path.strip("/")
        calls[name] = calls.get(name, 0) + 1
        if name == "slow" and calls[name] == 1:
            release.wait(30)
        return Reply(body={"step": name})

    server = RecordingServer(handle)
    server.calls, server.release = calls, release
    yield server
    release.set()
    server.stop()


def test_the_caller_gets_its_answer_with_no_worker_running(own_queue, call, api):
    make_endpoint_flow(
        "here",
        {"path": "here", **OPEN_SYNC},
        steps=[
            {"key": "fetch", "kind": "http_request", "url": f"{api.url}/fast"},
            {"key": "reply", "kind": "respond", "status": 201, "body": {"got": "{{ steps.fetch.body.step }}"}},
        ],
    )
    response = call("here", {})
    assert response.status_code == 201 and response.json() == {"got": "fast"}
    run = FlowRun.objects.get()
    assert (run.status, run.pickups, run.lease_owner) == ("succeeded", 1, "")
    assert [step.step_key for step in run.step_runs.order_by("id")] == ["fetch", "reply"]


def test_a_respond_step_answers_while_the_run_goes_on(own_queue, call, api):
    make_endpoint_flow(
        "early",
        {"path": "early", **OPEN_SYNC},
        steps=[
            {"key": "ack", "kind": "respond", "status": 202, "body": {"accepted": True}},
            {"key": "work", "kind": "http_request", "url": f"{api.url}/slow"},
        ],
    )
    response = call("early", {})
    assert response.status_code == 202 and response.json() == {"accepted": True}
    assert FlowRun.objects.get().status == "running"
    api.release.set()
    assert wait_for_end(FlowRun.objects.get()).status == "succeeded"


def test_with_no_runner_threads_every_run_goes_to_the_queue(own_queue, call, settings):
    settings.FLOWGATE_SYNC_RUN_THREADS = 0
    make_endpoint_flow("queued", {"path": "queued", **OPEN_SYNC, "sync_timeout": 1})
    assert call("queued", {}).status_code == 504
    assert FlowRun.objects.get().status == "queued"  # no worker serves the queue


def test_a_flow_with_a_concurrency_limit_goes_through_the_queue(own_queue, call):
    make_endpoint_flow("limited", {"path": "limited", **OPEN_SYNC, "sync_timeout": 1}, concurrency_limit=1)
    assert call("limited", {}).status_code == 504
    assert FlowRun.objects.get().status == "queued"  # admission is the claim's, on a worker


def test_when_every_runner_thread_is_busy_a_worker_runs_the_next_call(worker, call, api, settings):
    settings.FLOWGATE_SYNC_RUN_THREADS = 1
    make_endpoint_flow(
        "busy", {"path": "busy", **OPEN_SYNC}, steps=[{"key": "work", "kind": "http_request", "url": f"{api.url}/{{{{ trigger.body.to }}}}"}]
    )
    first: list = []
    holder = threading.Thread(target=lambda: first.append(call("busy", {"to": "slow"})))
    holder.start()
    try:
        deadline = time.monotonic() + 30
        while not api.calls.get("slow") and time.monotonic() < deadline:
            time.sleep(0.02)
        second = call("busy", {"to": "fast"})  # the one runner thread is taken by the first
        assert second.status_code == 200 and second.json()["output"]["body"] == {"step": "fast"}
        assert FlowRun.objects.get(trigger_detail="/hooks/busy", input__body__to="slow").status == "running"
    finally:
        api.release.set()
        holder.join(30)
    assert first[0].status_code == 200


@pytest.mark.worker
def test_a_run_whose_web_process_was_killed_resumes_on_a_worker_after_its_last_effectful_step(own_queue, api):
    make_endpoint_flow(
        "survivor",
        {"path": "survivor", **OPEN_SYNC, "sync_timeout": 60},
        steps=[
            {"key": "one", "kind": "http_request", "url": f"{api.url}/one"},
            {"key": "two", "kind": "http_request", "url": f"{api.url}/slow", "timeout": 60},
            {"key": "three", "kind": "transform", "value": "{{ steps.one.body.step }}+{{ steps.two.body.step }}"},
        ],
    )
    lease = {"FLOWGATE_CELERY_QUEUE": own_queue, "FLOWGATE_RUN_LEASE_SECONDS": "2"}
    web = WebProcess(env=lease).start()
    threading.Thread(target=call_and_lose_the_answer, args=(f"{web.url}/hooks/survivor",), daemon=True).start()
    deadline = time.monotonic() + 30
    while not api.calls.get("slow") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.calls.get("slow") == 1, web.log()
    web.kill()  # kill -9, mid-step: the run is held by a process that no longer exists
    run = FlowRun.objects.get()
    assert (run.status, run.pickups) == ("running", 1)
    with WorkerProcess(concurrency=1, env=lease, name="heir"):
        finished = wait_for_end(run, recover=True)
    assert finished.status == "succeeded", finished.error
    assert finished.output == "one+slow"
    assert api.calls == {"one": 1, "slow": 2}  # the finished step did not run again; the one in flight did
    assert finished.pickups == 2


def call_and_lose_the_answer(url):
    with pytest.raises(requests.ConnectionError):  # the web process dies before it answers
        requests.post(url, json={}, timeout=60)


def wait_for_end(run, *, recover=False, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = FlowRun.objects.get(pk=run.pk)
        if current.finished:
            return current
        if recover:
            flow_runs_recover()  # what beat does every FLOWGATE_RECOVER_INTERVAL_SECONDS
        time.sleep(0.2)
    raise AssertionError(f"run still {FlowRun.objects.get(pk=run.pk).status}")
