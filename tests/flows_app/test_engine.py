"""The engine with a real worker process: order, data between steps, retries, timeouts."""

import threading
import time

import pytest

from flows_app.models import FlowRun
from flows_app.services.runs import flow_run_cancel, flow_run_start, flow_run_wait
from tests.flows_app.conftest import make_flow, run_flow, steps_of
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.worker


def test_steps_run_in_order_and_read_each_others_output(worker):
    flow = make_flow(
        "chain",
        [
            {"key": "first", "kind": "transform", "value": {"n": "{{ trigger.n }}", "name": "{{ trigger.name | upper }}"}},
            {"key": "second", "kind": "transform", "value": {"double": "{{ steps.first.n * 2 }}", "greeting": "Hi {{ steps.first.name }}"}},
        ],
    )
    run = run_flow(flow, {"n": 21, "name": "ada"})
    assert run.status == "succeeded", run.error
    assert run.output == {"double": 42, "greeting": "Hi ADA"}
    assert steps_of(run) == [("first", "succeeded", 1), ("second", "succeeded", 1)]


def test_http_steps_call_a_real_server_with_the_secret(worker, local_server):
    from secrets_app.services.secrets import secret_create

    secret_create(name="crm", kind="api_token", data={"token": "crm-token-8812"})
    flow = make_flow(
        "whoami",
        [
            {"key": "me", "kind": "http_request", "url": f"{local_server.url}/me?id={{{{ trigger.id }}}}", "secret": "crm"},
            {"key": "reply", "kind": "respond", "status": 201, "body": {"path": "{{ steps.me.body.path }}"}},
        ],
    )
    run = run_flow(flow, {"id": 7})
    assert run.status == "succeeded", run.error
    assert local_server.last.path == "/me?id=7"
    assert local_server.last.headers["Authorization"] == "Bearer crm-token-8812"
    assert run.response == {"status": 201, "headers": {}, "body": {"path": "/me?id=7"}}
    me = run.step_runs.get(step_key="me")
    assert "crm-token-8812" not in str(me.output) and "[secret]" in str(me.output)  # the echo was masked


def test_a_flow_reads_an_api_with_a_secret_transforms_and_writes_rows_into_postgresql(worker, postgresql):
    import psycopg

    from secrets_app.services.secrets import secret_create

    token = "crm-token-5531-journey"
    contacts = [{"email": "ada@example.com", "plan": "pro"}, {"email": "alan@example.com", "plan": "free"}]
    api = RecordingServer(lambda request: Reply(body={"contacts": contacts}))
    table = f"journey_{time.monotonic_ns()}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (email text primary key, pro boolean not null)")
    try:
        secret_create(name="crm", kind="api_token", data={"token": token})
        secret_create(name="warehouse", kind="postgresql", data=postgresql)
        flow = make_flow(
            "sync-contacts",
            [
                {"key": "fetch", "kind": "http_request", "url": f"{api.url}/contacts", "secret": "crm"},
                {
                    "key": "shape",
                    "kind": "script",
                    "code": "return [{'email': c['email'], 'pro': c['plan'] == 'pro'} for c in steps['fetch']['body']['contacts']]",
                },
                {
                    "key": "store",
                    "kind": "sql",
                    "secret": "warehouse",
                    "query": f"INSERT INTO {table} (email, pro) SELECT email, pro FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(email text, pro boolean)",
                    "parameters": {"rows": "{{ steps.shape | tojson }}"},
                },
            ],
        )
        run = run_flow(flow)
        assert run.status == "succeeded", run.error
        assert api.last.headers["Authorization"] == f"Bearer {token}"
        assert steps_of(run) == [("fetch", "succeeded", 1), ("shape", "succeeded", 1), ("store", "succeeded", 1)]
        assert run.step_runs.get(step_key="store").output["row_count"] == 2
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test") as connection:
            assert connection.execute(f"SELECT email, pro FROM {table} ORDER BY email").fetchall() == [
                ("ada@example.com", True),
                ("alan@example.com", False),
            ]
        stored = [str(row) for row in FlowRun.objects.filter(pk=run.pk).values()]
        stored += [str(row) for row in run.step_runs.values()]
        assert not any(token in row for row in stored)
    finally:
        api.stop()
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as connection:
            connection.execute(f"DROP TABLE {table}")


