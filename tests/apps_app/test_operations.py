"""An app's OAuth2 operations as flows: the product runs them instead of the standard
requests, inside the same safeguards (the refresh lease, the store, redaction), and
"Customize" writes the standard behaviour as flows that work like it."""

import json
import textwrap
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from apps_app.manifest import manifest_parse
from apps_app.models import Connection
from apps_app.services.apps import app_export, app_install, app_registration_set
from apps_app.services.connections import connection_create, connection_test
from apps_app.services.operations import app_operations_customize
from flows_app.models import Flow, FlowRun, StepRun
from secrets_app.exceptions import ReauthorizationRequired, SecretMisconfigured, TokenEndpointUnavailable
from secrets_app.models import AuditEvent, OAuth2Connection
from secrets_app.oauth2.client import OAuth2Config
from secrets_app.oauth2.tokens import access_token_get, refresh
from secrets_app.redaction import MASK
from secrets_app.services.oauth2 import oauth2_connection_refresh
from tests.apps_app.local_provider import LocalProvider, back_at_flowgate
from tests.provider import provider_application
from tests.servers import Reply

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_ID, CLIENT_SECRET = "tokenish-client", "tokenish-client-secret-7c1d9a"
REFRESH_OUTPUT = """{access_token: "{{ steps.token.body.at | default(none) }}", expires_in: "{{ steps.token.body.ttl | default(none) }}", error: "{{ steps.token.body.error | default(none) }}"}"""


#: A step between the token request and the output: the server sees what is stored meanwhile.
PEEK_STEP = """- {key: peek, kind: http_request, method: GET, url: "SERVER/peek"}"""


def tokenish_manifest(server_url: str, *, refresh_output: str = REFRESH_OUTPUT, peek: bool = False) -> str:
    """An app whose provider takes a JSON token request and answers with its own names."""
    return textwrap.dedent(
        """
        app: {slug: tokenish, name: Tokenish, version: 1.0.0}
        connection:
          kind: oauth2
          authorize_url: SERVER/authorize
          token_url: SERVER/token
          client_auth: post
          scope: read write
          operations: {authorize_url: build-url, exchange: exchange, refresh: refresh}
        flows:
          build-url:
            steps:
              - key: url
                kind: transform
                value:
                  authorize_url: "{{ connection.authorize_url }}?{{ {'client_id': connection.client_id, 'redirect_uri': trigger.redirect_uri, 'state': trigger.state, 'code_challenge': trigger.code_challenge, 'scope': trigger.scope} | urlencode }}"
          exchange:
            steps:
              - key: token
                kind: http_request
                method: POST
                url: "{{ connection.token_url }}"
                body_type: json
                body: {grant: code, code: "{{ trigger.code }}", verifier: "{{ trigger.code_verifier }}", redirect_uri: "{{ trigger.redirect_uri }}", client_id: "{{ connection.client_id }}", client_secret: "{{ connection.client_secret }}"}
              - key: out
                kind: transform
                value: {access_token: "{{ steps.token.body.at }}", refresh_token: "{{ steps.token.body.rt }}", expires_in: "{{ steps.token.body.ttl }}", identity: "{{ steps.token.body.who }}", data: {shop: "{{ trigger.callback.shop }}"}}
          refresh:
            steps:
              - key: token
                kind: http_request
                method: POST
                url: "{{ connection.token_url }}"
                body_type: json
                body: {grant: refresh, refresh: "{{ trigger.refresh_token }}", client_id: "{{ connection.client_id }}", client_secret: "{{ connection.client_secret }}"}
                success_statuses: 2xx, 400
              PEEK
              - key: out
                kind: transform
                value: REFRESH_OUTPUT
        """
    ).replace("PEEK", PEEK_STEP if peek else "").replace("SERVER", server_url).replace("REFRESH_OUTPUT", refresh_output)


