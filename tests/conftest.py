"""Fixtures shared by the whole suite: real local servers and the machine's services.

A test that needs a service (PostgreSQL, MariaDB, Redis) uses the real one and fails,
never skips, when it cannot reach it, with the command that starts it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission

from secrets_app.jose import jwks_cache
from secrets_app.services.secrets import secret_create
from tests.provider import PROVIDER_LOG, Browser, provider_application
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


@pytest.fixture
def staff_user(db, django_user_model):
    """``staff_user(name)``: a staff user with every permission of the vault and the flows,
    and no grant on any secret (what a user may reach then depends on owners and grants)."""

    def create(username: str):
        user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["secrets_app", "flows_app"]))
        return user

    return create


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


# -- the OAuth2 provider (django-oauth-toolkit on the live server) -------------------------

OWNER = {"username": "owner", "password": "owner-password-1", "email": "owner@example.com"}


@pytest.fixture
def provider(live_server, settings):
    """django-oauth-toolkit on the live server; BASE_URL points there too."""
    settings.BASE_URL = live_server.url
    PROVIDER_LOG.clear()
    jwks_cache.clear()
    base = live_server.url
    return SimpleNamespace(
        url=base,
        issuer=f"{base}/o",
        authorize_url=f"{base}/o/authorize/",
        token_url=f"{base}/o/token/",
        revocation_url=f"{base}/o/revoke_token/",
        userinfo_url=f"{base}/o/userinfo/",
        log=PROVIDER_LOG,
    )


@pytest.fixture
def owner(transactional_db, django_user_model):
    """An admin of Flowgate who is also the account holder at the provider."""
    return django_user_model.objects.create_superuser(**OWNER)


@pytest.fixture
def browser(provider, owner):
    browser = Browser(provider.url)
    browser.login(OWNER["username"], OWNER["password"])
    return browser


@pytest.fixture
def oauth2_secret(provider):
    """Make an OAuth2 secret registered at the provider: ``oauth2_secret(name, client_auth=...)``."""

    def make(name="crm", *, client_auth="basic", scope="openid email read offline_access", **fields):
        client_type = "public" if client_auth == "none" else "confidential"
        client_id, client_secret = provider_application(
            name=name, redirect_uri=f"{provider.url}/oauth/{name}/callback/", client_type=client_type
        )
        data = {
            "client_id": client_id,
            "client_secret": client_secret,
            "client_auth": client_auth,
            "issuer": provider.issuer,
            "authorize_url": provider.authorize_url,
            "token_url": provider.token_url,
            "revocation_url": provider.revocation_url,
            "userinfo_url": provider.userinfo_url,
            "scope": scope,
            **fields,
        }
        return secret_create(name=name, kind="oauth2", data=data)

    return make


@pytest.fixture
def connected(oauth2_secret, browser):
    """An OAuth2 secret connected through the whole dance."""

    def make(name="crm", **kwargs):
        secret = oauth2_secret(name, **kwargs)
        response = browser.connect(name)
        assert response.status_code == 302, response.text[:1000]
        return secret

    return make


# -- headless Chromium, for admin journeys a person makes ----------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    import os

    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which makes Django refuse
    # database calls from the test body; the test code itself is synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


REPOSITORY = Path(__file__).resolve().parents[1]
ARTIFACTS = REPOSITORY / "var" / "screenshots"
WALKTHROUGH = REPOSITORY / "docs" / "screenshots"


def screenshot(page, name: str, *, walkthrough: bool = False) -> None:
    """Keep what the person saw: ``var/screenshots/<name>.png``, a test artifact. A
    walkthrough picture also goes to ``docs/screenshots``, where the README shows it, so
    the README's pictures are what the product shows now."""
    for folder in (ARTIFACTS, WALKTHROUGH) if walkthrough else (ARTIFACTS,):
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def admin_login(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")


# -- a real Celery worker ------------------------------------------------------------------


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A worker process (prefork, 2 children) serving this session's queue."""
    from tests.workers import WorkerProcess

    require_service("Redis", "127.0.0.1", 6379)
    with django_db_blocker.unblock():
        worker = WorkerProcess(env={"FLOWGATE_RUN_LEASE_SECONDS": "4"}).start()
    yield worker
    worker.stop()


# -- /metrics ------------------------------------------------------------------------------

METRICS_TOKEN = "metrics-token-for-tests"


class Scrape:
    """One reading of /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, text: str):
        from prometheus_client.parser import text_string_to_metric_families

        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these labels; 0 when no process counted it yet."""
        found = [sample.value for sample in self.samples if sample.name == name and sample.labels == labels]
        return found[0] if found else 0.0

    def label_values(self, name: str, label: str) -> set[str]:
        return {sample.labels[label] for sample in self.samples if sample.name == name and label in sample.labels}


@pytest.fixture
def scrape(client, settings):
    """``scrape()``: /metrics as Prometheus reads it (with the token), as a ``Scrape``."""
    settings.FLOWGATE_METRICS_TOKEN = METRICS_TOKEN

    def read() -> Scrape:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
        assert response.status_code == 200, response.content
        return Scrape(response.content.decode())

    return read
