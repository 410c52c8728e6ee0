"""Flowgate settings, read from the environment.

Everything a deployment changes comes from an environment variable documented in the
README. The defaults are the embedded set-up (SQLite and a file-system Celery broker), so
that the product runs on a laptop with no servers; with DEBUG off, missing keys and hosts
stop start-up with a clear message (``project/checks.py``).
"""

import importlib.util
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from project.devkeys import development_keys


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FLOWGATE_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)

# Local development (./scripts/run turns it on with DEBUG): OAuth2 endpoints may use http
# and outbound connections may reach this machine, so a provider running on the laptop
# connects. Never in effect with DEBUG off, where a system check refuses to start.
FLOWGATE_LOCAL_DEVELOPMENT = env_bool("FLOWGATE_LOCAL_DEVELOPMENT", False)
_LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


def _startup_notice(text: str) -> None:
    """Tell the person starting Flowgate something once per launch, not once per process.

    Every process reads these settings (``./scripts/run`` starts six: migrate,
    collectstatic, ensure_admin, web, worker, beat); the launcher sets
    FLOWGATE_NOTICES_SHOWN after the first so that the others stay quiet.
    """
    if not env_bool("FLOWGATE_NOTICES_SHOWN"):
        sys.stderr.write(f"Flowgate: {text}\n")


def _development_value(name: str) -> str:
    return development_keys(VAR_DIR / "dev-keys.json")[name]


