"""Many users of one connection at the moment it expires: the provider sees one refresh.

Providers that rotate refresh tokens (the one here does, with reuse protection: a spent
refresh token revokes the whole grant) turn a refresh race into a dead connection; and a
provider that is down must not be asked once per waiting user.
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
from secrets_app.exceptions import TokenEndpointUnavailable
from secrets_app.models import OAuth2Connection, Secret
from secrets_app.oauth2.tokens import access_token_get
from tests.secrets_app.oauth2.test_tokens import token_endpoint_secret
from tests.servers import RecordingServer, Reply

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


def run_in_threads(count, target):
    """Run ``target()`` in ``count`` threads released together; returns what each raised (or None)."""
    barrier = threading.Barrier(count)
    outcomes = [None] * count

    def run(index):
        try:
            barrier.wait()
            target()
        except Exception as exc:  # collected for the assertions
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_during_a_provider_outage_waiters_report_the_refreshers_failure_instead_of_retrying():
    server = RecordingServer(lambda request: Reply(status=503))
    try:
        secret = token_endpoint_secret(server)
        outcomes = run_in_threads(4, lambda: access_token_get(Secret.objects.get(pk=secret.pk)))
        assert len(server.requests) == 3  # one refresher and its own retries, not 3 per waiter
        assert all(isinstance(outcome, TokenEndpointUnavailable) for outcome in outcomes), outcomes
        assert {str(outcome) for outcome in outcomes} == {"OAuth2 secret 'flaky': The token endpoint answered HTTP 503."}
    finally:
        server.stop()


def test_the_lease_cannot_lapse_while_a_token_request_is_in_flight(settings):
    settings.FLOWGATE_OAUTH2_REFRESH_LOCK_SECONDS = 1

    def slow_token_endpoint(request):
        time.sleep(2.5)  # longer than the lease
        return Reply(body={"access_token": "new-access-2", "token_type": "Bearer", "expires_in": 3600})

    server = RecordingServer(slow_token_endpoint)
    try:
        secret = token_endpoint_secret(server)
        first = threading.Thread(target=lambda: (access_token_get(secret), connections.close_all()))
        first.start()
        time.sleep(1.5)  # the request is in flight and the lease, as first taken, has run out
        connection = OAuth2Connection.objects.get(secret=secret)
        assert connection.lease_owner and connection.lease_expires_at > timezone.now()
        assert access_token_get(Secret.objects.get(pk=secret.pk)) == "new-access-2"  # waits, no takeover
        first.join(timeout=30)
        assert len(server.requests) == 1
    finally:
        server.stop()
