import json

import pytest

from flows_app.models import FlowRun
from flows_app.services.flows import flow_save, step_spec_from_data
from flows_app.services.runs import flow_run_start, flow_run_wait
from flows_app.services.specs import FlowSpec
from flows_app.services.triggers import endpoint_spec_from_data


def make_flow(slug: str, steps: list[dict], *, acting_user=None, **fields):
    """A flow saved through ``flow_save``, by the operator unless ``acting_user`` is given."""
    steps = [step_spec_from_data(step, acting_user=acting_user) for step in steps]
    spec = FlowSpec(slug=slug, name=fields.pop("name", slug), steps=steps, **fields)
    return flow_save(spec=spec, acting_user=acting_user)[0]


def run_flow(flow, input=None, *, timeout: float = 60, **kwargs) -> FlowRun:
    """Start a run through the real queue and wait for the worker to finish it."""
    run = flow_run_start(flow=flow, input=input or {}, **kwargs)
    finished = flow_run_wait(run=run, timeout=timeout)
    assert finished is not None, f"run {run.pk} did not finish: {FlowRun.objects.get(pk=run.pk).status}"
    return finished


def execute(flow, input=None) -> FlowRun:
    """Run a flow with the real engine in this process (no queue): for step-kind tests."""
    from flows_app.engine import Engine

    run = FlowRun.objects.create(flow=flow, input=input or {})
    Engine().execute(run.pk)
    run.refresh_from_db()
    return run


def steps_of(run: FlowRun) -> list[tuple[str, str, int]]:
    return [(step.step_key, step.status, step.attempt) for step in run.step_runs.order_by("id")]


@pytest.fixture
def worker(celery_worker, transactional_db):
    return celery_worker


def make_endpoint_flow(slug: str, trigger: dict, steps: list[dict] | None = None, **flow_fields):
    """A flow with one endpoint trigger written as in the ``apply`` file."""
    steps = steps or [{"key": "echo", "kind": "transform", "value": "{{ trigger }}"}]
    spec = FlowSpec(
        slug=slug,
        name=slug,
        steps=[step_spec_from_data(step) for step in steps],
        endpoints=[endpoint_spec_from_data({"kind": "endpoint", **trigger})],
        **flow_fields,
    )
    return flow_save(spec=spec)[0]


@pytest.fixture
def call(client):
    """``call(path, body=None, headers=None, method="POST", content_type=...)`` -> response."""

    def send(path, body=None, *, headers=None, method="POST", content_type="application/json", query=""):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in (headers or {}).items()}
        url = f"/hooks/{path}" + (f"?{query}" if query else "")
        return client.generic(method, url, data=body or "", content_type=content_type, **extra)

    return send
