"""Worker loss under a backlog: how long a killed worker's runs wait, how full the broker gets.

    .venv/bin/python bench/recovery.py [--runs 1000] [--kills 10]

On the production shape (PostgreSQL, Redis, a worker of two processes), with a 5 s lease
and the recovery task sent every 3 s (as beat would, FLOWGATE_RECOVER_INTERVAL_SECONDS=3):
``--runs`` runs of a flow whose one HTTP step takes a second are queued at once; then, ``--kills``
times, the worker is killed with kill -9 in the middle of its runs and a new one started
at once. For each kill: the time until every run it held was taken up again (its
``pickups`` went up, or it finished). Meanwhile the broker's messages (the queues and
Redis' unacknowledged set) are counted every 0.2 s. Targets: every killed worker's runs taken
up within lease + recovery interval + a few seconds (about 10 s); at most 1.2 messages per
run in the broker at any time.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402

LEASE, RECOVER_EVERY = 5, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--give-up", type=float, default=300, help="seconds to wait for a killed worker's runs")
    options = parser.parse_args()
    harness.ENVIRONMENT["FLOWGATE_RUN_LEASE_SECONDS"] = str(LEASE)
    harness.setup_django()

    import redis

    from flows_app.models import FlowRun
    from flows_app.services.flows import flow_save, step_spec_from_data
    from flows_app.services.runs import flow_run_start
    from flows_app.services.specs import FlowSpec
    from flows_app.tasks import flow_runs_recover_stalled
    from project.celery import app

    FlowRun.objects.all().delete()
    api = harness.RecordingServer(lambda request: (time.sleep(1), harness.Reply(body={"ok": True}))[1])
    spec = FlowSpec(slug="bench-slow", name="bench-slow", steps=[step_spec_from_data({"key": "call", "kind": "http_request", "url": api.url})])
    flow = flow_save(spec=spec)[0]
    broker = redis.Redis.from_url(harness.ENVIRONMENT["CELERY_BROKER_URL"])
    queues = [app.conf.task_default_queue, f"{app.conf.task_default_queue}.housekeeping"]
    broker.delete(*queues, "unacked", "unacked_index")

    peak, stop = [0], threading.Event()

    def count_messages() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], sum(broker.llen(queue) for queue in queues) + broker.hlen("unacked"))

    def recover_like_beat() -> None:
        while not stop.wait(RECOVER_EVERY):
            flow_runs_recover_stalled.delay()

    for _ in range(options.runs):
        flow_run_start(flow=flow, input={}, trigger="bench")
    threading.Thread(target=count_messages, daemon=True).start()
    threading.Thread(target=recover_like_beat, daemon=True).start()

    waits = []
    worker = harness.worker().start()
    try:
        for kill in range(options.kills):
            deadline = time.monotonic() + 120
            while not FlowRun.objects.filter(status="running").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            held = dict(FlowRun.objects.filter(status="running").values_list("pk", "pickups"))
            if not held:
                print("no run is running: the backlog is gone; stopping")
                break
            killed_at = time.monotonic()
            worker.kill()
            worker = harness.worker().start()
            waiting = dict(held)
            while waiting and time.monotonic() - killed_at < options.give_up:
                for pk, pickups, status in FlowRun.objects.filter(pk__in=waiting).values_list("pk", "pickups", "status"):
                    if pickups > waiting[pk] or status in FlowRun.FINISHED:
                        del waiting[pk]
                time.sleep(0.1)
            took = time.monotonic() - killed_at
            waits.append(None if waiting else took)
            left = FlowRun.objects.exclude(status__in=FlowRun.FINISHED).count()
            print(f"kill {kill + 1}: {len(held)} runs held, taken up again after "
                  f"{'more than ' if waiting else ''}{took:.1f} s; {left} runs not finished; broker peak so far {peak[0]}")
    finally:
        stop.set()
        worker.stop()
        api.stop()
    lost = [wait for wait in waits if wait is None]
    measured = [wait for wait in waits if wait is not None]
    print(f"\n{options.runs} runs, {len(waits)} kills, lease {LEASE} s, recovery every {RECOVER_EVERY} s")
    print(f"longest wait from kill to resumption: {max(measured):.1f} s" + (f" ({len(lost)} kills beyond {options.give_up:.0f} s)" if lost else ""))
    print(f"broker peak: {peak[0]} messages, {peak[0] / options.runs:.2f} per run (target <= 1.2)")


if __name__ == "__main__":
    main()