def test_transient_errors_are_retried_with_backoff_and_4xx_is_not(worker):
    answers = {"flaky": [503, 502, 200], "broken": [404, 200]}

    def handle(request):
        return Reply(status=answers[request.path.strip("/")].pop(0), body={"ok": True})

    server = RecordingServer(handle)
    try:
        flaky = make_flow("flaky", [{"key": "call", "kind": "http_request", "url": f"{server.url}/flaky", "max_attempts": 3, "retry_backoff": 0.1}])
        broken = make_flow("broken", [{"key": "call", "kind": "http_request", "url": f"{server.url}/broken", "max_attempts": 3, "retry_backoff": 0.1}])
        run = run_flow(flaky)
        assert run.status == "succeeded"
        assert steps_of(run) == [("call", "failed", 1), ("call", "failed", 2), ("call", "succeeded", 3)]
        run = run_flow(broken)
        assert run.status == "failed" and "HTTP 404" in run.error
        assert steps_of(run) == [("call", "failed", 1)]
    finally:
        server.stop()


def test_retry_after_is_honoured_and_long_waits_free_the_worker(worker):
    answers = [Reply(status=429, headers={"Retry-After": "3"}), Reply(body={"ok": True})]
    seen = []

    def handle(request):
        seen.append(time.monotonic())
        return answers.pop(0)

    server = RecordingServer(handle)
    try:
        flow = make_flow("limited", [{"key": "call", "kind": "http_request", "url": server.url, "max_attempts": 2}])
        run = flow_run_start(flow=flow, input={})
        time.sleep(1.5)
        assert FlowRun.objects.get(pk=run.pk).status == "waiting"  # parked, not holding a worker
        run = flow_run_wait(run=run, timeout=30)
        assert run.status == "succeeded"
        assert seen[1] - seen[0] >= 3
    finally:
        server.stop()


def test_a_step_timeout_fails_the_step(worker):
    server = RecordingServer(lambda request: (time.sleep(3), Reply(body="late"))[1])
    try:
        flow = make_flow("slow", [{"key": "call", "kind": "http_request", "url": server.url, "timeout": 1}])
        run = run_flow(flow)
        assert run.status == "failed" and "did not finish within its 1 s deadline" in run.error
    finally:
        server.stop()


def test_the_flow_timeout_stops_the_run(worker):
    server = RecordingServer(lambda request: (time.sleep(1.2), Reply(body="ok"))[1])
    try:
        flow = make_flow(
            "long",
            [{"key": f"call{n}", "kind": "http_request", "url": server.url, "timeout": 5} for n in range(4)],
            timeout_seconds=2,
        )
        run = run_flow(flow)
        assert run.status == "failed" and "longer than its timeout of 2 s" in run.error
        assert len(run.step_runs.all()) == 2
    finally:
        server.stop()


def test_a_running_run_can_be_cancelled(worker):
    server = RecordingServer(lambda request: (time.sleep(1), Reply(body="ok"))[1])
    try:
        flow = make_flow("cancel-me", [{"key": f"call{n}", "kind": "http_request", "url": server.url} for n in range(10)])
        run = flow_run_start(flow=flow, input={})
        time.sleep(1.5)
        assert flow_run_cancel(run=run)
        run = flow_run_wait(run=run, timeout=30)
        assert run.status == "cancelled"
        assert len(server.requests) < 10
    finally:
        server.stop()


def test_the_concurrency_limit_holds(worker):
    running, peak, lock = [0], [0], threading.Lock()

    def handle(request):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1
        return Reply(body="ok")

    server = RecordingServer(handle)
    try:
        flow = make_flow("one-at-a-time", [{"key": "call", "kind": "http_request", "url": server.url}], concurrency_limit=1)
        runs = [flow_run_start(flow=flow, input={}) for _ in range(3)]
        finished = [flow_run_wait(run=run, timeout=60) for run in runs]
        assert [run.status for run in finished] == ["succeeded"] * 3
        assert peak[0] == 1 and len(server.requests) == 3
    finally:
        server.stop()


def test_a_run_over_the_concurrency_limit_waits_without_messages_and_starts_when_the_slot_frees(worker):
    from celery.signals import before_task_publish

    from flows_app.engine import Engine

    first_called, release = threading.Event(), threading.Event()

    def handle(request):
        first_called.set()
        release.wait(60)
        return Reply(body="ok")

    server = RecordingServer(handle)
    sent = []
    record = lambda body, **kwargs: sent.append(body[0][0])  # noqa: E731  (the run id)
    before_task_publish.connect(record, weak=False)
    try:
        flow = make_flow("one-slot", [{"key": "call", "kind": "http_request", "url": server.url}], concurrency_limit=1)
        first = flow_run_start(flow=flow, input={})
        assert first_called.wait(60), "the first run never called the server"
        second = FlowRun.objects.create(flow=flow, input={})  # as if its message had just arrived:
        Engine().execute(second.pk)  # the slot is taken
        assert FlowRun.objects.get(pk=second.pk).status == "queued"
        assert second.pk not in sent  # no message: nothing polls the slot
        release.set()
        finished = flow_run_wait(run=second, timeout=60)  # the first run's end sends it
        assert finished is not None and finished.status == "succeeded"
        assert len(server.requests) == 2
    finally:
        release.set()
        before_task_publish.disconnect(record)
        server.stop()


