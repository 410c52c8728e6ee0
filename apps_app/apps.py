from django.apps import AppConfig


class AppsAppConfig(AppConfig):
    name = "apps_app"
    verbose_name = "Apps"

    def ready(self):
        from apps_app.services.notices import notice_receivers_connect

        notice_receivers_connect()
