"""sql steps against the machine's PostgreSQL and MariaDB."""

import uuid

import psycopg
import pymysql
import pytest
from django.core.exceptions import ValidationError

from flows_app.services.flows import step_spec_from_data
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import execute, make_flow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pg_table(postgresql):
    name = f"contacts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {name} (id serial primary key, email text not null, amount numeric(10,2))")
        yield name
        connection.execute(f"DROP TABLE {name}")


@pytest.fixture
def maria_table(mariadb):
    name = f"contacts_{uuid.uuid4().hex[:8]}"
    connection = pymysql.connect(host="127.0.0.1", user="root", password="", database="test", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (id int auto_increment primary key, email varchar(200) not null)")
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    connection.close()


def test_postgresql_rows_are_written_with_bound_parameters_and_read_back(postgresql, pg_table):
    secret_create(name="warehouse", kind="postgresql", data=postgresql)
    hostile = "x'); DROP TABLE " + pg_table + "; --"
    flow = make_flow(
        "store",
        [
            {"key": "insert", "kind": "sql", "secret": "warehouse", "query": f"INSERT INTO {pg_table} (email, amount) VALUES (%(email)s, %(amount)s)", "parameters": {"email": "{{ trigger.email }}", "amount": "{{ trigger.amount }}"}},
            {"key": "read", "kind": "sql", "secret": "warehouse", "query": f"SELECT id, email, amount FROM {pg_table} ORDER BY id"},
        ],
    )
    run = execute(flow, {"email": hostile, "amount": 12.5})
    assert run.status == "succeeded", run.error
    assert run.output == {"rows": [{"id": 1, "email": hostile, "amount": 12.5}], "row_count": 1, "truncated": False}


def test_the_row_limit_truncates(postgresql):
    secret_create(name="warehouse", kind="postgresql", data=postgresql)
    flow = make_flow("many", [{"key": "q", "kind": "sql", "secret": "warehouse", "query": "SELECT generate_series(1, 50) AS n", "row_limit": 10}])
    output = execute(flow).output
    assert len(output["rows"]) == 10 and output["truncated"] is True


def test_the_step_timeout_is_enforced_by_postgresql(postgresql):
    secret_create(name="warehouse", kind="postgresql", data=postgresql)
    flow = make_flow("sleepy", [{"key": "q", "kind": "sql", "secret": "warehouse", "query": "SELECT pg_sleep(5)", "timeout": 1}])
    run = execute(flow)
    assert run.status == "failed" and "QueryCanceled" in run.error and "statement timeout" in run.error


def test_mariadb_rows_are_written_and_read(mariadb, maria_table):
    secret_create(name="shop", kind="mysql", data={**mariadb, "tls": "disabled"})
    flow = make_flow(
        "shop",
        [
            {"key": "insert", "kind": "sql", "secret": "shop", "query": f"INSERT INTO {maria_table} (email) VALUES (%s)", "parameters": ["{{ trigger.email }}"]},
            {"key": "read", "kind": "sql", "secret": "shop", "query": f"SELECT email FROM {maria_table}"},
        ],
    )
    run = execute(flow, {"email": "ada@example.com"})
    assert run.status == "succeeded", run.error
    assert run.step_runs.get(step_key="insert").output["row_count"] == 1
    assert run.output["rows"] == [{"email": "ada@example.com"}]


def test_the_step_timeout_is_enforced_by_mariadb(mariadb):
    secret_create(name="shop", kind="mysql", data={**mariadb, "tls": "disabled"})
    flow = make_flow("sleepy", [{"key": "q", "kind": "sql", "secret": "shop", "query": "SELECT SLEEP(5)", "timeout": 1}])
    run = execute(flow)
    assert run.status == "failed" and "max_statement_time" in run.error


def test_mariadb_local_infile_is_off(mariadb, maria_table):
    secret_create(name="shop", kind="mysql", data={**mariadb, "tls": "disabled"})
    query = f"LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE {maria_table} (email)"
    run = execute(make_flow("exfiltrate", [{"key": "q", "kind": "sql", "secret": "shop", "query": query}]))
    assert run.status == "failed" and "MySQL error" in run.error
    connection = pymysql.connect(host="127.0.0.1", user="root", password="", database="test")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {maria_table}")
        assert cursor.fetchone() == (0,)
    connection.close()


def test_templates_are_not_allowed_in_sql_text(db):
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "q", "kind": "sql", "query": "SELECT * FROM t WHERE id = {{ trigger.id }}"})
    assert "Templates are not allowed in SQL text" in error.value.message_dict["query"][0]


def test_a_sql_step_needs_a_database_secret(db):
    secret_create(name="token", kind="api_token", data={"token": "t-123456"})
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "q", "kind": "sql", "query": "SELECT 1", "secret": "token"})
    assert error.value.message_dict["secret"] == ["Secret 'token' is of kind 'api_token'; a SQL query step takes: postgresql, mysql."]
