from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('apps_app', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='app',
            name='notice_flow',
            field=models.CharField(blank=True, help_text='Slug of the flow to run when a connection needs re-authorization, recovers or will expire; blank: FLOWGATE_CONNECTION_NOTICE_FLOW.', max_length=201),
        ),
    ]