# An empty SECRET_KEY or key list with DEBUG off is reported by the system checks.
SECRET_KEY = os.environ.get("SECRET_KEY") or (_development_value("SECRET_KEY") if DEBUG else "")
FLOWGATE_ENCRYPTION_KEYS = env_list("FLOWGATE_ENCRYPTION_KEYS") or (
    [_development_value("FLOWGATE_ENCRYPTION_KEYS")] if DEBUG else []
)
if DEBUG and not (os.environ.get("SECRET_KEY") and env_list("FLOWGATE_ENCRYPTION_KEYS")):
    _startup_notice(
        "DEBUG is on and SECRET_KEY or FLOWGATE_ENCRYPTION_KEYS is not set; using development keys "
        f"from {VAR_DIR / 'dev-keys.json'}. Never use these in production."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or (["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

# The public URL of this installation; OAuth2 redirect URIs and status URLs are built from
# it, so they are right behind a reverse proxy.
BASE_URL = (os.environ.get("BASE_URL") or "http://localhost:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = ["{0.scheme}://{0.netloc}".format(urlsplit(BASE_URL))]
if env_bool("FLOWGATE_BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if BASE_URL.startswith("https://"):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# An https installation in production redirects plain http to https and tells browsers
# to use nothing else (HSTS), so that `manage.py check --deploy` has nothing to add.
# Behind a TLS proxy the redirect needs FLOWGATE_BEHIND_TLS_PROXY, or every request looks
# like plain http. Development and http installations keep both off.
_HTTPS_IN_PRODUCTION = BASE_URL.startswith("https://") and not DEBUG
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS_IN_PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 60 * 60 if _HTTPS_IN_PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Non-public networks that outbound connections may reach (CIDR list). Empty: only
# globally routable addresses. See project/outbound.py.
FLOWGATE_ALLOW_NETWORKS = env_list("FLOWGATE_ALLOW_NETWORKS")
if FLOWGATE_LOCAL_DEVELOPMENT and DEBUG:
    FLOWGATE_ALLOW_NETWORKS += _LOOPBACK_NETWORKS
    # oauthlib reads this from the environment at every request it prepares.
    os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
    _startup_notice(
        "local development is on (FLOWGATE_LOCAL_DEVELOPMENT): OAuth2 endpoints may use http and "
        "outbound connections may reach this machine (" + ", ".join(_LOOPBACK_NETWORKS) + ")."
    )

# Engine tunables (documented in the README).
FLOWGATE_RUN_LEASE_SECONDS = float(os.environ.get("FLOWGATE_RUN_LEASE_SECONDS") or 30)
FLOWGATE_RUN_MAX_PICKUPS = env_int("FLOWGATE_RUN_MAX_PICKUPS", 3)
FLOWGATE_RUN_RETENTION_DAYS = env_int("FLOWGATE_RUN_RETENTION_DAYS", 30)
FLOWGATE_RECOVER_INTERVAL_SECONDS = env_int("FLOWGATE_RECOVER_INTERVAL_SECONDS", 30)
FLOWGATE_SYNC_RUN_THREADS = env_int("FLOWGATE_SYNC_RUN_THREADS", 8)
FLOWGATE_SCRIPT_STEPS_ENABLED = env_bool("FLOWGATE_SCRIPT_STEPS_ENABLED", True)
FLOWGATE_MAX_STORED_OUTPUT_BYTES = env_int("FLOWGATE_MAX_STORED_OUTPUT_BYTES", 2 * 1024 * 1024)

# OAuth2 client connections (documented in the README, "OAuth2 connections").
FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS = env_int("FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS", 60)
FLOWGATE_OAUTH2_PROACTIVE_WINDOW_SECONDS = env_int("FLOWGATE_OAUTH2_PROACTIVE_WINDOW_SECONDS", 15 * 60)
FLOWGATE_OAUTH2_HOOK_MODULES = env_list("FLOWGATE_OAUTH2_HOOK_MODULES")
FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS = env_int("FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS", 7)
# Notices about connections (README, "Connection notices"): a flow slug, and e-mail to owners.
FLOWGATE_CONNECTION_NOTICE_FLOW = os.environ.get("FLOWGATE_CONNECTION_NOTICE_FLOW", "").strip()
FLOWGATE_CONNECTION_NOTICE_EMAIL = env_bool("FLOWGATE_CONNECTION_NOTICE_EMAIL", False)

# Connect links (README, "Connect links"): how long one lasts, and where it may send people back.
FLOWGATE_CONNECT_LINK_LIFETIME_SECONDS = env_int("FLOWGATE_CONNECT_LINK_LIFETIME_SECONDS", 3600)
FLOWGATE_CONNECT_RETURN_URLS = env_list("FLOWGATE_CONNECT_RETURN_URLS")

# Metrics at /metrics (README, "Metrics"): off without a token. Every process writes its
# counts to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them up (project/metrics.py).
# prometheus_client reads the variable from the environment when it is first imported,
# which is after the settings in every process, hence the environment and not a setting.
FLOWGATE_METRICS_TOKEN = os.environ.get("FLOWGATE_METRICS_TOKEN", "").strip()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(VAR_DIR / "metrics")
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "flows_app.admin_site.FlowgateAdminConfig",  # django.contrib.admin with the product's front page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "oauth2_provider",
    "project",
    "secrets_app",
    "flows_app",
    "apps_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# django-ninja (the connections API, /api/) is not an installed app: Django would import it
# in every process, and with it pydantic and django.test (11 MB), which only /api/ uses.
# Its docs page's templates and static files come from its folder, found without importing it.
NINJA_DIR = Path(importlib.util.find_spec("ninja").origin).parent
STATICFILES_DIRS = [NINJA_DIR / "static"]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [NINJA_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'flowgate.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Web, worker and beat share the file: WAL lets readers run beside the one writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing half-way.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# The admin's timestamps with seconds (project/formats/en/formats.py): runs take seconds.
FORMAT_MODULE_PATH = ["project.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

LOGIN_URL = "admin:login"

# Redis, when there is one, also serves as the cache and the run-completion channel.
# The file-system transport ignores the host; naming one keeps kombu from warning, in
# every process, that none was supplied.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://localhost/"
FLOWGATE_REDIS_URL = os.environ.get("FLOWGATE_REDIS_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's file-system transport with atomic messages (project/broker.py)
    CELERY_BROKER_TRANSPORT = "project.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.05,  # a queue folder is read 20 times a second: a sync call waits for it
    }
# A queued run's message is sent again only this long after it was last sent. Redis gives a
# dead worker's unacknowledged messages back after its visibility timeout (an hour) and
# RabbitMQ at once, so a shorter window would only duplicate them; the file-system broker
# loses a killed worker's messages, so the embedded set-up waits five minutes.
FLOWGATE_RUN_RESEND_AFTER_SECONDS = env_int(
    "FLOWGATE_RUN_RESEND_AFTER_SECONDS", 300 if CELERY_BROKER_URL.startswith("filesystem://") else 3600
)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("FLOWGATE_CELERY_QUEUE", "flowgate")
# (project/celery.py adds the housekeeping queue.) One message at a time per worker process:
# a worker holds no queued runs that its death would strand, and alternates between queues.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
if CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ: quorum queues; countdowns use RabbitMQ's native delayed delivery (Celery's
    # delay exchanges), which needs topic exchanges, instead of waiting in a worker's memory.
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
# Celery's Django fix-up closes the database connection around every task unless this is
# set: a new PostgreSQL connection per run cost more than the run. Connections are still
# renewed every 500 tasks, and CONN_MAX_AGE with health checks applies as in web requests.
CELERY_DB_REUSE_MAX = 500

if FLOWGATE_REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": FLOWGATE_REDIS_URL,
            "KEY_PREFIX": "flowgate",
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "project.log_redaction.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": sys.stderr,
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # The development server's request lines (runserver, ./scripts/run) carry query
        # strings; Django's default handler for them has no redaction, ours has.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # oauthlib and requests-oauthlib log token responses and request bodies at DEBUG;
        # urllib3 logs full URLs, query strings included. None of that may reach a log.
        "oauthlib": {"level": "WARNING"},
        "requests_oauthlib": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "jwcrypto": {"level": "WARNING"},
    },
}

# django-oauth-toolkit serves /o/token/ to the clients that call endpoint triggers; its
# access tokens are JWTs from flows_app.oauth2_server (see ClientPolicy). Named here
# because our models refer to the (swappable) application model.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_GENERATOR": "flows_app.oauth2_server.access_token",
    "OAUTH2_VALIDATOR_CLASS": "flows_app.oauth2_server.CallerValidator",
    "SCOPES": {},  # each client's scopes are its token policy's
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # RFC 9700 (OAuth 2.0 Security BCP), which `check --deploy` holds this server to. Callers
    # use the client-credentials grant only, so nothing here takes a feature they need: no
    # implicit or password grant, no "plain" PKCE, no access token in a query string, `iss`
    # in authorization answers, tokens stored hashed, https redirect URIs only.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # The settings above that are already compliant (refresh-token reuse protection, https
    # redirect URIs, exact redirect URIs, PKCE): a change back is a deploy-check error.
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}
