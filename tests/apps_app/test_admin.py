"""The Apps pages of the admin: the upload, an app's page, its OAuth2 client, connections
(add, test, change, delete), uninstalling, Run now with a connection, and who may do what."""

import io
import textwrap
import zipfile
from html import unescape

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps_app.services.connect_links import connect_link_open
from apps_app.manifest import MAX_UPLOAD_BYTES, manifest_parse
from apps_app.models import App, Connection
from apps_app.services.apps import app_install
from apps_app.services.connections import connection_create, connection_test
from flows_app.models import Flow, FlowRun
from secrets_app.models import Secret, SecretGrant
from secrets_app.services.grants import grant_give
from tests.apps_app.conftest import notes_manifest

ICON = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8" fill="#1565c0"/></svg>'


def oauth2_manifest(provider_url: str = "https://provider.example") -> str:
    return textwrap.dedent(
        f"""
        app:
          slug: cloud-notes
          name: Cloud Notes
          version: 2.0.0
          description: Notes in the cloud, connected with OAuth2.
        connection:
          kind: oauth2
          authorize_url: {provider_url}/o/authorize/
          token_url: {provider_url}/o/token/
          revocation_url: {provider_url}/o/revoke_token/
          scope: "openid email read"
          test: me
        flows:
          me:
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider_url}/o/userinfo/", secret: connection}}
              - {{key: out, kind: transform, value: {{identity: "{{{{ steps.me.body.email }}}}"}}}}
        """
    )


def upload(client, content: bytes, name: str = "app.yaml"):
    return client.post(
        reverse("admin:apps_app_app_upload"), {"manifest": SimpleUploadedFile(name, content)}, follow=True
    )


def page_text(response) -> str:
    return unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def install_notes(api_url: str, acting_user=None) -> App:
    return app_install(manifest=manifest_parse(notes_manifest(api_url)), acting_user=acting_user).app


def app_page(client, app, query: str = ""):
    return client.get(reverse("admin:apps_app_app_change", args=[app.pk]) + query)


def connection_page(client, connection):
    return client.get(reverse("admin:apps_app_connection_change", args=[connection.pk]))


def add_connection(client, app, data):
    return client.post(reverse("admin:apps_app_app_add_connection", args=[app.pk]), data, follow=True)


@pytest.fixture
def apps_user(db, django_user_model):
    """``apps_user(name, *codenames)``: a staff user with the flows' and the vault's
    permissions and these of apps_app, holding no grant on anyone's connection."""

    def create(username: str, *codenames: str):
        user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
        permissions = Permission.objects.filter(content_type__app_label__in=["secrets_app", "flows_app"])
        user.user_permissions.set(permissions | Permission.objects.filter(content_type__app_label="apps_app", codename__in=codenames))
        return user

    return create


ALL_APP_PERMISSIONS = (
    "view_app", "add_app", "change_app", "delete_app", "view_connection", "add_connection", "change_connection",
    "delete_connection",
)  # fmt: skip


