"""Fixtures shared by the whole suite: real local servers and the machine's services.

A test that needs a service (PostgreSQL, MariaDB, Redis) uses the real one and fails,
never skips, when it cannot reach it, with the command that starts it.
"""

from __future__ import annotations

import socket

import pytest
from django.contrib.auth.models import Permission

from tests.servers import RecordingServer

SERVICE_START_COMMANDS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


def require_service(name: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        pytest.fail(
            f"{name} is not reachable at {host}:{port}. Start it with: {SERVICE_START_COMMANDS[name]}",
            pytrace=False,
        )


@pytest.fixture
def local_server():
    server = RecordingServer()
    yield server
    server.stop()


@pytest.fixture
def vault_editor(db, django_user_model):
    """A staff user with the vault's permissions, but not a superuser."""
    user = django_user_model.objects.create_user(username="editor", password="editor-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="secrets_app"))
    return user


MARIADB = {
    "host": "127.0.0.1",
    "port": 3306,
    "database": "test",
    "user": "flowgate_test",
    "password": "mariadb-pw-7f3c1e",
}


@pytest.fixture(scope="session")
def mariadb():
    """Connection settings for the machine's MariaDB, with a password-protected test user."""
    import pymysql

    require_service("MariaDB", MARIADB["host"], MARIADB["port"])
    root = pymysql.connect(host=MARIADB["host"], port=MARIADB["port"], user="root", password="", autocommit=True)
    try:
        with root.cursor() as cursor:
            cursor.execute("CREATE DATABASE IF NOT EXISTS test")
            cursor.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (MARIADB["user"], MARIADB["password"]))
            cursor.execute(
                "CREATE USER IF NOT EXISTS %s@'localhost' IDENTIFIED BY %s", (MARIADB["user"], MARIADB["password"])
            )
            cursor.execute(f"GRANT ALL ON test.* TO '{MARIADB['user']}'@'%'")
            cursor.execute(f"GRANT ALL ON test.* TO '{MARIADB['user']}'@'localhost'")
    finally:
        root.close()
    return dict(MARIADB)


@pytest.fixture(scope="session")
def postgresql():
    """Connection settings for the machine's PostgreSQL (trust authentication)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return {
        "host": "127.0.0.1",
        "port": 5432,
        "database": "test",
        "user": "postgres",
        "password": "pg-pw-unused-by-trust",
    }
