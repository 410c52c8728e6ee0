"""The embedded set-up under load: 8 concurrent sync callers, against the production shape.

    .venv/bin/python bench/embedded.py [--duration 120] [--callers 8]

Two shapes, one after the other, each for ``--duration`` seconds:
  (a) production: PostgreSQL, Redis, gunicorn (project/gunicorn.conf.py), a worker;
  (b) embedded, as ./scripts/run starts it: SQLite and the file-system broker in a fresh
      var/ folder, ``manage.py runserver``, a worker (4 threads, as the Procfile).
Each caller POSTs to an open sync endpoint whose flow computes a value and responds, and
sends its next call when the answer came. Reported per shape: answers per second, answers
other than 200, and whether the worker died (it exited, or logged "Unrecoverable error").
Target: (b) has no worker crash and no answer other than 200, at >= 0.5x the rate of (a).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from tests.workers import ChildProcess, WorkerProcess  # noqa: E402

FLOW = """
flows:
  bench-echo:
    steps:
      - {key: add, kind: transform, value: "{{ trigger.body.n + 1 }}"}
      - {key: reply, kind: respond, status: 200, body: {n: "{{ steps.add }}"}}
    triggers:
      - {kind: endpoint, path: bench-echo, auth: {kind: open}, response: sync, sync_timeout: 30}
"""


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(harness.BIN / "python"), "manage.py", *args], cwd=harness.ROOT, env=env, check=True, capture_output=True)


def load(url: str, *, callers: int, duration: float) -> tuple[float, Counter]:
    import requests

    answers: Counter = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def caller(number: int) -> None:
        session = requests.Session()
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                status = session.post(url, json={"n": n}, timeout=60).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with lock:
                answers[status] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=caller, args=(number,)) for number in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answers.values()) / (time.monotonic() - started), answers


def crashed(worker: ChildProcess) -> bool:
    return worker.process.poll() is not None or "Unrecoverable error" in worker.log()


def measure(env: dict[str, str], server: ChildProcess, url: str, options) -> tuple[float, Counter, bool]:
    flow_file = Path(env.get("FLOWGATE_VAR_DIR") or tempfile.gettempdir()) / "bench-embedded.yaml"
    flow_file.write_text(FLOW)
    manage(env, "migrate", "--noinput")
    manage(env, "apply", str(flow_file))
    worker = WorkerProcess(pool="threads", concurrency=4, base_env=env, name="bench-embedded")  # as the Procfile
    with server, worker:
        load(url, callers=options.callers, duration=min(5.0, options.duration))  # warm-up
        rate, answers = load(url, callers=options.callers, duration=options.duration)
        died = crashed(worker)
    return rate, answers, died


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120, help="seconds of load per shape (after 5 s of warm-up)")
    parser.add_argument("--callers", type=int, default=8)
    options = parser.parse_args()

    production = {**os.environ, **harness.ENVIRONMENT}
    harness._create_database(production["DATABASE_URL"])
    port = harness.free_port()
    results = {"(a) production": measure(production, harness.gunicorn(port), f"http://127.0.0.1:{port}/hooks/bench-echo", options)}

    var = tempfile.mkdtemp(prefix="flowgate-embedded-")
    embedded = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "FLOWGATE_REDIS_URL"}
    }
    port = harness.free_port()
    embedded.update(
        DJANGO_SETTINGS_MODULE="project.settings", DEBUG="true", FLOWGATE_VAR_DIR=var, LOG_LEVEL="WARNING",
        BASE_URL=f"http://127.0.0.1:{port}", PYTHONPATH=str(harness.ROOT),
    )
    runserver = ChildProcess(
        [str(harness.BIN / "python"), "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=embedded, name="runserver", ready_url=f"http://127.0.0.1:{port}/admin/login/",
    )
    results["(b) embedded"] = measure(embedded, runserver, f"http://127.0.0.1:{port}/hooks/bench-echo", options)

    print(f"{options.callers} concurrent sync callers, {options.duration:.0f} s per shape\n")
    print(f"{'shape':<16} {'answers/s':>10} {'non-200':>8} {'worker crashed':>15}  answers")
    for name, (rate, answers, died) in results.items():
        other = sum(count for status, count in answers.items() if status != 200)
        print(f"{name:<16} {rate:>10.1f} {other:>8} {'yes' if died else 'no':>15}  {dict(answers)}")
    ratio = results["(b) embedded"][0] / results["(a) production"][0]
    rate, answers, died = results["(b) embedded"]
    met = not died and set(answers) == {200} and ratio >= 0.5
    print(f"\nembedded / production: {ratio:.2f} (target: no crash, only 200, >= 0.5: {'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
