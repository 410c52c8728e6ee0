from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FlowsAppConfig(AppConfig):
    name = "flows_app"
    verbose_name = "Flows"

    def ready(self):
        from flows_app import tasks  # noqa: F401  (connects the worker_ready recovery)
        from flows_app.schedules import periodic_tasks_ensure

        post_migrate.connect(periodic_tasks_ensure, sender=self)
