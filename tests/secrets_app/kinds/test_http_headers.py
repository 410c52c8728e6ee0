import pytest
from django.core.exceptions import ValidationError

from project import outbound
from secrets_app.services.secrets import secret_create
from tests.contracts import SecretKindContract

HEADERS = {"X-Tenant-Key": "tenant-8d7f6a", "X-Signature-Seed": "seed-19af2b"}


class TestHttpHeadersContract(SecretKindContract):
    kind = "http_headers"

    @pytest.fixture
    def definition(self, local_server):
        self.server = local_server
        return {"headers": dict(HEADERS), "probe_url": local_server.url}

    def exercise(self, vault, name, definition):
        outbound.request("GET", self.server.url, auth=vault.auth_for(name))
        for header, value in HEADERS.items():
            assert self.server.last.headers[header] == value


class TestHttpHeaders:
    def test_headers_can_be_given_as_lines(self, db):
        secret = secret_create(name="h", kind="http_headers", data={"headers": "X-One: 1111\nX-Two: two: parts"})
        assert secret.values["headers"] == {"X-One": "1111", "X-Two": "two: parts"}

    def test_invalid_header_names_are_refused(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="h", kind="http_headers", data={"headers": {"Bad Header": "x"}})
        assert "Bad Header" in error.value.message_dict["headers"][0]

    def test_a_list_is_a_type_error(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="h", kind="http_headers", data={"headers": ["X-One: 1"]})
        assert error.value.message_dict["headers"] == ["Expected name/value pairs, got a list."]
