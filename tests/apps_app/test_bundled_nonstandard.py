"""The bundled Orbit CRM app, end to end against a local Orbit: a token endpoint that
answers form-encoded with the tokens nested as JSON, lifetimes in milliseconds and the
account's own API host, handled by the app's operation flows alone (no Python)."""

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django.utils import timezone

from apps_app.manifest import manifest_load
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connections import connection_create, connection_test
from flows_app.models import Flow, FlowRun, StepRun
from flows_app.services.runs import flow_run_inline
from secrets_app.models import OAuth2Connection
from tests.apps_app.local_provider import LocalProvider, back_at_flowgate, form
from tests.servers import Reply

pytestmark = pytest.mark.django_db(transaction=True)

APP_FOLDER = Path(__file__).resolve().parents[2] / "apps" / "orbit-crm"
CLIENT_ID, CLIENT_SECRET = "orbit-client", "orbit-client-secret-3e9a71"
LIFETIME_MS = 3_600_000


class Orbit:
    """Orbit's login server and the API host of one account (``/eu7``), on one local server."""

    def __init__(self, server):
        self.server = server
        self.provider = LocalProvider(CLIENT_ID, CLIENT_SECRET, account="ann@orbit.example")
        self.instance_url = f"{server.url}/eu7"
        server.handler = self.answer

    def answer(self, request):
        path = urlsplit(request.path).path
        if path == "/oauth/authorize":
            return self.provider.authorize(request)
        if path == "/oauth/token":
            grant = self.provider.grant(form(request))
            if isinstance(grant, str):
                return Reply(400, urlencode({"error": grant}), {"Content-Type": "application/x-www-form-urlencoded"})
            result = {
                "token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_in_ms": LIFETIME_MS,
                "account": grant.account,
            }
            body = urlencode({"result": json.dumps(result), "instance_url": self.instance_url})
            return Reply(200, body, {"Content-Type": "application/x-www-form-urlencoded"})
        account = self.provider.account_of(request)
        if account is None:
            return Reply(401, {"error": "invalid_token"})
        if path == "/eu7/api/v2/me":
            return Reply(200, {"email": account})
        if path == "/eu7/api/v2/contacts":
            return Reply(200, {"records": [{"name": f"A contact of {account}"}]})
        return Reply(404, {"error": "not here"})

    def manifest(self):
        """The bundled manifest, with Orbit's login server at this machine's address."""
        manifest = manifest_load(APP_FOLDER)
        manifest.data["connection"].update(
            authorize_url=f"{self.server.url}/oauth/authorize", token_url=f"{self.server.url}/oauth/token"
        )
        return manifest

    def install(self, manifest=None):
        app = app_install(manifest=manifest or self.manifest()).app
        app_registration_set(app=app, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        return app

    def connect(self, browser, owner, app):
        connection = connection_create(app=app, acting_user=owner)
        consented = browser.get(browser.start(connection.secret.name))  # Orbit asks nothing of a signed-in user
        response = back_at_flowgate(browser, connection.secret, consented.headers["Location"])
        assert response.status_code == 302, response.text[:500]
        return connection


@pytest.fixture
def orbit(local_server):
    return Orbit(local_server)


def stored(connection) -> OAuth2Connection:
    return OAuth2Connection.objects.get(secret_id=connection.pk)


def list_contacts(connection) -> FlowRun:
    """Run the app's public flow with ``connection``, as ``run_flow --connection`` would, and wait."""
    flow = Flow.objects.get(slug="orbit-crm/list-contacts")
    return flow_run_inline(flow=flow, input={}, connection=connection.secret, trigger="test", timeout=60)


def expire(orbit, connection) -> None:
    """The access token's lifetime is over, here and at Orbit."""
    orbit.provider.expire_all()
    OAuth2Connection.objects.filter(secret_id=connection.pk).update(expires_at=timezone.now())


class TestOrbitCrm:
    def test_the_app_is_a_manifest_and_an_icon_only(self):
        assert sorted(path.name for path in APP_FOLDER.iterdir()) == ["app.yaml", "icon.svg"]
        manifest = manifest_load(APP_FOLDER)
        assert manifest.icon.startswith("data:image/svg+xml;base64,")
        assert set(manifest.connection["operations"]) == {"authorize_url", "exchange", "refresh"}

    def test_connecting_reads_the_nested_form_encoded_answer(self, orbit, browser, owner):
        connection = orbit.connect(browser, owner, orbit.install())
        authorize = dict(parse_qsl(urlsplit(orbit.server.requests[0].path).query))
        assert authorize["scope"] == "contacts.read,offline" and authorize["code_challenge_method"] == "S256"
        current = stored(connection)
        issued = orbit.provider.issued[-1]
        assert current.status == OAuth2Connection.Status.CONNECTED
        assert current.tokens == {"access_token": issued.access_token, "refresh_token": issued.refresh_token}
        lifetime = current.expires_at - timezone.now()
        assert timedelta(seconds=3500) < lifetime <= timedelta(seconds=LIFETIME_MS / 1000)  # milliseconds read as such
        assert current.identity == "ann@orbit.example"
        assert current.provider_data == {"instance_url": orbit.instance_url}

    def test_its_flows_call_the_accounts_own_api_host(self, orbit, browser, owner):
        connection = orbit.connect(browser, owner, orbit.install())
        assert connection_test(connection=connection).ok
        run = list_contacts(connection)
        assert run.status == FlowRun.Status.SUCCEEDED, run.error
        assert run.output == {"contacts": [{"name": "A contact of ann@orbit.example"}]}
        last = orbit.server.last
        assert last.path == "/eu7/api/v2/contacts"
        assert last.headers["Authorization"] == f"Bearer {orbit.provider.issued[-1].access_token}"

    def test_an_expired_token_is_refreshed_by_the_refresh_flow(self, orbit, browser, owner):
        connection = orbit.connect(browser, owner, orbit.install())
        first = stored(connection)
        expire(orbit, connection)
        run = list_contacts(connection)
        assert run.status == FlowRun.Status.SUCCEEDED, run.error
        refreshed = stored(connection)
        assert refreshed.tokens["access_token"] == orbit.provider.issued[-1].access_token != first.tokens["access_token"]
        assert refreshed.tokens["refresh_token"] == orbit.provider.issued[-1].refresh_token  # Orbit rotates them
        assert refreshed.expires_at - timezone.now() > timedelta(seconds=3500)
        assert [run.flow.slug for run in FlowRun.objects.filter(trigger="oauth2_operation").order_by("pk")] == [
            "orbit-crm/oauth-build-url",
            "orbit-crm/oauth-exchange",
            "orbit-crm/oauth-refresh",
        ]

    def test_no_operation_run_shows_a_token(self, orbit, browser, owner):
        connection = orbit.connect(browser, owner, orbit.install())
        expire(orbit, connection)
        list_contacts(connection)
        runs = FlowRun.objects.filter(trigger="oauth2_operation")
        history = str(
            [(run.input, run.output, run.error) for run in runs]
            + [(step.input, step.output, step.logs, step.error) for step in StepRun.objects.filter(run__in=runs)]
        )
        for grant in orbit.provider.issued:
            assert grant.access_token not in history and grant.refresh_token not in history
        assert CLIENT_SECRET not in history and orbit.instance_url in history

    def test_a_refresh_flow_with_a_wrong_output_shape_names_the_flow_and_the_key(self, orbit, browser, owner):
        manifest = orbit.manifest()
        tokens = manifest.data["flows"]["oauth-refresh"]["steps"][-1]["value"]
        tokens["token"] = tokens.pop("access_token")  # an edit that broke the contract
        connection = orbit.connect(browser, owner, orbit.install(manifest))
        before = stored(connection)
        expire(orbit, connection)
        run = list_contacts(connection)
        assert run.status == FlowRun.Status.FAILED
        message = "The refresh operation flow 'orbit-crm/oauth-refresh' gave no 'access_token': the key is missing."
        assert message in run.error
        current = stored(connection)
        assert message in current.last_error
        assert current.tokens == before.tokens and current.status == OAuth2Connection.Status.CONNECTED
