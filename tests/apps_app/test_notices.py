"""Notices about connections: a flow (and an e-mail) when a connection needs
re-authorization, when it recovers, and before its refresh token expires, each once."""

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.utils import timezone

from apps_app.services.connect_links import connect_link_open
from apps_app.manifest import manifest_parse
from apps_app.models import App
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connections import connection_create
from apps_app.services.notices import app_notice_flow_set
from flows_app.models import FlowRun
from secrets_app.exceptions import ReauthorizationRequired, TokenEndpointUnavailable
from secrets_app.models import AuditEvent, OAuth2Connection, Secret
from secrets_app.oauth2.client import OAuth2Config, OAuth2Hooks, TokenResult
from secrets_app.oauth2.tokens import access_token_get, connection_for, store_tokens
from secrets_app.services.connection_notices import oauth2_expiry_notices_send
from secrets_app.tasks import oauth2_expiry_notices
from tests.flows_app.conftest import make_flow
from tests.secrets_app.oauth2.test_tokens import (
    call_api,
    expire,
    revoke_grants_at_the_provider,
    stored,
    token_endpoint_secret,
)
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
NOTICE_FLOW = "connection-notices"


def notice_flow(slug=NOTICE_FLOW):
    return make_flow(slug, [{"key": "said", "kind": "transform", "value": "{{ trigger }}"}])


def notices(flow_slug=NOTICE_FLOW) -> list[dict]:
    """The inputs of the notice runs queued so far, oldest first."""
    runs = FlowRun.objects.filter(flow__slug=flow_slug, trigger="notice").order_by("id")
    return [run.input for run in runs]


def database_url() -> str:
    settings_dict = db_connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    return f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"


def use_together(secret_name: str, url: str, count: int, env: dict[str, str]) -> list[str]:
    """``count`` processes use the connection at once: each loads Django and says ready,
    then all are told to go together. Returns what each reported."""
    environment = {**os.environ, "TEST_DATABASE_URL": database_url(), "PYTHONPATH": str(ROOT), **env}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.apps_app.use_revoked_connection", secret_name, url],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-2000:]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * count, [err[-2000:] for _, err in outputs]
    return [out.strip() for out, _ in outputs]


class TestReauthorizationAndRecovery:
    def test_workers_failing_on_one_revoked_connection_send_one_notice_and_reconnecting_one_more(
        self, connected, provider, local_server, browser, settings
    ):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = NOTICE_FLOW
        notice_flow()
        secret = connected()
        revoke_grants_at_the_provider()  # the user removed the application at the provider
        expire(secret)

        reported = use_together("crm", local_server.url, 4, {"FLOWGATE_CONNECTION_NOTICE_FLOW": NOTICE_FLOW})

        assert reported == ["ReauthorizationRequired"] * 4
        assert len(provider.log.grants("refresh_token")) == 1
        assert AuditEvent.objects.filter(action="oauth2.needs_reauthorization").count() == 1
        [notice] = notices()
        assert notice == {
            "event": "needs_reauthorization",
            "app": "",
            "connection_id": secret.pk,
            "identity": stored(secret).identity,
            "end_user": "",
            "reason": stored(secret).last_error,
            "reconnect_url": None,
            "reconnect_by": None,
        }
        assert "invalid_grant" in notice["reason"] and notice["identity"]
        assert stored(secret).reauthorization_notice_at is not None

        with pytest.raises(ReauthorizationRequired):  # later uses say so again, without a notice
            call_api("crm", local_server)
        assert len(notices()) == 1

        assert browser.connect("crm").status_code == 302  # the person reconnects
        assert [notice["event"] for notice in notices()] == ["needs_reauthorization", "recovered"]
        assert notices()[1]["connection_id"] == secret.pk and notices()[1]["reason"] == ""
        assert stored(secret).recovery_notice_at >= stored(secret).reauthorization_notice_at

        assert browser.connect("crm").status_code == 302  # reconnecting a working connection is no news
        assert len(notices()) == 2

    def test_a_recovery_from_transient_failures_nobody_was_told_of_sends_no_notice(self, settings):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = NOTICE_FLOW
        notice_flow()
        answers = iter([Reply(status=503)] * 3 + [Reply(body={"access_token": "new-access-2", "expires_in": 3600})])
        server = RecordingServer(lambda request: next(answers))
        try:
            secret = token_endpoint_secret(server)
            with pytest.raises(TokenEndpointUnavailable):
                access_token_get(secret)
            assert stored(secret).failure_count == 1
            assert access_token_get(secret) == "new-access-2"
        finally:
            server.stop()
        assert AuditEvent.objects.filter(action="oauth2.recovered").count() == 1  # the vault says it recovered
        assert notices() == []  # but nobody had been told it failed

    def test_a_notice_that_cannot_be_sent_leaves_the_token_path_alone_and_records_nothing(self, settings, caplog):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = "no-such-flow"
        server = RecordingServer(lambda request: Reply(status=400, body={"error": "invalid_grant"}))
        try:
            secret = token_endpoint_secret(server)
            with pytest.raises(ReauthorizationRequired):
                access_token_get(secret)
        finally:
            server.stop()
        assert stored(secret).status == "needs_reauthorization"
        assert stored(secret).reauthorization_notice_at is None
        assert "The needs_reauthorization notice about secret 'flaky' could not be sent." in caplog.text

    def test_without_a_notice_flow_or_e_mail_nothing_is_sent_or_recorded(self):
        server = RecordingServer(lambda request: Reply(status=400, body={"error": "invalid_grant"}))
        try:
            secret = token_endpoint_secret(server)
            with pytest.raises(ReauthorizationRequired):
                access_token_get(secret)
        finally:
            server.stop()
        assert stored(secret).reauthorization_notice_at is None
        assert not FlowRun.objects.filter(trigger="notice").exists()

    def test_the_owner_is_e_mailed_when_e_mail_is_on(self, settings, django_user_model):
        settings.FLOWGATE_CONNECTION_NOTICE_EMAIL = True
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
        ann = django_user_model.objects.create_user("ann", email="ann@example.com")
        server = RecordingServer(lambda request: Reply(status=400, body={"error": "invalid_grant"}))
        try:
            secret = token_endpoint_secret(server)
            secret.owner = ann
            secret.save(update_fields=["owner"])
            with pytest.raises(ReauthorizationRequired):
                access_token_get(secret)
        finally:
            server.stop()
        [message] = mail.outbox
        assert message.to == ["ann@example.com"]
        assert message.subject == "flaky needs to be connected again"
        assert "invalid_grant" in message.body and "old-refresh-1" not in message.body
        assert stored(secret).reauthorization_notice_at is not None


