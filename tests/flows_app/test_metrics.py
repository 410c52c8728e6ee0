"""The flow engine's metrics, read from /metrics while real workers do the work."""

import pytest
from django.db import transaction

from flows_app.services.runs import flow_run_cancel, flow_run_start
from tests.flows_app.conftest import make_endpoint_flow, make_flow, run_flow


def moved(before, after, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


class TestRuns:
    @pytest.mark.parametrize(
        "slug, value, status",
        [("metrics-succeeds", "{{ 21 * 2 }}", "succeeded"), ("metrics-fails", "{{ 1 / 0 }}", "failed")],
    )
    def test_a_run_on_a_worker_counts_its_start_its_end_and_its_step(self, worker, scrape, slug, value, status):
        flow = make_flow(slug, [{"key": "only", "kind": "transform", "value": value}])
        before = scrape()
        assert run_flow(flow).status == status
        after = scrape()
        assert moved(before, after, "flowgate_runs_started_total", flow=slug, trigger="manual") == 1
        assert moved(before, after, "flowgate_runs_finished_total", flow=slug, status=status) == 1
        step = {"kind": "transform", "status": status}
        assert moved(before, after, "flowgate_step_duration_seconds_count", **step) == 1
        assert moved(before, after, "flowgate_step_duration_seconds_bucket", le="+Inf", **step) == 1

    def test_a_run_cancelled_before_it_ran_is_counted_once(self, transactional_db, scrape):
        flow = make_flow("metrics-cancel", [{"key": "t", "kind": "transform", "value": "1"}])
        before = scrape()
        with transaction.atomic():  # its task is sent on commit, when the run has ended
            run = flow_run_start(flow=flow, input={})
            assert flow_run_cancel(run=run) and not flow_run_cancel(run=run)
        after = scrape()
        assert moved(before, after, "flowgate_runs_finished_total", flow="metrics-cancel", status="cancelled") == 1


class TestEndpoints:
    def test_an_endpoint_call_moves_the_latency_histogram_of_its_path(self, db, call, scrape):
        make_endpoint_flow("metrics-hook", {"path": "metrics/hook", "auth": {"kind": "open"}})
        before = scrape()
        assert call("metrics/hook", {"order": 1}).status_code == 202
        assert call("metrics/hook", method="GET").status_code == 405
        after = scrape()
        name = "flowgate_webhook_latency_seconds_count"
        assert moved(before, after, name, path="metrics/hook", status_class="2xx") == 1
        assert moved(before, after, name, path="metrics/hook", status_class="4xx") == 1

    def test_calls_to_paths_no_trigger_has_share_one_label(self, db, call, scrape):
        before = scrape()
        assert call("made-up-by-a-caller-4711").status_code == 404
        after = scrape()
        assert moved(before, after, "flowgate_webhook_latency_seconds_count", path="(none)", status_class="4xx") == 1
        assert "made-up-by-a-caller-4711" not in after.label_values("flowgate_webhook_latency_seconds_count", "path")
