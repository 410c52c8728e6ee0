"""Migrations that change how stored data is kept."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from secrets_app.models import OAuth2Connection, Secret

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("secrets_app", "0005_oauth2_connection_expires_in")]
AFTER = [("secrets_app", "0006_oauth2_connection_data_and_notices")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_token_data_stored_in_plain_json_is_encrypted_by_the_migration():
    old_apps = migrate(BEFORE)
    try:
        OldSecret = old_apps.get_model("secrets_app", "Secret")
        OldConnection = old_apps.get_model("secrets_app", "OAuth2Connection")
        secret = OldSecret.objects.create(name="sf", kind="oauth2", config={}, values={})
        OldConnection.objects.create(secret=secret, provider_data={"instance_url": "https://acme.my.salesforce.com"})
        OldConnection.objects.create(
            secret=OldSecret.objects.create(name="plain", kind="oauth2", config={}, values={}), provider_data={}
        )
    finally:
        migrate(AFTER)
    assert OAuth2Connection.objects.get(secret__name="sf").provider_data == {"instance_url": "https://acme.my.salesforce.com"}
    assert OAuth2Connection.objects.get(secret__name="plain").provider_data == {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT provider_data FROM secrets_app_oauth2connection")
        assert not any("salesforce" in raw for (raw,) in cursor.fetchall())
    assert Secret.objects.count() == 2
