"""The vault in the admin: kind-specific forms, write-only values, permissions, audit."""

import re

from django.contrib.auth.models import Permission
from django.urls import reverse

from secrets_app.kinds import SECRET_KINDS
from secrets_app.models import AuditEvent, Secret
from secrets_app.services.secrets import secret_create

ADD = reverse("admin:secrets_app_secret_add")
CHANGELIST = reverse("admin:secrets_app_secret_changelist")


def change_url(secret):
    return reverse("admin:secrets_app_secret_change", args=[secret.pk])


def test_adding_starts_with_a_choice_of_kind(admin_client):
    html = admin_client.get(ADD).content.decode()
    for kind in SECRET_KINDS.values():
        assert f'href="?kind={kind.slug}"' in html and kind.label in html


def test_a_secret_created_in_the_admin_is_stored_and_audited(admin_client, admin_user):
    response = admin_client.post(
        f"{ADD}?kind=api_token",
        {"name": "crm", "description": "", "token": "tok-abcdef-1", "header": "", "probe_url": ""},
    )
    assert response.status_code == 302
    secret = Secret.objects.get(name="crm")
    assert secret.values["token"] == "tok-abcdef-1" and secret.created_by == admin_user
    event = AuditEvent.objects.get(action="secret.create")
    assert event.actor == admin_user and event.target_name == "crm" and "tok-abcdef-1" not in str(event.detail)


