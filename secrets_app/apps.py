from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SecretsAppConfig(AppConfig):
    name = "secrets_app"
    verbose_name = "Secrets vault"

    def ready(self):
        from secrets_app import checks  # noqa: F401  (registers the checks)
        from secrets_app.schedules import periodic_tasks_ensure

        post_migrate.connect(periodic_tasks_ensure, sender=self)
