from django.apps import AppConfig


class AppsAppConfig(AppConfig):
    name = "apps_app"
    verbose_name = "Apps"

    def ready(self):
        from apps_app.services.notices import notice_receivers_connect
        from apps_app.services.operations import operation_flow_run
        from secrets_app.oauth2.operations import runner_install

        # The vault names operation flows and sends signals; running flows is up here
        # (imports point down).
        runner_install(operation_flow_run)
        notice_receivers_connect()
