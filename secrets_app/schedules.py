"""The vault's periodic jobs, as django-celery-beat entries (visible and editable in the admin)."""

from django_celery_beat.models import IntervalSchedule, PeriodicTask

PROACTIVE_REFRESH = "Refresh expiring OAuth2 tokens"
PROACTIVE_REFRESH_EVERY_SECONDS = 60
EXPIRY_NOTICES = "Notices of expiring OAuth2 refresh tokens"


def periodic_tasks_ensure(**kwargs) -> None:
    """Create the beat entries that do not exist yet; entries an admin changed are left alone."""
    if not PeriodicTask.objects.filter(name=PROACTIVE_REFRESH).exists():
        every, _ = IntervalSchedule.objects.get_or_create(
            every=PROACTIVE_REFRESH_EVERY_SECONDS, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=PROACTIVE_REFRESH,
            task="secrets_app.tasks.oauth2_refresh_due_connections",
            interval=every,
            description="Refreshes OAuth2 access tokens shortly before they expire, each at its own moment.",
        )
    if not PeriodicTask.objects.filter(name=EXPIRY_NOTICES).exists():
        hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
        PeriodicTask.objects.create(
            name=EXPIRY_NOTICES,
            task="secrets_app.tasks.oauth2_expiry_notices",
            interval=hourly,
            description="Tells the people behind OAuth2 connections to reconnect before their refresh token "
            "expires (FLOWGATE_OAUTH2_RECONNECT_NOTICE_DAYS before), once per connection and date.",
        )


def proactive_refresh_interval_seconds() -> float:
    """How often the proactive refresh runs, from its beat entry as an admin left it; the
    default when the entry is missing, disabled or not on an interval schedule."""
    entry = PeriodicTask.objects.filter(name=PROACTIVE_REFRESH, enabled=True).select_related("interval").first()
    if entry is None or entry.interval is None:
        return PROACTIVE_REFRESH_EVERY_SECONDS
    return entry.interval.schedule.run_every.total_seconds()
