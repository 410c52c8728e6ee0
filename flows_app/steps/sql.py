"""sql: a parameterized query against a PostgreSQL or MySQL secret.

The SQL text is never a template: values go in ``parameters`` (``%(name)s`` with an
object, ``%s`` with a list) and the driver binds them, so no input can change the
statement. The step's timeout is enforced by the server (``statement_timeout`` /
``max_statement_time``); rows come back as objects, at most ``row_limit`` of them.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from typing import Any

from django.core.exceptions import ValidationError

from flows_app.steps.base import StepError, StepKind, StepResult
from project import outbound
from project.declarative import Field, is_template
from secrets_app.exceptions import VaultError

#: MySQL errors worth another attempt: deadlock, lock wait timeout, lost connection.
MYSQL_TRANSIENT = {1205, 1213, 2003, 2006, 2013}


def jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


class Sql(StepKind):
    slug = "sql"
    label = "SQL query"
    description = "Runs one parameterized statement against a PostgreSQL or MySQL secret."
    secret_kinds = ("postgresql", "mysql")
    secret_required = True
    fields = (
        Field("query", "SQL", type="code", help_text="Use %(name)s (or %s) placeholders; no templates in SQL text."),
        Field(
            "parameters",
            "Parameters",
            type="json",
            required=False,
            template=True,
            help_text='An object for %(name)s placeholders or a list for %s, e.g. {"email": "{{ trigger.body.email }}"}.',
        ),
        Field("row_limit", "Row limit", type="integer", default=1000, min_value=1, max_value=100_000),
    )

    @classmethod
    def validate(cls, config, *, step_keys):
        if is_template(config["query"]):
            raise ValidationError({"query": "Templates are not allowed in SQL text; pass values as parameters."})
        if not isinstance(config.get("parameters", []), (list, dict)):
            raise ValidationError({"parameters": "Parameters are an object or a list."})

    def execute(self, context):
        # The drivers load with the first SQL step, not in every process (~10 MB each).
        import psycopg
        import pymysql

        parameters = context.config.get("parameters") or None
        limit = context.config["row_limit"]
        try:
            with context.vault.db_connection(context.secret_name, statement_timeout_ms=int(context.timeout * 1000)) as connection:
                with connection.cursor() as cursor:
                    cursor.execute(context.config["query"], parameters)
                    rows, truncated = [], False
                    if cursor.description:
                        columns = [column[0] for column in cursor.description]
                        fetched = cursor.fetchmany(limit + 1)
                        truncated = len(fetched) > limit
                        rows = [{name: jsonable(value) for name, value in zip(columns, row, strict=True)} for row in fetched[:limit]]
                    affected = cursor.rowcount
                connection.commit()
        except (outbound.OutboundUnreachable, OSError) as exc:
            raise StepError(f"Cannot reach the database: {exc}", retryable=True) from None
        except (outbound.OutboundError, VaultError) as exc:
            raise StepError(str(exc)) from None
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            raise StepError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        except psycopg.OperationalError as exc:
            transient = not isinstance(exc, psycopg.errors.QueryCanceled)
            raise StepError(f"{type(exc).__name__}: {str(exc).strip()}", retryable=transient) from None
        except psycopg.Error as exc:
            raise StepError(f"{type(exc).__name__}: {str(exc).strip()}") from None
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            raise StepError(f"MySQL error {code}: {exc.args[-1] if exc.args else exc}", retryable=code in MYSQL_TRANSIENT) from None
        return StepResult(output={"rows": rows, "row_count": len(rows) if rows else affected, "truncated": truncated})
