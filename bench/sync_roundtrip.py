"""Flowgate's sync round trip beside its peers: n8n and a minimal Django + Celery app.

    .venv/bin/python bench/sync_roundtrip.py [--n8n DIR] [--flowgate-dir DIR] [--reps 3] [--seconds 15]

The job, the same for every system: ``POST {"id":42,"payload":"hello workflow"}`` to a sync
endpoint (open, as the peers' are) -> one HTTP request to a local echo server with a bearer
token from the system's vault -> answer with fields of the echo's reply. Every system runs in
its production shape, all at once, and is measured in turns with the same wrk load:

  flowgate  gunicorn with project/gunicorn.conf.py and one Celery worker, in the shape of
            docker-compose.yml (``--flowgate-shape``, e.g. ``2x8,prefork:2`` for 2 gunicorn
            processes x 8 threads and a prefork worker of 2), PostgreSQL, Redis; the flow is
            created by ``manage.py apply`` from a YAML file written here (http_request with
            an api_token secret -> respond; an endpoint trigger, open, sync).
            ``--flowgate-dir`` picks the checkout (another branch's worktree), run with its
            own .venv when it has one.
  minimal   the floor (peers/minimal-django-celery), in the shape its README gives
            (2x8,prefork:2): four SQL statements and one publish per request.
  n8n       only with ``--n8n DIR``, a copy of peers/n8n on which setup.sh has run; started
            with the legacy expression engine (n8n's fastest), SQLite, executions saved.

Method (that of peers/n8n/results.md): wrk -t1, keep-alive, closed loop, 1 and 8 callers;
every rep gives each system a warm-up at 8 callers, then its measured runs; reps are
interleaved and the systems' order turns each rep. While wrk runs, /proc is sampled every
0.5 s: CPU (utime + stime) of each system's process trees and of the PostgreSQL backends
connected to its database, and their memory. CPU per request is that CPU over the requests
wrk completed; the echo server, wrk and Redis (shared by both Django apps and by other
users of the machine) are left out. Each Django app gets a database created afresh.

Prints a markdown table (medians over reps) with the ratios the goals are stated in, and
writes every run to ``var/bench/sync-roundtrip-<time>/runs.jsonl`` beside ``summary.md``.
Everything binds and calls 127.0.0.1 only; the echo server is the peers' (port 9500, which
n8n's workflow calls).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402

PEERS = harness.ROOT.parent / "shared" / "peers"  # the checkout sits beside shared/
ECHO_PORT = 9500  # n8n's workflow calls this port
N8N_PORT = 5678
BODY = b'{"id":42,"payload":"hello workflow"}'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CONCURRENCIES = (1, 8)
SAMPLE_SECONDS = 0.5

FLOW_YAML = """\
secrets:
  echo-token: {kind: api_token, token: "${ECHO_TOKEN}"}
flows:
  bench-sync:
    name: Sync round trip benchmark
    steps:
      - key: call
        kind: http_request
        method: POST
        url: "http://127.0.0.1:%(echo_port)d/echo"
        secret: echo-token
        body_type: json
        body: {id: "{{ trigger.body.id }}", from: flowgate}
      - key: reply
        kind: respond
        status: 200
        body:
          ok: true
          id: "{{ trigger.body.id }}"
          upstream_seq: "{{ steps.call.body.seq }}"
          upstream_greeting: "{{ steps.call.body.greeting }}"
    triggers:
      - {kind: endpoint, path: bench-sync, methods: [POST], auth: {kind: open}, response: sync}
"""

MINIMAL_SECRET = """\
import os, django
django.setup()
from limitapp.models import Secret
from limitapp.tasks import fernet
Secret.objects.update_or_create(
    name="echo-token", defaults={"ciphertext": fernet.encrypt(os.environ["ECHO_TOKEN"].encode()).decode()})
"""


# ------------------------------------------------------------------ processes
def in_dir(directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run from ``directory`` (harness.ChildProcess starts in this repository)."""
    return ["env", "-C", str(directory), *argv]


def venv_bin(checkout: Path) -> Path:
    """The checkout's own virtualenv when it has one, else this interpreter's."""
    own = checkout / ".venv" / "bin"
    return own if (own / "python").exists() else harness.BIN


