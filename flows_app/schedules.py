"""The engine's periodic jobs, as django-celery-beat entries (editable in the admin)."""

from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from flows_app.app_settings import flow_settings

RECOVER = "Recover stalled flow runs"
PRUNE = "Prune old flow runs"


def periodic_tasks_ensure(**kwargs) -> None:
    """Create the beat entries that do not exist yet; entries an admin changed stay."""
    if not PeriodicTask.objects.filter(name=RECOVER).exists():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=flow_settings.recover_interval_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=RECOVER,
            task="flows_app.tasks.flow_runs_recover_stalled",
            interval=interval,
            description="Hands out again runs whose worker died (expired lease) or whose message was lost.",
        )
    if not PeriodicTask.objects.filter(name=PRUNE).exists():
        daily, _ = CrontabSchedule.objects.get_or_create(minute="17", hour="3", day_of_week="*", day_of_month="*", month_of_year="*")
        PeriodicTask.objects.create(
            name=PRUNE,
            task="flows_app.tasks.flow_runs_prune_old",
            crontab=daily,
            description="Deletes finished runs older than FLOWGATE_RUN_RETENTION_DAYS.",
        )
