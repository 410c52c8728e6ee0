"""Many users of one connection at the moment it expires: the provider sees one refresh.

Providers that rotate refresh tokens (the one here does, with reuse protection: a spent
refresh token revokes the whole grant) turn a refresh race into a dead connection.
"""

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db import connections
from django.utils import timezone

from project import outbound
from secrets_app import api
from secrets_app.models import OAuth2Connection

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[3]


def expire(secret):
    OAuth2Connection.objects.filter(secret=secret).update(expires_at=timezone.now() - timedelta(seconds=5))


def test_threads_using_one_connection_right_after_expiry_cause_one_refresh(connected, provider, local_server):
    secret = connected()
    expire(secret)
    barrier = threading.Barrier(8)
    errors = []

    def use():
        try:
            barrier.wait()
            outbound.request("GET", local_server.url, auth=api.auth_for("crm"))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(provider.log.grants("refresh_token")) == 1
    new_token = OAuth2Connection.objects.get(secret=secret).tokens["access_token"]
    assert {request.headers["Authorization"] for request in local_server.requests} == {f"Bearer {new_token}"}


def test_processes_using_one_connection_right_after_expiry_cause_one_refresh(connected, provider, local_server):
    secret = connected()
    expire(secret)
    settings_dict = db_connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{settings_dict['NAME']}"
    else:
        database_url = f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"
    env = {**os.environ, "TEST_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 4  # after every process has started and loaded Django
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.secrets_app.oauth2.use_connection", "crm", local_server.url, str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]
    assert len(provider.log.grants("refresh_token")) == 1
    new_token = OAuth2Connection.objects.get(secret=secret).tokens["access_token"]
    assert {out.strip() for out, _ in outputs} == {new_token}