def run_setup(argv: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stdout}\n{done.stderr}")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class System:
    name: str
    url: str
    components: dict[str, harness.ChildProcess]  # label -> the root of a process tree
    database: str = ""  # its PostgreSQL backends are counted as the component "postgres"


@dataclass(frozen=True)
class Shape:
    """gunicorn processes x threads, and the Celery worker's pool and concurrency."""

    web_processes: int = 2
    web_threads: int = 8
    pool: str = "prefork"
    concurrency: int = 2

    @classmethod
    def parse(cls, text: str) -> Shape:
        """``2x8,prefork:2``"""
        found = re.fullmatch(r"(\d+)x(\d+),(prefork|threads):(\d+)", text)
        if found is None:
            raise argparse.ArgumentTypeError("PROCESSESxTHREADS,POOL:CONCURRENCY, e.g. 1x16,threads:8")
        return cls(int(found[1]), int(found[2]), found[3], int(found[4]))

    def __str__(self) -> str:
        return f"{self.web_processes}x{self.web_threads},{self.pool}:{self.concurrency}"


#: The minimal app's shape (its README), and Flowgate's unless --flowgate-shape says otherwise.
MINIMAL_SHAPE = Shape()
FLOWGATE_SHAPE = Shape(2, 8, "threads", 8)  # docker-compose.yml's


def django_system(name: str, directory: Path, bin_: Path, env: dict[str, str], *, port: int, path: str,
                  config: str, wsgi: str, celery_app: str, database_url: str, shape: Shape) -> System:
    """A Django app in production shape: gunicorn gthread with the app's own config and one
    Celery worker."""
    threads = str(shape.web_threads)
    env = {**env, "WEB_CONCURRENCY": str(shape.web_processes), "FLOWGATE_WEB_THREADS": threads, "WEB_THREADS": threads}
    web = harness.ChildProcess(
        in_dir(directory, [str(bin_ / "gunicorn"), "-c", config, "--bind", f"127.0.0.1:{port}", "--log-level", "info",
                           wsgi]),
        env=env, name=f"{name} gunicorn", ready_line="Booting worker",
    )
    worker = harness.ChildProcess(
        in_dir(directory, [str(bin_ / "celery"), "-A", celery_app, "worker", "--pool", shape.pool, "--concurrency", str(shape.concurrency),
                           "--loglevel", "INFO", "--hostname", f"bench-{name}-{os.getpid()}@%h"]),
        env=env, name=f"{name} worker", ready_line=" ready.",
    )
    database = database_url.rsplit("/", 1)[1]
    return System(name, f"http://127.0.0.1:{port}{path}", {"web": web, "worker": worker}, database)


def flowgate(checkout: Path, *, database_url: str, redis_url: str, metrics_dir: str, token: str,
             shape: Shape = FLOWGATE_SHAPE) -> System:
    """The checkout's migrations, then ``apply`` of FLOW_YAML, as an operator deploys a flow."""
    port, bin_ = harness.free_port(), venv_bin(checkout)
    env = {
        **os.environ,
        **harness.ENVIRONMENT,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "BASE_URL": f"http://127.0.0.1:{port}",
        "FLOWGATE_CELERY_QUEUE": f"bench-flowgate-{os.getpid()}",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "PYTHONPATH": str(checkout),
        "ECHO_TOKEN": token,
    }
    env.pop("CELERY_RESULT_BACKEND")  # unset in production (docker-compose.yml): sync runs wake through pub/sub
    env.pop("LOG_LEVEL")  # the production default
    harness.recreate_database(database_url)
    manage = [str(bin_ / "python"), "manage.py"]
    run_setup([*manage, "migrate", "--noinput"], cwd=checkout, env=env, what="flowgate migrate")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(FLOW_YAML % {"echo_port": ECHO_PORT})
        file.flush()
        run_setup([*manage, "apply", file.name], cwd=checkout, env=env, what="flowgate apply")
    return django_system("flowgate", checkout, bin_, env, port=port, path="/hooks/bench-sync",
                         config="project/gunicorn.conf.py", wsgi="project.wsgi", celery_app="project",
                         database_url=database_url, shape=shape)


