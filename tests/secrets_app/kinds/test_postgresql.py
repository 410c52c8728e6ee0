import pytest
from django.core.exceptions import ValidationError

from secrets_app.api import Vault
from secrets_app.services.secrets import secret_create, secret_probe
from tests.contracts import SecretKindContract


class TestPostgreSQLContract(SecretKindContract):
    kind = "postgresql"

    @pytest.fixture
    def definition(self, postgresql):
        return {**postgresql, "tls": "prefer"}

    def exercise(self, vault, name, definition):
        with vault.db_connection(name) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_database()")
            assert cursor.fetchone() == ("postgres", "test")


class TestPostgreSQL:
    def test_probe_really_connects(self, db, postgresql):
        secret = secret_create(name="pg", kind="postgresql", data=postgresql)
        result = secret_probe(secret=secret)
        assert result.ok and "PostgreSQL" in result.summary

    def test_probe_reports_an_unreachable_server(self, db, postgresql):
        secret = secret_create(name="pg", kind="postgresql", data={**postgresql, "port": 1, "connect_timeout": 2})
        result = secret_probe(secret=secret)
        assert not result.ok and "Cannot connect" in result.summary
        assert postgresql["password"] not in result.summary

    def test_statement_timeout_is_enforced_by_the_server(self, db, postgresql):
        import psycopg

        secret_create(name="pg", kind="postgresql", data=postgresql)
        with Vault().db_connection("pg", statement_timeout_ms=200) as connection, connection.cursor() as cursor:
            with pytest.raises(psycopg.errors.QueryCanceled):
                cursor.execute("SELECT pg_sleep(2)")

    def test_host_lists_and_socket_paths_are_refused(self, db, postgresql):
        for host in ("/var/run/postgresql", "a,b"):
            with pytest.raises(ValidationError) as error:
                secret_create(name="pg", kind="postgresql", data={**postgresql, "host": host})
            assert "host" in error.value.message_dict

    def test_a_port_that_is_not_a_number_is_a_clear_error(self, db, postgresql):
        with pytest.raises(ValidationError) as error:
            secret_create(name="pg", kind="postgresql", data={**postgresql, "port": "five"})
        assert error.value.message_dict["port"] == ["Expected a whole number, got text."]
