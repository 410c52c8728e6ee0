"""What flows read of an OAuth2 connection besides a Bearer header: the token data the
provider returned (kept encrypted), the identity, and — through one explicit, audited
call — the raw access token for a scheme other than Bearer."""

import json
import textwrap

import pytest
from django.db import connection as db_connection

from apps_app.manifest import manifest_parse
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connections import connection_create
from flows_app.models import Flow
from flows_app.services.runs import flow_run_inline
from secrets_app.models import AuditEvent, SecretBinding
from secrets_app.oauth2.client import TokenResult
from secrets_app.oauth2.tokens import access_token_get, connection_for, store_tokens
from tests.flows_app.conftest import execute, make_flow
from tests.secrets_app.oauth2.test_tokens import expire, token_endpoint_secret
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.django_db(transaction=True)
INSTANCE_URL = "https://acme.my.salesforce.com"


def salesforce_token_endpoint(request):
    """Salesforce's answer to a refresh: no expires_in, the org's host, and more we do not keep."""
    return Reply(
        body={
            "access_token": "00D-access-2",
            "instance_url": INSTANCE_URL,
            "id": "https://login.salesforce.com/id/00D/005",
            "issued_at": "1700000000000",
            "signature": "c2lnbmF0dXJl",
            "token_type": "Bearer",
        }
    )


def salesforce_app(token_url: str, api_url: str):
    manifest = textwrap.dedent(
        f"""
        app:
          slug: sf
          name: Salesforce
          version: 1.0.0
        connection:
          kind: oauth2
          preset: salesforce
          token_url: {token_url}
        flows:
          accounts:
            steps:
              - key: call
                kind: http_request
                method: GET
                url: "{api_url}/services/data"
                headers:
                  Authorization: "OAuth {{{{ connection.access_token }}}}"
              - key: out
                kind: transform
                value:
                  instance_url: "{{{{ connection.data.instance_url }}}}"
                  who: "{{{{ connection.identity }}}}"
                  sent: "{{{{ steps.call.body.headers.Authorization }}}}"
        """
    )
    app = app_install(manifest=manifest_parse(manifest)).app
    app_registration_set(app=app, client_id="sf-client", client_secret="sf-client-secret")
    return app


class TestTokenData:
    def test_a_flow_reads_the_token_data_the_preset_keeps_and_the_identity(self, settings, local_server):
        settings.BASE_URL = "http://127.0.0.1:8000"
        token_endpoint = RecordingServer(salesforce_token_endpoint)
        try:
            app = salesforce_app(f"{token_endpoint.url}/token", local_server.url)
            secret = connection_create(app=app).secret
            store_tokens(
                connection_for(secret),
                TokenResult(token="00D-access-1", refresh_token="sf-refresh-1", expires_in=7200),
                identity="ann@acme.example",
                connected=True,
            )
            expire(secret)  # the flow's first use refreshes, and the answer brings the token data
            run = flow_run_inline(
                flow=Flow.objects.get(slug="sf/accounts"), input={}, connection=secret, trigger="manual", timeout=30
            )
        finally:
            token_endpoint.stop()
        assert run.status == "succeeded", run.error
        assert run.output == {"instance_url": INSTANCE_URL, "who": "ann@acme.example", "sent": "OAuth 00D-access-2"}
        # Only what the preset names is kept, and only encrypted.
        assert connection_for(secret).provider_data == {"instance_url": INSTANCE_URL}
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT provider_data FROM secrets_app_oauth2connection WHERE secret_id = %s", [secret.pk])
            [(raw,)] = cursor.fetchall()
        assert "salesforce" not in raw and "instance_url" not in raw
        # The raw token was a reveal: audited, and masked in what the run stored.
        assert AuditEvent.objects.filter(action="secret.reveal", target_name=secret.name, detail__field="access_token").exists()
        assert "00D-access-2" not in json.dumps(run.step_runs.get(step_key="out").output)

    def test_without_token_data_fields_the_hooks_choice_is_kept(self, db):
        server = RecordingServer(salesforce_token_endpoint)
        try:
            secret = token_endpoint_secret(server, hooks="secrets_app.oauth2.quirks.salesforce.SalesforceHooks")
            connection = connection_for(secret)
            assert access_token_get(secret) == "00D-access-2"
        finally:
            server.stop()
        assert connection_for(secret).provider_data == {"instance_url": INSTANCE_URL}
        assert connection.provider_data == {}

    def test_token_data_fields_never_keep_a_token(self, db):
        server = RecordingServer(salesforce_token_endpoint)
        try:
            secret = token_endpoint_secret(server, token_data_fields=["access_token", "id", "instance_url"])
            access_token_get(secret)
        finally:
            server.stop()
        assert connection_for(secret).provider_data == {"id": "https://login.salesforce.com/id/00D/005", "instance_url": INSTANCE_URL}


