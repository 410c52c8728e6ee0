"""for_each: a step run once per item across worker processes (flows_app/fanout.py)."""

import json
import threading
import time
from collections import Counter

import pytest
from django.core.exceptions import ValidationError

from flows_app import dispatch
from flows_app.models import Flow, FlowRun, StepItem
from flows_app.services.runs import flow_run_start, flow_runs_recover
from flows_app.services.config import flows_apply
from flows_app.services.flows import step_spec_from_data
from project.celery import app
from secrets_app.services.secrets import secret_create
from tests.contracts import raw_database_text
from tests.flows_app.conftest import execute, make_flow, run_flow
from tests.servers import RecordingServer, Reply
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def item_of(request) -> int:
    return int(request.path.split("?")[0].rsplit("/", 1)[1])


def each_flow(slug: str, api, **options):
    """Items from the trigger's ``ids``; one HTTP request per item, to ``/items/<id>``."""
    return make_flow(
        slug,
        [
            {"key": "ids", "kind": "transform", "value": "{{ trigger.ids }}"},
            {
                "key": "each",
                "kind": "http_request",
                "url": f"{api.url}/items/{{{{ item }}}}?at={{{{ item_index }}}}",
                "for_each": "{{ steps.ids }}",
                **options,
            },
        ],
    )


@pytest.fixture
def own_queue(monkeypatch):
    """Workers of this test serve their own queue, so the session's worker cannot take its tasks."""
    queue = f"fanout-{time.monotonic_ns()}"
    monkeypatch.setitem(app.conf, "task_default_queue", queue)
    return queue


def own_worker(queue: str, concurrency: int, name: str) -> WorkerProcess:
    env = {"FLOWGATE_CELERY_QUEUE": queue, "FLOWGATE_RUN_LEASE_SECONDS": "2"}
    return WorkerProcess(concurrency=concurrency, env=env, name=name)


def wait_for_end(run, timeout=90) -> FlowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = FlowRun.objects.get(pk=run.pk)
        if current.finished:
            return current
        flow_runs_recover()  # what beat does every FLOWGATE_RECOVER_INTERVAL_SECONDS
        time.sleep(0.5)
    raise AssertionError(f"run still {FlowRun.objects.get(pk=run.pk).status}")


class TestResults:
    def test_results_come_in_item_order_whatever_order_items_finish_in(self, worker):
        others_answered, released, answered = threading.Event(), [], []

        def handle(request):
            item = item_of(request)
            if item == 10:  # the first item answers only once every other item has
                released.append(others_answered.wait(60))
            else:
                answered.append(item)
                if len(answered) == 4:
                    others_answered.set()
            return Reply(body={"item": item, "path": request.path})

        api = RecordingServer(handle)
        try:
            run = run_flow(each_flow("ordered", api, for_each_concurrency=3), {"ids": [10, 11, 12, 13, 14]})
        finally:
            api.stop()
        assert run.status == "succeeded", run.error
        assert released == [True]  # item 0 finished last
        assert [result["body"]["item"] for result in run.output] == [10, 11, 12, 13, 14]
        assert [result["body"]["path"] for result in run.output] == [f"/items/{n}?at={n - 10}" for n in range(10, 15)]
        each = run.step_runs.get(step_key="each")
        assert each.status == "succeeded" and each.output == run.output
        assert list(StepItem.objects.filter(run=run).values_list("index", "status")) == [(n, "succeeded") for n in range(5)]

    def test_an_empty_list_gives_an_empty_result_without_items(self, worker, local_server):
        run = run_flow(each_flow("empty", local_server), {"ids": []})
        assert run.status == "succeeded" and run.output == []
        assert local_server.requests == [] and not StepItem.objects.filter(run=run).exists()

    def test_a_called_flow_runs_once_per_item(self, worker):
        make_flow("double", [{"key": "twice", "kind": "transform", "value": "{{ trigger.n * 2 }}"}])
        flow = make_flow(
            "doubles",
            [{"key": "each", "kind": "call_flow", "flow": "double", "input": {"n": "{{ item }}"}, "for_each": "{{ trigger.ns }}"}],
        )
        run = run_flow(flow, {"ns": [1, 2, 3]})
        assert run.status == "succeeded", run.error
        assert run.output == [2, 4, 6]
        assert sorted(child.input["n"] for child in FlowRun.objects.filter(parent_run=run)) == [1, 2, 3]


