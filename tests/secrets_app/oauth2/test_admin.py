"""The OAuth2 pages of the admin: redirect URI, manage tokens, connections manager."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import AccessToken

from secrets_app.models import OAuth2Connection, Secret
from secrets_app.services.grants import grant_give
from secrets_app.services.secrets import secret_update
from tests.conftest import OWNER, admin_login, screenshot
from tests.flows_app.conftest import make_flow
from tests.servers import RecordingServer, Reply

CHANGELIST = reverse("admin:secrets_app_secret_changelist")

pytestmark = pytest.mark.django_db(transaction=True)


def manage_url(secret):
    return reverse("admin:secrets_app_secret_oauth2", args=[secret.pk])


def operation_url(secret, operation):
    return reverse("admin:secrets_app_secret_oauth2_operation", args=[secret.pk, operation])


def test_the_change_page_shows_the_redirect_uri_from_base_url(oauth2_secret, admin_client, settings):
    secret = oauth2_secret("crm")
    settings.BASE_URL = "https://flowgate.example.com"  # behind a proxy, whatever the request's host
    page = admin_client.get(reverse("admin:secrets_app_secret_change", args=[secret.pk])).content.decode()
    assert '<code id="redirect-uri">https://flowgate.example.com/oauth/crm/callback/</code>' in page
    assert manage_url(secret) in page


def test_the_add_page_shows_the_redirect_uri_for_the_name_being_typed(admin_client, settings):
    settings.BASE_URL = "https://flowgate.example.com"
    page = admin_client.get(reverse("admin:secrets_app_secret_add") + "?kind=oauth2").content.decode()
    assert 'data-template="https://flowgate.example.com/oauth/NAME/callback/"' in page


def test_the_manage_page_shows_the_connection_and_never_a_token(connected, admin_client):
    secret = connected()
    connection = OAuth2Connection.objects.get(secret=secret)
    page = admin_client.get(manage_url(secret)).content.decode()
    assert '<td id="oauth2-status">Connected</td>' in page
    assert '<td id="oauth2-access-token">present</td>' in page and '<td id="oauth2-refresh-token">present</td>' in page
    assert "owner@example.com" in page and '<td id="oauth2-expires">in 4 min</td>' in page
    assert connection.tokens["access_token"] not in page and connection.tokens["refresh_token"] not in page
    for button in ("request-access-token", "oauth2-refresh", "oauth2-test", "oauth2-revoke"):
        assert f'id="{button}"' in page


def test_refresh_now_and_revoke_buttons(connected, admin_client, provider):
    secret = connected()
    response = admin_client.post(operation_url(secret, "refresh"), follow=True)
    assert "New access token stored" in response.content.decode()
    assert len(provider.log.grants("refresh_token")) == 1
    response = admin_client.post(operation_url(secret, "revoke"), follow=True)
    assert "revoked at the provider" in response.content.decode()
    assert OAuth2Connection.objects.get(secret=secret).status == "revoked"


def test_test_connection_calls_the_test_url_with_the_token(connected, admin_client, local_server):
    secret = connected(test_url=None)
    from secrets_app.services.secrets import secret_update

    secret_update(secret=secret, data={**secret.config, "test_url": f"{local_server.url}/me"})
    response = admin_client.post(operation_url(secret, "test"), follow=True)
    page = response.content.decode()
    assert f"HTTP 200 from {local_server.url}/me" in page
    token = OAuth2Connection.objects.get(secret=secret).tokens["access_token"]
    assert local_server.last.headers["Authorization"] == f"Bearer {token}" and token not in page


def test_the_connections_manager_filters_by_state(connected, admin_client):
    healthy, expiring, broken, revoked = (connected(name) for name in ("healthy", "expiring", "broken", "revoked"))
    OAuth2Connection.objects.filter(secret=healthy).update(expires_at=timezone.now() + timedelta(hours=1))
    OAuth2Connection.objects.filter(secret=expiring).update(expires_at=timezone.now() + timedelta(minutes=2))
    OAuth2Connection.objects.filter(secret=broken).update(status="needs_reauthorization", last_error="invalid_grant")
    OAuth2Connection.objects.filter(secret=revoked).update(status="revoked")
    changelist = reverse("admin:secrets_app_oauth2connection_changelist")

    def names(state):
        response = admin_client.get(changelist, {"state": state})
        return {connection.secret.name for connection in response.context["cl"].result_list}

    assert names("connected") == {"healthy", "expiring"}
    assert names("expiring") == {"expiring"}
    assert names("needs_reauthorization") == {"broken"}
    assert names("revoked") == {"revoked"}
    assert "invalid_grant" in admin_client.get(changelist).content.decode()


def test_bulk_refresh_from_the_connections_manager(connected, admin_client, provider):
    connected("one"), connected("two")
    ids = list(OAuth2Connection.objects.values_list("pk", flat=True))
    admin_client.post(
        reverse("admin:secrets_app_oauth2connection_changelist"),
        {"action": "refresh_selected", "_selected_action": ids},
    )
    assert len(provider.log.grants("refresh_token")) == 2


def test_the_connections_manager_lists_secrets_never_connected(oauth2_secret, connected, admin_client):
    oauth2_secret("fresh")
    connected("live")
    response = admin_client.get(reverse("admin:secrets_app_oauth2connection_changelist"), {"state": "not_connected"})
    assert {connection.secret.name for connection in response.context["cl"].result_list} == {"fresh"}


def delete_url(secret):
    return reverse("admin:secrets_app_secret_delete", args=[secret.pk])


@pytest.fixture
def secret_deleter(django_user_model):
    """Staff who may see and delete secrets, and nothing else (grants decide which: see
    ``grant_manage``)."""
    user = django_user_model.objects.create_user(username="deleter", password="deleter-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_secret", "delete_secret"]))
    return user


@pytest.mark.parametrize("who", ["superuser", "secret deleter"])
def test_deleting_a_connected_secret_from_its_page_revokes_at_the_provider_first(
    who, connected, provider, client, admin_user, secret_deleter
):
    secret = connected()
    if who == "secret deleter":
        grant_give(secret=secret, user=secret_deleter, level="manage")
    client.force_login(admin_user if who == "superuser" else secret_deleter)
    page = client.get(delete_url(secret))
    html = page.content.decode()
    assert page.status_code == 200 and "permission" not in html
    assert "Its tokens are revoked at the provider (" in html
    response = client.post(delete_url(secret), {"post": "yes"})
    assert response.status_code == 302
    assert [entry.token_type_hint for entry in provider.log.revocations()] == ["refresh_token", "access_token"]
    assert not Secret.objects.filter(name="crm").exists() and not AccessToken.objects.exists()


def test_the_delete_permission_alone_does_not_reach_a_secret_without_a_manage_grant(
    connected, provider, client, secret_deleter
):
    secret = connected()
    client.force_login(secret_deleter)
    assert client.post(delete_url(secret), {"post": "yes"}).status_code == 403
    assert Secret.objects.filter(name="crm").exists() and not provider.log.revocations()


@pytest.fixture
def revocation_down(connected):
    """A connected secret whose provider answers revocation requests with 503."""
    server = RecordingServer(lambda request: Reply(status=503))
    secret = connected()
    secret_update(secret=secret, data={**secret.config, "revocation_url": f"{server.url}/revoke"})
    yield secret
    server.stop()


def test_when_revocation_fails_the_secret_is_kept_and_its_page_offers_delete_anyway(revocation_down, admin_client):
    secret = revocation_down
    response = admin_client.post(delete_url(secret), {"post": "yes"}, follow=True)
    html = unescape(response.content.decode())
    assert response.redirect_chain == [(f"{delete_url(secret)}?revocation_failed=1", 302)]
    assert "Secret 'crm' was not deleted: revoking its tokens at the provider failed" in html
    assert 'id="delete-anyway"' in html
    assert OAuth2Connection.objects.get(secret=secret).has_refresh_token
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
    response = admin_client.post(delete_url(secret), {"post": "yes", "force": "yes"}, follow=True)
    assert "Revocation at the provider failed" in unescape(response.content.decode())
    assert not Secret.objects.filter(name="crm").exists()
    assert LogEntry.objects.get(action_flag=DELETION).object_repr == str(secret)
    assert AccessToken.objects.exists()  # still valid at the provider, as the page said


def test_deleting_selected_secrets_says_what_is_revoked_and_offers_delete_anyway_for_failures(
    revocation_down, oauth2_secret, admin_client
):
    fresh = oauth2_secret("fresh")
    selected = {"action": "delete_selected_secrets", "_selected_action": [revocation_down.pk, fresh.pk]}
    html = admin_client.post(CHANGELIST, selected).content.decode()
    assert "<li>crm (oauth2): Its tokens are revoked at the provider (127.0.0.1:" in html
    assert "<li>fresh (oauth2): Not connected: no tokens to revoke." in html
    response = admin_client.post(CHANGELIST, {**selected, "post": "yes"})
    html = unescape(response.content.decode())
    assert response.status_code == 200 and "These secrets were not deleted" in html
    assert "Secret 'crm' was not deleted" in html and 'id="delete-anyway"' in html
    assert list(Secret.objects.values_list("name", flat=True)) == ["crm"]  # fresh is gone
    response = admin_client.post(
        CHANGELIST, {**selected, "_selected_action": [revocation_down.pk], "post": "yes", "force": "yes"}
    )
    assert response.status_code == 302 and not Secret.objects.exists()


def test_a_secret_that_a_step_uses_is_not_deleted_and_keeps_its_tokens(connected, oauth2_secret, provider, admin_client):
    secret = connected()
    make_flow("reads-crm", [{"key": "me", "kind": "http_request", "url": "https://crm.example.com/me", "secret": "crm"}])
    unused = oauth2_secret("unused")
    selected = {"action": "delete_selected_secrets", "_selected_action": [secret.pk, unused.pk], "post": "yes"}
    response = admin_client.post(CHANGELIST, selected, follow=True)
    html = unescape(response.content.decode())
    assert "Secret 'crm' was not deleted: it is used by flow reads-crm, reads-crm.me." in html
    assert "Deleted 1 secret(s): unused." in html
    assert provider.log.revocations() == []
    assert OAuth2Connection.objects.get(secret=secret).has_refresh_token


@pytest.mark.browser
def test_a_person_connects_an_account_from_the_admin(oauth2_secret, owner, provider, page):
    secret = oauth2_secret("crm")
    admin_login(page, provider.url, OWNER["username"], OWNER["password"])
    page.goto(f"{provider.url}{reverse('admin:secrets_app_secret_change', args=[secret.pk])}")
    page.click("#manage-tokens")
    assert page.inner_text("#oauth2-status") == "Not connected"
    page.click("#request-access-token")
    page.wait_for_url(f"{provider.url}/o/authorize/*")  # the provider's consent page
    page.click("input[name=allow]")
    page.wait_for_url(f"{provider.url}{manage_url(secret)}")
    assert "Connected as owner@example.com" in page.inner_text(".messagelist")
    assert page.inner_text("#oauth2-status") == "Connected"
    assert page.inner_text("#oauth2-access-token") == "present"
    assert page.inner_text("#oauth2-refresh-token") == "present"
    screenshot(page, "oauth2-connected", walkthrough=True)


def test_the_add_form_shows_the_chosen_presets_notes(admin_client):
    page = admin_client.get(reverse("admin:secrets_app_secret_add") + "?kind=oauth2&preset=x").content.decode()
    note = re.search(r'<div class="help choice-note" id="id_preset_note" data-note-for="id_preset">([^<]*)</div>', page)
    assert note and "offline.access" in unescape(note.group(1))


@pytest.mark.browser
def test_a_person_choosing_a_preset_reads_its_notes(owner, provider, page):
    admin_login(page, provider.url, OWNER["username"], OWNER["password"])
    page.goto(f"{provider.url}{reverse('admin:secrets_app_secret_add')}?kind=oauth2")
    assert page.inner_text("#id_preset_note") == ""
    page.select_option("#id_preset", "google")
    assert "access_type=offline" in page.inner_text("#id_preset_note")
    page.select_option("#id_preset", "notion")
    assert "No test URL: Every API call needs a Notion-Version header" in page.inner_text("#id_preset_note")
    screenshot(page, "oauth2-preset-notes")


@pytest.mark.browser
def test_a_person_renaming_a_secret_is_shown_what_breaks_and_confirms(oauth2_secret, owner, provider, page):
    secret = oauth2_secret("crm")
    make_flow("reads-crm", [{"key": "me", "kind": "http_request", "url": "https://crm.example.com/me", "secret": "crm"}])
    admin_login(page, provider.url, OWNER["username"], OWNER["password"])
    page.goto(f"{provider.url}{reverse('admin:secrets_app_secret_change', args=[secret.pk])}")
    page.fill("#id_name", "crm-eu")
    page.click("input[name=_save]")
    warning = page.inner_text("#rename-warning")
    assert "flow reads-crm" in warning
    assert f"from {provider.url}/oauth/crm/callback/ to {provider.url}/oauth/crm-eu/callback/" in warning
    assert Secret.objects.get(pk=secret.pk).name == "crm"  # nothing renamed yet
    screenshot(page, "secret-rename-confirmation")
    page.check("#id_confirm_rename")
    page.click("input[name=_save]")
    page.wait_for_url(f"{provider.url}{CHANGELIST}")
    assert Secret.objects.get(pk=secret.pk).name == "crm-eu"


def test_a_rename_without_consequences_needs_no_confirmation(admin_client):
    from secrets_app.services.secrets import secret_create

    secret = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
    response = admin_client.post(
        reverse("admin:secrets_app_secret_change", args=[secret.pk]),
        {"name": "key-2", "token": "", "header": "Authorization", "probe_url": ""},
    )
    assert response.status_code == 302 and Secret.objects.get(pk=secret.pk).name == "key-2"


def test_the_connections_manager_shows_the_reconnect_by_date_and_when_each_notice_went_out(admin_client):
    from tests.secrets_app.oauth2.test_tokens import token_endpoint_secret

    server = RecordingServer()
    try:
        token_endpoint_secret(server, name="quiet")
        told = token_endpoint_secret(server, name="told")
    finally:
        server.stop()
    at = timezone.make_aware(timezone.datetime(2026, 11, 2, 9, 30))
    OAuth2Connection.objects.filter(secret=told).update(
        reconnect_by=at + timedelta(days=60), reauthorization_notice_at=at, recovery_notice_at=at + timedelta(hours=2)
    )
    page = admin_client.get(reverse("admin:secrets_app_oauth2connection_changelist")).content.decode()
    rows = {name: row for row in page.split("<tr")[1:] for name in ("quiet", "told") if f">{name}</a>" in row}
    local = timezone.localtime
    assert f"needs re-authorization: {local(at):%Y-%m-%d %H:%M}<br>recovered: {local(at + timedelta(hours=2)):%Y-%m-%d %H:%M}" in rows["told"]
    assert "Reconnect by" in page and "Notices sent" in page
    assert "needs re-authorization:" not in rows["quiet"]
