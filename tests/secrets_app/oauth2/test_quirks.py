"""Provider quirks, against local servers that answer as those providers do."""

import json
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from secrets_app.exceptions import ReauthorizationRequired
from secrets_app.models import OAuth2Connection, Secret
from secrets_app.oauth2.client import OAuth2Config, hooks_for
from secrets_app.services.secrets import secret_create
from tests.servers import RecordingServer, Reply


@pytest.fixture
def token_server():
    server = RecordingServer()
    yield server
    server.stop()


def config_for(server, preset, **fields):
    secret = secret_create(
        name=preset,
        kind="oauth2",
        data={
            "preset": preset,
            "client_id": "client-1",
            "client_secret": "client-secret-1",
            "authorize_url": f"{server.url}/authorize",
            "token_url": f"{server.url}/token",
            "revocation_url": "",
            "identity_url": "",
            "userinfo_url": "",
            **fields,
        },
    )
    return OAuth2Config.from_secret(secret)


def exchange(config):
    return hooks_for(config).exchange_code(
        config, code="c0de", redirect_uri="https://flowgate.example/cb", code_verifier="v" * 64
    )


class TestSlack:
    def test_a_user_token_nested_under_authed_user_is_used(self, db, token_server):
        token_server.handler = lambda request: Reply(
            body={
                "ok": True,
                "app_id": "A0KRD7HC3",
                "team": {"id": "T9TK3CUKW", "name": "Acme"},
                "authed_user": {
                    "id": "U1234",
                    "scope": "chat:write,users:read",
                    "access_token": "xoxp-1234",
                    "token_type": "user",
                },
            }
        )
        result = exchange(config_for(token_server, "slack"))
        assert result.token == "xoxp-1234"
        assert result.scope == "chat:write users:read"
        assert result.identity_name == "Acme / U1234"
        assert result.extra == {"team_id": "T9TK3CUKW", "app_id": "A0KRD7HC3"}

    def test_ok_false_with_invalid_code_is_a_refused_grant(self, db, token_server):
        token_server.handler = lambda request: Reply(body={"ok": False, "error": "invalid_code"})
        with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
            exchange(config_for(token_server, "slack"))


class TestGitHub:
    def test_a_form_encoded_answer_with_comma_scopes(self, db, token_server):
        token_server.handler = lambda request: Reply(
            body="access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        result = exchange(config_for(token_server, "github"))
        assert result.token == "gho_16C7e42F292c6912E7710c838347Ae178B4a"
        assert result.scope == "repo gist"
        assert "client_secret" in parse_qs(token_server.last.body.decode())

    def test_http_200_with_bad_refresh_token_is_a_refused_grant(self, db, token_server):
        token_server.handler = lambda request: Reply(
            body={
                "error": "bad_refresh_token",
                "error_description": "The refresh token passed is incorrect or expired.",
            }
        )
        config = config_for(token_server, "github")
        with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
            hooks_for(config).refresh(config, refresh_token="ghr_1")


class TestNotion:
    def test_the_code_is_exchanged_with_a_json_body_and_names_the_owner(self, db, token_server):
        token_server.handler = lambda request: Reply(
            body={
                "access_token": "secret_notion_1",
                "token_type": "bearer",
                "workspace_id": "w-1",
                "workspace_name": "Acme",
                "owner": {"type": "user", "user": {"name": "Ada", "person": {"email": "ada@example.com"}}},
            }
        )
        result = exchange(config_for(token_server, "notion"))
        request = token_server.last
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.body)["grant_type"] == "authorization_code"
        assert request.headers["Authorization"].startswith("Basic ")
        assert result.identity_name == "ada@example.com" and result.extra["workspace_id"] == "w-1"

    def test_refresh_also_sends_json(self, db, token_server):
        token_server.handler = lambda request: Reply(body={"access_token": "secret_notion_2", "token_type": "bearer"})
        config = config_for(token_server, "notion")
        result = hooks_for(config).refresh(config, refresh_token="nrt-1")
        assert json.loads(token_server.last.body) == {"grant_type": "refresh_token", "refresh_token": "nrt-1"}
        assert result.token == "secret_notion_2" and result.refresh_token == "nrt-1"


class TestSalesforce:
    def test_expiry_comes_from_issued_at_in_milliseconds(self, db, token_server):
        issued = int((timezone.now() - timedelta(minutes=30)).timestamp() * 1000)
        token_server.handler = lambda request: Reply(
            body={
                "access_token": "00Dxx!AQ0AQ",
                "instance_url": "https://acme.my.salesforce.com",
                "token_type": "Bearer",
                "issued_at": str(issued),
                "refresh_token": "5Aep861",
            }
        )
        result = exchange(config_for(token_server, "salesforce"))
        assert 5390 <= result.expires_in <= 5410  # two hours from issue, thirty minutes ago
        assert result.extra == {"instance_url": "https://acme.my.salesforce.com"}

    def test_the_instance_url_is_kept_with_the_connection(self, db, token_server):
        from secrets_app.oauth2.tokens import connection_for, store_tokens

        token_server.handler = lambda request: Reply(
            body={"access_token": "a", "instance_url": "https://acme.my.salesforce.com"}
        )
        config = config_for(token_server, "salesforce")
        store_tokens(connection_for(Secret.objects.get(name="salesforce")), exchange(config), connected=True)
        assert OAuth2Connection.objects.get().provider_data == {"instance_url": "https://acme.my.salesforce.com"}
