"""Installing, upgrading, exporting and uninstalling an app, and running its flows for one connection."""

import pytest
from django.core.management import call_command

from apps_app.exceptions import AppInUse
from apps_app.manifest import ManifestError, manifest_parse
from apps_app.models import App, Connection
from apps_app.services.apps import app_export, app_install, app_uninstall
from apps_app.services.connections import connection_create, connection_test
from flows_app.models import Flow, FlowRun
from flows_app.services.runs import RunNotAllowed, flow_run_inline, flow_run_start
from secrets_app.models import AuditEvent, Secret
from tests.apps_app.conftest import notes_manifest


@pytest.mark.django_db(transaction=True)
class TestInstall:
    def test_install_creates_the_app_and_its_flows_named_app_slash_flow(self, notes_api):
        change = app_install(manifest=manifest_parse(notes_manifest(notes_api.url)))
        assert change.action == "install"
        flows = {flow.slug: flow for flow in Flow.objects.filter(app_slug="notes")}
        assert set(flows) == {"notes/list-notes", "notes/whoami"}
        assert not flows["notes/list-notes"].app_private and flows["notes/whoami"].app_private
        assert flows["notes/list-notes"].endpoints.get().path == "apps/notes/notes"

    def test_installing_the_same_manifest_again_changes_nothing(self, notes_api):
        manifest = manifest_parse(notes_manifest(notes_api.url))
        app_install(manifest=manifest)
        assert app_install(manifest=manifest).action == "unchanged"

    def test_an_upgrade_keeps_connections_and_says_what_changed(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        change = app_install(manifest=manifest_parse(notes_manifest(notes_api.url + "/v2", version="1.1.0")))
        assert change.action == "upgrade"
        assert "version 1.0.0 → 1.1.0" in change.changes
        assert "flow notes/list-notes: changed" in change.changes
        assert Connection.objects.filter(pk=connection.pk).exists()

    def test_manifest_errors_name_their_place(self):
        with pytest.raises(ManifestError) as failure:
            manifest_parse("app: {slug: Notes, name: N, version: 1}\nconnection: {kind: generic}\nflows: {}\n")
        text = "\n".join(failure.value.messages)
        assert "app.slug:" in text and "app.version:" in text and "connection:" in text

    def test_flow_errors_name_the_flow_and_step(self, notes_api):
        bad = notes_manifest(notes_api.url).replace("kind: respond", "kind: nonsense")
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(bad))
        assert any(message.startswith("flows.list-notes.steps[1]") for message in failure.value.messages)
        assert not App.objects.exists() and not Flow.objects.exists()

    def test_an_app_flow_cannot_name_other_secrets(self, notes_api):
        bad = notes_manifest(notes_api.url).replace('headers: {X-Api-Key: "{{ connection.api_key }}"}', "secret: crm", 1)
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(bad))
        assert "reach only their connection" in "\n".join(failure.value.messages)

    def test_an_app_flow_has_no_schedule_for_it_would_run_without_a_connection(self, notes_api):
        endpoint = "- {kind: endpoint, path: notes,"
        bad = notes_manifest(notes_api.url).replace(endpoint, "- {kind: schedule, interval: 60}\n      " + endpoint)
        with pytest.raises(ManifestError) as failure:
            app_install(manifest=manifest_parse(bad))
        assert failure.value.messages == [
            "flows.list-notes.triggers: A schedule names no connection; an app's flows run for one (use an endpoint)."
        ]
        assert not App.objects.exists() and not Flow.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestConnections:
    def test_each_connection_runs_with_its_own_account(self, notes_api, django_user_model):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        ann = connection_create(app=app, data={"api_key": "key-ann"})
        bob = connection_create(app=app, data={"api_key": "key-bob", "region": "us"})
        flow = Flow.objects.get(slug="notes/list-notes")
        for connection, person, region in ((ann, "ann", "eu"), (bob, "bob", "us")):
            run = flow_run_inline(flow=flow, input={}, connection=connection.secret, trigger="test", timeout=30)
            assert run.status == FlowRun.Status.SUCCEEDED, run.error
            assert run.response["body"]["owner"] == person and run.response["body"]["region"] == region

    def test_the_test_flow_sets_status_and_identity(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        good = connection_create(app=app, data={"api_key": "key-ann"})
        bad = connection_create(app=app, data={"api_key": "wrong-key"})
        assert connection_test(connection=good).ok
        assert not connection_test(connection=bad).ok
        good.secret.refresh_from_db(), bad.secret.refresh_from_db()
        assert (good.secret.status, good.secret.identity) == (Secret.Status.OK, "ann")
        assert bad.secret.status == Secret.Status.FAILING and "401" in bad.secret.status_detail

    def test_the_sensitive_field_is_stored_encrypted_and_never_in_run_history(self, notes_api):
        from django.db import connection as db

        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        run = flow_run_inline(
            flow=Flow.objects.get(slug="notes/list-notes"), input={}, connection=connection.secret, trigger="t", timeout=30
        )
        assert notes_api.requests[-1].headers["X-Api-Key"] == "key-ann"
        with db.cursor() as cursor:
            cursor.execute("SELECT values FROM secrets_app_secret WHERE id = %s", [connection.pk])
            assert "key-ann" not in str(cursor.fetchone())
        stored = str([(step.input, step.output, step.logs, step.error) for step in run.step_runs.all()])
        assert "key-ann" not in stored and "key-ann" not in app_export(app=app)
        assert AuditEvent.objects.filter(action="secret.reveal", target_name=connection.secret.name).exists()

    def test_a_run_needs_a_connection_of_its_app_that_the_starter_may_use(self, notes_api, staff_user):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        ann_user, bob_user = staff_user("ann"), staff_user("bob")
        ann = connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann_user)
        flow = Flow.objects.get(slug="notes/list-notes")
        with pytest.raises(RunNotAllowed, match="name one of its connections"):
            flow_run_start(flow=flow, input={})
        with pytest.raises(RunNotAllowed, match="holds no use grant"):
            flow_run_start(flow=flow, input={}, connection=ann.secret, acting_user=bob_user)
        assert flow_run_start(flow=flow, input={}, connection=ann.secret, acting_user=ann_user).connection_id == ann.pk

    def test_private_flows_are_not_started_by_hand(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        with pytest.raises(RunNotAllowed, match="private"):
            flow_run_start(flow=Flow.objects.get(slug="notes/whoami"), input={}, connection=connection.secret)

    def test_the_endpoint_names_its_connection_in_the_path(self, notes_api, client, celery_worker):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        ann = connection_create(app=app, data={"api_key": "key-ann"})
        response = client.get(f"/hooks/apps/notes/{ann.pk}/notes")
        assert response.status_code == 200, response.content
        assert response.json()["owner"] == "ann"
        assert client.get(f"/hooks/apps/notes/{ann.pk + 1000}/notes").status_code == 404
        assert client.get("/hooks/apps/notes/notes").status_code == 404


@pytest.mark.django_db(transaction=True)
class TestExportAndUninstall:
    def test_an_exported_app_installs_on_a_fresh_database(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        exported = app_export(app=app)
        app_uninstall(app=app)
        assert not Flow.objects.exists()
        again = app_install(manifest=manifest_parse(exported))
        assert again.action == "install"
        assert app_export(app=again.app) == exported

    def test_uninstall_is_refused_while_connections_exist_unless_forced(self, notes_api):
        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        with pytest.raises(AppInUse):
            app_uninstall(app=app)
        app_uninstall(app=app, force=True)
        assert not Secret.objects.filter(pk=connection.pk).exists() and not App.objects.exists()

    def test_the_command_installs_lists_exports_and_uninstalls(self, notes_api, tmp_path, capsys):
        (tmp_path / "app.yaml").write_text(notes_manifest(notes_api.url))
        call_command("app", "install", str(tmp_path))
        call_command("app", "list")
        assert "notes\t1.0.0\tNotes\t0 connection(s)" in capsys.readouterr().out
        call_command("app", "export", "notes")
        assert "slug: notes" in capsys.readouterr().out
        call_command("app", "uninstall", "notes")
        assert not App.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestConfigAsCode:
    def test_export_leaves_apps_to_app_export_and_apply_leaves_connections_alone(self, notes_api):
        from project.config_as_code import ConfigError, config_apply, config_export

        app = app_install(manifest=manifest_parse(notes_manifest(notes_api.url))).app
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        exported = config_export()
        assert connection.secret.name not in str(exported) and "notes/" not in str(exported)
        with pytest.raises(ConfigError, match="connection of the app 'notes'"):
            config_apply({"secrets": {connection.secret.name: {"kind": "generic", "public": {"a": "b"}}}})