class TestConcurrency:
    def test_no_more_items_run_at_once_than_the_cap_even_with_more_lanes(self, own_queue):
        cap, total = 2, 8
        state = threading.Condition()
        counts = {"in_flight": 0, "peak": 0, "arrived": 0}

        def handle(request):
            with state:
                counts["in_flight"] += 1
                counts["arrived"] += 1
                counts["peak"] = max(counts["peak"], counts["in_flight"])
                state.notify_all()
                # Hold each request until the cap is reached (or no more can come), so a
                # claim beyond the cap would show as a third request in flight.
                state.wait_for(lambda: counts["in_flight"] >= cap or counts["arrived"] == total, timeout=60)
                counts["in_flight"] -= 1
            return Reply(body={"item": item_of(request)})

        api = RecordingServer(handle)
        flow = each_flow("capped", api, for_each_concurrency=cap)
        with own_worker(own_queue, 5, "wide"):
            run = flow_run_start(flow=flow, input={"ids": list(range(total))})
            while not api.requests:
                time.sleep(0.05)
            dispatch.enqueue_item_lanes(run.pk, "each", 3)  # as recovery may send: more lanes than the cap
            finished = wait_for_end(run)
        api.stop()
        assert finished.status == "succeeded", finished.error
        assert [result["body"]["item"] for result in finished.output] == list(range(total))
        assert counts["peak"] == cap


class TestFailures:
    @pytest.fixture
    def api(self):
        """Even items fail with 500."""
        server = RecordingServer(lambda request: Reply(status=500 if item_of(request) % 2 == 0 else 200, body={"item": item_of(request)}))
        yield server
        server.stop()

    def called(self, api) -> list[int]:
        return [item_of(request) for request in api.requests]

    def test_fail_stops_taking_items_and_fails_the_step_naming_them(self, worker, api):
        run = run_flow(each_flow("strict", api, for_each_concurrency=1), {"ids": [1, 2, 3, 5]})
        assert run.status == "failed"
        assert run.error.startswith("Step 'each' failed: 1 of 4 items failed (item 1) and 2 did not run; item 1: HTTP 500 from ")
        assert self.called(api) == [1, 2]

    def test_skip_leaves_failed_items_out(self, worker, api):
        run = run_flow(each_flow("lenient", api, for_each_errors="skip"), {"ids": [1, 2, 3, 4, 5]})
        assert run.status == "succeeded", run.error
        assert [result["body"]["item"] for result in run.output] == [1, 3, 5]

    def test_collect_keeps_the_error_in_the_failed_items_place(self, worker, api):
        run = run_flow(each_flow("collecting", api, for_each_errors="collect"), {"ids": [1, 2, 3]})
        assert run.status == "succeeded", run.error
        assert run.output[0]["body"] == {"item": 1} and run.output[2]["body"] == {"item": 3}
        assert run.output[1] == {"error": f"HTTP 500 from {api.url}/items/2?at=1"}

    def test_each_item_retries_transient_errors_as_the_step_would(self, worker):
        seen = Counter()

        def handle(request):
            seen[item_of(request)] += 1
            return Reply(status=503 if seen[item_of(request)] == 1 else 200, body={"item": item_of(request)})

        api = RecordingServer(handle)
        try:
            run = run_flow(each_flow("patient", api, max_attempts=2, retry_backoff=0.01), {"ids": [1, 2]})
        finally:
            api.stop()
        assert run.status == "succeeded", run.error
        assert seen == {1: 2, 2: 2}
        assert list(StepItem.objects.filter(run=run).values_list("attempts", flat=True)) == [2, 2]


