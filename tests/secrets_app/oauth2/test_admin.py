"""The OAuth2 pages of the admin: redirect URI, manage tokens, connections manager."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from secrets_app.models import OAuth2Connection
from tests.conftest import OWNER, admin_login

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
    assert "owner@example.com" in page and "in 4\xa0minutes" in page
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
