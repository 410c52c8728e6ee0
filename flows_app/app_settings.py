"""The flow engine's settings, read from ``settings.FLOWGATE_*`` with documented defaults."""

from django.conf import settings


class FlowSettings:
    @property
    def run_lease_seconds(self) -> float:
        """How long a worker's claim on a run lasts without a heartbeat (a third of it
        between heartbeats). A killed worker's runs are picked up again after this."""
        return float(getattr(settings, "FLOWGATE_RUN_LEASE_SECONDS", 30))

    @property
    def sync_run_threads(self) -> int:
        """Threads per web process that run sync endpoints' runs there (``flows_app.local_runs``);
        0 sends every run to the workers."""
        return int(getattr(settings, "FLOWGATE_SYNC_RUN_THREADS", 8))

    @property
    def run_max_pickups(self) -> int:
        """A run taken up this many times (its workers died) fails instead of running again."""
        return int(getattr(settings, "FLOWGATE_RUN_MAX_PICKUPS", 3))

    @property
    def max_retry_delay_seconds(self) -> float:
        return float(getattr(settings, "FLOWGATE_MAX_RETRY_DELAY_SECONDS", 3600))

    @property
    def recover_interval_seconds(self) -> int:
        """How often beat looks for stalled runs (expired leases, lost messages)."""
        return int(getattr(settings, "FLOWGATE_RECOVER_INTERVAL_SECONDS", 30))

    @property
    def run_resend_after_seconds(self) -> int:
        """A queued run's message is sent again only this long after it was last sent: by
        then the broker has given back a dead worker's messages, so the run's was lost."""
        return int(getattr(settings, "FLOWGATE_RUN_RESEND_AFTER_SECONDS", 3600))

    @property
    def run_retention_days(self) -> int:
        """Finished runs older than this are deleted by the daily prune job."""
        return int(getattr(settings, "FLOWGATE_RUN_RETENTION_DAYS", 30))

    @property
    def max_stored_output_bytes(self) -> int:
        """A step's input and output and a run's output are stored whole up to this many
        bytes of JSON; past it, history keeps a marker with the size and a preview."""
        return int(getattr(settings, "FLOWGATE_MAX_STORED_OUTPUT_BYTES", 2 * 1024 * 1024))


flow_settings = FlowSettings()
