"""The bundled Pipedrive app (apps/pipedrive), end to end against a local Pipedrive API.

It is installed from its folder with ``app install`` as shipped: its API base URL is a
connection field, so each connection here points at the local API.
"""

import json
import logging
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import CommandError, call_command

from apps_app.manifest import manifest_parse
from apps_app.models import App
from apps_app.services.apps import app_install
from apps_app.services.connections import connection_create, connection_test
from flows_app.models import Flow, FlowRun, StepRun
from flows_app.services.runs import flow_run_inline
from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create
from tests.conftest import REPOSITORY
from tests.servers import Reply

APP_FOLDER = REPOSITORY / "apps" / "pipedrive"
CALLERS_KEY = "callers-key-for-pipedrive-tests"
TOKENS = {"pd-token-ann-8f2a1c": "ann", "pd-token-bob-3e9d07": "bob"}
DEALS = {
    "ann": [
        {"id": 1, "title": "Ann's open deal", "status": "open"},
        {"id": 2, "title": "Ann's won deal", "status": "won"},
    ],
    "bob": [{"id": 3, "title": "Bob's open deal", "status": "open"}],
}


@pytest.fixture
def pipedrive_api(local_server):
    """Pipedrive's API as far as the app uses it: each token belongs to one person, who
    sees only their own deals. ``created`` keeps the persons added, with whose token."""
    local_server.created = []

    def answer(request):
        person = TOKENS.get(request.headers.get("x-api-token", ""))
        if person is None:
            return Reply(401, {"success": False, "error": "unauthorized access", "errorCode": 401})
        url = urlsplit(request.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        if request.method == "GET" and url.path == "/v1/users/me":
            me = {"id": 7, "name": person.title(), "email": f"{person}@example.com"}
            return Reply(200, {"success": True, "data": me})
        if request.method == "GET" and url.path == "/v1/deals":
            deals = [deal for deal in DEALS[person] if query.get("status") in (deal["status"], "all_not_deleted")]
            return Reply(200, {"success": True, "data": deals or None})
        if request.method == "POST" and url.path == "/v1/persons":
            body = json.loads(request.body)
            local_server.created.append((person, body))
            return Reply(201, {"success": True, "data": {"id": 100 + len(local_server.created), "name": body["name"]}})
        return Reply(404, {"success": False, "error": "not found"})

    local_server.handler = answer
    return local_server


@pytest.fixture
def pipedrive(transactional_db):
    """The app installed from its folder, with the API key its endpoints check."""
    secret_create(name="pipedrive-callers", kind="api_token", data={"token": CALLERS_KEY})
    call_command("app", "install", str(APP_FOLDER), stdout=StringIO())
    return App.objects.get(slug="pipedrive")


def connect(app, api, token, **fields):
    return connection_create(app=app, data={"api_token": token, "base_url": f"{api.url}/v1", **fields})


def run_flow(flow: str, connection, input: dict | None = None) -> dict:
    out = StringIO()
    call_command(
        "run_flow", flow, "--connection", str(connection.pk), "--input", json.dumps(input or {}), "--wait",
        "--timeout", "60", stdout=out,
    )  # fmt: skip
    return json.loads(out.getvalue())


@pytest.mark.django_db(transaction=True)
class TestInstall:
    def test_installs_from_its_folder_with_its_fields_flows_and_icon(self, pipedrive):
        assert (pipedrive.name, pipedrive.version, pipedrive.connection_kind) == ("Pipedrive", "1.0.0", "generic")
        assert pipedrive.icon.startswith("data:image/svg+xml;base64,")
        flows = {flow.slug: flow for flow in Flow.objects.filter(app_slug="pipedrive")}
        assert set(flows) == {"pipedrive/connection-test", "pipedrive/list-deals", "pipedrive/add-person"}
        assert flows["pipedrive/connection-test"].app_private
        assert not flows["pipedrive/list-deals"].app_private and not flows["pipedrive/add-person"].app_private
        fields = {field["key"]: field for field in pipedrive.manifest["connection"]["fields"]}
        assert fields["api_token"]["sensitive"] and not fields["base_url"].get("sensitive")
        assert fields["deal_status"]["default"] == "open"

    def test_installing_it_again_changes_nothing(self, pipedrive):
        out = StringIO()
        call_command("app", "install", str(APP_FOLDER), stdout=out)
        assert out.getvalue().strip() == "pipedrive 1.0.0: unchanged."

    def test_its_export_installs_on_a_fresh_database_as_the_same_app(self, pipedrive):
        exported = StringIO()
        call_command("app", "export", "pipedrive", stdout=exported)
        call_command("app", "uninstall", "pipedrive", stdout=StringIO())
        assert not App.objects.exists() and not Flow.objects.exists()
        app_install(manifest=manifest_parse(exported.getvalue()))
        again = StringIO()
        call_command("app", "export", "pipedrive", stdout=again)
        assert again.getvalue() == exported.getvalue()
        assert App.objects.get().manifest["connection"] == pipedrive.manifest["connection"]

    def test_without_the_callers_key_the_install_says_which_secret_is_missing(self, transactional_db):
        with pytest.raises(CommandError) as failure:
            call_command("app", "install", str(APP_FOLDER), stdout=StringIO())
        assert "flows.list-deals.triggers[0].auth.secret: There is no secret 'pipedrive-callers'." in str(failure.value)
        assert not App.objects.exists() and not Flow.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestConnections:
    def test_the_test_flow_names_the_account_and_a_wrong_token_fails(self, pipedrive, pipedrive_api):
        good = connect(pipedrive, pipedrive_api, "pd-token-ann-8f2a1c")
        bad = connect(pipedrive, pipedrive_api, "not-a-token")
        assert connection_test(connection=good).ok and not connection_test(connection=bad).ok
        good.secret.refresh_from_db(), bad.secret.refresh_from_db()
        assert (good.secret.status, good.secret.identity) == (Secret.Status.OK, "ann@example.com")
        assert bad.secret.status == Secret.Status.FAILING and "401" in bad.secret.status_detail

    def test_a_required_field_is_required_and_the_defaults_apply(self, pipedrive, pipedrive_api):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError) as failure:
            connection_create(app=pipedrive, data={"base_url": pipedrive_api.url})
        assert "api_token" in failure.value.message_dict
        default = connection_create(app=pipedrive, data={"api_token": "pd-token-ann-8f2a1c"})
        assert default.secret.config["public"] == {"base_url": "https://api.pipedrive.com/v1", "deal_status": "open"}
        assert default.secret.values["secret"] == {"api_token": "pd-token-ann-8f2a1c"}


