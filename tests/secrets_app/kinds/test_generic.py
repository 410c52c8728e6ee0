import pytest
from django.core.exceptions import ValidationError

from secrets_app.exceptions import WrongSecretKind
from secrets_app.models import AuditEvent
from secrets_app.services.secrets import secret_create
from tests.contracts import SecretKindContract


class TestGenericContract(SecretKindContract):
    kind = "generic"

    @pytest.fixture
    def definition(self):
        return {"public": {"account_id": "12345"}, "secret": {"api_key": "generic-key-77c1"}}

    def exercise(self, vault, name, definition):
        assert vault.get_field(name, "account_id") == "12345"
        assert vault.get_field(name, "api_key") == "generic-key-77c1"


class TestGeneric:
    def test_reading_a_secret_field_is_audited_and_a_public_one_is_not(self, db):
        from secrets_app import api

        secret_create(name="g", kind="generic", data={"public": {"account": "1"}, "secret": {"key": "k-123456"}})
        api.get_field("g", "account")
        assert not AuditEvent.objects.filter(action="secret.reveal").exists()
        api.get_field("g", "key")
        assert AuditEvent.objects.get(action="secret.reveal").detail == {"field": "key"}

    def test_a_field_cannot_be_public_and_secret(self, db):
        with pytest.raises(ValidationError) as error:
            secret_create(name="g", kind="generic", data={"public": {"k": "1"}, "secret": {"k": "2222"}})
        assert "both public and secret: k" in error.value.message_dict["secret"][0]

    def test_at_least_one_field(self, db):
        with pytest.raises(ValidationError):
            secret_create(name="g", kind="generic", data={})

    def test_it_does_not_authenticate_requests_by_itself(self, db):
        """Its fields go where a flow puts them (a header template, a script); the contract's
        real job for this kind is reading them, not sending a request."""
        from secrets_app import api

        secret_create(name="g", kind="generic", data={"secret": {"key": "k-123456"}})
        with pytest.raises(WrongSecretKind, match="Secret 'g' is of kind 'generic'; it cannot authenticate"):
            api.auth_for("g")

    def test_unknown_field_names_the_secret_and_kind(self, db):
        from secrets_app import api

        secret_create(name="g", kind="generic", data={"public": {"account": "1"}})
        with pytest.raises(WrongSecretKind, match="Secret 'g' is of kind 'generic'; it has no field 'nope'"):
            api.get_field("g", "nope")
