"""What history stores of large values: capped copies with a marker, never two whole copies."""

import json

import pytest

from flows_app.engine import Engine
from flows_app.models import FlowRun
from flows_app.services.runs import flow_run_rerun
from tests.flows_app.conftest import execute, make_flow
from tests.servers import Reply

pytestmark = pytest.mark.django_db(transaction=True)

CAP = 10_000
BLOB = "x" * 50_000


@pytest.fixture
def capped(settings):
    settings.FLOWGATE_MAX_STORED_OUTPUT_BYTES = CAP


def stored_json(run: FlowRun) -> list[str]:
    """Every JSON value the run's history holds for its steps and itself, as text."""
    values = [run.output]
    for step_run in run.step_runs.all():
        values += [step_run.input, step_run.output, step_run.raw_output]
    return [json.dumps(value) for value in values]


def test_step_output_over_the_cap_is_stored_truncated_with_a_marker(capped):
    flow = make_flow(
        "large",
        [
            {"key": "big", "kind": "transform", "value": "{{ trigger.blob }}"},
            {"key": "size", "kind": "transform", "value": "{{ steps.big | length }}"},
            {"key": "copy", "kind": "transform", "value": {"again": "{{ steps.big }}"}},
        ],
    )
    run = execute(flow, {"blob": BLOB})
    assert run.status == "succeeded", run.error
    big = run.step_runs.get(step_key="big")
    assert big.output == {"truncated": True, "size": len(json.dumps(BLOB)), "preview": json.dumps(BLOB)[:2000]}
    assert big.raw_output is None
    assert run.step_runs.get(step_key="size").output == 50_000  # the next step saw the whole value


def test_the_run_output_is_not_a_second_whole_copy_of_the_last_step_output(capped):
    flow = make_flow("echo", [{"key": "copy", "kind": "transform", "value": {"again": "{{ trigger.blob }}"}}])
    run = execute(flow, {"blob": BLOB})
    assert run.status == "succeeded", run.error
    assert run.output["truncated"] is True and run.output["size"] > 50_000
    assert all(len(text) <= CAP for text in stored_json(run))  # no stored copy is whole


def test_outputs_under_the_cap_are_stored_exactly(capped):
    flow = make_flow("small", [{"key": "copy", "kind": "transform", "value": {"again": "{{ trigger.blob }}"}}])
    run = execute(flow, {"blob": "x" * 100})
    assert run.output == {"again": "x" * 100} == run.step_runs.get().output


def test_a_run_continuing_from_a_truncated_output_fails_with_the_reason(capped, local_server, monkeypatch):
    monkeypatch.setattr("flows_app.dispatch.enqueue_run", lambda run_id, countdown=0: None)  # run below, here
    local_server.handler = lambda request: Reply(status=404)
    flow = make_flow(
        "resume",
        [
            {"key": "big", "kind": "transform", "value": "{{ trigger.blob }}"},
            {"key": "send", "kind": "http_request", "method": "POST", "url": local_server.url, "body_type": "json", "body": {"b": "{{ steps.big }}"}},
        ],
    )
    failed = execute(flow, {"blob": BLOB})
    assert failed.status == "failed"
    rerun = flow_run_rerun(run=failed)
    Engine().execute(rerun.pk)
    rerun.refresh_from_db()
    assert rerun.status == "failed"
    assert "Step 'big' produced 50002 bytes, more than FLOWGATE_MAX_STORED_OUTPUT_BYTES" in rerun.error
    assert len(local_server.requests) == 1  # the step after it did not run with the marker
