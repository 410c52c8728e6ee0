"""The vault's periodic jobs, as django-celery-beat entries (visible and editable in the admin)."""

from django_celery_beat.models import IntervalSchedule, PeriodicTask

PROACTIVE_REFRESH = "Refresh expiring OAuth2 tokens"


def periodic_tasks_ensure(**kwargs) -> None:
    """Create the beat entries that do not exist yet; entries an admin changed are left alone."""
    if PeriodicTask.objects.filter(name=PROACTIVE_REFRESH).exists():
        return
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=PROACTIVE_REFRESH,
        task="secrets_app.tasks.oauth2_refresh_due_connections",
        interval=every_minute,
        description="Refreshes OAuth2 access tokens shortly before they expire, spread over each minute.",
    )