def minimal(app_dir: Path, *, database_url: str, redis_url: str, token: str) -> System:
    """The floor, set up as its README says, with this interpreter's virtualenv."""
    port, bin_ = harness.free_port(), harness.BIN
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "limitapp.settings",
        "PYTHONPATH": str(app_dir),
        "PYTHONDONTWRITEBYTECODE": "1",  # the peers' folder may be read-only
        "SECRET_KEY": "bench-" + "m" * 50,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "LIMIT_REDIS_URL": redis_url,
        "LIMIT_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "LIMIT_ECHO_URL": f"http://127.0.0.1:{ECHO_PORT}/echo",
        "LIMIT_CELERY_QUEUE": f"bench-minimal-{os.getpid()}",
        "ECHO_TOKEN": token,
    }
    harness.recreate_database(database_url)
    python = str(bin_ / "python")
    run_setup([python, "-m", "django", "migrate", "--noinput"], cwd=app_dir, env=env, what="minimal migrate")
    run_setup([python, "-c", MINIMAL_SECRET], cwd=app_dir, env=env, what="minimal secret")
    return django_system("minimal", app_dir, bin_, env, port=port, path="/hooks/bench", config="gunicorn.conf.py",
                         wsgi="limitapp.wsgi", celery_app="limitapp", database_url=database_url,
                         shape=MINIMAL_SHAPE)


def n8n(copy: Path) -> System:
    """n8n from a set-up copy of peers/n8n (its env.sh: SQLite, loopback, telemetry off)."""
    if not (copy / "node_modules" / "n8n").is_dir():
        raise SystemExit(f"{copy} is not a set-up n8n copy: run its setup.sh first")
    node = harness.ChildProcess(
        ["bash", "-c", f"cd {str(copy)!r} && source ./env.sh && exec node \"$PWD/node_modules/n8n/bin/n8n\" start"],
        env={**os.environ, "N8N_EXPRESSION_ENGINE": "legacy"},
        name="n8n",
        ready_url=f"http://127.0.0.1:{N8N_PORT}/healthz/readiness",
    )
    return System("n8n", f"http://127.0.0.1:{N8N_PORT}/webhook/bench", {"n8n": node})


def smoke(system: System, timeout: float = 90) -> str:
    """One request that must come back 200 with the echo's greeting (workflows activate late)."""
    deadline, answer = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            system.url, data=BODY, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read().decode()
                if "hello from echo" in answer:
                    return answer
        except (urllib.error.HTTPError, OSError) as exc:
            answer = str(exc)
        time.sleep(1)
    raise SystemExit(f"{system.name} did not answer {system.url} with the echo's reply: {answer}")


# ------------------------------------------------------------------ /proc sampling
@dataclass
class Proc:
    ppid: int
    ticks: int
    rss_kb: int
    command: str  # cmdline, read for postgres processes only (their title names the database)


def process_table() -> dict[int, Proc]:
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
            name, fields = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            command = ""
            if name == "postgres":
                with open(f"/proc/{entry}/cmdline") as file:
                    command = file.read().replace("\0", " ")
        except (OSError, ValueError):
            continue  # it ended meanwhile
        table[int(entry)] = Proc(int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE_KB, command)
    return table


