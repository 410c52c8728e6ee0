"""Reading apps and their connections for the connections API and the admin (never a value)."""

from django.db.models import Case, Count, F, QuerySet, Value, When

from apps_app.models import App, Connection
from secrets_app import access
from secrets_app.models import OAuth2Connection, Secret

#: A connection's one status: the OAuth2 token status when it is not connected; otherwise
#: what its last test found ("failing", "untested" for fields never tested), else connected.
CONNECTION_STATUSES = ("connected", "failing", "untested", "not_connected", "needs_reauthorization", "revoked")
#: How the admin names them.
STATUS_LABELS = {
    "connected": "Connected",
    "failing": "Failing",
    "untested": "Not tested",
    "not_connected": "Not connected",
    "needs_reauthorization": "Needs re-authorization",
    "revoked": "Revoked",
}
#: What only a connection with tokens (an OAuth2 app's) can be.
TOKEN_STATUSES = ("not_connected", "needs_reauthorization", "revoked")

_TOKEN_STATUS = "secret__oauth2_connection__status"


def connections_with_status(*, user=None, app: str = "", end_user: str = "", status: str = "") -> QuerySet[Connection]:
    """The connections ``user`` may use (None: the operator, every one) with ``status`` and
    ``token_*`` fields annotated, filtered by app slug, end-user reference and status when given."""
    queryset = (
        Connection.objects.select_related("app", "secret__owner")
        .annotate(
            status=Case(
                When(
                    **{f"{_TOKEN_STATUS}__in": [
                        OAuth2Connection.Status.NOT_CONNECTED,
                        OAuth2Connection.Status.NEEDS_REAUTHORIZATION,
                        OAuth2Connection.Status.REVOKED,
                    ]},
                    then=F(_TOKEN_STATUS),
                ),
                When(secret__status=Secret.Status.FAILING, then=Value("failing")),
                When(
                    secret__status=Secret.Status.UNTESTED,
                    secret__oauth2_connection__isnull=True,
                    then=Value("untested"),
                ),
                default=Value("connected"),
            ),
            token_expires_at=F("secret__oauth2_connection__expires_at"),
            token_error=F("secret__oauth2_connection__last_error"),
            token_identity=F("secret__oauth2_connection__identity"),
        )
        .order_by("secret_id")
    )
    if user is not None:
        queryset = queryset.filter(secret__in=access.secrets_allowed(user, Secret.objects.all()))
    if app:
        queryset = queryset.filter(app__slug=app)
    if end_user:
        queryset = queryset.filter(end_user=end_user)
    if status:
        queryset = queryset.filter(status=status)
    return queryset


def connection_identity(connection: Connection) -> str:
    """The account: as the app's test named it, else as the provider did."""
    return connection.secret.identity or connection.token_identity or ""


def connection_last_error(connection: Connection) -> str:
    """The token's last error, or the failing test's reason."""
    if connection.token_error:
        return connection.token_error
    return connection.secret.status_detail if connection.secret.status == Secret.Status.FAILING else ""


def connection_statuses(app: App) -> list[tuple[str, str]]:
    """The statuses a connection of ``app`` can be in, as (value, label)."""
    has_tokens = app.connection_kind == App.ConnectionKind.OAUTH2
    return [(status, STATUS_LABELS[status]) for status in CONNECTION_STATUSES if has_tokens or status not in TOKEN_STATUSES]


def connection_status_counts(connections: QuerySet[Connection]) -> dict[str, int]:
    """How many of ``connections`` (from ``connections_with_status``) are in each status."""
    return dict(connections.order_by().values_list("status").annotate(count=Count("pk")))


def apps_with_counts(queryset: QuerySet[App]) -> QuerySet[App]:
    """Apps, each with ``connection_count``."""
    return queryset.annotate(connection_count=Count("connections"))