class TestRawAccessToken:
    def test_a_template_gets_the_token_through_one_audited_call_found_on_save(self, local_server):
        server = RecordingServer(lambda request: Reply(body={"access_token": "fresh-access-2", "expires_in": 3600}))
        try:
            secret = token_endpoint_secret(server)
            flow = make_flow(
                "token-scheme",
                [
                    {
                        "key": "call",
                        "kind": "http_request",
                        "method": "GET",
                        "url": f"{local_server.url}/api",
                        "headers": {"Authorization": "Token {{ secrets.get_access_token('flaky') }}"},
                    },
                    {"key": "echo", "kind": "transform", "value": {"sent": "{{ steps.call.body.headers.Authorization }}"}},
                ],
            )
            assert SecretBinding.objects.filter(secret=secret, holder_id=flow.pk).exists()  # found on save
            run = execute(flow)
        finally:
            server.stop()
        assert run.status == "succeeded", run.error
        assert local_server.last.headers["Authorization"] == "Token fresh-access-2"  # refreshed first
        assert "fresh-access-2" not in json.dumps(run.output)
        reveals = AuditEvent.objects.filter(action="secret.reveal", target_name="flaky", detail__field="access_token")
        assert reveals.count() == 1 and reveals.get().actor_label == f"flow run {run.pk}"

    def test_a_flow_that_does_not_name_the_connection_cannot_reach_its_token(self):
        server = RecordingServer(lambda request: Reply(body={"access_token": "fresh-access-2", "expires_in": 3600}))
        try:
            token_endpoint_secret(server)
            flow = make_flow("peek", [{"key": "s", "kind": "script", "code": "return secrets.get_access_token('flaky')"}])
            run = execute(flow)
        finally:
            server.stop()
        assert run.status == "failed"
        assert "'flaky' is not listed on this step" in run.error
        assert not server.requests

    def test_a_script_gets_the_token_of_a_secret_its_step_lists(self):
        server = RecordingServer(lambda request: Reply(body={"access_token": "fresh-access-2", "expires_in": 3600}))
        try:
            token_endpoint_secret(server)
            flow = make_flow(
                "script-token",
                [
                    {
                        "key": "s",
                        "kind": "script",
                        "secrets": ["flaky"],
                        "code": "token = secrets.get_access_token('flaky')\nreturn {'token': token, 'length': len(token)}",
                    }
                ],
            )
            run = execute(flow)
        finally:
            server.stop()
        assert run.status == "succeeded", run.error
        assert run.output["length"] == len("fresh-access-2") and "fresh-access-2" not in json.dumps(run.output)
        assert AuditEvent.objects.filter(action="secret.reveal", target_name="flaky", detail__field="access_token").exists()

    def test_a_secret_without_an_access_token_says_so(self):
        from secrets_app import api
        from secrets_app.exceptions import WrongSecretKind
        from secrets_app.services.secrets import secret_create

        secret_create(name="plain", kind="api_token", data={"token": "t-1"})
        with pytest.raises(WrongSecretKind, match="get_access_token needs an oauth2 secret"):
            api.get_access_token("plain")
