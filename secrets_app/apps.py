from django.apps import AppConfig


class SecretsAppConfig(AppConfig):
    name = "secrets_app"
    verbose_name = "Secrets vault"

    def ready(self):
        from secrets_app import checks  # noqa: F401  (registers the checks)
