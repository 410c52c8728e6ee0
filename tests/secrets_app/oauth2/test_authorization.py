"""Connecting an account: authorization code with PKCE against a real provider."""

import base64
import hashlib
from datetime import timedelta
from html import unescape

import pytest
from django.utils import timezone

from secrets_app.models import AuditEvent, OAuth2AuthorizationRequest, OAuth2Connection
from tests.provider import Browser, query
from tests.servers import RecordingServer, Reply

pytestmark = pytest.mark.django_db(transaction=True)


def connection(secret):
    return OAuth2Connection.objects.get(secret=secret)


@pytest.mark.parametrize("client_auth", ["basic", "post", "none"])
def test_the_whole_dance_for_each_client_authentication(client_auth, oauth2_secret, browser, provider):
    secret = oauth2_secret("crm", client_auth=client_auth)
    response = browser.connect("crm")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/secrets_app/secret/{secret.pk}/oauth2/"
    stored = connection(secret)
    assert stored.status == "connected" and stored.has_access_token and stored.has_refresh_token
    assert stored.identity == "owner@example.com"
    assert set(stored.granted_scope.split()) == {"openid", "email", "read", "offline_access"}
    assert stored.expires_at > timezone.now() + timedelta(seconds=250)
    (exchange,) = provider.log.grants("authorization_code")
    assert "code_verifier" in exchange.fields
    assert exchange.basic_auth is (client_auth == "basic")
    assert ("client_secret" in exchange.fields) is (client_auth == "post")
    assert ("client_id" in exchange.fields) is (client_auth != "basic")


def test_the_authorization_request_carries_what_the_provider_needs(oauth2_secret, browser, provider):
    oauth2_secret("crm", extra_authorize_params={"prompt": "consent", "access_type": "offline"})
    url = browser.start("crm")
    assert url.startswith(provider.authorize_url)
    params = query(url)
    assert params["response_type"] == "code"
    assert params["client_id"] == "client-crm"
    assert params["redirect_uri"] == f"{provider.url}/oauth/crm/callback/"
    assert params["scope"] == "openid email read offline_access"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["prompt"] == "consent" and params["access_type"] == "offline"
    assert len(params["state"]) >= 32


def test_every_attempt_gets_a_fresh_state_and_verifier(oauth2_secret, browser):
    oauth2_secret("crm")
    first, second = query(browser.start("crm")), query(browser.start("crm"))
    assert first["state"] != second["state"]
    assert first["code_challenge"] != second["code_challenge"]
    verifiers = [attempt.pkce["code_verifier"] for attempt in OAuth2AuthorizationRequest.objects.all()]
    assert len(set(verifiers)) == 2
    for verifier, params in zip(verifiers, (first, second), strict=True):
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        assert digest == params["code_challenge"]


def test_the_state_is_not_stored_in_the_clear(oauth2_secret, browser):
    oauth2_secret("crm")
    state = query(browser.start("crm"))["state"]
    attempt = OAuth2AuthorizationRequest.objects.get()
    assert attempt.state_hash != state and state not in attempt.state_hash


def test_access_denied_shows_a_clear_page_and_stores_nothing(oauth2_secret, browser):
    secret = oauth2_secret("crm")
    back = browser.answer(browser.start("crm"), allow=False)
    assert query(back)["error"] == "access_denied"
    page = browser.get(back)
    assert page.status_code == 400
    assert "Access was denied at the provider" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_a_token_endpoint_the_outbound_guard_refuses_shows_a_clear_page_and_the_last_error(
    oauth2_secret, browser, settings
):
    secret = oauth2_secret("crm")
    back = browser.answer(browser.start("crm"))  # the user logged in and consented
    settings.FLOWGATE_ALLOW_NETWORKS = []  # restarted without the provider's network opened
    page = browser.get(back)
    assert page.status_code == 400
    assert "The code could not be exchanged: Outbound connection to" in unescape(page.text)
    assert "FLOWGATE_ALLOW_NETWORKS" in page.text
    stored = connection(secret)
    assert stored.status == "not_connected" and not stored.has_access_token
    assert "FLOWGATE_ALLOW_NETWORKS" in stored.last_error and stored.last_error_at is not None
    tokens_page = browser.get(f"/admin/secrets_app/secret/{secret.pk}/oauth2/")
    assert "FLOWGATE_ALLOW_NETWORKS" in tokens_page.text


def test_a_missing_state_is_refused(oauth2_secret, browser):
    oauth2_secret("crm")
    page = browser.get("/oauth/crm/callback/?code=abc")
    assert page.status_code == 400 and "no state" in unescape(page.text)


def test_a_replayed_state_is_refused(oauth2_secret, browser):
    secret = oauth2_secret("crm")
    back = browser.answer(browser.start("crm"))
    assert browser.get(back).status_code == 302
    version = connection(secret).version
    replay = browser.get(back)
    assert replay.status_code == 400 and "already used" in unescape(replay.text)
    assert connection(secret).version == version