def test_conditions_jump_and_stop(worker):
    flow = make_flow(
        "router",
        [
            {"key": "check", "kind": "condition", "expression": "trigger.amount > 100", "then": "big", "otherwise": "small"},
            {"key": "small", "kind": "transform", "value": "small"},
            {"key": "stop_here", "kind": "condition", "expression": "true", "then": "stop"},
            {"key": "big", "kind": "transform", "value": "big"},
        ],
    )
    assert run_flow(flow, {"amount": 500}).output == "big"
    small = run_flow(flow, {"amount": 5})
    assert small.output == {"result": True, "branch": "stop"}
    assert [key for key, _, _ in steps_of(small)] == ["check", "small", "stop_here"]


def test_on_error_continue_and_go_to(worker):
    flow = make_flow(
        "resilient",
        [
            {"key": "bad", "kind": "transform", "value": "{{ trigger.missing.field }}", "on_error": "continue"},
            {"key": "worse", "kind": "transform", "value": "{{ 1 / 0 }}", "on_error": "goto", "error_step": "handler"},
            {"key": "skipped", "kind": "transform", "value": "never"},
            {"key": "handler", "kind": "transform", "value": {"saw": "{{ steps.worse.error }}", "first": "{{ 'error' in steps.bad }}"}},
        ],
    )
    run = run_flow(flow)
    assert run.status == "succeeded"
    assert [key for key, _, _ in steps_of(run)] == ["bad", "worse", "handler"]
    assert "division by zero" in run.output["saw"] and run.output["first"] is True


def test_an_error_handler_flow_receives_the_failed_runs_summary(worker):
    handler = make_flow("on-failure", [{"key": "keep", "kind": "transform", "value": "{{ trigger }}"}])
    flow = make_flow("fragile", [{"key": "boom", "kind": "transform", "value": "{{ nope }}"}], error_handler="on-failure")
    failed = run_flow(flow)
    assert failed.status == "failed"
    deadline = time.monotonic() + 30
    while not FlowRun.objects.filter(flow=handler, status="succeeded").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    summary = FlowRun.objects.get(flow=handler).output
    assert summary["run_id"] == failed.pk and summary["flow"] == "fragile" and summary["failed_step"] == "boom"
    assert "nope" in summary["error"]


def test_call_flow_runs_another_flow_and_uses_its_result(worker):
    make_flow("double", [{"key": "calc", "kind": "transform", "value": "{{ trigger.n * 2 }}"}])
    caller = make_flow(
        "caller",
        [
            {"key": "call", "kind": "call_flow", "flow": "double", "input": {"n": "{{ trigger.n }}"}},
            {"key": "use", "kind": "transform", "value": "{{ steps.call + 1 }}"},
        ],
    )
    run = run_flow(caller, {"n": 20})
    assert run.output == 41
    child = FlowRun.objects.get(parent_run=run)
    assert child.flow.slug == "double" and child.status == "succeeded" and child.trigger == "call_flow"


def test_a_called_flow_waits_for_a_long_retry_inside_its_callers_run(worker):
    answers = [Reply(status=429, headers={"Retry-After": "3"}), Reply(body={"ok": True})]
    server = RecordingServer(lambda request: answers.pop(0))
    try:
        make_flow("limited", [{"key": "fetch", "kind": "http_request", "url": server.url, "max_attempts": 2}])
        caller = make_flow("caller", [{"key": "call", "kind": "call_flow", "flow": "limited"}])
        run = run_flow(caller, {})
    finally:
        server.stop()
    assert run.status == "succeeded" and run.output["body"] == {"ok": True}
    child = FlowRun.objects.get(parent_run=run)
    assert child.status == "succeeded" and child.pickups == 1  # never parked as a run of its own
    assert steps_of(child) == [("fetch", "failed", 1), ("fetch", "succeeded", 2)]