def oauth2_app_manifest(server_url: str) -> str:
    return textwrap.dedent(
        f"""
        app:
          slug: crm
          name: CRM
          version: 1.0.0
        connection:
          kind: oauth2
          authorize_url: {server_url}/authorize
          token_url: {server_url}/token
          client_auth: post
          refresh_token_idle_days: 30
        flows:
          on-notice:
            public: true
            steps:
              - {{key: said, kind: transform, value: {{event: "{{{{ trigger.event }}}}", id: "{{{{ connection.id }}}}"}}}}
        """
    )


class TestAppNotices:
    def test_an_apps_notice_flow_runs_with_the_connection_and_names_the_end_user(self, settings):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = NOTICE_FLOW  # the global default, which the app overrides
        settings.BASE_URL = "http://127.0.0.1:8000"  # the app's redirect URI is built from it
        notice_flow()
        server = RecordingServer(lambda request: Reply(status=400, body={"error": "invalid_grant"}))
        try:
            app = app_install(manifest=manifest_parse(oauth2_app_manifest(server.url))).app
            app_registration_set(app=app, client_id="crm-client", client_secret="crm-client-secret")
            app_notice_flow_set(app=app, flow_slug="crm/on-notice")
            secret = connection_create(app=App.objects.get(pk=app.pk), end_user="customer-42").secret
            store_tokens(
                connection_for(secret),
                TokenResult(token="access-1", refresh_token="refresh-1", expires_in=3600),
                identity="ann@crm.example",
                connected=True,
            )
            reconnect_by = stored(secret).reconnect_by  # the manifest's idle-expiry rule
            assert timezone.now() + timedelta(days=29) < reconnect_by <= timezone.now() + timedelta(days=30)
            expire(secret)
            with pytest.raises(ReauthorizationRequired):
                access_token_get(secret)
        finally:
            server.stop()
        assert notices() == []
        [run] = FlowRun.objects.filter(flow__slug="crm/on-notice", trigger="notice")
        assert run.connection_id == secret.pk
        assert {key: run.input[key] for key in ("event", "app", "connection_id", "identity", "end_user")} == {
            "event": "needs_reauthorization",
            "app": "crm",
            "connection_id": secret.pk,
            "identity": "ann@crm.example",
            "end_user": "customer-42",
        }
        # A fresh reconnect link for this connection: it keeps the connection's id.
        token = parse_qs(urlsplit(run.input["reconnect_url"]).query)["link"][0]
        link = connect_link_open(token)
        assert link.reconnect and link.connection_id == secret.pk and link.end_user == "customer-42"

    def test_the_notice_flow_set_on_an_app_must_exist(self):
        app = app_install(manifest=manifest_parse(oauth2_app_manifest("https://crm.example"))).app
        with pytest.raises(ValidationError, match="There is no flow 'nope'"):
            app_notice_flow_set(app=app, flow_slug="nope")
        assert App.objects.get(pk=app.pk).notice_flow == ""

    def test_the_admin_form_checks_the_notice_flow_as_the_service_does(self):
        from apps_app.notice_admin import AppNoticeFlowForm

        app = app_install(manifest=manifest_parse(oauth2_app_manifest("https://crm.example"))).app
        refused = AppNoticeFlowForm(instance=app, data={"notice_flow": "nope"})
        assert not refused.is_valid() and refused.errors["notice_flow"] == ["There is no flow 'nope'."]
        assert AppNoticeFlowForm(instance=app, data={"notice_flow": " crm/on-notice "}).is_valid()