def test_errors_appear_beside_their_fields_and_nothing_is_saved(admin_client):
    response = admin_client.post(
        f"{ADD}?kind=rs256", {"name": "signer", "private_key": "not a pem", "public_key": "", "jwks_url": ""}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["private_key"] == ["Not a valid unencrypted PEM private key."]
    assert not Secret.objects.exists()


def test_a_name_that_is_not_a_slug_is_refused(admin_client):
    response = admin_client.post(f"{ADD}?kind=api_token", {"name": "my token", "token": "tok-abcdef-1"})
    assert "name" in response.context["adminform"].form.errors


def test_a_new_value_replaces_the_old_and_the_audit_names_the_field(admin_client):
    secret = secret_create(name="crm", kind="api_token", data={"token": "old-token-1"})
    admin_client.post(change_url(secret), {"name": "crm", "token": "new-token-2", "header": "", "probe_url": ""})
    secret.refresh_from_db()
    assert secret.values["token"] == "new-token-2"
    assert AuditEvent.objects.get(action="secret.update").detail == {"changed": ["token"]}


def test_generic_secret_fields_are_merged_line_by_line(admin_client):
    secret = secret_create(name="g", kind="generic", data={"secret": {"keep": "kept-value", "drop": "dropped-value"}})
    page = admin_client.get(change_url(secret)).content.decode()
    assert "Stored names: drop, keep" in page and "kept-value" not in page
    admin_client.post(change_url(secret), {"name": "g", "public": "", "secret": "new=new-value\ndrop="})
    secret.refresh_from_db()
    assert secret.values["secret"] == {"keep": "kept-value", "new": "new-value"}


def test_generating_a_key_pair_from_the_add_page(admin_client):
    response = admin_client.post(
        f"{ADD}?kind=rs256",
        {"name": "signer", "private_key": "", "public_key": "", "jwks_url": "", "_generate_key": "1"},
    )
    assert response.status_code == 302
    secret = Secret.objects.get(name="signer")
    assert "PRIVATE KEY" in secret.values["private_key"]
    page = admin_client.get(change_url(secret)).content.decode()
    assert "BEGIN PUBLIC KEY" in page and secret.values["private_key"].splitlines()[1] not in page


def test_the_test_button_reports_and_records_the_result(admin_client, local_server):
    secret = secret_create(name="crm", kind="api_token", data={"token": "tok-abcdef-1", "probe_url": local_server.url})
    response = admin_client.post(reverse("admin:secrets_app_secret_test", args=[secret.pk]), follow=True)
    shown = [str(message) for message in response.context["messages"]]
    assert shown[0].startswith(f"crm: HTTP 200 from {local_server.url}")
    assert "tok-abcdef-1" not in response.content.decode()
    secret.refresh_from_db()
    assert secret.status == "ok"
    assert AuditEvent.objects.filter(action="secret.test", target_name="crm").exists()


def test_deleting_selected_secrets_asks_for_confirmation_then_deletes_and_audits(admin_client):
    one = secret_create(name="one", kind="api_token", data={"token": "tok-abcdef-1"})
    two = secret_create(name="two", kind="basic_auth", data={"username": "u", "password": "pw-12345"})
    selected = {"action": "delete_selected_secrets", "_selected_action": [one.pk, two.pk]}
    page = admin_client.post(CHANGELIST, selected)
    assert page.status_code == 200 and Secret.objects.count() == 2  # nothing deleted yet
    html = page.content.decode()
    assert "Are you sure you want to delete these secrets?" in html
    assert "<li>one (api_token)" in html and "<li>two (basic_auth)" in html
    assert "tok-abcdef-1" not in html
    response = admin_client.post(CHANGELIST, {**selected, "post": "yes"})
    assert response.status_code == 302
    assert not Secret.objects.exists()
    assert set(AuditEvent.objects.filter(action="secret.delete").values_list("target_name", flat=True)) == {
        "one",
        "two",
    }


def test_staff_without_vault_permissions_cannot_see_secrets(client, django_user_model, db):
    secret = secret_create(name="crm", kind="api_token", data={"token": "tok-abcdef-1"})
    django_user_model.objects.create_user(username="staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(secret)).status_code == 403
    assert client.post(reverse("admin:secrets_app_secret_test", args=[secret.pk])).status_code == 403


def test_a_view_only_user_cannot_change_or_test(client, django_user_model, db):
    secret = secret_create(name="crm", kind="api_token", data={"token": "tok-abcdef-1"})
    user = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_secret"))
    client.login(username="viewer", password="pw")
    assert client.get(CHANGELIST).status_code == 200
    assert client.post(change_url(secret), {"name": "renamed", "token": "x-123456"}).status_code == 403
    assert client.post(reverse("admin:secrets_app_secret_test", args=[secret.pk])).status_code == 403


def test_a_vault_editor_can_work_without_being_superuser(client, vault_editor):
    client.login(username="editor", password="editor-password")
    response = client.post(
        f"{ADD}?kind=basic_auth", {"name": "partner", "username": "p", "password": "pw-12345", "probe_url": ""}
    )
    assert response.status_code == 302 and Secret.objects.filter(name="partner").exists()


def test_the_audit_log_is_read_only(admin_client):
    secret_create(name="crm", kind="api_token", data={"token": "tok-abcdef-1"})
    event = AuditEvent.objects.get()
    assert admin_client.get(reverse("admin:secrets_app_auditevent_changelist")).status_code == 200
    assert (
        admin_client.post(reverse("admin:secrets_app_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code
        == 403
    )


def test_saving_a_new_secret_opens_it(admin_client):
    response = admin_client.post(
        f"{ADD}?kind=api_token", {"name": "crm", "description": "", "token": "tok-abcdef-1", "header": "", "probe_url": ""}
    )
    assert response.status_code == 302 and response["Location"].split("?")[0] == change_url(Secret.objects.get(name="crm"))


def test_token_expiry_is_told_in_seconds_minutes_or_as_a_time(settings):
    from datetime import datetime, timedelta, timezone as dt_timezone

    from secrets_app.admin import expiry_label

    settings.TIME_ZONE = "UTC"
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt_timezone.utc)
    assert expiry_label(now + timedelta(seconds=42.7), now) == "in 42 s"
    assert expiry_label(now + timedelta(minutes=58, seconds=59), now) == "in 58 min"
    assert expiry_label(now + timedelta(hours=2, minutes=3, seconds=20), now) == "at 14:03:20"
    assert expiry_label(now + timedelta(days=1), now) == "at 2026-03-02 12:00:00"
    assert expiry_label(now - timedelta(seconds=5), now) == "expired at 11:59:55"
    assert expiry_label(None, now) == "-"


def test_the_tokens_page_and_the_connections_list_tell_expiry_within_a_minute_in_seconds(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    from secrets_app.models import OAuth2Connection

    secret = secret_create(
        name="crm",
        kind="oauth2",
        data={"client_id": "c", "client_secret": "s", "authorize_url": "https://a.example/authorize", "token_url": "https://a.example/token"},
    )
    OAuth2Connection.objects.filter(secret=secret).update(status="connected", expires_at=timezone.now() + timedelta(seconds=50))
    tokens_page = admin_client.get(reverse("admin:secrets_app_secret_oauth2", args=[secret.pk])).content.decode()
    connections = admin_client.get(reverse("admin:secrets_app_oauth2connection_changelist")).content.decode()
    for page in (tokens_page, connections):
        assert re.search(r"in \d{1,2} s\b", page) and "0\xa0minutes" not in page and "0 minutes" not in page


OAUTH2_FORM = {
    "name": "local",
    "description": "",
    "preset": "",
    "grant_type": "authorization_code",
    "client_id": "client",
    "client_secret": "client-secret-1",
    "client_auth": "basic",
    "issuer": "",
    "authorize_url": "http://127.0.0.1:9/authorize",
    "token_url": "http://127.0.0.1:9/token",
    "revocation_url": "",
    "userinfo_url": "",
    "jwks_url": "",
    "scope": "",
    "extra_authorize_params": "",
    "identity_url": "",
    "identity_field": "",
    "test_url": "",
    "pkce": "on",
    "hooks": "",
}


def test_an_oauth2_secret_with_endpoints_that_would_be_refused_is_saved_with_warnings(admin_client, settings, monkeypatch):
    settings.FLOWGATE_ALLOW_NETWORKS = []  # local development off: loopback closed ...
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)  # ... and http refused by oauthlib
    response = admin_client.post(f"{ADD}?kind=oauth2", OAUTH2_FORM, follow=True)
    assert Secret.objects.filter(name="local").exists()
    warnings = [str(message) for message in response.context["messages"] if message.level_tag == "warning"]
    assert len(warnings) == 2 and all("FLOWGATE_LOCAL_DEVELOPMENT" in warning for warning in warnings)
    assert "Authorization URL uses http" in warnings[0] and "Token URL uses http" in warnings[1]
    settings.FLOWGATE_ALLOW_NETWORKS = []
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # http allowed, loopback still closed
    data = {**OAUTH2_FORM, "name": "local2"}
    response = admin_client.post(f"{ADD}?kind=oauth2", data, follow=True)
    warnings = [str(message) for message in response.context["messages"] if message.level_tag == "warning"]
    assert len(warnings) == 2 and all("FLOWGATE_ALLOW_NETWORKS" in w and "FLOWGATE_LOCAL_DEVELOPMENT" in w for w in warnings)


def oauth2_secret_create(name):
    endpoints = {"authorize_url": "https://a.example/authorize", "token_url": "https://a.example/token"}
    return secret_create(name=name, kind="oauth2", data={"client_id": "c", "client_secret": "s", **endpoints})


def test_each_secret_page_offers_what_its_kind_can_do(admin_client):
    """Manage tokens and the redirect URI for OAuth2, key generation for RS256, neither for the others."""
    oauth2 = oauth2_secret_create("crm")
    rs256 = secret_create(name="signer", kind="rs256", data={"generate": True})
    token = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
    offers = {
        "manage tokens": 'id="manage-tokens"',
        "redirect URI": 'id="redirect-uri"',
        "new key pair": "Generate new key pair",
    }
    pages = {secret.name: admin_client.get(change_url(secret)).content.decode() for secret in (oauth2, rs256, token)}
    offered = {name: sorted(offer for offer, mark in offers.items() if mark in page) for name, page in pages.items()}
    assert offered == {"crm": ["manage tokens", "redirect URI"], "signer": ["new key pair"], "key": []}
    add_pages = [admin_client.get(f"{ADD}?kind={kind}").content.decode() for kind in ("oauth2", "rs256", "api_token")]
    assert ['id="generate-key"' in page for page in add_pages] == [False, True, False]
    assert ['id="redirect-uri" data-template=' in page for page in add_pages] == [True, False, False]


def test_pages_for_what_a_kind_cannot_do_are_refused(admin_client):
    token = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
    assert admin_client.get(reverse("admin:secrets_app_secret_oauth2", args=[token.pk])).status_code == 404
    operation = reverse("admin:secrets_app_secret_oauth2_operation", args=[token.pk, "revoke"])
    assert admin_client.post(operation).status_code == 404
    assert admin_client.post(reverse("admin:secrets_app_secret_generate_key", args=[token.pk])).status_code == 403
    assert Secret.objects.get(pk=token.pk).values == {"token": "tok-abcdef-1"}


def test_the_status_column_shows_a_connection_status_for_oauth2_and_the_last_test_for_others(admin_client):
    from secrets_app.models import OAuth2Connection

    oauth2 = oauth2_secret_create("crm")
    OAuth2Connection.objects.filter(secret=oauth2).update(status="connected")
    token = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
    Secret.objects.filter(pk=token.pk).update(status="failing")
    html = admin_client.get(CHANGELIST).content.decode()
    assert '<span style="color:#2e7d32">Connected</span>' in html
    assert '<span style="color:#c62828">Failing</span>' in html