class Tokenish:
    """The tokenish app installed against a local provider whose token endpoint speaks JSON
    with its own names (``at``, ``rt``, ``ttl``, ``who``)."""

    def __init__(self, server, owner):
        self.server, self.owner = server, owner
        self.provider = LocalProvider(CLIENT_ID, CLIENT_SECRET, callback_extra={"shop": "acme"}, rotate_refresh_tokens=False)
        self.lease_held_during_refresh: list[bool] = []
        self.token_status = 200
        self.stored_while_running: list[str] = []
        server.handler = self.answer

    def answer(self, request):
        path = urlsplit(request.path).path
        if path == "/authorize":
            return self.provider.authorize(request)
        if path == "/peek":
            self.stored_while_running.append(str(list(StepRun.objects.values_list("input", "output"))))
            db_connection.close()
            return Reply(200, {})
        if path != "/token" or self.token_status != 200:
            return Reply(self.token_status or 404, {"error": "unavailable"})
        body = json.loads(request.body)
        if body["grant"] == "refresh":
            self.lease_held_during_refresh.append(OAuth2Connection.objects.exclude(lease_owner="").exists())
            db_connection.close()  # this server thread's own database connection
            fields = {"grant_type": "refresh_token", "refresh_token": body["refresh"]}
        else:
            fields = {"grant_type": "authorization_code", "code": body["code"], "code_verifier": body["verifier"]}
            fields["redirect_uri"] = body["redirect_uri"]
        grant = self.provider.grant({**fields, "client_id": body["client_id"], "client_secret": body["client_secret"]})
        if isinstance(grant, str):
            return Reply(400, {"error": grant})
        return Reply(200, {"at": grant.access_token, "rt": grant.refresh_token, "ttl": 600, "who": grant.account})

    def install(self, **manifest):
        app = app_install(manifest=manifest_parse(tokenish_manifest(self.server.url, **manifest))).app
        app_registration_set(app=app, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        return app

    def connect(self, browser, **manifest) -> Connection:
        connection = connection_create(app=self.install(**manifest), acting_user=self.owner)
        consented = browser.get(browser.start(connection.secret.name))  # the local provider asks nothing
        response = back_at_flowgate(browser, connection.secret, consented.headers["Location"])
        assert response.status_code == 302, response.text[:500]
        return connection


@pytest.fixture
def tokenish(local_server, owner):
    return Tokenish(local_server, owner)


def stored(connection) -> OAuth2Connection:
    return OAuth2Connection.objects.get(secret_id=connection.pk)


def operation_runs() -> list[FlowRun]:
    return list(FlowRun.objects.filter(trigger="oauth2_operation").select_related("flow").order_by("pk"))


def stored_history(runs) -> str:
    """Everything the run history keeps of ``runs``, as text."""
    steps = StepRun.objects.filter(run__in=runs)
    return str(
        [(run.input, run.output, run.error) for run in runs]
        + [(step.input, step.output, step.logs, step.error) for step in steps]
    )


class TestOperationFlows:
    def test_connecting_runs_the_authorize_url_and_exchange_flows(self, tokenish, browser):
        connection = tokenish.connect(browser)
        authorize = dict(parse_qsl(urlsplit(tokenish.server.requests[0].path).query))
        assert authorize["scope"] == "read write" and authorize["code_challenge"]
        assert [run.flow.slug for run in operation_runs()] == ["tokenish/build-url", "tokenish/exchange"]
        assert all(run.status == FlowRun.Status.SUCCEEDED for run in operation_runs())
        exchange = operation_runs()[1]
        assert exchange.input["callback"]["shop"] == "acme" and exchange.input["code"] == MASK
        current = stored(connection)
        issued = tokenish.provider.issued[-1]
        assert current.status == OAuth2Connection.Status.CONNECTED
        assert current.tokens == {"access_token": issued.access_token, "refresh_token": issued.refresh_token}
        assert current.identity == "ann@orbit.example"
        assert current.provider_data == {"shop": "acme"}
        assert timedelta(seconds=590) < current.expires_at - timezone.now() <= timedelta(seconds=600)

    def test_a_refresh_runs_the_refresh_flow_inside_the_lease_and_keeps_the_refresh_token(self, tokenish, browser):
        connection = tokenish.connect(browser)
        before = stored(connection)
        after = oauth2_connection_refresh(secret=connection.secret, acting_user=tokenish.owner)
        assert tokenish.lease_held_during_refresh == [True]
        assert after.tokens["access_token"] == tokenish.provider.issued[-1].access_token != before.tokens["access_token"]
        assert after.tokens["refresh_token"] == before.tokens["refresh_token"]  # the flow gave none
        assert after.version > before.version and after.lease_owner == ""
        assert AuditEvent.objects.filter(action="oauth2.refresh", target_name=connection.secret.name).exists()
        assert operation_runs()[-1].flow.slug == "tokenish/refresh"

    def test_an_expiring_token_used_by_a_flow_is_refreshed_by_the_refresh_flow(self, tokenish, browser):
        connection = tokenish.connect(browser)
        OAuth2Connection.objects.filter(secret_id=connection.pk).update(expires_at=timezone.now())
        assert access_token_get(connection.secret) == tokenish.provider.issued[-1].access_token
        assert len(tokenish.provider.issued) == 2

    def test_operation_runs_never_show_a_token_or_the_code(self, tokenish, browser):
        connection = tokenish.connect(browser)
        oauth2_connection_refresh(secret=connection.secret, acting_user=tokenish.owner)
        runs = operation_runs()
        history = stored_history(runs)
        values = [CLIENT_SECRET] + [token for grant in tokenish.provider.issued for token in (grant.access_token, grant.refresh_token)]
        callback = dict(parse_qsl(urlsplit(tokenish.server.requests[0].path).query))
        values += [callback["state"], *tokenish.provider.codes]
        for value in values:
            assert value not in history
        assert runs[-1].output["access_token"] == MASK and "ann@orbit.example" in history

    def test_an_operation_runs_history_is_written_once_its_tokens_are_known(self, tokenish, browser):
        connection = tokenish.connect(browser, peek=True)
        StepRun.objects.all().delete()
        oauth2_connection_refresh(secret=connection.secret, acting_user=tokenish.owner)
        new_token = tokenish.provider.issued[-1].access_token
        assert tokenish.stored_while_running == ["[]"]  # the token step's answer is held back
        assert StepRun.objects.filter(step_key="token").count() == 1
        assert new_token not in str(list(StepRun.objects.values_list("input", "output")))

    def test_a_wrong_output_shape_names_the_flow_and_the_missing_key(self, tokenish, browser):
        wrong = REFRESH_OUTPUT.replace("access_token:", "token:")
        connection = tokenish.connect(browser, refresh_output=wrong)
        before = stored(connection)
        with pytest.raises(SecretMisconfigured) as failure:
            oauth2_connection_refresh(secret=connection.secret, acting_user=tokenish.owner)
        assert "'tokenish/refresh'" in str(failure.value) and "'access_token'" in str(failure.value)
        current = stored(connection)
        assert current.last_error == str(failure.value)
        assert current.tokens == before.tokens and current.status == OAuth2Connection.Status.CONNECTED
        assert tokenish.provider.issued[-1].access_token not in stored_history(operation_runs()[-1:])

    def test_a_grant_the_provider_refuses_asks_to_reconnect(self, tokenish, browser):
        connection = tokenish.connect(browser)
        tokenish.provider.refresh_tokens.clear()  # the user revoked the grant at the provider
        with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
            oauth2_connection_refresh(secret=connection.secret, acting_user=tokenish.owner)
        assert stored(connection).status == OAuth2Connection.Status.NEEDS_REAUTHORIZATION

    def test_a_failed_flow_run_is_a_transient_failure_that_keeps_the_tokens(self, tokenish, browser):
        connection = tokenish.connect(browser)
        before = stored(connection)
        tokenish.token_status = 503
        with pytest.raises(TokenEndpointUnavailable) as failure:
            refresh(before, OAuth2Config.from_secret(connection.secret), attempts=1)
        run = operation_runs()[-1]
        assert f"'tokenish/refresh' failed: run #{run.pk}" in str(failure.value) and "503" in str(failure.value)
        current = stored(connection)
        assert current.tokens == before.tokens and current.status == OAuth2Connection.Status.CONNECTED
        assert current.last_error == str(failure.value)


# -- Customize ---------------------------------------------------------------------------


def standard_manifest(provider) -> str:
    return textwrap.dedent(
        f"""
        app: {{slug: crm, name: CRM, version: 1.0.0}}
        connection:
          kind: oauth2
          authorize_url: {provider.authorize_url}
          token_url: {provider.token_url}
          userinfo_url: {provider.userinfo_url}
          scope: openid email read
          test: whoami
        flows:
          whoami:
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider.userinfo_url}", secret: connection}}
              - {{key: out, kind: transform, value: {{identity: "{{{{ steps.me.body.email }}}}"}}}}
        """
    )


@pytest.fixture
def customized(provider, owner):
    """``customized(client_auth)``: the standard app, registered at django-oauth-toolkit, customized."""

    def make(client_auth: str = "basic"):
        manifest = standard_manifest(provider)
        if client_auth != "basic":
            manifest = manifest.replace("  scope:", f"  client_auth: {client_auth}\n  scope:")
        app = app_install(manifest=manifest_parse(manifest)).app
        client_id, client_secret = provider_application(
            name=f"crm-{client_auth}",
            redirect_uri=f"{provider.url}/apps/crm/oauth2/callback/",
            client_type="public" if client_auth == "none" else "confidential",
        )
        app_registration_set(app=app, client_id=client_id, client_secret=client_secret)
        app_operations_customize(app=app, acting_user=owner)
        app.refresh_from_db()
        return app

    return make


class TestCustomize:
    def test_customize_writes_three_private_flows_and_names_them_as_operations(self, customized):
        app = customized()
        assert app.manifest["connection"]["operations"] == {
            "authorize_url": "oauth2-authorize-url",
            "exchange": "oauth2-exchange",
            "refresh": "oauth2-refresh",
        }
        flows = Flow.objects.filter(slug__in=["crm/oauth2-authorize-url", "crm/oauth2-exchange", "crm/oauth2-refresh"])
        assert len(flows) == 3 and all(flow.app_private for flow in flows)
        assert "oauth2-exchange:" in app_export(app=app) and "exchange: oauth2-exchange" in app_export(app=app)

    @pytest.mark.parametrize("client_auth", ["basic", "post", "none"])
    def test_the_customized_flows_connect_and_refresh_like_the_standard_operations(
        self, customized, browser, provider, owner, client_auth
    ):
        app = customized(client_auth)
        connection = connection_create(app=app, acting_user=owner)
        assert connection.secret.config["operations"]["refresh"] == "crm/oauth2-refresh"
        response = back_at_flowgate(browser, connection.secret, browser.answer(browser.start(connection.secret.name)))
        assert response.status_code == 302, response.text[:500]
        current = stored(connection)
        assert current.status == OAuth2Connection.Status.CONNECTED, current.last_error
        assert current.identity == "owner@example.com" and current.expires_at is not None
        assert [run.flow.slug for run in operation_runs()] == ["crm/oauth2-authorize-url", "crm/oauth2-exchange"]
        [exchange] = provider.log.grants("authorization_code")
        assert exchange.basic_auth == (client_auth == "basic") and "code_verifier" in exchange.fields
        refreshed = oauth2_connection_refresh(secret=connection.secret, acting_user=owner)
        assert refreshed.tokens["access_token"] != current.tokens["access_token"]
        assert refreshed.tokens["refresh_token"] != current.tokens["refresh_token"]  # the provider rotates them
        assert len(provider.log.grants("refresh_token")) == 1 and operation_runs()[-1].flow.slug == "crm/oauth2-refresh"
        assert connection_test(connection=connection).ok  # the app's test flow runs with the refreshed token

    def test_a_refused_refresh_through_the_customized_flow_asks_to_reconnect(self, customized, browser, owner):
        app = customized()
        connection = connection_create(app=app, acting_user=owner)
        back_at_flowgate(browser, connection.secret, browser.answer(browser.start(connection.secret.name)))
        from oauth2_provider.models import RefreshToken

        RefreshToken.objects.all().delete()
        with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
            oauth2_connection_refresh(secret=connection.secret, acting_user=owner)
        assert stored(connection).status == OAuth2Connection.Status.NEEDS_REAUTHORIZATION

    def test_customizing_twice_is_refused(self, customized, owner):
        from django.core.exceptions import ValidationError

        app = customized()
        with pytest.raises(ValidationError, match="already a flow"):
            app_operations_customize(app=app, acting_user=owner)
