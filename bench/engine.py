"""The flow engine's overhead per step, as a ratio to a bare Celery round trip.

    .venv/bin/python bench/engine.py [--runs 30]

In one process tree, on the same Redis broker and the same worker process:
  (a) the baseline: send a no-op task and wait for its result;
  (b) flows of 1, 20 and 40 transform steps, and of 1 and 5 HTTP steps against a local
      server, each started and awaited as a user's run is (FlowRun row, task, pub/sub
      wake-up).
The overhead per step is the slope between two flow lengths (for HTTP steps, less the
time of the same request sent directly); the fixed cost of a run is the 1-step flow less
the baseline. Targets: overhead per step at most the bare round trip (ratio <= 1), a
40-step flow in under 0.4 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="measured runs of each case (after 5 warm-up runs)")
    options = parser.parse_args()
    harness.setup_django()

    import requests

    from flows_app.models import Flow
    from flows_app.services.flows import flow_save, step_spec_from_data
    from flows_app.services.runs import flow_run_start, flow_run_wait
    from flows_app.services.specs import FlowSpec
    from project.celery import app

    api = harness.local_api(b'{"ok": true}')
    api_url = f"{api.url}/ping"

    def flow(slug: str, steps: list[dict]) -> Flow:
        spec = FlowSpec(slug=slug, name=slug, steps=[step_spec_from_data(step) for step in steps])
        return flow_save(spec=spec)[0]

    def transforms(count: int) -> list[dict]:
        """A chain in which every step reads the output of the one before it."""
        first = {"key": "s0", "kind": "transform", "value": {"n": 0}}
        rest = [
            {"key": f"s{n}", "kind": "transform", "value": {"n": n, "previous": f"{{{{ steps.s{n - 1}.n }}}}"}}
            for n in range(1, count)
        ]
        return [first, *rest]
    cases = {
        "1 transform step": flow("bench-transform-1", transforms(1)),
        "20 transform steps": flow("bench-transform-20", transforms(20)),
        "40 transform steps": flow("bench-transform-40", transforms(40)),
        "1 HTTP step": flow("bench-http-1", [{"key": "h0", "kind": "http_request", "url": api_url}]),
        "5 HTTP steps": flow("bench-http-5", [{"key": f"h{n}", "kind": "http_request", "url": api_url} for n in range(5)]),
    }

    def run_once(target: Flow) -> None:
        run = flow_run_start(flow=target, input={}, trigger="bench")
        finished = flow_run_wait(run=run, timeout=60)
        if finished is None or finished.status != "succeeded":
            raise SystemExit(f"run {run.pk} of {target.slug} did not succeed: {finished and finished.error}")

    session = requests.Session()
    with harness.worker():
        noop = lambda: app.send_task("bench.noop").get(timeout=30)  # noqa: E731
        harness.timed(noop, 5)
        baseline = harness.timed(noop, options.runs)
        direct = harness.timed(lambda: session.get(api_url, timeout=5).raise_for_status(), options.runs)
        results = {}
        for name, target in cases.items():
            harness.timed(lambda target=target: run_once(target), 5)
            results[name] = harness.timed(lambda target=target: run_once(target), options.runs)
    api.stop()

    bare, request = statistics.median(baseline), statistics.median(direct)
    median = {name: statistics.median(samples) for name, samples in results.items()}
    print(f"(a) bare Celery round trip:  {harness.summary(baseline)}")
    print(f"    direct HTTP request:     {harness.summary(direct)}")
    print()
    for name, samples in results.items():
        print(f"{name + ':':<28} {harness.summary(samples)}")
    print()
    rows = [
        ("fixed cost of a run", median["1 transform step"] - bare),
        ("per transform step", (median["40 transform steps"] - median["20 transform steps"]) / 20),
        ("per HTTP step", (median["5 HTTP steps"] - median["1 HTTP step"]) / 4 - request),
    ]
    print(f"{'engine overhead':<22} {'time':>10} {'ratio to (a)':>13}")
    for label, value in rows:
        print(f"{label:<22} {harness.milliseconds(value):>10} {value / bare:>13.2f}")
    forty = median["40 transform steps"]
    print(f"\n40-step flow end to end: {harness.milliseconds(forty)} (target < 400 ms: {'met' if forty < 0.4 else 'MISSED'})")


if __name__ == "__main__":
    main()
