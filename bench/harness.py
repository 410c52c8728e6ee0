"""What the benchmarks share: one environment, real processes, and a report.

Every benchmark runs its baseline and the product in the same process tree, on the
machine's PostgreSQL (database ``flowgate_bench``, created and migrated here) and Redis
(database 13), with a Celery worker process and, where HTTP is measured, gunicorn with
two workers: the settings of a production deployment. Results are printed as a table
with the ratios that the README's targets are stated in.

    .venv/bin/python bench/engine.py
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "DEBUG": "false",
    "SECRET_KEY": "bench-" + "k" * 50,
    "FLOWGATE_ENCRYPTION_KEYS": "Mk8OzF4p0b1n7yq1u3v6LhZkq0m8Y4b2x1c9v8b7n6M=",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "BASE_URL": "http://127.0.0.1:8765",
    "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/flowgate_bench"),
    "CELERY_BROKER_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "CELERY_RESULT_BACKEND": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "FLOWGATE_ALLOW_NETWORKS": "127.0.0.0/8",
    "FLOWGATE_CELERY_QUEUE": f"bench-{os.getpid()}",
    "LOG_LEVEL": "WARNING",
    "PYTHONPATH": str(ROOT),
}


def setup_django() -> None:
    """Point this process at the benchmark database and broker, create and migrate it."""
    os.environ.update(ENVIRONMENT)
    _create_database(ENVIRONMENT["DATABASE_URL"])
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _create_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


class Process:
    """A child process in its own process group, stopped with everything it started."""

    def __init__(self, name: str, argv: list[str], ready: str, env: dict[str, str] | None = None):
        self.name, self.argv, self.ready_text = name, argv, ready
        self.env = {**os.environ, **ENVIRONMENT, **(env or {})}
        self.output: list[str] = []
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Process:
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                if self.ready_text and self.ready_text in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if getattr(self, "ready_url", None):
            self._wait_for_http()
        elif not ready.wait(60):
            self.__exit__()
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.output[-40:]))
        return self

    def waiting_for_http(self, url: str) -> Process:
        """Ready once ``url`` answers (for servers that print nothing when ready)."""
        self.ready_url = url
        return self

    def _wait_for_http(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"{self.name} did not answer at {self.ready_url}:\n" + "".join(self.output[-40:]))

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def worker(concurrency: int = 2) -> Process:
    return Process(
        "celery worker",
        [str(BIN / "celery"), "-A", "project", "worker", "--pool", "prefork", "--concurrency", str(concurrency),
         "--include", "bench.tasks", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
         "--hostname", f"bench-{secrets.token_hex(4)}@%h"],
        ready=" ready.",
    )


def gunicorn(port: int) -> Process:
    """The product's gunicorn settings (project/gunicorn.conf.py: 2 workers, threads)."""
    return Process(
        "gunicorn",
        [str(BIN / "gunicorn"), "-c", str(ROOT / "project" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "project.wsgi"],
        ready="",
        env={"DJANGO_SETTINGS_MODULE": "bench.settings"},
    ).waiting_for_http(f"http://127.0.0.1:{port}/bench/bare")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def summary(samples: list[float]) -> str:
    return f"p50 {milliseconds(statistics.median(samples))}, p99 {milliseconds(percentile(samples, 0.99))}"


def timed(function, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples
