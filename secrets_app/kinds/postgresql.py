"""PostgreSQL credentials, connected with psycopg 3 from typed fields.

The host is resolved through the outbound guard and libpq connects to that address
(``hostaddr``) while TLS still checks the certificate against the host name.
"""

import os
import tempfile


from project import outbound
from secrets_app.kinds.base import DatabaseKind, database_fields

TLS_CHOICES = (
    ("disable", "disable"),
    ("prefer", "prefer"),
    ("require", "require"),
    ("verify-ca", "verify-ca"),
    ("verify-full", "verify-full"),
)


class PostgreSQL(DatabaseKind):
    slug = "postgresql"
    label = "PostgreSQL credentials"
    description = "Host, database, user and password for a PostgreSQL server; used by SQL steps."
    fields = database_fields(default_port=5432, tls_choices=TLS_CHOICES, tls_default="prefer")

    def connect(self, *, statement_timeout_ms=None):
        host, port = self.value("host"), self.value("port")
        _family, address = outbound.resolve(host, port)[0]
        options = {
            "host": host,
            "hostaddr": str(address),
            "port": port,
            "dbname": self.value("database"),
            "user": self.value("user"),
            "password": self.value("password"),
            "sslmode": self.value("tls"),
            "connect_timeout": self.value("connect_timeout"),
            "application_name": "flowgate",
        }
        if statement_timeout_ms:
            options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
        import psycopg  # here, not at the top: the driver costs ~10 MB in every process that never connects

        ca_pem = self.value("ca_certificate")
        if not ca_pem:
            return psycopg.connect(**options)
        # libpq reads the trust anchor from a file; it only needs to exist while connecting.
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
            handle.write(ca_pem)
        try:
            return psycopg.connect(**options, sslrootcert=handle.name)
        finally:
            os.unlink(handle.name)

    def server_version(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            return cursor.fetchone()[0].split(",")[0]
