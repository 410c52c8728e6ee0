"""No secret value in stored runs, in logs, or in Celery messages."""

import json
import logging

import pytest
from celery.signals import before_task_publish

from flows_app.models import FlowRun
from secrets_app.services.secrets import secret_create
from tests.contracts import raw_database_text
from tests.flows_app.conftest import make_flow, run_flow
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.worker

TOKEN, PASSWORD = "crm-token-31337-abcdef", "partner-password-8080"


@pytest.fixture
def published():
    messages = []

    def record(body=None, headers=None, **kwargs):
        messages.append(json.dumps({"body": body, "headers": headers}, default=str))

    before_task_publish.connect(record, weak=False, dispatch_uid="redaction-test")
    yield messages
    before_task_publish.disconnect(dispatch_uid="redaction-test")


def test_secret_values_never_reach_runs_logs_or_messages(worker, local_server, published, caplog):
    caplog.set_level(logging.DEBUG)
    secret_create(name="crm", kind="api_token", data={"token": TOKEN})
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": PASSWORD})
    flow = make_flow(
        "leaky",
        [
            {"key": "echo", "kind": "http_request", "url": local_server.url, "secret": "crm"},
            {"key": "reveal", "kind": "transform", "value": {"password": "{{ secrets.get_password('partner') }}", "echoed": "{{ steps.echo.body.headers.Authorization }}"}},
            {"key": "send", "kind": "http_request", "method": "POST", "url": local_server.url, "body_type": "json", "body": {"pw": "{{ steps.reveal.password }}"}},
            {"key": "fail", "kind": "transform", "value": "{{ steps.reveal.password ~ undefined_name }}"},
        ],
    )
    run = run_flow(flow, {"hello": "world"})
    assert run.status == "failed"
    assert json.loads(local_server.last.body) == {"pw": PASSWORD}  # the flow itself used the real value
    stored = raw_database_text()
    for value in (TOKEN, PASSWORD):
        assert value not in stored
        assert value not in run.error
        assert all(value not in message for message in published)
        assert value not in caplog.text
    reveal = run.step_runs.get(step_key="reveal")
    assert reveal.output == {"password": "[secret]", "echoed": "[secret]"}
    assert reveal.raw_output == {"password": PASSWORD, "echoed": f"Bearer {TOKEN}"}  # encrypted, for resuming
    assert published
    for message in published:  # every task message: positional arguments that are ids, nothing else
        args, kwargs, _ = json.loads(message)["body"]
        assert all(isinstance(arg, int) for arg in args) and kwargs == {}


def test_task_messages_carry_only_ids(worker, published):
    flow = make_flow("plain", [{"key": "x", "kind": "transform", "value": "{{ trigger.secretish }}"}])
    run = run_flow(flow, {"secretish": "input-value-1234"})
    assert run.status == "succeeded"
    bodies = [json.loads(message)["body"] for message in published]
    assert [run.pk] in [body[0] for body in bodies]
    assert not any("input-value-1234" in json.dumps(body) for body in bodies)
    assert FlowRun.objects.get(pk=run.pk).input == {"secretish": "input-value-1234"}


def test_a_run_taken_up_again_still_masks_what_its_earlier_steps_revealed(worker, published):
    """A parked retry resumes in a new pickup: the secrets from before must stay masked."""
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": PASSWORD})
    answers = [Reply(status=429, headers={"Retry-After": "3"}), Reply(status=503)]
    server = RecordingServer(lambda request: answers.pop(0) if answers else Reply(status=503))
    try:
        flow = make_flow(
            "parked",
            [
                {"key": "reveal", "kind": "transform", "value": {"password": "{{ secrets.get_password('partner') }}"}},
                {"key": "send", "kind": "http_request", "method": "POST", "url": server.url, "body_type": "json", "body": {"pw": "{{ steps.reveal.password }}"}, "max_attempts": 2},
            ],
        )
        run = run_flow(flow, {})
    finally:
        server.stop()
    assert run.pickups == 2 and run.status == "failed"  # parked after the 429, failed on the 503
    assert json.loads(server.last.body) == {"pw": PASSWORD}
    assert PASSWORD not in raw_database_text()
    assert [step.input["body"] for step in run.step_runs.filter(step_key="send")] == [{"pw": "[secret]"}] * 2


def test_a_called_flow_stores_its_input_masked(worker):
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": PASSWORD})
    make_flow("child", [{"key": "length", "kind": "transform", "value": "{{ trigger.pw | length }}"}])
    parent = make_flow("parent", [{"key": "call", "kind": "call_flow", "flow": "child", "input": {"pw": "{{ secrets.get_password('partner') }}"}}])
    run = run_flow(parent, {})
    assert run.status == "succeeded" and run.output == len(PASSWORD)  # the child got the real value
    child = FlowRun.objects.get(parent_run=run)
    assert child.input == {"pw": "[secret]"}
    assert PASSWORD not in raw_database_text()
