"""Creating and deleting secrets, where OAuth2 connections make it more than a row."""

import pytest

from secrets_app.exceptions import RevocationFailed
from secrets_app.models import AuditEvent, OAuth2Connection, Secret
from secrets_app.services.secrets import secret_create, secret_delete
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
