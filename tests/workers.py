"""Real child processes for tests and benchmarks: Celery workers, beat, servers.

A ``ChildProcess`` runs in its own process group; ``start()`` waits until it prints its
ready line (or answers at its ready URL), ``kill()`` is kill -9 of the whole group, as a
crash or an OOM kill would be. Workers and beat run on the machine's Redis and, in
tests, on the test database (``test_environment()``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_environment() -> dict[str, str]:
    """The environment of a child process that uses this test session's database and queue."""
    from django.db import connection

    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        database = f"sqlite:///{settings['NAME']}"
    else:
        database = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TEST_DATABASE_URL": database, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    """A loopback port nothing listens on now, for a child server to bind."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ChildProcess:
    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], name: str, ready_line: str = "", ready_url: str = ""
    ):
        self.argv, self.env, self.name = list(argv), dict(env), name
        self.ready_line, self.ready_url = ready_line, ready_url
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> ChildProcess:
        self.output = []
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        printed = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                if self.ready_line and self.ready_line in line:
                    printed.set()

        threading.Thread(target=read, daemon=True).start()
        ready = self._answers(timeout) if self.ready_url else printed.wait(timeout)
        if not ready:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.output[-50:]))
        return self

    def _answers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2):
                    return True
            except OSError:
                time.sleep(0.2)
        return False

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "".join(self.output)

    def children(self) -> list[int]:
        """The pids of the process's children, from every one of its threads."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        return [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class WorkerProcess(ChildProcess):
    """``celery worker`` (prefork, as in production; ``pool="threads"`` as the Procfile).
    ``env`` is added to ``base_env`` (the test environment)."""

    def __init__(
        self,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        name: str = "tests",
        base_env: Mapping[str, str] | None = None,
        include: Sequence[str] = (),
        args: Sequence[str] = (),
    ):
        argv = [
            str(BIN / "celery"), "-A", "project", "worker", "--pool", pool, "--concurrency", str(concurrency),
            "--hostname", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", *(["--include", ",".join(include)] if include else []), *args,
        ]
        environment = {**(base_env if base_env is not None else test_environment()), **(env or {})}
        super().__init__(argv, env=environment, name=f"celery worker {name}", ready_line=" ready.")


class WebProcess(ChildProcess):
    """gunicorn with the product's config (one process, as docker-compose.yml starts it) on a
    free loopback port; ``env`` is added to the test environment."""

    def __init__(self, *, env: Mapping[str, str] | None = None):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [str(BIN / "gunicorn"), "-c", "project/gunicorn.conf.py", "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        super().__init__(argv, env={**test_environment(), **(env or {})}, name="gunicorn", ready_url=f"{self.url}/admin/login/")


class BeatProcess(ChildProcess):
    """``celery beat`` with django-celery-beat's database scheduler, as in production."""

    def __init__(self, *, schedule_file: Path, env: Mapping[str, str] | None = None):
        argv = [str(BIN / "celery"), "-A", "project", "beat", "--schedule", str(schedule_file), "--loglevel", "INFO"]
        super().__init__(argv, env={**test_environment(), **(env or {})}, name="celery beat", ready_line="beat: Starting")
