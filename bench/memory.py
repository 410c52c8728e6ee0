"""Memory of each Flowgate process, after start-up and after a load of sync endpoint calls.

    .venv/bin/python bench/memory.py [--shape production|embedded] [--web-workers 2] [--web-threads 8]
                                     [--preload] [--gunicorn-config FILE] [--seconds 20]
                                     [--worker-args "--pool prefork --concurrency 2"]

production  gunicorn with project/gunicorn.conf.py, a Celery worker and beat, on PostgreSQL
            (--database-url, dropped and created here) and Redis (--redis-url); process counts
            from the options (defaults: those of docker-compose.yml and bench/sync_roundtrip.py).
embedded    as ./scripts/run starts it (the Procfile): runserver and one worker with beat, on
            SQLite and the file-system broker in a fresh folder.

The load is bench/sync_roundtrip.py's flow (http_request to a local echo server, respond)
called by wrk at 8 callers. Printed per process: RSS, PSS (its share of pages shared with
other processes, /proc/<pid>/smaps_rollup) and USS (its private pages), in MB, after
start-up and after the load, and the most RSS of each tree seen during the load. PSS adds
up to what the processes cost the machine together; RSS counts a page that gunicorn's or
Celery's children share with their master once per process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, sync_roundtrip  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    stat = file.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return found


def usage(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of one process, MB."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            key, _, rest = line.partition(":")
            if key in {"Rss", "Pss", "Private_Clean", "Private_Dirty"}:
                values[key] = int(rest.split()[0]) / 1024
    return {"rss": values["Rss"], "pss": values["Pss"], "uss": values["Private_Clean"] + values["Private_Dirty"]}


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline") as file:
        return " ".join(Path(part).name if index == 0 else part
                        for index, part in enumerate(file.read().split("\0")[:6]))


def snapshot(components: dict[str, harness.ChildProcess]) -> dict[str, list[tuple[int, str, dict]]]:
    """Each component's processes: the root's tree, wrappers such as ``env -C`` left out."""
    found = {}
    for label, child in components.items():
        rows = []
        for pid in tree(child.process.pid):
            try:
                rows.append((pid, command_line(pid), usage(pid)))
            except (OSError, KeyError):
                continue  # it ended meanwhile
        found[label] = rows
    return found


class Peak(threading.Thread):
    """The most RSS of each component's tree, sampled every 0.5 s."""

    def __init__(self, components):
        super().__init__(daemon=True)
        self.components, self.stopping, self.most = components, threading.Event(), {}

    def run(self):
        while not self.stopping.wait(0.5):
            for label, rows in snapshot(self.components).items():
                self.most[label] = max(self.most.get(label, 0), sum(row[2]["rss"] for row in rows))


def production(options, env: dict[str, str]) -> dict[str, harness.ChildProcess]:
    port = harness.free_port()
    env.update(WEB_CONCURRENCY=str(options.web_workers), FLOWGATE_WEB_THREADS=str(options.web_threads),
               BASE_URL=f"http://127.0.0.1:{port}")
    bin_ = harness.BIN
    return {
        "web": harness.ChildProcess(
            [str(bin_ / "gunicorn"), "-c", options.gunicorn_config, "--bind", f"127.0.0.1:{port}",
             *(["--preload"] if options.preload else []), "project.wsgi"],
            env=env, name="gunicorn", ready_line="Booting worker"),
        "worker": harness.ChildProcess(
            [str(bin_ / "celery"), "-A", "project", "worker", *shlex.split(options.worker_args), "--loglevel", "INFO",
             "--hostname", f"memory-{os.getpid()}@%h"],
            env=env, name="worker", ready_line=" ready."),
        "beat": harness.ChildProcess(
            [str(bin_ / "celery"), "-A", "project", "beat", "--loglevel", "INFO",
             "--schedule", str(Path(env["FLOWGATE_VAR_DIR"]) / "celerybeat-schedule")],
            env=env, name="beat", ready_line="beat: Starting"),
    }, f"http://127.0.0.1:{port}/hooks/bench-sync"


