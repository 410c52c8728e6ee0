import pymysql
import pytest

from secrets_app.api import Vault
from secrets_app.services.secrets import secret_create, secret_probe
from tests.contracts import SecretKindContract


class TestMySQLContract(SecretKindContract):
    kind = "mysql"

    @pytest.fixture
    def definition(self, mariadb):
        return {**mariadb, "tls": "disabled"}

    def exercise(self, vault, name, definition):
        with vault.db_connection(name) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), DATABASE()")
            user, database = cursor.fetchone()
            assert user.startswith("flowgate_test@") and database == "test"


class TestMySQL:
    def test_probe_really_connects(self, db, mariadb):
        result = secret_probe(secret=secret_create(name="my", kind="mysql", data={**mariadb, "tls": "disabled"}))
        assert result.ok and "MySQL-compatible server" in result.summary

    def test_a_wrong_password_fails_without_showing_it(self, db, mariadb):
        wrong = "wrong-password-5521"
        secret = secret_create(name="my", kind="mysql", data={**mariadb, "password": wrong, "tls": "disabled"})
        result = secret_probe(secret=secret)
        assert not result.ok and "Access denied" in result.summary and wrong not in result.summary

    def test_local_infile_is_refused(self, db, mariadb):
        secret_create(name="my", kind="mysql", data={**mariadb, "tls": "disabled"})
        with Vault().db_connection("my") as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE t (line TEXT)")
            with pytest.raises(pymysql.err.MySQLError):
                cursor.execute("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t")

    def test_statement_timeout_is_enforced_by_the_server(self, db, mariadb):
        secret_create(name="my", kind="mysql", data={**mariadb, "tls": "disabled"})
        with Vault().db_connection("my", statement_timeout_ms=200) as connection, connection.cursor() as cursor:
            with pytest.raises(pymysql.err.OperationalError, match="max_statement_time exceeded"):
                cursor.execute("SELECT SLEEP(2)")

    def test_the_default_tls_mode_connects_to_a_server_without_tls(self, db, mariadb):
        secret = secret_create(name="my", kind="mysql", data=mariadb)
        assert secret.config["tls"] == "preferred"
        result = secret_probe(secret=secret)
        assert result.ok, result.summary

    def test_disabled_tls_does_not_even_try_it(self, db, mariadb):
        secret_create(name="my", kind="mysql", data={**mariadb, "tls": "disabled"})
        with Vault().db_connection("my") as connection:
            assert connection.ssl is False  # PyMySQL's flag: TLS would be attempted when True

    def test_required_tls_fails_with_a_clear_error_against_a_server_without_it(self, db, mariadb):
        with pymysql.connect(**{k: mariadb[k] for k in ("host", "port", "user", "password")}) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SHOW VARIABLES LIKE 'have_ssl'")
                has_tls = cursor.fetchone()[1] == "YES"
        result = secret_probe(secret=secret_create(name="my", kind="mysql", data={**mariadb, "tls": "required"}))
        assert result.ok is has_tls
        if not has_tls:  # the machine's MariaDB (have_ssl=DISABLED)
            assert "Server 127.0.0.1:3306 does not offer TLS, which this secret requires" in result.summary
