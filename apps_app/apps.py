from django.apps import AppConfig


class AppsAppConfig(AppConfig):
    name = "apps_app"
    verbose_name = "Apps"
