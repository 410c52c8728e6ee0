"""Encryption at rest happens in the field; the database only ever holds ciphertext."""

import pytest
from cryptography.fernet import Fernet
from django.core import serializers
from django.db import connection

from secrets_app.exceptions import EncryptionKeyError
from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create


def raw_values(secret):
    with connection.cursor() as cursor:
        cursor.execute('SELECT "values" FROM secrets_app_secret WHERE id = %s', [secret.pk])
        return cursor.fetchone()[0]


def test_values_are_stored_as_a_fernet_token(db):
    secret = secret_create(name="t", kind="api_token", data={"token": "plain-token-123"})
    stored = raw_values(secret)
    assert "plain-token-123" not in stored
    assert (
        Fernet(b"Mk8OzF4p0b1n7yq1u3v6LhZkq0m8Y4b2x1c9v8b7n6M=").decrypt(stored.encode())
        == b'{"token":"plain-token-123"}'
    )


def test_serializers_export_ciphertext(db):
    secret_create(name="t", kind="api_token", data={"token": "plain-token-123"})
    dumped = serializers.serialize("json", Secret.objects.all())
    assert "plain-token-123" not in dumped


def test_a_missing_key_is_a_clear_error(db, settings):
    secret_create(name="t", kind="api_token", data={"token": "plain-token-123"})
    settings.FLOWGATE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(EncryptionKeyError, match="a key that encrypted them is missing"):
        Secret.objects.get(name="t")
