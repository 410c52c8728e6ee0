"""Apps under attack: hostile manifests, app flows reaching past their connection, and
who may see or reuse what a connection's notices and links carry."""

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError
from oauth2_provider.models import Application

from apps_app.manifest import ManifestError, manifest_from_upload, manifest_parse
from apps_app.models import App, ConnectLink
from apps_app.services.apps import app_install, app_registration_set
from apps_app.services.connect_links import connect_link_create, connect_link_open, connect_link_submit_fields
from apps_app.services.connections import connection_create, connection_test
from apps_app.services.notices import notice_send
from flows_app.models import Flow, FlowRun, Step
from flows_app.services.access import run_data_refusal
from flows_app.services.config import flow_spec_from_data
from flows_app.services.flows import flow_save
from flows_app.services.runs import flow_run_inline
from secrets_app.models import Secret, SecretGrant
from secrets_app.oauth2.tokens import connection_for
from tests.apps_app import test_api
from tests.apps_app.conftest import notes_manifest
from tests.apps_app.test_api import send
from tests.apps_app.test_connect_links import returned
from tests.apps_app.test_notices import oauth2_app_manifest
from tests.flows_app.conftest import make_flow

notes_app, token = test_api.notes_app, test_api.token  # fixtures of the API tests


class TestHostileManifests:
    def test_yaml_aliases_are_refused_before_they_expand(self):
        # Each level nine aliases of the one before: 9**6 strings from a few lines (a real bomb
        # has more levels; six keep this test quick to fail where aliases were accepted).
        levels = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 6)]
        laughs = "  laughs:\n    steps:\n      - key: all\n        kind: transform\n        value:\n"
        laughs += "".join(f"          {level}\n" for level in levels)  # a flow after the manifest's last one
        with pytest.raises(ManifestError, match=r"aliases \(\*name\) are not allowed"):
            manifest_parse(notes_manifest("http://notes.example").rstrip() + "\n" + laughs)

    def test_a_damaged_zip_is_a_manifest_error(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("notes/app.yaml", notes_manifest("http://notes.example"))
        damaged = bytearray(buffer.getvalue())
        at = damaged.index(b"slug: notes")
        damaged[at : at + 4] = b"SLUG"  # the stored CRC no longer matches
        with pytest.raises(ManifestError, match="The zip cannot be read: Bad CRC-32"):
            manifest_from_upload(bytes(damaged))


RELAY = """
  relay:
    public: true
    steps:
      - {key: who, kind: call_flow, flow: notes/whoami}
"""


@pytest.mark.django_db(transaction=True)
class TestAppFlowsReachOnlyTheirConnection:
    """An app's flows run as the operator, who may use every secret: what keeps a user of a
    connection from steering other secrets through them is that they reach nothing else."""

    def test_an_app_flow_calling_a_flow_outside_its_app_is_not_installed(self, notes_api):
        relay = RELAY.replace("flow: notes/whoami", "flow: payroll")
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(notes_manifest(notes_api.url).rstrip() + relay))
        assert failure.value.messages == [
            "flows.relay.steps[0]: Calls the flow(s) payroll; an app's flows call only the app's own flows (notes/<flow>)."
        ]

    def test_an_app_flow_whose_error_handler_is_outside_its_app_is_not_installed(self, notes_api):
        make_flow("payroll", [{"key": "pay", "kind": "transform", "value": {"salary": 100}}])
        relay = RELAY.replace("    public: true", "    public: true\n    error_handler: payroll")
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(notes_manifest(notes_api.url).rstrip() + relay))
        assert failure.value.messages == [
            "flows.relay.error_handler: 'payroll' is not this app's flow; an app's flows call only the app's own flows "
            "(notes/<flow>)."
        ]

    def test_an_app_flow_changed_to_call_another_flow_fails_and_that_flow_never_runs(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url).rstrip() + RELAY)).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        relay = Flow.objects.get(slug="notes/relay")
        assert flow_run_inline(flow=relay, input={}, connection=connection.secret, trigger="t", timeout=30).status == "succeeded"

        payroll = {"steps": [{"key": "pay", "kind": "transform", "value": {"salary": 100}}]}
        flow_save(spec=flow_spec_from_data("payroll", payroll))
        Step.objects.filter(flow=relay).update(config={"flow": "payroll"})  # as a change past the checks would
        run = flow_run_inline(flow=relay, input={}, connection=connection.secret, trigger="t", timeout=30)
        assert run.status == FlowRun.Status.FAILED
        assert "belongs to the app 'notes'; it calls only that app's flows" in run.error
        assert not FlowRun.objects.filter(flow__slug="payroll").exists()

    def test_changing_an_app_flow_needs_manage_on_every_one_of_its_connections(
        self, notes_api, staff_user, django_user_model
    ):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        ann, bob = staff_user("ann"), staff_user("bob")
        connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        connection_create(app=app, data={"api_key": "key-bob"}, acting_user=bob)
        definition = app.manifest["flows"]["list-notes"]
        # Sending every connection's key elsewhere, as the flow runs for each of them.
        exfiltrating = {key: value for key, value in definition.items() if key not in ("public", "triggers")}
        exfiltrating["description"] = "also posts the key"
        spec = flow_spec_from_data("list-notes", exfiltrating, app_slug="notes")
        for user in (ann, bob):
            with pytest.raises(ValidationError, match="may not change the app 'notes'"):
                flow_save(spec=spec, acting_user=user)
        assert Flow.objects.get(slug="notes/list-notes").description == ""

        root = django_user_model.objects.create_superuser("root", password="pw")
        flow_save(spec=spec, acting_user=root)
        assert Flow.objects.get(slug="notes/list-notes").description == "also posts the key"