def embedded(options, env: dict[str, str]):
    port = harness.free_port()
    env.update(DEBUG="true", BASE_URL=f"http://127.0.0.1:{port}")
    return {
        "web": harness.ChildProcess(
            [str(harness.BIN / "python"), "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env, name="runserver", ready_url=f"http://127.0.0.1:{port}/admin/login/"),
        "worker": harness.ChildProcess(
            [str(harness.BIN / "celery"), "-A", "project", "worker", "--loglevel", "INFO", "--pool", "threads",
             "--concurrency", "4", "--beat-thread", "--schedule", str(Path(env["FLOWGATE_VAR_DIR"]) / "celerybeat-schedule"),
             "--hostname", f"memory-{os.getpid()}@%h"],
            env=env, name="worker", ready_line=" ready."),
    }, f"http://127.0.0.1:{port}/hooks/bench-sync"


def table(title: str, found: dict, peak: dict | None = None) -> str:
    lines = [f"### {title}", "", "| process | RSS | PSS | USS |", "|---|---|---|---|"]
    for label, rows in found.items():
        for pid, command, mb in rows:
            lines.append(f"| {label} {pid} `{command[:70]}` | {mb['rss']:.0f} | {mb['pss']:.0f} | {mb['uss']:.0f} |")
        total = {key: sum(row[2][key] for row in rows) for key in ("rss", "pss", "uss")}
        most = f" (most RSS during load {peak[label]:.0f})" if peak else ""
        lines.append(f"| **{label} total**{most} | **{total['rss']:.0f}** | **{total['pss']:.0f}** "
                     f"| **{total['uss']:.0f}** |")
    lines.append(f"| **all** | {sum(r[2]['rss'] for rows in found.values() for r in rows):.0f} "
                 f"| {sum(r[2]['pss'] for rows in found.values() for r in rows):.0f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("production", "embedded"), default="production")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--preload", action="store_true", help="gunicorn --preload")
    parser.add_argument("--gunicorn-config", default="project/gunicorn.conf.py",
                        help="another gunicorn settings file, to try one (it may exec this one first)")
    parser.add_argument("--worker-args", default="--pool threads --concurrency 8")  # docker-compose.yml's
    parser.add_argument("--seconds", type=int, default=20, help="of load at 8 callers, after 5 s of warm-up")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/flowgate_memory",
                        help="dropped and created")
    parser.add_argument("--redis-url", default=harness.ENVIRONMENT["CELERY_BROKER_URL"])
    options = parser.parse_args()

    token, echo_port = "bench-secret-token", harness.free_port()
    var = tempfile.mkdtemp(prefix="flowgate-memory-")
    env = {**os.environ, **harness.ENVIRONMENT, "FLOWGATE_VAR_DIR": var, "ECHO_TOKEN": token,
           "PROMETHEUS_MULTIPROC_DIR": f"{var}/metrics", "FLOWGATE_NOTICES_SHOWN": "true"}
    for key in ("CELERY_RESULT_BACKEND", "LOG_LEVEL"):
        env.pop(key)  # unset in production (docker-compose.yml)
    if options.shape == "production":
        env.update(DATABASE_URL=options.database_url, CELERY_BROKER_URL=options.redis_url)
        harness.recreate_database(options.database_url)
        components, url = production(options, env)
    else:
        for key in ("DATABASE_URL", "CELERY_BROKER_URL", "FLOWGATE_REDIS_URL"):
            env.pop(key, None)
        components, url = embedded(options, env)
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    manage = [str(harness.BIN / "python"), "manage.py"]
    sync_roundtrip.run_setup([*manage, "migrate", "--noinput"], cwd=harness.ROOT, env=env, what="migrate")
    flow = Path(var) / "flow.yaml"
    flow.write_text(sync_roundtrip.FLOW_YAML.replace("%(echo_port)d", str(echo_port)))
    sync_roundtrip.run_setup([*manage, "apply", str(flow)], cwd=harness.ROOT, env=env, what="apply")
    lua = sync_roundtrip.PEERS / "n8n" / "wrk_post.lua"
    echo = harness.ChildProcess(
        ["python3", str(sync_roundtrip.PEERS / "n8n" / "echo_server.py"), "--host", "127.0.0.1", "--port",
         str(echo_port)], env={**os.environ, "ECHO_TOKEN": token}, name="echo", ready_line="echo server on")
    with echo:
        try:
            for child in components.values():
                child.start(timeout=180)
            time.sleep(3)  # the last children are up
            system = sync_roundtrip.System("flowgate", url, components)
            answer = sync_roundtrip.smoke(system)
            assert "hello from echo" in answer, answer
            idle = snapshot(components)
            sync_roundtrip.wrk(url, lua=lua, connections=8, seconds=5)
            peak = Peak(components)
            peak.start()
            result = sync_roundtrip.wrk(url, lua=lua, connections=8, seconds=options.seconds)
            peak.stopping.set()
            peak.join()
            loaded = snapshot(components)
        finally:
            for child in components.values():
                child.stop()
    shape = vars(options) if options.shape == "production" else {"shape": "embedded"}
    print(f"## {shape}\n")
    print(table("after start-up and one call", idle))
    print()
    print(table(f"after {options.seconds} s at 8 callers: {result['rps']:.0f} req/s, "
                f"{result['errors']} errors", loaded, peak.most))


if __name__ == "__main__":
    main()