class TestExpiringRefreshTokens:
    def test_a_refresh_token_the_provider_says_will_expire_gets_a_reconnect_by_date(self, db):
        server = RecordingServer(
            lambda request: Reply(body={"access_token": "new-access-2", "expires_in": 3600, "refresh_token_expires_in": 86400 * 30})
        )
        try:
            secret = token_endpoint_secret(server)
            access_token_get(secret)
        finally:
            server.stop()
        reconnect_by = stored(secret).reconnect_by
        assert timezone.now() + timedelta(days=29) < reconnect_by <= timezone.now() + timedelta(days=30)

    @pytest.mark.parametrize("answer", ["soon", None, -5, 1e300, float("nan")])
    def test_a_refresh_token_lifetime_that_is_not_one_leaves_no_date(self, answer):
        config = OAuth2Config.from_secret(Secret(name="x", kind="oauth2", config={}, values={}))
        result = OAuth2Hooks().token_result({"access_token": "a", "refresh_token_expires_in": answer}, config)
        assert result.refresh_token_expires_in is None

    def test_an_idle_expiry_rule_moves_the_date_with_each_refresh(self, db):
        server = RecordingServer(lambda request: Reply(body={"access_token": "new-access-2", "expires_in": 3600}))
        try:
            secret = token_endpoint_secret(server, refresh_token_idle_days=90)
            access_token_get(secret)
        finally:
            server.stop()
        reconnect_by = stored(secret).reconnect_by
        assert timezone.now() + timedelta(days=89) < reconnect_by <= timezone.now() + timedelta(days=90)

    def test_the_expiry_notice_goes_out_once_per_date_before_it(self, settings):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = NOTICE_FLOW
        settings.FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS = 7
        notice_flow()
        server = RecordingServer(lambda request: Reply(status=503))
        try:
            secret = token_endpoint_secret(server)
        finally:
            server.stop()
        far = timezone.now() + timedelta(days=30)
        OAuth2Connection.objects.filter(secret=secret).update(reconnect_by=far)
        assert oauth2_expiry_notices_send() == 0  # not yet

        soon = timezone.now() + timedelta(days=6)
        OAuth2Connection.objects.filter(secret=secret).update(reconnect_by=soon)
        oauth2_expiry_notices.apply()  # the beat entry's task
        assert oauth2_expiry_notices_send() == 0  # once for this date
        [notice] = notices()
        assert notice["event"] == "expiring" and notice["reconnect_by"] == soon.isoformat()
        assert stored(secret).expiry_notice_at is not None

        later = soon + timedelta(days=1)  # a new date (a refresh moved it) is a new notice
        OAuth2Connection.objects.filter(secret=secret).update(reconnect_by=later)
        assert oauth2_expiry_notices_send() == 1
        assert [notice["event"] for notice in notices()] == ["expiring", "expiring"]



def test_the_expiry_notices_job_is_an_hourly_beat_entry_on_the_housekeeping_queue(db):
    from django_celery_beat.models import PeriodicTask

    from project.celery import app, housekeeping_queue

    entry = PeriodicTask.objects.get(name="Notices of expiring OAuth2 refresh tokens")
    assert entry.task == "secrets_app.tasks.oauth2_expiry_notices" and entry.enabled
    assert entry.interval.every == 1 and entry.interval.period == "hours"
    route = app.amqp.router.route({}, entry.task, args=(), kwargs={})
    assert route["queue"].name == housekeeping_queue()
