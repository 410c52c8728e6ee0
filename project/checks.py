"""Start-up checks for settings that every process needs.

They run with ``manage.py check``, ``runserver`` and ``migrate`` like any system check,
and ``refuse_start_unless_ready()`` runs them in processes Django does not check for us
(gunicorn, Celery worker and beat), so a misconfigured deployment stops at once with a
message that names the variable to set.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from project import outbound

TAG = "flowgate"


@checks.register(TAG)
def check_required_settings(app_configs=None, **kwargs):
    errors = []
    if not settings.DEBUG:
        try:
            secret_key = settings.SECRET_KEY
        except ImproperlyConfigured:
            secret_key = ""
        if not secret_key:
            errors.append(
                checks.Error(
                    "SECRET_KEY is not set.",
                    hint="Set the SECRET_KEY environment variable to a long random string "
                    "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                    id="flowgate.E001",
                )
            )
        if not settings.ALLOWED_HOSTS:
            errors.append(
                checks.Error(
                    "ALLOWED_HOSTS is not set.",
                    hint="Set ALLOWED_HOSTS to the comma-separated host names this server answers to.",
                    id="flowgate.E002",
                )
            )
        if not settings.BASE_URL or "localhost" in settings.BASE_URL:
            errors.append(
                checks.Warning(
                    f"BASE_URL is {settings.BASE_URL!r}; OAuth2 redirect URIs and status URLs are built from it.",
                    hint="Set BASE_URL to the public URL of this installation, for example https://flowgate.example.com.",
                    id="flowgate.W001",
                )
            )
        if settings.FLOWGATE_LOCAL_DEVELOPMENT:
            errors.append(
                checks.Error(
                    "FLOWGATE_LOCAL_DEVELOPMENT is on with DEBUG off.",
                    hint="Local development lets OAuth2 use http and outbound connections reach this machine; "
                    "unset FLOWGATE_LOCAL_DEVELOPMENT (open networks a server needs with FLOWGATE_ALLOW_NETWORKS).",
                    id="flowgate.E007",
                )
            )
    try:
        outbound.parse_networks(settings.FLOWGATE_ALLOW_NETWORKS)
    except ValueError as exc:
        errors.append(
            checks.Error(
                f"FLOWGATE_ALLOW_NETWORKS is invalid: {exc}.",
                hint="Use comma-separated CIDR networks, for example 10.0.0.0/8,192.168.1.0/24.",
                id="flowgate.E005",
            )
        )
    if settings.CELERY_BROKER_URL.split("://", 1)[0] not in {"filesystem", "redis", "rediss", "amqp", "amqps"}:
        errors.append(
            checks.Error(
                "CELERY_BROKER_URL has an unsupported scheme.",
                hint="Use redis://host:6379/0, amqp://..., or leave it unset for the embedded file-system broker.",
                id="flowgate.E006",
            )
        )
    return errors


def refuse_start_unless_ready() -> None:
    """Run the Flowgate checks and end the process if any of them is an error.

    SystemExit rather than an ordinary exception: Celery logs and ignores exceptions
    raised by signal handlers, and a half-configured worker must not run.
    """
    messages = checks.run_checks(tags=[TAG])
    errors = [message for message in messages if message.level >= checks.ERROR]
    if errors:
        raise SystemExit("Flowgate cannot start:\n" + "\n".join(f"  {error}" for error in errors))