@pytest.mark.django_db(transaction=True)
class TestPublicFlows:
    def test_run_flow_lists_each_connections_own_deals(self, pipedrive, pipedrive_api, celery_worker):
        ann = connect(pipedrive, pipedrive_api, "pd-token-ann-8f2a1c")
        bob = connect(pipedrive, pipedrive_api, "pd-token-bob-3e9d07", deal_status="all_not_deleted")
        ann_run, bob_run = run_flow("pipedrive/list-deals", ann), run_flow("pipedrive/list-deals", bob)
        assert ann_run["status"] == "succeeded", ann_run["error"]
        assert ann_run["response"]["body"] == {"status": "open", "deals": [DEALS["ann"][0]]}
        assert bob_run["response"]["body"] == {"status": "all_not_deleted", "deals": DEALS["bob"]}
        assert run_flow("pipedrive/list-deals", ann, {"query": {"status": "lost"}})["response"]["body"]["deals"] == []

    def test_the_endpoint_names_the_connection_in_its_path(self, pipedrive, pipedrive_api, client, celery_worker):
        ann = connect(pipedrive, pipedrive_api, "pd-token-ann-8f2a1c")
        bob = connect(pipedrive, pipedrive_api, "pd-token-bob-3e9d07")
        key = {"HTTP_X_API_KEY": CALLERS_KEY}
        won = client.get(f"/hooks/apps/pipedrive/{ann.pk}/deals", {"status": "won"}, **key)
        assert won.status_code == 200, won.content
        assert won.json() == {"status": "won", "deals": [DEALS["ann"][1]]}
        assert client.get(f"/hooks/apps/pipedrive/{bob.pk}/deals", **key).json()["deals"] == DEALS["bob"]
        added = client.post(
            f"/hooks/apps/pipedrive/{bob.pk}/persons", {"name": "Carol", "email": "carol@example.com"},
            content_type="application/json", **key,
        )  # fmt: skip
        assert added.status_code == 201, added.content
        assert added.json() == {"id": 101, "name": "Carol"}
        assert pipedrive_api.created == [
            ("bob", {"name": "Carol", "email": [{"value": "carol@example.com", "primary": True}]})
        ]

    def test_the_endpoint_refuses_callers_without_the_key(self, pipedrive, pipedrive_api, client):
        ann = connect(pipedrive, pipedrive_api, "pd-token-ann-8f2a1c")
        assert client.get(f"/hooks/apps/pipedrive/{ann.pk}/deals").status_code == 401
        assert client.get(f"/hooks/apps/pipedrive/{ann.pk}/deals", HTTP_X_API_KEY="wrong").status_code == 401
        assert not pipedrive_api.requests and not FlowRun.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestTheApiTokenNeverShows:
    TOKEN = "pd-token-ann-8f2a1c"

    def test_not_in_admin_pages_logs_run_history_worker_output_or_export(
        self, pipedrive, pipedrive_api, client, celery_worker, caplog, django_user_model
    ):
        caplog.set_level(logging.DEBUG)
        connection = connect(pipedrive, pipedrive_api, self.TOKEN)
        assert connection_test(connection=connection).ok
        flow = Flow.objects.get(slug="pipedrive/list-deals")
        inline = flow_run_inline(flow=flow, input={}, connection=connection.secret, trigger="test", timeout=30)
        assert inline.status == FlowRun.Status.SUCCEEDED, inline.error
        assert run_flow("pipedrive/list-deals", connection)["status"] == "succeeded"
        called = client.get(f"/hooks/apps/pipedrive/{connection.pk}/deals", HTTP_X_API_KEY=CALLERS_KEY)
        assert called.status_code == 200
        assert {request.headers["x-api-token"] for request in pipedrive_api.requests} == {self.TOKEN}  # it was used

        admin = django_user_model.objects.create_superuser("admin", password="pw")
        client.force_login(admin)
        pages = [
            f"/admin/secrets_app/secret/{connection.pk}/change/",
            "/admin/secrets_app/secret/",
            *(f"/admin/flows_app/flowrun/{run.pk}/change/" for run in FlowRun.objects.all()),
        ]
        for page in pages:
            response = client.get(page)
            assert response.status_code == 200, page
            assert self.TOKEN not in response.content.decode(), page
        assert caplog.records and self.TOKEN not in caplog.text
        history = [
            (run.input, run.output, run.error, run.response) for run in FlowRun.objects.all()
        ] + [(step.input, step.output, step.logs, step.error) for step in StepRun.objects.all()]
        assert len(history) > 4 and self.TOKEN not in str(history)
        assert self.TOKEN not in "".join(celery_worker.output)
        exported = StringIO()
        call_command("app", "export", "pipedrive", stdout=exported)
        assert "api_token" in exported.getvalue() and self.TOKEN not in exported.getvalue()
