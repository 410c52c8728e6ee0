"""Real Celery worker and beat processes for engine tests, on the machine's Redis and the test database."""

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


class CeleryProcess:
    """A ``celery`` command in its own process group; ``kill()`` is kill -9 of all of it."""

    ready_marker = ""

    def __init__(self, *, env: dict[str, str] | None = None, name: str = "tests"):
        self.extra_env, self.name = env or {}, name
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> CeleryProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TEST_DATABASE_URL": test_database_url(),
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        self.output = []
        self.process = subprocess.Popen(
            [CELERY, "-A", "project", *self.arguments(), "--loglevel", "INFO"],
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
                if self.ready_marker in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"celery {self.arguments()[0]} did not start:\n" + "".join(self.output[-50:]))
        return self

    def kill(self) -> None:
        """kill -9 the process and its children, as a crash or an OOM kill would."""
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


class WorkerProcess(CeleryProcess):
    """``celery worker`` (prefork) on the machine's Redis and the test database."""

    ready_marker = " ready."

    def __init__(self, *, concurrency: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.concurrency = concurrency

    def arguments(self) -> list[str]:
        return [
            "worker", "--pool", "prefork", "--concurrency", str(self.concurrency),
            "--hostname", f"{self.name}-{os.getpid()}-{time.monotonic_ns()}@%h", "--without-gossip", "--without-mingle",
        ]


class BeatProcess(CeleryProcess):
    """``celery beat`` with django-celery-beat's database scheduler, as in production."""

    ready_marker = "beat: Starting"

    def __init__(self, *, schedule_file: Path, **kwargs):
        super().__init__(**kwargs)
        self.schedule_file = schedule_file

    def arguments(self) -> list[str]:
        return ["beat", "--schedule", str(self.schedule_file)]
