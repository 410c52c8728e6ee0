import logging
import socket
import subprocess
import sys
import time

import pytest
import requests

from project.log_redaction import RedactingFilter, redact_text
from tests.project.test_checks import PRODUCTION_ENV, ROOT, VENV_BIN, product_environment
from tests.workers import free_port


def test_known_secret_shapes_are_masked():
    assert redact_text("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer [redacted]"
    assert redact_text("grant_type=refresh_token&refresh_token=rt-123&client_secret=cs") == (
        "grant_type=refresh_token&refresh_token=[redacted]&client_secret=[redacted]"
    )
    assert (
        redact_text('{"access_token": "at-1", "expires_in": 3600}')
        == '{"access_token": "[redacted]", "expires_in": 3600}'
    )
    assert redact_text("postgres://app:hunter2@db/app") == "postgres://app:[redacted]@db/app"
    assert redact_text('"GET /o/x?state=s1&page HTTP/1.1" 302 "https://h/cb/?code=c1"') == (
        '"GET /o/x?state=[redacted]&[redacted] HTTP/1.1" 302 "https://h/cb/?code=[redacted]"'
    )


def test_the_filter_masks_arguments_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "sent %s", ("access_token=at-1",), None)
    try:
        raise ValueError("refresh_token=rt-2")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert record.getMessage() == "sent access_token=[redacted]"
    assert "rt-2" not in record.exc_text


# -- the servers' request logs ---------------------------------------------------------
# Callers put keys in query strings, and OAuth2 redirects carry `code` and `state` there:
# the web servers' own request lines must not keep them, whichever server runs the product.

SECRET_QUERY = "api_key=SECRETVALUE&code=CODEVALUE"


@pytest.fixture(scope="module")
def server_environment(tmp_path_factory):
    """The product's own settings (not the tests') on a migrated SQLite database of its own."""
    tmp_path = tmp_path_factory.mktemp("server")
    env = product_environment(
        tmp_path,
        **{
            **PRODUCTION_ENV,
            "ALLOWED_HOSTS": "127.0.0.1",
            "BASE_URL": "http://127.0.0.1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'flowgate.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
        },
    )
    migrate = [sys.executable, "manage.py", "migrate", "--noinput"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
    return env


def logged_by_server_for_one_request(command: list[str], env: dict[str, str], port: int) -> str:
    """Start the server, send it GET /hooks/x with secrets in the query string once it
    listens, and return everything it wrote to stdout and stderr."""
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.1)
        assert requests.get(f"http://127.0.0.1:{port}/hooks/x?{SECRET_QUERY}", timeout=60).status_code == 404
        logged = []
        for line in server.stdout:  # the request's line is written after its answer is sent
            logged.append(line)
            if "GET /hooks/x" in line:  # not Django's "Not Found: /hooks/x", which comes first
                break
    finally:
        server.terminate()
        rest, _ = server.communicate()
    return "".join(logged) + rest


def test_runserver_access_log_redacts_query_string_values(server_environment):
    port = free_port()
    # As the Procfile that ./scripts/run starts, with DEBUG on as it sets it.
    command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    logged = logged_by_server_for_one_request(command, {**server_environment, "DEBUG": "true"}, port)
    assert "GET /hooks/x?api_key=" in logged and "&code=" in logged
    assert "SECRETVALUE" not in logged and "CODEVALUE" not in logged


def test_gunicorn_access_log_redacts_query_string_values(server_environment):
    port = free_port()
    # As docker-compose.yml starts it, on a loopback port.
    command = [
        str(VENV_BIN / "gunicorn"), "-c", "project/gunicorn.conf.py", "project.wsgi", "--access-logfile", "-",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
    ]  # fmt: skip
    logged = logged_by_server_for_one_request(command, server_environment, port)
    assert "GET /hooks/x?api_key=" in logged and "&code=" in logged
    assert "SECRETVALUE" not in logged and "CODEVALUE" not in logged
