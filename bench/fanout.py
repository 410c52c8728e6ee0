"""for_each across worker processes: 1,000 items of an HTTP step, with 1 worker process and with 2.

    .venv/bin/python bench/fanout.py [--items 1000] [--concurrency 8] [--repeat 2]

In one process tree, on the same database, broker and local HTTP server: a flow whose one
step requests the local server once per item (``for_each``, at most ``--concurrency`` items
at once) is started and awaited as a user's run is, first with a Celery worker of one
process, then with a worker of two. Each case is warmed up with a 20-item run, then timed
``--repeat`` times (the best time counts). The ratio is the 1-process time over the
2-process time: above 1, the items spread across the workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="items of the measured run")
    parser.add_argument("--concurrency", type=int, default=8, help="the step's for_each_concurrency")
    parser.add_argument("--repeat", type=int, default=2, help="measured runs per case")
    options = parser.parse_args()
    harness.setup_django()

    from flows_app.services.flows import flow_save, step_spec_from_data
    from flows_app.services.runs import flow_run_start, flow_run_wait
    from flows_app.services.specs import FlowSpec

    api = harness.local_api(b'{"ok": true}')
    step = {
        "key": "each",
        "kind": "http_request",
        "url": f"{api.url}/items/{{{{ item }}}}",
        "for_each": "{{ trigger.items }}",
        "for_each_concurrency": options.concurrency,
    }
    flow = flow_save(spec=FlowSpec(slug="bench-fanout", name="bench-fanout", timeout_seconds=3600, steps=[step_spec_from_data(step)]))[0]

    def run_once(count: int) -> float:
        started = time.perf_counter()
        run = flow_run_start(flow=flow, input={"items": list(range(count))}, trigger="bench")
        finished = flow_run_wait(run=run, timeout=1800)
        elapsed = time.perf_counter() - started
        if finished is None or finished.status != "succeeded" or len(finished.output) != count:
            raise SystemExit(f"run {run.pk} did not succeed: {finished and (finished.status, finished.error)}")
        return elapsed

    best = {}
    for processes in (1, 2):
        with harness.worker(concurrency=processes):
            run_once(20)
            best[processes] = min(run_once(options.items) for _ in range(options.repeat))
    api.stop()

    print(f"{options.items} items of an HTTP step to a local server, for_each_concurrency {options.concurrency}")
    print(f"{'worker processes':<18} {'time':>9} {'items/s':>9}")
    for processes, seconds in best.items():
        print(f"{processes:<18} {seconds:>8.2f}s {options.items / seconds:>9.1f}")
    ratio = best[1] / best[2]
    print(f"\nratio 1 process / 2 processes: {ratio:.2f} (target > 1: {'met' if ratio > 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
