"""Real Celery worker processes for engine tests, on the machine's Redis and the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
CELERY = str(Path(sys.executable).parent / "celery")


def test_database_url() -> str:
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


class WorkerProcess:
    """``celery worker`` in its own process group; ``kill()`` is kill -9 of all of it."""

    def __init__(self, *, concurrency: int = 2, env: dict[str, str] | None = None, name: str = "tests"):
        self.concurrency, self.extra_env, self.name = concurrency, env or {}, name
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TEST_DATABASE_URL": test_database_url(),
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        self.output = []
        self.process = subprocess.Popen(
            [CELERY, "-A", "project", "worker", "--pool", "prefork", "--concurrency", str(self.concurrency),
             "--hostname", f"{self.name}-{os.getpid()}-{time.monotonic_ns()}@%h", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                if " ready." in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("The Celery worker did not start:\n" + "".join(self.output[-50:]))
        return self

    def kill(self) -> None:
        """kill -9 the worker and its pool children, as a crash or an OOM kill would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        return "".join(self.output)
