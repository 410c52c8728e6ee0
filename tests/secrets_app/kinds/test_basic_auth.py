import base64

import pytest
from django.core.exceptions import ValidationError

from project import outbound
from secrets_app.api import Vault
from secrets_app.services.secrets import secret_create
from tests.contracts import SecretKindContract

PASSWORD = "pässwörd-93kd"


class TestBasicAuthContract(SecretKindContract):
    kind = "basic_auth"

    @pytest.fixture
    def definition(self, local_server):
        self.server = local_server
        return {"username": "partner", "password": PASSWORD, "probe_url": local_server.url}

    def exercise(self, vault, name, definition):
        outbound.request("GET", self.server.url, auth=vault.auth_for(name))
        expected = base64.b64encode(f"partner:{PASSWORD}".encode()).decode()
        assert self.server.last.headers["Authorization"] == f"Basic {expected}"


class TestBasicAuth:
    def test_username_cannot_contain_a_colon(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="p", kind="basic_auth", data={"username": "a:b", "password": PASSWORD})
        assert "username" in error.value.message_dict

    def test_matches_checks_both_user_name_and_password(self, db):
        handler = secret_create(name="p", kind="basic_auth", data={"username": "partner", "password": PASSWORD}).handler
        assert handler.matches("partner", PASSWORD)
        assert not handler.matches("partner", PASSWORD + "x")
        assert not handler.matches("other", PASSWORD)

    def test_basic_auth_api_hides_the_password_when_printed(self, db):
        secret_create(name="p", kind="basic_auth", data={"username": "partner", "password": PASSWORD})
        credentials = Vault().basic_auth("p")
        assert tuple(credentials) == ("partner", PASSWORD)
        assert PASSWORD not in repr(credentials)

    def test_encoded_credentials_are_masked_by_the_redactor(self, db):
        from secrets_app.redaction import Redactor

        handler = secret_create(name="p", kind="basic_auth", data={"username": "partner", "password": PASSWORD}).handler
        encoded = base64.b64encode(f"partner:{PASSWORD}".encode()).decode()
        assert encoded not in Redactor(handler.secret_strings()).text(f"Authorization: Basic {encoded}")