class TestWorkerLoss:
    def test_a_killed_worker_does_not_repeat_finished_items(self, own_queue):
        calls = Counter()

        def handle(request):
            item = item_of(request)
            calls[item] += 1
            if item == 2 and calls[item] == 1:
                time.sleep(30)  # the worker is killed while it waits
            return Reply(body={"item": item})

        api = RecordingServer(handle)
        flow = each_flow("resilient", api, for_each_concurrency=1, timeout=60)
        doomed = own_worker(own_queue, 1, "doomed").start()
        run = flow_run_start(flow=flow, input={"ids": [0, 1, 2, 3, 4]})
        deadline = time.monotonic() + 60
        while calls[2] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls[2] == 1, doomed.log()
        doomed.kill()
        assert FlowRun.objects.get(pk=run.pk).status == "waiting"  # the run parked; the item was in flight
        with own_worker(own_queue, 1, "heir"):
            finished = wait_for_end(run)
        api.stop()
        assert finished.status == "succeeded", finished.error
        assert [result["body"]["item"] for result in finished.output] == [0, 1, 2, 3, 4]
        assert calls == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1}  # only the item in flight ran again
        assert StepItem.objects.get(run=run, index=2).pickups == 2


class TestRedaction:
    def test_item_outputs_are_stored_redacted(self, worker, local_server):
        token = "items-token-5150-qwerty"
        secret_create(name="crm", kind="api_token", data={"token": token})
        flow = make_flow(
            "echoes",
            [{"key": "each", "kind": "http_request", "url": f"{local_server.url}/{{{{ item }}}}", "secret": "crm", "for_each": "{{ trigger.ids }}"}],
        )
        run = run_flow(flow, {"ids": [1, 2]})
        assert run.status == "succeeded", run.error
        assert [request.headers["Authorization"] for request in local_server.requests] == [f"Bearer {token}"] * 2
        assert token not in raw_database_text()
        item = StepItem.objects.get(run=run, index=0)
        assert item.output["body"]["headers"]["Authorization"] == "[secret]"
        assert item.raw_output["value"]["body"]["headers"]["Authorization"] == f"Bearer {token}"  # encrypted
        assert json.dumps(run.output).count("[secret]") == 2


class TestValidation:
    def step(self, **options):
        return step_spec_from_data({"key": "each", "kind": "transform", "value": "{{ item }}", **options})

    @pytest.mark.parametrize(
        ("options", "field", "message"),
        [
            ({"for_each": "{{ steps.ids. }}"}, "for_each", "Template error"),
            ({"for_each": "steps.ids"}, "for_each", "Write a template giving a list"),
            ({"for_each": "{{ secrets.get_password('crm') }}"}, "for_each", "cannot read secrets"),
            ({"for_each": ["a"]}, "for_each", "Write a template giving a list"),
            ({"for_each": "{{ trigger.ids }}", "for_each_concurrency": 0}, "for_each_concurrency", "from 1 to 100"),
            ({"for_each": "{{ trigger.ids }}", "for_each_errors": "ignore"}, "for_each_errors", "fail, skip, collect"),
        ],
    )
    def test_a_bad_for_each_is_refused_on_save(self, options, field, message):
        with pytest.raises(ValidationError) as raised:
            self.step(**options)
        assert any(message in text for text in raised.value.message_dict[field])

    def test_a_step_that_chooses_where_to_go_cannot_fan_out(self):
        with pytest.raises(ValidationError) as raised:
            step_spec_from_data(
                {"key": "check", "kind": "condition", "expression": "{{ true }}", "then": "continue", "otherwise": "stop", "for_each": "{{ trigger.ids }}"}
            )
        assert raised.value.message_dict["for_each"] == ["A Condition step cannot run once per item."]

    def test_for_each_reads_only_steps_that_ran_before(self):
        steps = [
            {"key": "each", "kind": "transform", "value": "{{ item }}", "for_each": "{{ steps.later }}"},
            {"key": "later", "kind": "transform", "value": [1]},
        ]
        with pytest.raises(ValidationError) as raised:
            flows_apply({"backwards": {"name": "Backwards", "steps": steps}}, env={})
        assert raised.value.message_dict["backwards.steps[0].for_each"] == [
            "steps.later: there is no step 'later' before this one."
        ]
        assert not Flow.objects.exists()

    def test_a_template_giving_no_list_fails_the_run_with_the_reason(self):
        flow = make_flow("not-a-list", [{"key": "each", "kind": "transform", "value": "{{ item }}", "for_each": "{{ trigger }}"}])
        run = execute(flow, {"a": 1})
        assert run.status == "failed"
        assert run.error.startswith("Step 'each' failed: for_each must give a list; it gave dict \"{'a': 1}\".")
        assert not StepItem.objects.filter(run=run).exists()
