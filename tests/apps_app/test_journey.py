"""A person installs an app, connects an account and runs the app's flow, in headless Chromium.

Two journeys: an app connected with fields (an API key, against a local notes API), and
an app connected with OAuth2 (django-oauth-toolkit on the live server as the provider).
Each ends on the run page with the result the account's data gave; no page on the way
shows a sensitive value.
"""

import base64
import io
import textwrap
import zipfile

import pytest
from django.urls import reverse

from apps_app.models import Connection
from tests.apps_app.test_admin import ICON
from tests.apps_app.conftest import notes_manifest
from tests.conftest import OWNER, admin_login, screenshot
from tests.provider import provider_application

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def zipped_folder(manifest: str, icon: bytes) -> bytes:
    """The app's folder as a person zips it: app.yaml and its icon in one folder."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as folder:
        folder.writestr("app/app.yaml", manifest)
        folder.writestr("app/icon.svg", icon)
    return archive.getvalue()


def install_by_upload(page, base_url: str, name: str, content: bytes) -> None:
    page.goto(f"{base_url}{reverse('admin:apps_app_app_changelist')}")
    page.set_input_files("#id_manifest", files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}])
    page.click("#upload-submit")
    page.wait_for_selector("#app-name")


def run_from_run_now(page, flow_name: str, connection: Connection) -> None:
    """On the app's page: Run for ``flow_name``, choose the connection, start, wait for the end."""
    page.click(f"#flow-{flow_name} a.run-flow")
    page.select_option("#id_connection", str(connection.pk))
    page.click("#start-run")
    assert "started" in page.inner_text(".messagelist")
    # The run page follows the run by itself (it polls and swaps in its panel).
    page.wait_for_selector(".field-status_label .readonly:has-text('Succeeded')", timeout=60_000)


def assert_never_shown(page, value: str) -> None:
    assert value not in page.content(), page.url


@pytest.fixture
def worker(celery_worker, transactional_db):
    return celery_worker


def test_a_person_installs_an_app_connects_it_with_an_api_key_and_runs_its_flow(
    worker, live_server, owner, notes_api, page
):
    admin_login(page, live_server.url, OWNER["username"], OWNER["password"])
    manifest = notes_manifest(notes_api.url).replace("version: 1.0.0", "version: 1.0.0\n  icon: icon.svg")
    install_by_upload(page, live_server.url, "notes.zip", zipped_folder(manifest, ICON))
    assert "Notes 1.0.0: installed" in page.inner_text(".messagelist")
    assert page.inner_text("#no-connections") == "No connection you may use yet."
    screenshot(page, "apps-installed")

    page.click("#add-connection")
    assert page.get_attribute("#id_api_key", "type") == "password"
    page.fill("#id_api_key", "key-ann")
    page.select_option("#id_region", "us")
    page.fill("#id_end-user", "customer-42")
    screenshot(page, "apps-add-connection")
    page.click("#connection-save")
    page.wait_for_selector("#connection-details")
    connection = Connection.objects.get()
    assert page.inner_text("#connection-status") == "Connected"
    assert page.inner_text("#connection-identity") == "ann"
    assert_never_shown(page, "key-ann")
    screenshot(page, "apps-connection")

    page.click(".breadcrumbs a:text-is('Notes')")
    assert page.inner_text(f"#connection-{connection.pk} .identity") == "ann"
    assert_never_shown(page, "key-ann")
    screenshot(page, "apps-app-page")

    run_from_run_now(page, "list-notes", connection)
    panel = page.inner_text("#run-panel")
    assert page.inner_text(".field-connection .readonly") == connection.secret.name
    assert "ann's note" in panel and '"region": "us"' in panel
    assert_never_shown(page, "key-ann")
    screenshot(page, "apps-run-result")
    assert notes_api.requests[-1].path == "/us/notes" and notes_api.requests[-1].headers["X-Api-Key"] == "key-ann"

    page.goto(f"{live_server.url}{reverse('admin:apps_app_app_changelist')}")
    assert page.inner_text(".field-connection_count") == "1" and page.inner_text(".field-version") == "1.0.0"
    screenshot(page, "apps-list")

    page.goto(f"{live_server.url}{reverse('admin:apps_app_connection_changelist')}")
    assert page.inner_text(".field-identity") == "ann" and page.inner_text(".field-end_user") == "customer-42"
    assert_never_shown(page, "key-ann")
    screenshot(page, "apps-connections-manager")