@pytest.mark.django_db(transaction=True)
class TestAppsPage:
    def test_it_lists_each_app_with_its_icon_version_description_and_connection_count(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        App.objects.filter(pk=app.pk).update(icon="data:image/svg+xml;base64,PHN2Zy8+")
        connection_create(app=app, data={"api_key": "key-ann"})
        html = page_text(admin_client.get(reverse("admin:apps_app_app_changelist")))
        assert 'src="data:image/svg+xml;base64,PHN2Zy8+"' in html
        assert "Notes" in html and "1.0.0" in html and "Notes from a notes API." in html
        assert f'?app__id__exact={app.pk}">1</a>' in html
        assert 'id="upload"' in html

    def test_uploading_a_manifest_installs_the_app_and_opens_its_page(self, admin_client, notes_api):
        response = upload(admin_client, notes_manifest(notes_api.url).encode())
        app = App.objects.get(slug="notes")
        assert response.redirect_chain[-1][0] == reverse("admin:apps_app_app_change", args=[app.pk])
        assert messages_of(response) == ["notes 1.0.0: installed"]
        assert set(Flow.objects.filter(app_slug="notes").values_list("slug", flat=True)) == {"notes/list-notes", "notes/whoami"}

    def test_uploading_a_zip_of_the_folder_installs_the_app_with_its_icon(self, admin_client, notes_api):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as folder:
            folder.writestr("notes/app.yaml", notes_manifest(notes_api.url).replace("version: 1.0.0", "version: 1.0.0\n  icon: icon.svg"))
            folder.writestr("notes/icon.svg", ICON)
        response = upload(admin_client, archive.getvalue(), "notes.zip")
        assert response.status_code == 200
        assert App.objects.get(slug="notes").icon.startswith("data:image/svg+xml;base64,")
        assert 'class="app-icon" src="data:image/svg+xml;base64,' in page_text(response)

    def test_uploading_the_same_manifest_again_changes_nothing(self, admin_client, notes_api):
        install_notes(notes_api.url)
        assert messages_of(upload(admin_client, notes_manifest(notes_api.url).encode())) == ["notes 1.0.0: unchanged."]

    def test_an_upgrade_says_what_changed_line_by_line(self, admin_client, notes_api):
        install_notes(notes_api.url)
        newer = notes_manifest(notes_api.url + "/v2", version="1.1.0")
        shown = messages_of(upload(admin_client, newer.encode()))
        assert shown[0] == "notes 1.1.0: upgraded"
        assert "version 1.0.0 → 1.1.0" in shown and "flow notes/list-notes: changed" in shown

    @pytest.mark.parametrize(
        "content, expected",
        [
            (b"app: [unclosed", "not valid YAML at line 1"),
            (b"app: {slug: Notes, name: N, version: '1'}\nconnection: {kind: generic}\nflows: {}\n", "app.slug:"),
            (b"\x00\x01\x02 binary", "not valid YAML"),
            (b"PK\x03\x04" + b"\x00" * 40, "not valid YAML"),
        ],
        ids=["broken-yaml", "schema", "binary", "not-a-zip"],
    )
    def test_a_bad_manifest_is_a_clear_error_and_installs_nothing(self, admin_client, content, expected):
        response = upload(admin_client, content)
        assert response.status_code == 200
        assert response.redirect_chain[-1][0] == reverse("admin:apps_app_app_changelist")
        text = page_text(response)
        assert "The app was not installed" in text and expected in text
        assert not App.objects.exists() and not Flow.objects.exists()

    def test_a_damaged_zip_is_a_clear_error(self, admin_client, notes_api):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as folder:
            folder.writestr("app.yaml", notes_manifest(notes_api.url))
        damaged = bytearray(archive.getvalue())
        damaged[40:60] = b"\xff" * 20
        text = page_text(upload(admin_client, bytes(damaged), "notes.zip"))
        assert "The app was not installed" in text and "The zip cannot be read" in text
        assert not App.objects.exists()

    def test_an_upload_too_large_is_refused_before_it_is_read(self, admin_client):
        text = page_text(upload(admin_client, b"#" * (MAX_UPLOAD_BYTES + 1)))
        assert f"The upload is larger than {MAX_UPLOAD_BYTES // 1024} KB." in text and not App.objects.exists()

    def test_a_flow_error_names_the_flow_and_step(self, admin_client, notes_api):
        bad = notes_manifest(notes_api.url).replace("kind: respond", "kind: nonsense")
        text = page_text(upload(admin_client, bad.encode()))
        assert "flows.list-notes.steps[1]" in text and not App.objects.exists()

    def test_an_upload_without_a_file_is_refused_with_a_message(self, admin_client):
        response = admin_client.post(reverse("admin:apps_app_app_upload"), {}, follow=True)
        assert response.status_code == 200 and "Choose a manifest file" in page_text(response)

    def test_installing_needs_the_permission_to_add_apps(self, client, apps_user, notes_api):
        client.force_login(apps_user("viewer", "view_app"))
        assert 'id="upload"' not in page_text(client.get(reverse("admin:apps_app_app_changelist")))
        response = client.post(reverse("admin:apps_app_app_upload"), {"manifest": SimpleUploadedFile("a.yaml", notes_manifest(notes_api.url).encode())})
        assert response.status_code == 403 and not App.objects.exists()

    def test_upgrading_needs_the_permission_to_change_apps(self, client, apps_user, notes_api):
        install_notes(notes_api.url)
        client.force_login(apps_user("installer", "view_app", "add_app"))
        newer = notes_manifest(notes_api.url, version="9.0.0").encode()
        response = client.post(reverse("admin:apps_app_app_upload"), {"manifest": SimpleUploadedFile("a.yaml", newer)})
        assert response.status_code == 403 and App.objects.get().version == "1.0.0"

    def test_export_downloads_the_manifest_without_values(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection_create(app=app, data={"api_key": "key-ann"})
        response = admin_client.get(reverse("admin:apps_app_app_export", args=[app.pk]))
        assert response["Content-Disposition"] == 'attachment; filename="notes.yaml"'
        body = response.content.decode()
        assert manifest_parse(body).slug == "notes" and "key-ann" not in body


@pytest.mark.django_db(transaction=True)
class TestAppPage:
    def test_it_shows_the_details_flows_with_run_links_for_public_ones_and_connections(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        connection_test(connection=connection)
        html = page_text(app_page(admin_client, app))
        public, private = Flow.objects.get(slug="notes/list-notes"), Flow.objects.get(slug="notes/whoami")
        assert reverse("admin:flows_app_flow_run", args=[public.pk]) in html
        assert reverse("admin:flows_app_flow_run", args=[private.pk]) not in html and "private: the app runs it" in html
        assert f'id="connection-{connection.pk}"' in html and ">ann<" in html
        assert 'id="add-connection"' in html and 'id="registration"' not in html  # a generic app has no client

    def test_the_status_filters_count_and_narrow_the_connections(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        good = connection_create(app=app, data={"api_key": "key-ann"})
        bad = connection_create(app=app, data={"api_key": "wrong-key"})
        untested = connection_create(app=app, data={"api_key": "key-bob"})
        connection_test(connection=good), connection_test(connection=bad)
        html = page_text(app_page(admin_client, app))
        assert "Connected (1)" in html and "Failing (1)" in html and "Not tested (1)" in html and "All (3)" in html
        failing = page_text(app_page(admin_client, app, "?status=failing"))
        assert f'id="connection-{bad.pk}"' in failing
        assert f'id="connection-{good.pk}"' not in failing and f'id="connection-{untested.pk}"' not in failing

    def test_the_notice_flow_is_chosen_on_the_app_page_and_must_exist(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        url = reverse("admin:apps_app_app_notices", args=[app.pk])
        refused = admin_client.post(url, {"notice_flow": "no-such-flow"}, follow=True)
        assert any("no-such-flow" in message for message in messages_of(refused))
        assert App.objects.get(pk=app.pk).notice_flow == ""
        admin_client.post(url, {"notice_flow": "notes/list-notes"}, follow=True)
        assert App.objects.get(pk=app.pk).notice_flow == "notes/list-notes"
        assert 'value="notes/list-notes"' in page_text(app_page(admin_client, app))

    def test_a_connect_link_is_made_from_the_app_page_and_shown_once(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        response = admin_client.post(reverse("admin:apps_app_app_connect_link", args=[app.pk]), follow=True)
        [message] = messages_of(response)
        token = parse_qs(urlsplit(unescape(message).split('value="')[1].split('"')[0]).query)["link"][0]
        link = connect_link_open(token)
        assert link.app_id == app.pk and not link.reconnect
        assert token not in page_text(app_page(admin_client, app))  # not stored for showing again

    def test_a_missing_app_redirects_to_the_list(self, admin_client):
        response = admin_client.get(reverse("admin:apps_app_app_change", args=[999999]))
        assert response.status_code == 302


@pytest.mark.django_db(transaction=True)
class TestRegistration:
    def test_the_client_is_saved_and_its_secret_never_shown(self, admin_client, settings):
        settings.BASE_URL = "https://flowgate.example"
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        html = page_text(app_page(admin_client, app))
        assert '<code id="redirect-uri">https://flowgate.example/apps/cloud-notes/oauth2/callback/</code>' in html
        assert 'id="copy-redirect-uri"' in html
        response = admin_client.post(
            reverse("admin:apps_app_app_registration", args=[app.pk]),
            {"client_id": "cloud-client", "client_secret": "cloud-client-secret-123"},
            follow=True,
        )
        assert "the OAuth2 client is saved" in page_text(response)
        app.refresh_from_db()
        assert (app.client_id, app.client_values["client_secret"]) == ("cloud-client", "cloud-client-secret-123")
        html = page_text(app_page(admin_client, app))
        assert 'value="cloud-client"' in html and "cloud-client-secret-123" not in html and "Stored; leave blank" in html

    def test_a_blank_secret_keeps_the_stored_one(self, admin_client):
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        url = reverse("admin:apps_app_app_registration", args=[app.pk])
        admin_client.post(url, {"client_id": "one", "client_secret": "kept-secret"})
        admin_client.post(url, {"client_id": "two", "client_secret": ""})
        app.refresh_from_db()
        assert (app.client_id, app.client_values["client_secret"]) == ("two", "kept-secret")

    def test_a_blank_client_id_is_refused(self, admin_client):
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        response = admin_client.post(reverse("admin:apps_app_app_registration", args=[app.pk]), {"client_id": ""}, follow=True)
        assert "The client ID is required." in page_text(response)
        app.refresh_from_db()
        assert app.client_id == ""

    def test_it_needs_the_permission_to_change_apps(self, client, apps_user):
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        client.force_login(apps_user("viewer", "view_app"))
        assert 'id="registration-form"' not in page_text(app_page(client, app))
        response = client.post(reverse("admin:apps_app_app_registration", args=[app.pk]), {"client_id": "mine"})
        assert response.status_code == 403

    def test_adding_a_connection_sends_the_user_to_the_provider_with_the_apps_redirect_uri(self, admin_client, settings):
        settings.BASE_URL = "https://flowgate.example"
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        admin_client.post(reverse("admin:apps_app_app_registration", args=[app.pk]), {"client_id": "cloud-client"})
        response = admin_client.post(reverse("admin:apps_app_app_add_connection", args=[app.pk]), {"end-user": "customer-7"})
        assert response.status_code == 302
        location = response["Location"]
        assert location.startswith("https://provider.example/o/authorize/?")
        assert "redirect_uri=https%3A%2F%2Fflowgate.example%2Fapps%2Fcloud-notes%2Foauth2%2Fcallback%2F" in location
        connection = Connection.objects.get()
        assert connection.end_user == "customer-7" and connection.secret.app_slug == "cloud-notes"
        assert "Not connected" in page_text(connection_page(admin_client, connection))

    def test_connect_sends_an_existing_connection_to_the_provider_again(self, admin_client, settings):
        settings.BASE_URL = "https://flowgate.example"
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        admin_client.post(reverse("admin:apps_app_app_registration", args=[app.pk]), {"client_id": "cloud-client"})
        app.refresh_from_db()
        connection = connection_create(app=app)
        assert 'id="connection-connect"' in page_text(connection_page(admin_client, connection))
        response = admin_client.post(reverse("admin:apps_app_connection_connect", args=[connection.pk]))
        assert response.status_code == 302 and response["Location"].startswith("https://provider.example/o/authorize/?")

    def test_customize_writes_the_standard_operations_as_the_apps_flows(self, admin_client):
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        assert "the standard OAuth2 steps" in page_text(app_page(admin_client, app))
        url = reverse("admin:apps_app_app_customize", args=[app.pk])
        shown = messages_of(admin_client.post(url, follow=True))
        assert shown[0] == "cloud-notes 2.0.0: upgraded" and "connection settings" in shown
        app.refresh_from_db()
        operations = app.manifest["connection"]["operations"]
        assert set(operations) == {"authorize_url", "exchange", "refresh"}
        assert Flow.objects.filter(slug__in=[f"cloud-notes/{name}" for name in operations.values()], app_private=True).count() == 3
        html = page_text(app_page(admin_client, app))
        assert "Done by the app's flows" in html and 'id="customize-operations"' not in html
        assert "already a flow" in " ".join(messages_of(admin_client.post(url, follow=True)))

    def test_without_a_client_adding_a_connection_says_what_to_do_first(self, admin_client):
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        response = add_connection(admin_client, app, {"end-user": ""})
        assert "Set Cloud Notes's OAuth2 client (its registration) first." in page_text(response)
        assert not Connection.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestConnections:
    def test_adding_a_generic_connection_tests_it_and_opens_its_page(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        response = add_connection(admin_client, app, {"api_key": "key-ann", "region": "us", "end-user": "customer-1"})
        connection = Connection.objects.get()
        assert response.redirect_chain[-1][0] == reverse("admin:apps_app_connection_change", args=[connection.pk])
        assert f"Connection #{connection.pk} (ann): Test flow run" in " ".join(messages_of(response))
        html = page_text(response)
        assert "Connected" in html and 'id="connection-identity">ann<' in html and "customer-1" in html
        assert connection.secret.owner.username == "admin" and connection.secret.config["public"] == {"region": "us"}

    def test_the_add_form_is_made_from_the_declared_fields(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        html = page_text(admin_client.get(reverse("admin:apps_app_app_add_connection", args=[app.pk])))
        assert 'type="password" name="api_key"' in html
        assert '<select name="region"' in html and '<option value="eu" selected>' in html
        assert 'name="end-user"' in html

    def test_a_missing_required_field_is_shown_beside_it_and_nothing_is_stored(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        response = add_connection(admin_client, app, {"api_key": "", "region": "eu"})
        assert response.status_code == 200 and "This field is required." in page_text(response)
        assert not Connection.objects.exists() and not Secret.objects.exists()

    def test_a_sensitive_value_is_never_echoed_back(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        response = add_connection(admin_client, app, {"api_key": "key-ann", "region": "mars"})
        assert "Select a valid choice" in page_text(response) and "key-ann" not in page_text(response)
        assert not Connection.objects.exists()

    def test_test_records_a_failure_and_shows_the_last_error(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection = connection_create(app=app, data={"api_key": "wrong-key"})
        response = admin_client.post(reverse("admin:apps_app_connection_test", args=[connection.pk]), follow=True)
        assert any("failed" in message for message in messages_of(response))
        html = page_text(response)
        assert "Failing" in html and "401" in html
        connection.secret.refresh_from_db()
        assert connection.secret.status == Secret.Status.FAILING

    def test_changing_fields_keeps_a_blank_sensitive_value_and_tests_again(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        response = admin_client.post(
            reverse("admin:apps_app_connection_change", args=[connection.pk]), {"api_key": "", "region": "us"}, follow=True
        )
        assert f"Connection #{connection.pk} saved." in messages_of(response)
        connection.secret.refresh_from_db()
        assert connection.secret.values["secret"] == {"api_key": "key-ann"}
        assert connection.secret.config["public"] == {"region": "us"} and connection.secret.identity == "ann"

    def test_deleting_a_connection_asks_first_then_removes_it(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection = connection_create(app=app, data={"api_key": "key-ann"})
        url = reverse("admin:apps_app_connection_delete", args=[connection.pk])
        assert 'id="delete-confirm"' in page_text(admin_client.get(url))
        response = admin_client.post(url, follow=True)
        assert response.redirect_chain[-1][0] == reverse("admin:apps_app_app_change", args=[app.pk])
        assert not Connection.objects.exists() and not Secret.objects.exists()

    def test_the_connections_manager_lists_and_filters_by_app_and_status(self, admin_client, notes_api, settings):
        settings.BASE_URL = "https://flowgate.example"
        notes = install_notes(notes_api.url)
        cloud = app_install(manifest=manifest_parse(oauth2_manifest())).app
        good = connection_create(app=notes, data={"api_key": "key-ann"}, end_user="customer-1")
        connection_test(connection=good)
        bad = connection_create(app=notes, data={"api_key": "wrong-key"})
        connection_test(connection=bad)
        App.objects.filter(pk=cloud.pk).update(client_id="cloud-client")
        cloud.refresh_from_db()
        waiting = connection_create(app=cloud)
        changelist = reverse("admin:apps_app_connection_changelist")
        html = page_text(admin_client.get(changelist))
        for connection in (good, bad, waiting):
            assert reverse("admin:apps_app_connection_change", args=[connection.pk]) in html
        assert "customer-1" in html and "ann" in html and "401" in html and "Not connected" in html
        failing = page_text(admin_client.get(changelist + "?status=failing"))
        assert f"/{bad.pk}/change/" in failing and f"/{good.pk}/change/" not in failing
        by_app = page_text(admin_client.get(changelist + f"?app__id__exact={cloud.pk}"))
        assert f"/{waiting.pk}/change/" in by_app and f"/{good.pk}/change/" not in by_app


@pytest.mark.django_db(transaction=True)
class TestAccess:
    """Users see the connections they may use, and change only those they may manage."""

    def test_each_user_sees_only_connections_they_may_use(self, client, apps_user, notes_api):
        ann, bob = apps_user("ann", *ALL_APP_PERMISSIONS), apps_user("bob", *ALL_APP_PERMISSIONS)
        app = install_notes(notes_api.url)
        anns = connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        bobs = connection_create(app=app, data={"api_key": "key-bob"}, acting_user=bob)
        client.force_login(ann)
        listed = page_text(client.get(reverse("admin:apps_app_connection_changelist")))
        assert f"/{anns.pk}/change/" in listed and f"/{bobs.pk}/change/" not in listed
        on_app_page = page_text(app_page(client, app))
        assert f'id="connection-{anns.pk}"' in on_app_page and f'id="connection-{bobs.pk}"' not in on_app_page
        assert connection_page(client, bobs).status_code == 302  # as if it did not exist
        assert client.post(reverse("admin:apps_app_connection_test", args=[bobs.pk])).status_code == 404
        assert client.post(reverse("admin:apps_app_connection_delete", args=[bobs.pk])).status_code == 302
        assert Connection.objects.filter(pk=bobs.pk).exists()

    def test_a_use_grant_shows_the_connection_but_does_not_let_anyone_change_it(self, client, apps_user, notes_api):
        ann, bob = apps_user("ann", *ALL_APP_PERMISSIONS), apps_user("bob", *ALL_APP_PERMISSIONS)
        app = install_notes(notes_api.url)
        anns = connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        grant_give(secret=anns.secret, user=bob, level=SecretGrant.Level.USE, acting_user=ann)
        client.force_login(bob)
        html = page_text(connection_page(client, anns))
        assert 'id="connection-test"' not in html and 'id="connection-form"' not in html and 'id="connection-delete"' not in html
        assert client.post(reverse("admin:apps_app_connection_test", args=[anns.pk])).status_code == 403
        assert client.post(reverse("admin:apps_app_connection_change", args=[anns.pk]), {"api_key": "stolen"}).status_code == 403
        assert client.post(reverse("admin:apps_app_connection_delete", args=[anns.pk])).status_code == 403
        anns.secret.refresh_from_db()
        assert anns.secret.values["secret"] == {"api_key": "key-ann"}

    def test_adding_a_connection_needs_the_permission(self, client, apps_user, notes_api):
        app = install_notes(notes_api.url)
        client.force_login(apps_user("viewer", "view_app", "view_connection"))
        assert 'id="add-connection"' not in page_text(app_page(client, app))
        assert add_connection(client, app, {"api_key": "key-ann"}).status_code == 403
        assert not Connection.objects.exists()

    def test_uninstalling_with_connections_needs_force_and_the_right_to_manage_them_all(self, client, apps_user, notes_api):
        ann, bob = apps_user("ann", *ALL_APP_PERMISSIONS), apps_user("bob", *ALL_APP_PERMISSIONS)
        app = install_notes(notes_api.url)
        connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        connection_create(app=app, data={"api_key": "key-bob"}, acting_user=bob)
        client.force_login(ann)
        url = reverse("admin:apps_app_app_delete", args=[app.pk])
        assert "It has 2 connection(s)" in page_text(client.get(url))
        refused = page_text(client.post(url, follow=True))
        assert "still has 2 connection(s)" in refused
        forced = page_text(client.post(url, {"force": "yes"}, follow=True))
        assert "Not uninstalled" in forced and "may not manage" in forced
        assert Connection.objects.count() == 2 and App.objects.exists()

    def test_uninstalling_is_refused_while_another_flow_uses_a_connection(self, admin_client, settings):
        from tests.flows_app.conftest import make_flow

        settings.BASE_URL = "https://flowgate.example"
        app = app_install(manifest=manifest_parse(oauth2_manifest())).app
        App.objects.filter(pk=app.pk).update(client_id="cloud-client")
        app.refresh_from_db()
        connection = connection_create(app=app)
        step = {"key": "call", "kind": "http_request", "method": "GET", "url": "https://provider.example/", "secret": connection.secret.name}
        make_flow("borrows-the-connection", [step])
        response = admin_client.post(reverse("admin:apps_app_app_delete", args=[app.pk]), {"force": "yes"}, follow=True)
        assert "Not uninstalled" in page_text(response) and "borrows-the-connection" in page_text(response)
        assert App.objects.exists() and Connection.objects.exists()

    def test_a_superuser_uninstalls_with_force(self, admin_client, notes_api):
        app = install_notes(notes_api.url)
        connection_create(app=app, data={"api_key": "key-ann"})
        response = admin_client.post(reverse("admin:apps_app_app_delete", args=[app.pk]), {"force": "yes"}, follow=True)
        assert "Notes was uninstalled." in messages_of(response)
        assert not App.objects.exists() and not Secret.objects.exists() and not Flow.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestRunNow:
    def test_run_now_of_an_app_flow_asks_for_one_of_the_connections_the_user_may_use(self, client, apps_user, notes_api):
        ann, bob = apps_user("ann", *ALL_APP_PERMISSIONS), apps_user("bob", *ALL_APP_PERMISSIONS)
        app = install_notes(notes_api.url)
        anns = connection_create(app=app, data={"api_key": "key-ann"}, acting_user=ann)
        bobs = connection_create(app=app, data={"api_key": "key-bob"}, acting_user=bob)
        flow = Flow.objects.get(slug="notes/list-notes")
        run_url = reverse("admin:flows_app_flow_run", args=[flow.pk])
        client.force_login(ann)
        html = page_text(client.get(run_url))
        assert f'<option value="{anns.pk}">' in html and f'<option value="{bobs.pk}">' not in html
        refused = client.post(run_url, {"connection": bobs.pk, "input": "{}"})
        assert refused.status_code == 200 and "Select a valid choice" in page_text(refused)
        response = client.post(run_url, {"connection": anns.pk, "input": "{}"})
        run = FlowRun.objects.get()
        assert response.status_code == 302 and run.connection_id == anns.pk and run.started_by == ann

    def test_run_now_of_another_flow_asks_for_no_connection(self, admin_client):
        from tests.flows_app.conftest import make_flow

        flow = make_flow("plain", [{"key": "hi", "kind": "transform", "value": "hello"}])
        assert 'name="connection"' not in page_text(admin_client.get(reverse("admin:flows_app_flow_run", args=[flow.pk])))


@pytest.mark.django_db(transaction=True)
def test_a_sensitive_value_is_in_no_page(admin_client, notes_api):
    """The app page, the connection page with its change form, the manager, export."""
    app = install_notes(notes_api.url)
    add_connection(admin_client, app, {"api_key": "key-ann", "region": "eu"})
    connection = Connection.objects.get()
    pages = [
        reverse("admin:apps_app_app_changelist"),
        reverse("admin:apps_app_app_change", args=[app.pk]),
        reverse("admin:apps_app_app_add_connection", args=[app.pk]),
        reverse("admin:apps_app_app_export", args=[app.pk]),
        reverse("admin:apps_app_connection_changelist"),
        reverse("admin:apps_app_connection_change", args=[connection.pk]),
        reverse("admin:apps_app_connection_delete", args=[connection.pk]),
        reverse("admin:secrets_app_secret_change", args=[connection.pk]),
        reverse("admin:flows_app_flow_run", args=[Flow.objects.get(slug="notes/list-notes").pk]),
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert "key-ann" not in response.content.decode(), url
    assert "stored" in page_text(admin_client.get(pages[5]))
