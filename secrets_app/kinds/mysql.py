"""MySQL / MariaDB credentials, connected with PyMySQL from typed fields.

The socket comes from the outbound guard (connected to the checked address) and PyMySQL
runs the protocol on it; TLS verifies the certificate against the host name. ``LOCAL
INFILE`` is off, so a server cannot ask us for local files.
"""

import ssl


from project import outbound
from secrets_app.exceptions import ProbeFailed
from secrets_app.kinds.base import DatabaseKind, database_fields

TLS_CHOICES = (
    ("disabled", "disabled"),
    ("preferred", "preferred"),
    ("required", "required"),
    ("verify_ca", "verify_ca"),
    ("verify_identity", "verify_identity"),
)


class MySQL(DatabaseKind):
    slug = "mysql"
    label = "MySQL credentials"
    description = "Host, database, user and password for a MySQL or MariaDB server; used by SQL steps."
    fields = database_fields(default_port=3306, tls_choices=TLS_CHOICES, tls_default="preferred")

    def _tls_options(self) -> dict:
        """PyMySQL's arguments for the secret's TLS mode.

        PyMySQL treats any ``ssl`` argument as "TLS required", and with none at all it
        tries TLS and goes on without it when the server offers none: that is "preferred".
        """
        mode = self.value("tls")
        if mode == "disabled":
            return {"ssl_disabled": True}
        if mode == "preferred":
            return {}
        context = ssl.create_default_context(cadata=self.value("ca_certificate") or None)
        if mode == "required":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif mode == "verify_ca":
            context.check_hostname = False
        return {"ssl": context}

    def connect(self, *, statement_timeout_ms=None):
        import pymysql  # here, not at the top: processes that never connect do not load the driver
        from pymysql.constants import CR

        host, port, timeout = self.value("host"), self.value("port"), self.value("connect_timeout")
        connection = pymysql.connect(
            host=host,
            port=port,
            user=self.value("user"),
            password=self.value("password"),
            database=self.value("database"),
            connect_timeout=timeout,
            local_infile=False,
            charset="utf8mb4",
            defer_connect=True,
            **self._tls_options(),
        )
        try:
            connection.connect(outbound.create_connection(host, port, timeout))
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == CR.CR_SSL_CONNECTION_ERROR:
                raise ProbeFailed(
                    f"Server {host}:{port} does not offer TLS, which this secret requires (TLS: {self.value('tls')})."
                ) from None
            raise
        try:
            if statement_timeout_ms:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT VERSION()")
                    if "mariadb" in cursor.fetchone()[0].lower():
                        cursor.execute("SET SESSION max_statement_time = %s", (statement_timeout_ms / 1000,))
                    else:
                        cursor.execute("SET SESSION max_execution_time = %s", (int(statement_timeout_ms),))
        except Exception:
            connection.close()
            raise
        return connection

    def server_version(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            return f"MySQL-compatible server {cursor.fetchone()[0]}"