CLOUD_ICON = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><circle cx="4" cy="4" r="4" fill="#6a1b9a"/></svg>'


def cloud_manifest(provider_url: str) -> str:
    """An OAuth2 app in one YAML file (its icon inline, as a data: URL)."""
    return textwrap.dedent(
        f"""
        app:
          slug: cloud-profile
          name: Cloud Profile
          version: 1.0.0
          description: Your profile at the provider, read with your own token.
          icon: "data:image/svg+xml;base64,{base64.b64encode(CLOUD_ICON).decode()}"
        connection:
          kind: oauth2
          issuer: {provider_url}/o
          authorize_url: {provider_url}/o/authorize/
          token_url: {provider_url}/o/token/
          revocation_url: {provider_url}/o/revoke_token/
          userinfo_url: {provider_url}/o/userinfo/
          scope: "openid email read offline_access"
          test: me
        flows:
          profile:
            public: true
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider_url}/o/userinfo/", secret: connection}}
              - {{key: out, kind: transform, value: {{email: "{{{{ steps.me.body.email }}}}"}}}}
          me:
            steps:
              - {{key: me, kind: http_request, method: GET, url: "{provider_url}/o/userinfo/", secret: connection}}
              - {{key: out, kind: transform, value: {{identity: "{{{{ steps.me.body.email }}}}"}}}}
        """
    )


def test_a_person_installs_an_oauth2_app_connects_an_account_at_the_provider_and_runs_its_flow(
    worker, provider, owner, page
):
    client_id, client_secret = provider_application(
        name="cloud-profile", redirect_uri=f"{provider.url}/apps/cloud-profile/oauth2/callback/"
    )
    admin_login(page, provider.url, OWNER["username"], OWNER["password"])
    install_by_upload(page, provider.url, "app.yaml", cloud_manifest(provider.url).encode())
    assert page.inner_text("#redirect-uri") == f"{provider.url}/apps/cloud-profile/oauth2/callback/"
    page.fill("#id_client_id", client_id)
    page.fill("#id_client_secret", client_secret)
    page.click("#registration-save")
    assert "the OAuth2 client is saved" in page.inner_text(".messagelist")
    assert page.input_value("#id_client_secret") == ""
    assert_never_shown(page, client_secret)
    screenshot(page, "apps-oauth2-client")

    page.click("#add-connection")
    page.click("#connection-save")  # "Connect": to the provider's consent page
    page.wait_for_url(f"{provider.url}/o/authorize/*")
    page.click("input[name=allow]")
    page.wait_for_selector("#app-name")  # back on the app's page, through its callback
    assert "Connected as owner@example.com." in page.inner_text(".messagelist")
    connection = Connection.objects.get()
    assert page.inner_text(f"#connection-{connection.pk} .identity") == "owner@example.com"
    assert page.inner_text(f"#connection-{connection.pk} .connection-status") == "Connected"
    screenshot(page, "apps-oauth2-connected", walkthrough=True)

    run_from_run_now(page, "profile", connection)
    assert '"email": "owner@example.com"' in page.inner_text("#run-panel")
    screenshot(page, "apps-oauth2-run-result")
    tokens = connection.secret.oauth2_connection
    tokens.refresh_from_db()
    for page_url in (
        reverse("admin:apps_app_app_change", args=[connection.app_id]),
        reverse("admin:apps_app_connection_change", args=[connection.pk]),
    ):
        page.goto(f"{provider.url}{page_url}")
        for value in (client_secret, tokens.tokens["access_token"], tokens.tokens["refresh_token"]):
            assert_never_shown(page, value)
