"""Endpoint triggers under load: async ingest throughput and the sync round trip.

    .venv/bin/python bench/endpoints.py [--seconds 10]

One process tree, the product's server settings (gunicorn from project/gunicorn.conf.py:
2 workers), PostgreSQL and Redis; wrk (Debian's package) sends the requests.
  ingest  POST with a JWT (RS256, with a required scope) to an endpoint that answers
          202, as requests per second and as a ratio to a bare Django view answering
          200 on the same server (target >= 0.5). No worker runs meanwhile: this measures
          the door, not the flows behind it (their runs are deleted afterwards).
  sync    the same JWT to an endpoint whose flow makes one HTTP request to a local
          server and responds; p50 and p99 latency at one request at a time and at 8
          (target p50 <= 25 ms at one at a time).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402

LUA = Path(__file__).with_name("post.lua")


def wrk(url: str, *, connections: int, seconds: int, token: str) -> dict[str, float]:
    """Run wrk and read requests/s and latency percentiles (ms) from its report."""
    threads = min(connections, 2)
    output = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(LUA), url],
        env={**os.environ, "BENCH_TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"wrk saw failed requests for {url}:\n{output}")

    def duration(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": duration("50%"),
        "p99": duration("99%"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench/endpoints.py needs wrk: apt-get install wrk")
    harness.setup_django()

    from flows_app.models import Flow, FlowRun
    from flows_app.services.flows import flow_save, step_spec_from_data
    from flows_app.services.specs import FlowSpec
    from flows_app.services.triggers import endpoint_spec_from_data
    from project.celery import app
    from secrets_app.api import Vault
    from secrets_app.models import Secret
    from secrets_app.services.secrets import secret_create

    api = harness.local_api(b'{"name": "Ada"}')

    if not Secret.objects.filter(name="bench-signer").exists():
        secret_create(name="bench-signer", kind="rs256", data={"generate": True})
    token = Vault().sign_jws("bench-signer", {"sub": "bench", "scope": "orders:write", "iss": "bench"}, expires_in=3600)
    auth = {"kind": "jwt", "secret": "bench-signer", "issuer": "bench", "scopes": ["orders:write"]}

    def flow(slug: str, steps: list[dict], trigger: dict) -> Flow:
        spec = FlowSpec(
            slug=slug,
            name=slug,
            steps=[step_spec_from_data(step) for step in steps],
            endpoints=[endpoint_spec_from_data({"kind": "endpoint", "path": slug, "auth": auth, **trigger})],
        )
        return flow_save(spec=spec)[0]

    ingest = flow("bench-ingest", [{"key": "keep", "kind": "transform", "value": "{{ trigger.body }}"}], {})
    flow(
        "bench-sync",
        [
            {"key": "me", "kind": "http_request", "url": f"{api.url}/me"},
            {"key": "reply", "kind": "respond", "body": {"name": "{{ steps.me.body.name }}"}},
        ],
        {"response": "sync"},
    )
    port = harness.free_port()
    base = f"http://127.0.0.1:{port}"
    results = {}
    with harness.gunicorn(port):
        wrk(f"{base}/bench/bare", connections=8, seconds=2, token=token)  # warm up both workers
        wrk(f"{base}/hooks/bench-ingest", connections=8, seconds=2, token=token)
        results["bare"] = wrk(f"{base}/bench/bare", connections=8, seconds=options.seconds, token=token)
        results["ingest"] = wrk(f"{base}/hooks/bench-ingest", connections=8, seconds=options.seconds, token=token)
        FlowRun.objects.filter(flow=ingest).delete()
        app.control.purge()
        with harness.worker():
            wrk(f"{base}/hooks/bench-sync", connections=1, seconds=2, token=token)
            results["sync-1"] = wrk(f"{base}/hooks/bench-sync", connections=1, seconds=options.seconds, token=token)
            results["sync-8"] = wrk(f"{base}/hooks/bench-sync", connections=8, seconds=options.seconds, token=token)
    api.stop()

    ratio = results["ingest"]["rps"] / results["bare"]["rps"]
    print(f"bare Django view (200):        {results['bare']['rps']:8.0f} requests/s")
    print(f"JWT endpoint, async (202):     {results['ingest']['rps']:8.0f} requests/s")
    print(f"ingest ratio to the bare view: {ratio:8.2f}   (target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'})")
    print()
    for name, label in (("sync-1", "one at a time"), ("sync-8", "8 at a time")):
        result = results[name]
        print(f"sync round trip, {label:<14} p50 {result['p50']:6.2f} ms   p99 {result['p99']:6.2f} ms   {result['rps']:6.0f} requests/s")
    p50 = results["sync-1"]["p50"]
    print(f"sync p50 at one at a time: {p50:.2f} ms (target <= 25 ms: {'met' if p50 <= 25 else 'MISSED'})")


if __name__ == "__main__":
    main()
