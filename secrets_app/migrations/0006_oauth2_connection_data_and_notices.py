"""OAuth2 connections keep their token data encrypted, know when the refresh token
expires, and record when each notice about them went out.

``provider_data`` was a plain JSON column: the rows are copied into an encrypted column of
the same name (a type change in place would leave JSON text where ciphertext belongs).
"""

from django.db import migrations, models

import secrets_app.fields


def encrypt_provider_data(apps, schema_editor):
    OAuth2Connection = apps.get_model("secrets_app", "OAuth2Connection")
    for connection in OAuth2Connection.objects.exclude(provider_data={}).only("pk", "provider_data").iterator():
        OAuth2Connection.objects.filter(pk=connection.pk).update(
            provider_data_encrypted=secrets_app.fields.SecretValues(connection.provider_data)
        )


def decrypt_provider_data(apps, schema_editor):
    OAuth2Connection = apps.get_model("secrets_app", "OAuth2Connection")
    for connection in OAuth2Connection.objects.only("pk", "provider_data_encrypted").iterator():
        OAuth2Connection.objects.filter(pk=connection.pk).update(
            provider_data=dict(connection.provider_data_encrypted or {})
        )


class Migration(migrations.Migration):

    dependencies = [
        ('secrets_app', '0005_oauth2_connection_expires_in'),
    ]

    operations = [
        migrations.AddField(
            model_name='oauth2connection',
            name='provider_data_encrypted',
            field=secrets_app.fields.EncryptedJSONField(default=secrets_app.fields.SecretValues, editable=False),
        ),
        migrations.RunPython(encrypt_provider_data, decrypt_provider_data),
        migrations.RemoveField(
            model_name='oauth2connection',
            name='provider_data',
        ),
        migrations.RenameField(
            model_name='oauth2connection',
            old_name='provider_data_encrypted',
            new_name='provider_data',
        ),
        migrations.AlterField(
            model_name='oauth2connection',
            name='provider_data',
            field=secrets_app.fields.EncryptedJSONField(default=secrets_app.fields.SecretValues, editable=False, help_text="What flows need of the token response besides the tokens (Salesforce's instance_url, Slack's team): the fields the secret's token_data_fields name, else what its hooks return."),
        ),
        migrations.AddField(
            model_name='oauth2connection',
            name='reconnect_by',
            field=models.DateTimeField(blank=True, db_index=True, help_text='When the refresh token expires, as the provider or preset says.', null=True),
        ),
        migrations.AddField(
            model_name='oauth2connection',
            name='reauthorization_notice_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='oauth2connection',
            name='recovery_notice_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='oauth2connection',
            name='expiry_notice_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='oauth2connection',
            name='expiry_notice_for',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
