"""Test settings: the product's settings with fixed keys and the machine's real services.

The database is the machine's PostgreSQL unless TEST_DATABASE_URL says otherwise;
loopback is opened in the outbound guard because the local test servers live there (the
guard's own tests close it again).
"""

import atexit
import os
import shutil
import tempfile

import dj_database_url

# This session's metrics, written by this process and the workers it starts, in a folder
# of their own (the workers inherit it), removed when the session ends.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flowgate-test-metrics-")
    atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The broker is Redis unless TEST_BROKER_URL names another (scripts/test runs the engine's
# tests again on RabbitMQ: TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//). Set before
# the product's settings are read, so that they choose what goes with it (with RabbitMQ:
# quorum queues, and no Redis to wake waiters), as in production.
os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_BROKER_URL") or TEST_REDIS_URL

from project.settings import *  # noqa: E402,F401,F403  (after the metrics folder and the broker are chosen)
from project.settings import BASE_DIR  # noqa: E402

DEBUG = False
SECRET_KEY = "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
FLOWGATE_ENCRYPTION_KEYS = ["Mk8OzF4p0b1n7yq1u3v6LhZkq0m8Y4b2x1c9v8b7n6M="]
ALLOWED_HOSTS = ["*"]
FLOWGATE_ALLOW_NETWORKS = ["127.0.0.0/8", "::1/128"]
BASE_URL = "http://testserver"

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
DATABASES = {"default": dj_database_url.parse(TEST_DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# One queue per test session, inherited by the worker processes the tests start.
CELERY_TASK_DEFAULT_QUEUE = os.environ.setdefault("FLOWGATE_CELERY_QUEUE", f"flowgate-test-{os.getpid()}")
LOGGING = {"version": 1, "disable_existing_loggers": False}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# -- django-oauth-toolkit as the OAuth2 provider the client code is tested against -------
# Served by pytest-django's live server over http on loopback, hence the insecure-transport
# switch (oauthlib otherwise insists on https; production keeps that rule).
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


def _provider_signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,  # noqa: F405  (the product's token generator and validator, as in production)
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": _provider_signing_key(),
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    # The client's redirect URI is the live server's, http on loopback (RFC 8252 allows it).
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "OAUTH2_VALIDATOR_CLASS": "tests.provider.ProviderValidator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "email": "E-mail address",
        "read": "Read",
        "write": "Write",
        "offline_access": "Refresh tokens",
    },
}
MIDDLEWARE = [*MIDDLEWARE, "tests.provider.TokenEndpointLog"]  # noqa: F405
