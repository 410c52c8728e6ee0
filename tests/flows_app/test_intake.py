"""Group commit of runs started by concurrent callers (flows_app/intake.py)."""

import threading
import time

import pytest
from django.db import connections

from flows_app import intake
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import flow_run_start
from tests.flows_app.conftest import make_flow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def batches(monkeypatch):
    """The runs of every INSERT the intake makes; the first one waits for ``release``."""
    release, first_started = threading.Event(), threading.Event()
    sizes: list[int] = []
    bulk_create = FlowRun.objects.bulk_create

    def recorded(runs, *args, **kwargs):
        sizes.append(len(runs))
        if len(sizes) == 1:
            first_started.set()
            release.wait(30)
        return bulk_create(runs, *args, **kwargs)

    monkeypatch.setattr(FlowRun.objects, "bulk_create", recorded)
    monkeypatch.setattr(intake, "run_intake", intake.RunIntake())
    monkeypatch.setattr("flows_app.services.runs.run_intake", intake.run_intake)
    return sizes, release, first_started


def start_in_thread(flow, results, n):
    def start():
        try:
            results[n] = flow_run_start(flow=flow, input={"n": n}, group_commit=True)
        except Exception as exc:
            results[n] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=start)
    thread.start()
    return thread


def test_callers_arriving_while_a_batch_is_stored_are_stored_together_in_the_next(batches):
    sizes, release, first_started = batches
    flow = make_flow("intake", [{"key": "x", "kind": "transform", "value": 1}])
    results: dict[int, object] = {}
    threads = [start_in_thread(flow, results, 0)]
    assert first_started.wait(30)  # caller 0 leads, storing its own run alone
    threads += [start_in_thread(flow, results, n) for n in range(1, 6)]
    deadline = time.monotonic() + 30
    while len(intake.run_intake._waiting) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(30)
    assert sizes == [1, 5]
    assert all(isinstance(run, FlowRun) and run.pk for run in results.values()), results
    stored = {run.pk: run.input["n"] for run in FlowRun.objects.all()}
    assert stored == {results[n].pk: n for n in range(6)}  # each caller got its own run


def test_a_run_that_cannot_be_stored_fails_only_its_own_call(batches):
    sizes, release, first_started = batches
    flow = make_flow("intake", [{"key": "x", "kind": "transform", "value": 1}])
    doomed = make_flow("doomed", [{"key": "x", "kind": "transform", "value": 1}])
    results: dict[int, object] = {}
    threads = [start_in_thread(flow, results, 0)]
    assert first_started.wait(30)
    threads += [start_in_thread(flow, results, 1), start_in_thread(doomed, results, 2), start_in_thread(flow, results, 3)]
    deadline = time.monotonic() + 30
    while len(intake.run_intake._waiting) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    Flow.objects.filter(pk=doomed.pk).delete()  # its run's flow is gone when the batch is stored
    release.set()
    for thread in threads:
        thread.join(30)
    assert sizes == [1, 3]  # the batch failed as a whole, then went in one run at a time
    assert isinstance(results[2], Exception)
    assert all(isinstance(results[n], FlowRun) for n in (0, 1, 3))
    assert sorted(FlowRun.objects.values_list("input__n", flat=True)) == [0, 1, 3]
