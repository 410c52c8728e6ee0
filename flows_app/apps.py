from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class FlowsAppConfig(AppConfig):
    name = "flows_app"
    verbose_name = "Flows"

    def ready(self):
        from flows_app import tasks  # noqa: F401  (connects the worker_ready recovery)
        from flows_app.metrics import run_created
        from flows_app.models import EndpointTrigger, Flow, FlowRun, ScheduleTrigger
        from flows_app.schedules import periodic_tasks_ensure
        from flows_app.selectors import endpoint_cache_clear
        from flows_app.services.triggers import schedule_beat_entry_delete

        post_migrate.connect(periodic_tasks_ensure, sender=self)
        post_save.connect(run_created, sender=FlowRun, dispatch_uid="flows_app.metrics.run_created")
        # A signal, not a service call: schedules also go when their flow is deleted
        # (a cascade), and their beat entries must go with them.
        post_delete.connect(
            lambda instance, **kwargs: schedule_beat_entry_delete(schedule=instance),
            sender=ScheduleTrigger,
            weak=False,
            dispatch_uid="flows_app.schedule_beat_entry_delete",
        )
        # What /hooks/ has cached in this process is stale once an endpoint, its flow or a
        # secret changes (other processes' caches expire within a second).
        for model in (EndpointTrigger, Flow, "secrets_app.Secret"):
            post_save.connect(endpoint_cache_clear, sender=model, dispatch_uid=f"endpoint_cache_clear.save.{model}")
            post_delete.connect(endpoint_cache_clear, sender=model, dispatch_uid=f"endpoint_cache_clear.delete.{model}")
