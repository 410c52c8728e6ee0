"""Creating and deleting secrets, where OAuth2 connections make it more than a row."""

import pytest
from django.core.exceptions import ValidationError

from secrets_app.exceptions import RevocationFailed
from secrets_app.models import AuditEvent, OAuth2Connection, Secret
from secrets_app.services.secrets import secret_create, secret_delete, secret_rename
from tests.flows_app.conftest import make_flow
from tests.secrets_app.oauth2.test_tokens import token_endpoint_secret
from tests.servers import RecordingServer, Reply


class TestSecretCreate:
    def test_an_oauth2_secret_starts_with_a_connection_that_is_not_connected(self, db):
        secret = secret_create(
            name="crm",
            kind="oauth2",
            data={
                "client_id": "c",
                "client_secret": "client-secret-1",
                "authorize_url": "https://idp.example/a",
                "token_url": "https://idp.example/t",
            },
        )
        connection = OAuth2Connection.objects.get(secret=secret)
        assert connection.status == "not_connected" and connection.tokens == {}

    def test_other_kinds_have_no_connection(self, db):
        secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
        assert not OAuth2Connection.objects.exists()


class TestSecretDelete:
    @pytest.fixture
    def unrevocable(self, db):
        """A connected OAuth2 secret whose provider cannot revoke right now."""
        server = RecordingServer(lambda request: Reply(status=503))
        yield token_endpoint_secret(server, revocation_url=f"{server.url}/revoke")
        server.stop()

    def test_a_failed_revocation_keeps_the_secret_and_says_which_without_a_value(self, unrevocable):
        with pytest.raises(RevocationFailed) as error:
            secret_delete(secret=unrevocable)
        message = str(error.value)
        assert message.startswith("Secret 'flaky' was not deleted: revoking its tokens at the provider failed")
        assert "HTTP 503" in message
        assert not any(value in message for value in ("old-access-1", "old-refresh-1", "client-secret-1"))
        assert Secret.objects.filter(name="flaky").exists()
        assert OAuth2Connection.objects.get(secret=unrevocable).tokens["refresh_token"] == "old-refresh-1"
        assert not AuditEvent.objects.filter(action="secret.delete").exists()

    def test_force_deletes_anyway_and_the_audit_says_so(self, unrevocable):
        (warning,) = secret_delete(secret=unrevocable, force=True)
        assert warning.startswith("Revocation at the provider failed")
        assert not Secret.objects.filter(name="flaky").exists()
        assert AuditEvent.objects.get(action="secret.delete", target_name="flaky").detail["forced"] is True


class TestSecretRename:
    def test_a_secret_nothing_uses_is_renamed(self, db):
        secret = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
        secret_rename(secret=secret, name="key-2")
        assert Secret.objects.get(pk=secret.pk).name == "key-2"
        assert AuditEvent.objects.get(action="secret.rename").detail == {"from": "key"}

    def test_renaming_a_secret_that_flows_name_is_refused_unless_forced(self, db):
        secret = secret_create(name="tok", kind="api_token", data={"token": "tok-abcdef-1"})
        make_flow("uses-tok", [{"key": "me", "kind": "http_request", "url": "https://api.example.com/me", "secret": "tok"}])
        with pytest.raises(ValidationError) as refused:
            secret_rename(secret=secret, name="tok-2")
        assert refused.value.message_dict["name"] == [
            "Renaming 'tok' to 'tok-2' needs confirming:",
            "These name it and stop finding it until they are changed to 'tok-2': flow uses-tok.",
        ]
        assert Secret.objects.get(pk=secret.pk).name == "tok" and not AuditEvent.objects.filter(action="secret.rename")
        secret_rename(secret=secret, name="tok-2", force=True)
        assert Secret.objects.get(pk=secret.pk).name == "tok-2"
        accepted = AuditEvent.objects.get(action="secret.rename").detail["accepted"]
        assert accepted == ["These name it and stop finding it until they are changed to 'tok-2': flow uses-tok."]

    def test_renaming_an_oauth2_secret_names_its_old_and_new_redirect_uri(self, db, settings):
        settings.BASE_URL = "https://flowgate.example.com"
        secret = secret_create(
            name="crm",
            kind="oauth2",
            data={
                "client_id": "c",
                "client_secret": "client-secret-1",
                "authorize_url": "https://idp.example/a",
                "token_url": "https://idp.example/t",
            },
        )
        with pytest.raises(ValidationError) as refused:
            secret_rename(secret=secret, name="crm-eu")
        (consequence,) = refused.value.message_dict["name"][1:]
        assert consequence.startswith(
            "Its redirect URI changes from https://flowgate.example.com/oauth/crm/callback/ to "
            "https://flowgate.example.com/oauth/crm-eu/callback/: register the new one at the provider"
        )