@pytest.mark.django_db(transaction=True)
class TestConnectLinks:
    def test_a_reconnect_whose_fields_fail_the_test_keeps_the_working_ones(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        assert connection_test(connection=connection).ok
        link = connect_link_create(app=app, connection=connection).link

        with pytest.raises(ValidationError, match="Notes could not use it"):
            connect_link_submit_fields(link=link, data={"api_key": "wrong-key", "region": "us"})
        secret = Secret.objects.get(pk=connection.pk)
        assert secret.values["secret"] == {"api_key": "key-ann"} and secret.config["public"] == {"region": "eu"}
        assert (secret.status, secret.identity) == (Secret.Status.OK, "ann")
        assert ConnectLink.objects.get().used_at is None  # to be corrected and tried again
        run = flow_run_inline(
            flow=Flow.objects.get(slug="notes/list-notes"), input={}, connection=secret, trigger="t", timeout=30
        )
        assert run.response["body"]["owner"] == "ann"


@pytest.mark.django_db(transaction=True)
class TestNotices:
    def test_a_notice_runs_data_with_its_reconnect_link_is_hidden_from_users_without_a_grant_on_the_connection(
        self, settings, staff_user
    ):
        settings.FLOWGATE_CONNECTION_NOTICE_FLOW = "connection-notices"  # a plain flow: it binds nothing
        settings.BASE_URL = "http://127.0.0.1:8000"  # the app's redirect URI is built from it
        make_flow("connection-notices", [{"key": "said", "kind": "transform", "value": "{{ trigger }}"}])
        app = app_install(manifest=manifest_parse(oauth2_app_manifest("https://crm.example"))).app
        app_registration_set(app=app, client_id="crm-client", client_secret="crm-client-secret")
        ann = staff_user("ann")
        secret = connection_create(app=App.objects.get(pk=app.pk), acting_user=ann).secret
        connection_for(secret)

        run = notice_send(secret=secret, event="needs_reauthorization")
        assert connect_link_open(returned(run.input["reconnect_url"])["link"]).connection_id == secret.pk
        refusal = run_data_refusal(staff_user("mallory"), run.secret_ids)
        assert refusal is not None and "hold no use grant" in refusal
        assert run_data_refusal(ann, run.secret_ids) is None


@pytest.mark.django_db
class TestConnectionsApi:
    def test_a_client_lists_only_the_connections_its_user_may_use(self, client, token, notes_app, staff_user):
        ann, bob = staff_user("ann"), staff_user("bob")
        anns = connection_create(app=notes_app, data={"api_key": "key-ann"}, acting_user=ann, end_user="customer-1")
        bobs = connection_create(app=notes_app, data={"api_key": "key-bob"}, acting_user=bob, end_user="customer-2")
        read = token("connections:read")

        def listed():
            return sorted(item["id"] for item in send(client, "GET", "/connections", read).json())

        assert listed() == [anns.pk, bobs.pk]  # a client without a user: the operator's
        Application.objects.update(user=ann)
        assert listed() == [anns.pk]
        SecretGrant.objects.create(secret=bobs.secret, user=ann, level=SecretGrant.Level.USE)
        assert listed() == [anns.pk, bobs.pk]
        Application.objects.update(user=staff_user("mallory"))
        assert listed() == []

    @pytest.mark.parametrize(
        "method, path, body",
        [
            ("POST", "/connect-links", {"app": "notes\x00"}),
            ("POST", "/connect-links", {"app": "notes", "end_user": "customer\x00"}),
            ("POST", "/connections/1/connect-link", {"return_url": "https://builder.example.com/settings\x00"}),
            ("GET", "/connections?app=notes%00", None),
            ("GET", "/connections?end_user=%00", None),
        ],
    )
    def test_a_nul_character_is_a_400_not_a_database_error(self, client, token, notes_app, method, path, body):
        scope = "connections:write" if method == "POST" else "connections:read"
        response = send(client, method, path, token(scope), body)
        assert response.status_code == 400, response.content
        assert "must not contain a NUL character" in response.json()["detail"]
        assert not ConnectLink.objects.exists()
