"""Test settings: the product's settings with fixed keys and the machine's real services.

The database is the machine's PostgreSQL unless TEST_DATABASE_URL says otherwise;
loopback is opened in the outbound guard because the local test servers live there (the
guard's own tests close it again).
"""

import os

import dj_database_url

from project.settings import *  # noqa: F401,F403
from project.settings import BASE_DIR

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
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_URL = TEST_REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = f"flowgate-test-{os.getpid()}"
LOGGING = {"version": 1, "disable_existing_loggers": False}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