def test_another_users_state_is_refused(oauth2_secret, browser, provider, django_user_model):
    secret = oauth2_secret("crm")
    back = browser.answer(browser.start("crm"))
    django_user_model.objects.create_superuser("intruder", "intruder@example.com", "intruder-password")
    intruder = Browser(provider.url)
    intruder.login("intruder", "intruder-password")
    page = intruder.get(back)
    assert page.status_code == 400 and "another session" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_a_code_injected_from_another_session_is_refused(oauth2_secret, browser, provider):
    """An attacker's own callback (code and state) replayed in the victim's session."""
    secret = oauth2_secret("crm")
    attacker = Browser(provider.url)
    attacker.login("owner", "owner-password-1")  # even the same account, in another session
    attackers_callback = attacker.answer(attacker.start("crm"))
    page = browser.get(attackers_callback)
    assert page.status_code == 400 and "another session" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_a_code_swapped_into_the_victims_own_attempt_fails_pkce(oauth2_secret, browser, provider):
    secret = oauth2_secret("crm")
    attacker = Browser(provider.url)
    attacker.login("owner", "owner-password-1")
    stolen_code = query(attacker.answer(attacker.start("crm")))["code"]
    victims = query(browser.answer(browser.start("crm")))
    page = browser.get(f"/oauth/crm/callback/?code={stolen_code}&state={victims['state']}&iss={victims['iss']}")
    assert page.status_code == 400 and "refused the code" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_an_issuer_that_differs_by_a_trailing_slash_is_refused(oauth2_secret, browser, provider):
    secret = oauth2_secret("crm", issuer=provider.issuer + "/")
    back = browser.answer(browser.start("crm"))
    assert query(back)["iss"] == provider.issuer
    page = browser.get(back)
    assert page.status_code == 400 and "different issuer" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_an_error_answer_from_another_issuer_is_refused_as_an_issuer_mismatch(oauth2_secret, browser):
    """A mix-up: another authorization server answers our attempt with an error of its own."""
    oauth2_secret("crm")
    state = query(browser.start("crm"))["state"]
    page = browser.get(f"/oauth/crm/callback/?error=access_denied&state={state}&iss=https://other.example")
    assert page.status_code == 400
    assert "different issuer" in unescape(page.text) and "Access was denied" not in unescape(page.text)
    assert not AuditEvent.objects.filter(action="oauth2.authorize_failed").exists()  # not this provider's error


def test_a_provider_naming_its_issuer_to_a_secret_without_one_connects_with_a_warning(oauth2_secret, browser, provider):
    secret = oauth2_secret("crm", issuer="")
    response = browser.connect("crm")
    assert response.status_code == 302 and connection(secret).status == "connected"
    page = unescape(browser.get(response.headers["Location"]).text)
    assert f"identifies itself as issuer '{provider.issuer}'" in page and "Set the secret's issuer URL" in page


def test_a_missing_iss_is_refused_when_the_provider_supports_it(oauth2_secret, browser):
    secret = oauth2_secret("crm", require_iss=True)
    back = browser.answer(browser.start("crm"))
    params = query(back)
    page = browser.get(f"/oauth/crm/callback/?code={params['code']}&state={params['state']}")
    assert page.status_code == 400 and "no 'iss'" in unescape(page.text)
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()


def test_an_expired_attempt_is_refused(oauth2_secret, browser):
    oauth2_secret("crm")
    authorize_url = browser.start("crm")
    OAuth2AuthorizationRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    page = browser.get(browser.answer(authorize_url))
    assert page.status_code == 400 and "expired" in unescape(page.text)


def test_starting_needs_the_vault_permission(oauth2_secret, provider, django_user_model):
    oauth2_secret("crm")
    django_user_model.objects.create_user("staff", password="staff-password", is_staff=True)
    staff = Browser(provider.url)
    staff.login("staff", "staff-password")
    assert staff.get("/oauth/crm/authorize/").status_code == 403


def test_the_endpoints_are_discovered_from_the_issuer(provider, owner):
    from secrets_app.services.secrets import secret_create
    from tests.provider import provider_application

    client_id, client_secret = provider_application(name="found", redirect_uri=f"{provider.url}/oauth/found/callback/")
    secret = secret_create(
        name="found",
        kind="oauth2",
        data={"client_id": client_id, "client_secret": client_secret, "issuer": provider.issuer},
    )
    assert secret.config["authorize_url"] == provider.authorize_url
    assert secret.config["token_url"] == provider.token_url
    assert secret.config["userinfo_url"] == provider.userinfo_url
    assert secret.config["jwks_url"] == f"{provider.url}/o/.well-known/jwks.json"


def test_warnings_when_no_refresh_token_and_fewer_scopes_came_back(browser, provider, owner):
    """A provider (a local server here) that grants less than asked and no refresh token."""
    from secrets_app.services.secrets import secret_create

    token_endpoint = RecordingServer(
        lambda request: Reply(
            body={"access_token": "at-123456", "token_type": "Bearer", "expires_in": 3600, "scope": "read"}
        )
    )
    try:
        secret_create(
            name="stingy",
            kind="oauth2",
            data={
                "client_id": "c",
                "client_secret": "client-secret-1",
                "authorize_url": f"{token_endpoint.url}/authorize",
                "token_url": f"{token_endpoint.url}/token",
                "scope": "read write",
            },
        )
        state = query(browser.start("stingy"))["state"]
        response = browser.http.get(f"{provider.url}/oauth/stingy/callback/?code=c0de&state={state}")
        assert "Connected." in unescape(response.text)
        assert "No refresh token came back" in unescape(response.text)
        assert "missing: write" in unescape(response.text)
    finally:
        token_endpoint.stop()


def test_the_identity_comes_from_a_validated_id_token_without_userinfo(oauth2_secret, browser, provider):
    secret = oauth2_secret("crm", userinfo_url="", jwks_url=f"{provider.url}/o/.well-known/jwks.json")
    assert browser.connect("crm").status_code == 302
    assert connection(secret).identity == "owner@example.com"
    assert connection(secret).tokens["id_token"]


def test_an_id_token_from_another_issuer_is_not_trusted(oauth2_secret, browser, provider):
    secret = oauth2_secret(
        "crm", userinfo_url="", jwks_url=f"{provider.url}/o/.well-known/jwks.json", issuer="https://other.example"
    )
    response = browser.connect("crm")
    assert response.status_code == 400  # the iss parameter already differs
    assert not OAuth2Connection.objects.filter(secret=secret, status="connected").exists()
