"""rotate_secret_keys re-encrypts everything with the newest key, while the product runs."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from secrets_app.exceptions import EncryptionKeyError
from secrets_app.models import AuditEvent, Secret
from secrets_app.services.keys import encryption_keys_rotate
from secrets_app.services.secrets import secret_create

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def ciphertexts():
    with connection.cursor() as cursor:
        cursor.execute('SELECT name, "values" FROM secrets_app_secret ORDER BY name')
        return dict(cursor.fetchall())


@pytest.fixture
def written_under_old_key(db, settings):
    settings.FLOWGATE_ENCRYPTION_KEYS = [OLD]
    for number in range(5):
        secret_create(name=f"s{number}", kind="api_token", data={"token": f"token-{number}-abcdef"})
    settings.FLOWGATE_ENCRYPTION_KEYS = [NEW, OLD]


def test_rotation_reencrypts_every_row_with_the_newest_key(written_under_old_key, settings):
    before = ciphertexts()
    report = encryption_keys_rotate(batch_size=2)
    assert report.rows == 5
    after = ciphertexts()
    for name, token in after.items():
        assert token != before[name]
        Fernet(NEW.encode()).decrypt(token.encode())
    settings.FLOWGATE_ENCRYPTION_KEYS = [NEW]  # the old key can now be dropped
    assert Secret.objects.get(name="s3").values["token"] == "token-3-abcdef"
    assert AuditEvent.objects.filter(action="vault.rotate_keys").exists()


def test_without_rotation_dropping_the_old_key_loses_access(written_under_old_key, settings):
    settings.FLOWGATE_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(EncryptionKeyError):
        Secret.objects.get(name="s0")


def test_a_row_changed_during_rotation_is_not_overwritten(written_under_old_key, monkeypatch):
    """Another process saves s1 between the rotation's read and its write."""
    from secrets_app.services import keys

    real_rotate = keys.rotate_token
    interfered = []

    def rotate_with_interference(token):
        if not interfered:
            interfered.append(True)
            secret = Secret.objects.get(name="s0")
            secret.values = {"token": "changed-meanwhile-123"}
            secret.save()
        return real_rotate(token)

    monkeypatch.setattr(keys, "rotate_token", rotate_with_interference)
    report = encryption_keys_rotate()
    assert report.retried == 1 and report.rows == 5
    assert Secret.objects.get(name="s0").values["token"] == "changed-meanwhile-123"


def test_the_command(written_under_old_key):
    out = io.StringIO()
    call_command("rotate_secret_keys", stdout=out)
    assert "Re-encrypted 5 values" in out.getvalue()
