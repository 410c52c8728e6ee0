"""The life-cycle hooks: what a kind does when the services create, change and delete its secrets.

The services call the hooks of every kind; by default a secret is just its row. An OAuth2
connection is the kind with more to do: a connection row, a reset when the client settings
change, revocation at the provider before the secret goes, and a status of its own.
"""

from urllib.parse import parse_qs

import pytest

from secrets_app.exceptions import RevocationFailed
from secrets_app.kinds.base import StatusDisplay
from secrets_app.models import AuditEvent, OAuth2Connection, Secret
from secrets_app.selectors import secret_deletion_previews
from secrets_app.services.secrets import secret_create, secret_delete, secret_probe, secret_update
from tests.secrets_app.oauth2.test_tokens import token_endpoint_secret
from tests.servers import RecordingServer, Reply


@pytest.fixture
def provider_answering():
    """``provider_answering(status)``: a local token and revocation endpoint answering every request with ``status``."""
    servers = []

    def start(status: int) -> RecordingServer:
        servers.append(RecordingServer(lambda request: Reply(status=status)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def audit_actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


class TestAKindWithoutHooks:
    def test_creating_changing_and_deleting_touch_nothing_but_the_secret(self, db):
        secret = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
        secret_update(secret=secret, data={"token": "tok-abcdef-2"})
        assert secret_delete(secret=secret) == []
        assert not Secret.objects.exists() and not OAuth2Connection.objects.exists()
        assert audit_actions() == ["secret.create", "secret.update", "secret.delete"]

    def test_deleting_it_does_nothing_else_to_preview(self, db):
        secret = secret_create(name="key", kind="basic_auth", data={"username": "u", "password": "pw-12345"})
        assert secret.handler.deletion_preview() == ""
        assert [preview.note for preview in secret_deletion_previews([secret])] == [""]

    def test_its_status_is_the_outcome_of_its_last_test(self, db, provider_answering):
        server = provider_answering(401)
        secret = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1", "probe_url": server.url})
        assert secret.handler.status_display() == StatusDisplay(label="Not tested", tone="neutral")
        secret_probe(secret=secret)
        secret.refresh_from_db()
        assert secret.handler.status_display() == StatusDisplay(label="Failing", tone="failing")
        server.handler = lambda request: Reply(status=200)
        secret_probe(secret=secret)
        secret.refresh_from_db()
        assert secret.handler.status_display() == StatusDisplay(label="OK", tone="ok")


class TestOAuth2Hooks:
    def test_created_gives_it_a_connection_whose_status_it_shows(self, db, provider_answering):
        secret = token_endpoint_secret(provider_answering(200), name="crm")
        assert secret.handler.status_display() == StatusDisplay(label="Connected", tone="ok")
        OAuth2Connection.objects.filter(secret=secret).update(status="needs_reauthorization")
        assert secret.handler.status_display() == StatusDisplay(label="Needs re-authorization", tone="failing")
        OAuth2Connection.objects.filter(secret=secret).update(status="not_connected", tokens={})
        Secret.objects.filter(pk=secret.pk).update(status="ok")  # a passed Test does not make it connected
        secret.refresh_from_db()
        assert secret.handler.status_display() == StatusDisplay(label="Not connected", tone="neutral")

    def test_a_changed_client_lets_a_refused_connection_try_its_refresh_token_again(self, db, provider_answering):
        secret = token_endpoint_secret(provider_answering(200), name="crm")
        OAuth2Connection.objects.filter(secret=secret).update(status="needs_reauthorization")
        secret_update(secret=secret, data={**secret.config, "scope": "read"})
        assert OAuth2Connection.objects.get(secret=secret).status == "needs_reauthorization"
        secret_update(secret=secret, data={**secret.config, "client_secret": "client-secret-2"})
        assert OAuth2Connection.objects.get(secret=secret).status == "connected"
        assert audit_actions()[-2:] == ["secret.update", "oauth2.client_changed"]

    def test_deleting_revokes_both_tokens_at_the_provider_before_the_secret_goes(self, db, provider_answering):
        server = provider_answering(200)
        secret = token_endpoint_secret(server, name="crm", revocation_url=f"{server.url}/revoke")
        assert secret_delete(secret=secret) == []
        revoked = [parse_qs(request.body.decode())["token"] for request in server.requests if request.path == "/revoke"]
        assert revoked == [["old-refresh-1"], ["old-access-1"]]
        assert audit_actions() == ["secret.create", "oauth2.revoke", "secret.delete"]
        assert not Secret.objects.exists() and not OAuth2Connection.objects.exists()

    def test_a_failed_revocation_refuses_the_deletion_unless_forced(self, db, provider_answering):
        server = provider_answering(503)
        secret = token_endpoint_secret(server, name="crm", revocation_url=f"{server.url}/revoke")
        with pytest.raises(RevocationFailed):
            secret.handler.before_delete(None, force=False)
        (warning,) = secret.handler.before_delete(None, force=True)
        assert warning.startswith("Revocation at the provider failed") and "HTTP 503" in warning
        # The hook only revokes: the secret and its tokens are still here for secret_delete to decide.
        assert OAuth2Connection.objects.get(secret=secret).tokens["refresh_token"] == "old-refresh-1"

    def test_the_deletion_preview_says_whether_and_where_tokens_are_revoked(
        self, db, provider_answering, django_assert_num_queries
    ):
        server = provider_answering(200)
        revoked_there = token_endpoint_secret(server, name="crm", revocation_url=f"{server.url}/revoke")
        kept_there = token_endpoint_secret(server, name="erp")
        endpoints = {"authorize_url": server.url, "token_url": server.url}
        never_connected = secret_create(
            name="new", kind="oauth2", data={"client_id": "c", "client_secret": "client-secret-1", **endpoints}
        )
        plain = secret_create(name="key", kind="api_token", data={"token": "tok-abcdef-1"})
        with django_assert_num_queries(1):  # one for all the OAuth2 secrets, none for the others
            previews = secret_deletion_previews([revoked_there, plain, kept_there, never_connected])
        notes = [preview.note for preview in previews]
        assert notes == [
            f"Its tokens are revoked at the provider (127.0.0.1:{server.port}) first.",
            "",
            "The provider has no revocation endpoint: its tokens are removed here only and stay valid at the "
            "provider until they expire.",
            "Not connected: no tokens to revoke.",
        ]
        assert never_connected.handler.deletion_preview() == notes[-1]
