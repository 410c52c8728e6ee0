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
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests.servers import RecordingServer, Reply  # noqa: E402  (the same local server as the tests)
from tests.workers import ChildProcess, WorkerProcess, free_port  # noqa: E402, F401  (the same child processes and ports as the tests)

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
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def recreate_database(url: str) -> None:
    """Drop the database if it exists (nothing may be connected to it) and create it empty."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(url.rsplit("/", 1)[1])))
    _create_database(url)


def _create_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def worker(concurrency: int = 2) -> WorkerProcess:
    return WorkerProcess(
        concurrency=concurrency, base_env={**os.environ, **ENVIRONMENT}, name="bench", include=["bench.tasks"]
    )


def gunicorn(port: int) -> ChildProcess:
    """The product's gunicorn settings (project/gunicorn.conf.py: 2 workers, threads)."""
    return ChildProcess(
        [str(BIN / "gunicorn"), "-c", str(ROOT / "project" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "project.wsgi"],
        env={**os.environ, **ENVIRONMENT, "DJANGO_SETTINGS_MODULE": "bench.settings"},
        name="gunicorn",
        ready_url=f"http://127.0.0.1:{port}/bench/bare",
    )


def local_api(body: bytes) -> RecordingServer:
    """A loopback HTTP server answering every request with ``body`` (JSON)."""
    return RecordingServer(lambda request: Reply(body=body, headers={"Content-Type": "application/json"}))


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