def members(system: System, table: dict[int, Proc]) -> dict[str, set[int]]:
    """The processes of each component now: each root's tree, and the database's backends."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    groups = {}
    for label, child in system.components.items():
        tree, todo = set(), [child.process.pid]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo.extend(children.get(pid, []))
        groups[label] = tree
    if system.database:
        title = re.compile(rf"^postgres: (?:\S+: )?\S+ {re.escape(system.database)} ")
        groups["postgres"] = {pid for pid, proc in table.items() if title.match(proc.command)}
    return groups


class Sampler(threading.Thread):
    """CPU and memory of one system's components while wrk runs. A process that starts
    meanwhile counts from zero; one that ends loses at most its last interval."""

    def __init__(self, system: System):
        super().__init__(daemon=True)
        self.system, self.stopping = system, threading.Event()
        self.first: dict[str, dict[int, int]] = {}
        self.last: dict[str, dict[int, int]] = {}
        self.rss_max_kb: dict[str, int] = {}
        self._sample(first=True)

    def _sample(self, first: bool = False) -> None:
        table = process_table()
        for label, pids in members(self.system, table).items():
            ticks = {pid: table[pid].ticks for pid in pids if pid in table}
            if first:
                self.first[label] = ticks
            self.last.setdefault(label, {}).update(ticks)
            self.rss_max_kb[label] = max(self.rss_max_kb.get(label, 0), sum(table[pid].rss_kb for pid in ticks))

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_SECONDS):
            self._sample()

    def finish(self) -> dict[str, dict[str, float]]:
        """Per component: CPU seconds used since the start, and the most memory (MB)."""
        self.stopping.set()
        self.join()
        self._sample()
        return {
            label: {
                "cpu_s": sum(ticks - self.first[label].get(pid, 0) for pid, ticks in last.items()) / CLOCK_TICKS,
                "rss_mb": self.rss_max_kb[label] / 1024,
            }
            for label, last in self.last.items()
        }


def memory(system: System) -> dict[str, int]:
    """RSS (MB) of each component now, PostgreSQL left out (its shared buffers are not the app's)."""
    table = process_table()
    return {label: round(sum(table[pid].rss_kb for pid in pids if pid in table) / 1024)
            for label, pids in members(system, table).items() if label != "postgres"}


def machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as file:
        values = [int(value) for value in file.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # all, idle + iowait


# ------------------------------------------------------------------ load
def wrk(url: str, *, lua: Path, connections: int, seconds: int) -> dict:
    """wrk's closed loop with the peers' request script, which prints a WRKJSON line."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(lua), url],
        env={**os.environ, "WRK_AUTH": ""}, capture_output=True, text=True, timeout=seconds + 60,
    )
    found = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.M)
    if not found:
        raise SystemExit(f"wrk failed on {url} (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(found.group(1))
    errors = sum(result[key] for key in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return {"requests": result["requests"], "rps": result["requests"] / (result["duration_us"] / 1e6),
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000, "errors": errors}


def measure(system: System, *, lua: Path, connections: int, seconds: int) -> dict:
    sampler = Sampler(system)
    machine_before, wrk_before = machine_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    started = time.monotonic()
    result = wrk(system.url, lua=lua, connections=connections, seconds=seconds)
    wall = time.monotonic() - started
    usage = sampler.finish()
    machine_after, wrk_after = machine_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    all_ticks, idle_ticks = (after - before for after, before in zip(machine_after, machine_before))
    cpu_s = sum(part["cpu_s"] for part in usage.values())
    wrk_s = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)
    machine_s = (all_ticks - idle_ticks) / CLOCK_TICKS
    return {
        **result,
        "system": system.name, "connections": connections, "wall_s": wall,
        "cpu_ms_per_request": 1000 * cpu_s / max(1, result["requests"]),
        "cpu_ms_per_request_by": {
            label: 1000 * part["cpu_s"] / max(1, result["requests"]) for label, part in usage.items()
        },
        "rss_mb": sum(part["rss_mb"] for label, part in usage.items() if label != "postgres"),
        "cores_busy": machine_s / wall,
        "cores_busy_other": max(0.0, machine_s - cpu_s - wrk_s) / wall,
    }


# ------------------------------------------------------------------ report
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: list[dict], systems: list[str], *, reps: int, seconds: int, checkout: Path, shape: Shape) -> str:
    def cell(system: str, connections: int, key: str) -> list:
        return [run[key] for run in runs if run["system"] == system and run["connections"] == connections]

    def rps(system: str, connections: int) -> str:
        values = cell(system, connections, "rps")
        return f"{median(values):.1f} [{min(values):.0f}..{max(values):.0f}]"

    lines = [
        f"## Sync round trip: {reps} reps x {seconds} s per system and concurrency (medians; [min..max] over reps)",
        "",
        f"Flowgate checkout: {checkout} ({git_describe(checkout)}), shape {shape}",
        "",
        "| system | req/s, 1 caller | req/s, 8 callers | p50 ms, 1 caller | p50 ms, 8 callers "
        "| CPU ms/request, 1 / 8 callers | CPU ms/request at 8, by part | RSS MB (max) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in systems:
        by_part = {}
        for run in (run for run in runs if run["system"] == system and run["connections"] == 8):
            for label, value in run["cpu_ms_per_request_by"].items():
                by_part.setdefault(label, []).append(value)
        parts = ", ".join(f"{label} {median(values):.1f}" for label, values in by_part.items())
        lines.append(
            f"| {system} | {rps(system, 1)} | {rps(system, 8)} | {median(cell(system, 1, 'p50_ms')):.1f} "
            f"| {median(cell(system, 8, 'p50_ms')):.1f} | {median(cell(system, 1, 'cpu_ms_per_request')):.1f} / "
            f"{median(cell(system, 8, 'cpu_ms_per_request')):.1f} | {parts} "
            f"| {max(cell(system, 1, 'rss_mb') + cell(system, 8, 'rss_mb')):.0f} "
            f"| {sum(cell(system, 1, 'errors') + cell(system, 8, 'errors'))} |"
        )

    def ratio(label: str, goal: str, numerator: tuple, denominator: tuple, met) -> str:
        if denominator[0] not in systems:
            return f"| {label} | {goal} | not measured ({denominator[0]} not run) |"
        value = median(cell(*numerator)) / median(cell(*denominator))
        # each rep's own ratio (its two runs close in time) shows how far the machine's noise moves it
        per_rep = [top / bottom for top, bottom in zip(cell(*numerator), cell(*denominator))]
        return (f"| {label} | {goal} | {value:.2f} [{min(per_rep):.2f}..{max(per_rep):.2f}] "
                f"({'met' if met(value) else 'missed'}) |")

    lines += [
        "",
        "| ratio | goal | ratio of the medians [min..max of each rep's ratio] |",
        "|---|---|---|",
        ratio("Flowgate req/s at 8 callers / n8n's", ">= 2", ("flowgate", 8, "rps"), ("n8n", 8, "rps"),
              lambda v: v >= 2),
        ratio("Flowgate CPU/request / minimal's, 8 callers", "<= 1.3", ("flowgate", 8, "cpu_ms_per_request"),
              ("minimal", 8, "cpu_ms_per_request"), lambda v: v <= 1.3),
        ratio("Flowgate CPU/request / minimal's, 1 caller", "<= 1.3", ("flowgate", 1, "cpu_ms_per_request"),
              ("minimal", 1, "cpu_ms_per_request"), lambda v: v <= 1.3),
        ratio("Flowgate p50 at 1 caller / minimal's", "<= 1.2", ("flowgate", 1, "p50_ms"), ("minimal", 1, "p50_ms"),
              lambda v: v <= 1.2),
        "",
        "CPU is the system's process trees plus, for the Django apps, the PostgreSQL backends of its database; "
        "not the echo server, wrk or Redis. RSS excludes PostgreSQL. Cores busy with anything but the measured "
        "system and wrk (the echo server, the idle systems, other users of the machine) during the runs: median "
        f"{median([run['cores_busy_other'] for run in runs]):.2f} of {os.cpu_count()}, "
        f"max {max(run['cores_busy_other'] for run in runs):.2f}.",
    ]
    return "\n".join(lines)


def git_describe(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:80] or "not a git checkout"


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowgate-dir", type=Path, default=harness.ROOT,
                        help="the checkout to measure (default: this one)")
    parser.add_argument("--flowgate-shape", type=Shape.parse, default=FLOWGATE_SHAPE, metavar="PxT,POOL:N",
                        help=f"gunicorn processes x threads, worker pool:concurrency (default {FLOWGATE_SHAPE})")
    parser.add_argument("--n8n", type=Path,
                        help="a copy of peers/n8n on which setup.sh has run (without it, n8n is left out)")
    parser.add_argument("--peers", type=Path, default=PEERS,
                        help="folder with n8n/ (echo server, wrk script) and minimal-django-celery/")
    parser.add_argument("--reps", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--seconds", type=int, default=15, choices=range(5, 121), metavar="5..120",
                        help="each measured wrk run")
    parser.add_argument("--warmup", type=int, default=5, choices=range(0, 31), metavar="0..30",
                        help="seconds at 8 callers before each system's runs in a rep")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432",
                        help="the server; its databases bench_flowgate and bench_minimal are dropped and created")
    parser.add_argument("--redis-url", default=harness.ENVIRONMENT["CELERY_BROKER_URL"])
    parser.add_argument("--out", type=Path,
                        help="folder for runs.jsonl and summary.md (default var/bench/sync-roundtrip-<time>)")
    options = parser.parse_args()
    checkout = options.flowgate_dir.resolve()
    lua, echo_server = options.peers / "n8n" / "wrk_post.lua", options.peers / "n8n" / "echo_server.py"
    for url in (options.postgres, options.redis_url):
        if re.match(r"^\w+://(?:[^@/]*@)?(127\.0\.0\.1|localhost)[:/]", url) is None:
            raise SystemExit(f"only loopback services: {url}")
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")
    if not (checkout / "project" / "gunicorn.conf.py").exists():
        raise SystemExit(f"{checkout} is not a Flowgate checkout")
    for port in (ECHO_PORT, *((N8N_PORT, N8N_PORT + 1) if options.n8n else ())):
        if not port_free(port):
            raise SystemExit(f"127.0.0.1:{port} is taken (a peer's start.sh still running?)")

    token = os.environ.get("ECHO_TOKEN", "bench-secret-token")  # n8n's credential was imported with this default
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = options.out or harness.ROOT / "var" / "bench" / f"sync-roundtrip-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="flowgate-bench-metrics-"))
        stack.enter_context(harness.ChildProcess(
            ["python3", str(echo_server), "--host", "127.0.0.1", "--port", str(ECHO_PORT)],
            env={**os.environ, "ECHO_TOKEN": token}, name="echo server", ready_line="echo server on",
        ))
        systems = [
            flowgate(checkout, database_url=f"{options.postgres}/bench_flowgate", redis_url=options.redis_url,
                     metrics_dir=metrics_dir, token=token, shape=options.flowgate_shape),
            minimal(options.peers / "minimal-django-celery", database_url=f"{options.postgres}/bench_minimal",
                    redis_url=options.redis_url, token=token),
            *([n8n(options.n8n.resolve())] if options.n8n else []),
        ]
        for system in systems:
            for child in system.components.values():
                child.start(timeout=180)
                stack.callback(child.stop)
            print(f"{system.name}: {system.url} -> {smoke(system)}", flush=True)
        idle = {system.name: memory(system) for system in systems}
        print(f"idle RSS MB: {idle}", flush=True)

        runs = []
        with open(out / "runs.jsonl", "w") as log:
            for rep in range(1, options.reps + 1):
                turn = systems[rep - 1:] + systems[:rep - 1]  # each system leads once in a while
                for system in turn:
                    if options.warmup:
                        wrk(system.url, lua=lua, connections=8, seconds=options.warmup)
                    for connections in CONCURRENCIES:
                        time.sleep(1)
                        run = {"rep": rep, **measure(system, lua=lua, connections=connections, seconds=options.seconds)}
                        runs.append(run)
                        log.write(json.dumps(run) + "\n")
                        log.flush()
                        print(
                            f"rep {rep} {system.name:<8} c={connections} {run['rps']:7.1f} req/s"
                            f"  p50 {run['p50_ms']:7.2f} ms"
                            f"  p99 {run['p99_ms']:7.2f} ms  CPU {run['cpu_ms_per_request']:5.1f} ms/req"
                            f"  RSS {run['rss_mb']:5.0f} MB  errors {run['errors']}"
                            f"  other cores busy {run['cores_busy_other']:.2f}",
                            flush=True,
                        )
    summary = report(runs, [system.name for system in systems], reps=options.reps, seconds=options.seconds,
                     checkout=checkout, shape=options.flowgate_shape)
    summary += f"\n\nRSS MB after start-up, before any request: {idle}. Took {(time.monotonic() - began) / 60:.1f} min."
    (out / "summary.md").write_text(summary + "\n")
    print("\n" + summary + f"\n\nruns: {out / 'runs.jsonl'}")


if __name__ == "__main__":
    main()