def test_a_called_flow_whose_retry_comes_after_its_timeout_fails_at_once(worker):
    server = RecordingServer(lambda request: Reply(status=429, headers={"Retry-After": "30"}))
    try:
        make_flow("limited", [{"key": "fetch", "kind": "http_request", "url": server.url, "max_attempts": 2}], timeout_seconds=5)
        caller = make_flow("caller", [{"key": "call", "kind": "call_flow", "flow": "limited"}])
        started = time.monotonic()
        run = run_flow(caller, {})
    finally:
        server.stop()
    assert time.monotonic() - started < 5
    assert run.status == "failed"
    child = FlowRun.objects.get(parent_run=run)
    assert child.status == "failed" and child.error == "The flow took longer than its timeout of 5 s." and child.pickups == 1


def test_a_disabled_flow_does_not_start(worker):
    from flows_app.services.runs import FlowDisabled

    flow = make_flow("off", [{"key": "x", "kind": "transform", "value": 1}], enabled=False)
    with pytest.raises(FlowDisabled):
        flow_run_start(flow=flow, input={})


def test_a_free_run_is_claimed_with_one_statement_on_the_runs_table(db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows_app import runs
    from flows_app.engine import Engine

    flow = make_flow("claimed-at-once", [{"key": "a", "kind": "transform", "value": "{{ trigger }}"}])
    queued = FlowRun.objects.create(flow=flow, input={"n": 1})
    engine = Engine()
    with CaptureQueriesContext(connection) as queries:
        run = runs.claim(queued.pk, engine.owner)
    assert (run.status, run.lease_owner, run.pickups, run.input, run.flow.owner) == ("running", engine.owner, 1, {"n": 1}, flow.owner)
    on_runs = [query["sql"] for query in queries.captured_queries if FlowRun._meta.db_table in query["sql"]]
    assert len(on_runs) == 1 and on_runs[0].startswith("UPDATE")
    assert runs.claim(queued.pk, engine.owner) is None  # held by its lease now


def test_an_answer_from_the_last_step_is_written_with_the_runs_end(db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows_app.engine import Engine

    flow = make_flow(
        "answers-last",
        [
            {"key": "t", "kind": "transform", "value": {"n": "{{ trigger.n }}"}},
            {"key": "reply", "kind": "respond", "status": 201, "body": {"n": "{{ steps.t.n }}"}},
        ],
    )
    queued = FlowRun.objects.create(flow=flow, input={"n": 7})
    with CaptureQueriesContext(connection) as queries:
        Engine().execute(queued.pk)
    run = FlowRun.objects.get(pk=queued.pk)
    assert (run.status, run.response["status"], run.response["body"]) == ("succeeded", 201, {"n": 7})
    assert steps_of(run) == [("t", "succeeded", 1), ("reply", "succeeded", 1)]
    writes = [query["sql"].split()[0] for query in queries.captured_queries if query["sql"].split()[0] in ("INSERT", "UPDATE")]
    assert writes[1:] == ["INSERT", "UPDATE"]  # after the claim: the checkpoints, then the end with the answer



@pytest.mark.parametrize(
    "steps, statements",
    [
        # the claim, the flow with its owner, the steps, the bindings; both pure checkpoints in one
        # INSERT; the end
        ([{"key": "t", "kind": "transform", "value": {"n": "{{ trigger.n }}"}}, {"key": "reply", "kind": "respond", "body": "{{ steps.t }}"}], 6),
        # the same, with the secret's use recorded and the HTTP step checkpointed as soon as it ran
        ([{"key": "me", "kind": "http_request", "url": "{{ trigger.url }}", "secret": "crm"}, {"key": "t", "kind": "transform", "value": "{{ steps.me.status }}"}], 8),
    ],
    ids=["pure", "http-then-pure"],
)
def test_a_two_step_run_issues_no_more_statements_than_before_the_engine_was_split(db, local_server, steps, statements):
    """The counts were measured on the engine before ``runtime``/``runs`` were split out of it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows_app.engine import Engine
    from secrets_app.services.secrets import secret_create

    secret = secret_create(name="crm", kind="api_token", data={"token": "crm-token-4410"})
    flow = make_flow("two-steps", steps)
    queued = FlowRun.objects.create(flow=flow, input={"n": 7, "url": f"{local_server.url}/me"}, secret_ids=[secret.pk])
    with CaptureQueriesContext(connection) as queries:
        Engine().execute(queued.pk)
    assert FlowRun.objects.get(pk=queued.pk).status == "succeeded"
    assert len(queries.captured_queries) <= statements, "\n".join(query["sql"][:120] for query in queries.captured_queries)
