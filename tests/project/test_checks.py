"""Start-up refuses a production configuration without keys or hosts, in every process."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def product_environment(tmp_path, **env) -> dict[str, str]:
    """This process's environment without any Flowgate or Django setting, plus ``env``:
    a process started with it reads the product's settings as a deployment would."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("FLOWGATE_", "DJANGO_"))}
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DATABASE_URL", "CELERY_BROKER_URL", "BASE_URL"):
        base.pop(name, None)
    base.update(FLOWGATE_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="project.settings", **env)
    return base


def run(args, tmp_path, timeout=60, **env):
    return subprocess.run(
        args, cwd=ROOT, env=product_environment(tmp_path, **env), capture_output=True, text=True, timeout=timeout
    )


PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "flowgate.example.com",
    "FLOWGATE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "BASE_URL": "https://flowgate.example.com",
}


@pytest.mark.parametrize(
    "missing, message",
    [
        ("SECRET_KEY", "SECRET_KEY is not set."),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS is not set."),
        ("FLOWGATE_ENCRYPTION_KEYS", "FLOWGATE_ENCRYPTION_KEYS is not set"),
    ],
)
def test_manage_py_refuses_without_a_required_setting(tmp_path, missing, message):
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != missing}
    result = run([sys.executable, "manage.py", "check"], tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_complete_production_configuration_passes(tmp_path):
    result = run([sys.executable, "manage.py", "check"], tmp_path, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr


def test_a_malformed_encryption_key_is_named(tmp_path):
    result = run(
        [sys.executable, "manage.py", "check"], tmp_path, **{**PRODUCTION_ENV, "FLOWGATE_ENCRYPTION_KEYS": "not-a-key"}
    )
    assert result.returncode != 0 and "Key number 1 in FLOWGATE_ENCRYPTION_KEYS is not a Fernet key" in result.stderr


def test_an_invalid_allowed_network_is_named(tmp_path):
    result = run(
        [sys.executable, "manage.py", "check"], tmp_path, **{**PRODUCTION_ENV, "FLOWGATE_ALLOW_NETWORKS": "10.0.0.0/33"}
    )
    assert result.returncode != 0 and "FLOWGATE_ALLOW_NETWORKS is invalid" in result.stderr


def test_the_wsgi_application_refuses_to_start(tmp_path):
    result = run([sys.executable, "-c", "import project.wsgi"], tmp_path)
    assert result.returncode != 0
    assert "Flowgate cannot start" in result.stderr and "SECRET_KEY is not set" in result.stderr


def test_the_celery_worker_refuses_to_start(tmp_path):
    result = run([str(VENV_BIN / "celery"), "-A", "project", "worker", "--pool", "solo"], tmp_path)
    assert result.returncode != 0
    assert "Flowgate cannot start" in result.stderr and "FLOWGATE_ENCRYPTION_KEYS is not set" in result.stderr


def test_development_keys_are_generated_once_with_a_warning(tmp_path):
    first = run([sys.executable, "manage.py", "check"], tmp_path, DEBUG="true")
    keys_file = tmp_path / "var" / "dev-keys.json"
    keys = json.loads(keys_file.read_text())
    second = run([sys.executable, "manage.py", "check"], tmp_path, DEBUG="true")
    assert first.returncode == 0 and second.returncode == 0
    assert "using development keys" in first.stderr
    assert json.loads(keys_file.read_text()) == keys
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    Fernet(keys["FLOWGATE_ENCRYPTION_KEYS"].encode())  # a usable key


def test_deploy_checks_find_nothing_in_the_documented_production_configuration(tmp_path):
    """The README's production shape: DEBUG off, keys and hosts set, an https BASE_URL and
    a TLS proxy in front. Django's and django-oauth-toolkit's deployment checks (HSTS, the
    https redirect, RFC 9700 for the OAuth2 server) pass with their defaults."""
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    result = run(command, tmp_path, **PRODUCTION_ENV, FLOWGATE_BEHIND_TLS_PROXY="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
