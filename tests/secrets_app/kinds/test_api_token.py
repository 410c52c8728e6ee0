import json

import pytest
from django.core.exceptions import ValidationError

from project import outbound
from secrets_app.api import Vault
from secrets_app.models import AuditEvent
from secrets_app.services.secrets import secret_create, secret_probe
from tests.contracts import SecretKindContract

TOKEN = "tok-4f9a2c7e1b5d"


class TestApiTokenContract(SecretKindContract):
    kind = "api_token"

    @pytest.fixture
    def definition(self, local_server):
        self.server = local_server
        return {"token": TOKEN, "probe_url": f"{local_server.url}/me"}

    def exercise(self, vault, name, definition):
        outbound.request("GET", f"{self.server.url}/api", auth=vault.auth_for(name))
        assert self.server.last.headers["Authorization"] == f"Bearer {TOKEN}"


class TestApiToken:
    def test_custom_header_carries_the_bare_token(self, db, local_server):
        secret_create(name="crm", kind="api_token", data={"token": TOKEN, "header": "X-API-KEY"})
        outbound.request("GET", local_server.url, auth=Vault().auth_for("crm"))
        assert local_server.last.headers["X-API-KEY"] == TOKEN
        assert "Authorization" not in local_server.last.headers

    def test_header_name_must_be_a_valid_http_token(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="crm", kind="api_token", data={"token": TOKEN, "header": "X API KEY"})
        assert "header" in error.value.message_dict

    def test_token_is_required(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="crm", kind="api_token", data={"token": ""})
        assert error.value.message_dict["token"] == ["This field is required."]

    def test_matches_compares_presented_tokens(self, db):
        handler = secret_create(name="crm", kind="api_token", data={"token": TOKEN}).handler
        assert handler.matches(TOKEN)
        assert not handler.matches(TOKEN[:-1])
        assert not handler.matches("")

    def test_probe_reports_status_and_masks_an_echoed_token(self, db, local_server):
        secret = secret_create(
            name="crm", kind="api_token", data={"token": TOKEN, "probe_url": f"{local_server.url}/me"}
        )
        result = secret_probe(secret=secret)
        assert result.ok
        assert result.summary == f"HTTP 200 from {local_server.url}/me"
        assert TOKEN not in result.excerpt and "[secret]" in result.excerpt
        secret.refresh_from_db()
        assert secret.status == "ok" and secret.last_tested_at is not None

    def test_probe_failure_marks_the_secret_failing(self, db, local_server):
        from tests.servers import Reply

        local_server.handler = lambda request: Reply(status=401, body={"error": "bad token"})
        secret = secret_create(name="crm", kind="api_token", data={"token": TOKEN, "probe_url": local_server.url})
        result = secret_probe(secret=secret)
        secret.refresh_from_db()
        assert not result.ok and secret.status == "failing" and "HTTP 401" in secret.status_detail

    def test_get_password_returns_the_token_and_audits_the_reveal(self, db):
        secret_create(name="crm", kind="api_token", data={"token": TOKEN})
        assert Vault(actor_label="flow run 7").get_password("crm") == TOKEN
        reveal = AuditEvent.objects.get(action="secret.reveal")
        assert (reveal.target_name, reveal.actor_label) == ("crm", "flow run 7")
        assert TOKEN not in json.dumps(reveal.detail)
