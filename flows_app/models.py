"""Flows, their steps, and the record of every run.

A ``Flow`` is an ordered list of ``Step`` rows, each of one kind (``flows_app.steps``) with
a per-kind ``config``. A ``FlowRun`` is one execution; each executed step leaves a
``StepRun``, which is also the run's checkpoint: it records the step to run next, so a
run picked up again after a worker died continues after the last finished step.

What runs store is redacted: secret values a run touched are masked in ``input``,
``output``, ``error`` and ``logs``. When masking changed a step's output, the exact output
(needed by later steps, and to resume) is kept encrypted in ``raw_output``, like the vault
keeps its values.
"""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from oauth2_provider.settings import oauth2_settings

from secrets_app.fields import EncryptedJSONField

STEP_KEY = RegexValidator(
    r"^[a-z_][a-z0-9_]*$", "Use lower-case letters, digits and '_', starting with a letter (it is a template name)."
)


#: A plain flow's slug, or an app's flow: ``<app slug>/<flow slug>``.
FLOW_SLUG = RegexValidator(
    r"^[-a-zA-Z0-9_]+(/[-a-zA-Z0-9_]+)?$",
    "Use letters, digits, '-' and '_' (an app's flows are named <app>/<flow>).",
)

ENDPOINT_PATH = RegexValidator(
    r"^(?!runs(/|$))(?!.*/runs(/|$))[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$",
    "Use lower-case letters, digits, '-', '_' and '/' between parts; 'runs' cannot be a part.",
)


def step_kind_choices():
    from flows_app.steps import STEP_KINDS

    return [(slug, kind.label) for slug, kind in STEP_KINDS.items()]


class Flow(models.Model):
    name = models.CharField(max_length=200)
    slug = models.CharField(
        max_length=201,
        unique=True,
        validators=[FLOW_SLUG],
        help_text="How triggers, call_flow steps and the CLI name it.",
    )
    enabled = models.BooleanField(default=True, help_text="A disabled flow does not start from triggers or schedules.")
    description = models.TextField(blank=True)
    timeout_seconds = models.PositiveIntegerField(default=300, help_text="A run that takes longer fails.")
    concurrency_limit = models.PositiveIntegerField(
        default=0, help_text="How many runs of this flow may run at once; 0 for no limit. Others wait in the queue."
    )
    error_handler = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A flow that receives a summary of every failed run of this one.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="owned_flows",
        help_text="The flow runs with this user's grants. None: the operator's (created by apply).",
    )
    app_slug = models.CharField(
        max_length=100,
        blank=True,
        db_index=True,
        help_text="The installed app this flow belongs to; each of its runs uses one connection of that app.",
    )
    app_private = models.BooleanField(
        default=False,
        help_text="Only its app runs it (connection tests, OAuth2 operations, the app's own call_flow steps).",
    )
    #: The secrets the flow uses (steps, templates, scripts, endpoint triggers), found on save.
    bindings = GenericRelation(
        "secrets_app.SecretBinding", content_type_field="holder_type", object_id_field="holder_id"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("run_flow", "Can run flows from the admin"), ("edit_script_steps", "Can save script steps")]

    def __str__(self) -> str:
        return self.name


class Step(models.Model):
    class ForEachErrors(models.TextChoices):
        FAIL = "fail", "The step fails"
        SKIP = "skip", "Leave failed items out"
        COLLECT = "collect", "Keep {\"error\": …} for failed items"

    class OnError(models.TextChoices):
        STOP = "stop", "Stop the run (failed)"
        CONTINUE = "continue", "Continue with the next step"
        GOTO = "goto", "Go to the error step"

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    key = models.CharField(max_length=64, validators=[STEP_KEY], help_text="Later steps read this step's output as steps.<key>.")
    kind = models.CharField(max_length=32, choices=step_kind_choices)
    config = models.JSONField(default=dict, blank=True)
    secret = models.ForeignKey(
        "secrets_app.Secret", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    uses_connection = models.BooleanField(
        default=False, help_text="An app's step: it authenticates with the run's connection (`secret: connection`)."
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=1, help_text="Attempts for transient errors (timeouts, 5xx, 429); 1 means no retry."
    )
    retry_backoff_seconds = models.FloatField(default=1.0, help_text="First retry delay; doubles each time, with jitter.")
    timeout_seconds = models.PositiveIntegerField(default=30)
    on_error = models.CharField(max_length=16, choices=OnError.choices, default=OnError.STOP)
    error_step_key = models.CharField(max_length=64, blank=True, help_text="The step to go to when on error is 'go to'.")
    for_each = models.TextField(
        blank=True,
        help_text="A template giving a list: the step runs once per item ({{ item }}, {{ item_index }}), across "
        "workers, and its output is the list of results in item order. Empty: the step runs once.",
    )
    for_each_concurrency = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="For each: items running at once."
    )
    for_each_errors = models.CharField(
        max_length=8, choices=ForEachErrors.choices, default=ForEachErrors.FAIL, help_text="For each: when items fail."
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["flow", "key"], name="flows_step_unique_key")]

    def __str__(self) -> str:
        return f"{self.flow.slug}.{self.key}"


def endpoint_auth_choices():
    from flows_app.triggers import ENDPOINT_AUTH

    return [(slug, mode.label) for slug, mode in ENDPOINT_AUTH.items()]


def comma_list(text: str) -> list[str]:
    """The names in a comma-separated field, trimmed, without empty ones."""
    return [name.strip() for name in text.split(",") if name.strip()]


class EndpointTrigger(models.Model):
    """``/hooks/<path>``: an HTTP endpoint that starts the flow, protected by one mode."""

    class Response(models.TextChoices):
        ASYNC = "async", "Answer 202 at once with the run and a status URL"
        SYNC = "sync", "Wait for the flow and answer with its respond step"

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="endpoints")
    path = models.CharField(
        max_length=200, unique=True, validators=[ENDPOINT_PATH], help_text="Served at /hooks/<path>."
    )
    enabled = models.BooleanField(default=True)
    methods = models.CharField(max_length=60, default="POST", help_text="Comma-separated, e.g. POST or GET, POST.")
    auth = models.CharField("Authentication", max_length=20, choices=endpoint_auth_choices)
    auth_secret = models.ForeignKey(
        "secrets_app.Secret", null=True, blank=True, on_delete=models.PROTECT, related_name="+", verbose_name="Secret"
    )
    auth_config = models.JSONField(default=dict, blank=True)
    response = models.CharField(max_length=8, choices=Response.choices, default=Response.ASYNC)
    sync_timeout_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(300)], help_text="Sync: 504 after this."
    )
    max_body_kb = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(1), MaxValueValidator(10240)], help_text="Larger bodies get 413."
    )
    pass_headers = models.CharField(
        max_length=500, blank=True, help_text="Request headers the flow sees as trigger.headers, comma-separated."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]
        verbose_name = "endpoint trigger"

    def __str__(self) -> str:
        return f"/hooks/{self.path}"

    def method_list(self) -> list[str]:
        return [method.upper() for method in comma_list(self.methods)]

    def header_list(self) -> list[str]:
        return comma_list(self.pass_headers)


class ScheduleTrigger(models.Model):
    """A cron expression or an interval; fired by django-celery-beat through its own entry."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="schedules")
    enabled = models.BooleanField(default=True)
    cron = models.CharField(
        max_length=100, blank=True, help_text="Five fields: minute hour day-of-month month day-of-week, e.g. */5 * * * *."
    )
    interval_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Or: every this many seconds.")
    timezone = models.CharField(max_length=64, default="UTC", help_text="The cron expression's time zone.")
    input = models.JSONField(default=dict, blank=True, help_text="The run's trigger input.")
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        verbose_name = "schedule"

    def __str__(self) -> str:
        return f"every {self.interval_seconds} s" if self.interval_seconds else f"cron {self.cron} ({self.timezone})"


class FlowRunQuerySet(models.QuerySet):
    def holding_slots(self, flow_id: int, now):
        """Runs of the flow that a worker is running now: they count against its concurrency limit."""
        return self.filter(flow_id=flow_id, status=FlowRun.Status.RUNNING, lease_expires_at__gt=now)


class FlowRun(models.Model):
    objects = FlowRunQuerySet.as_manager()

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting to retry"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=32, default="manual", db_index=True)
    trigger_detail = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True, help_text="What a respond step set: status, headers, body.")
    error = models.TextField(blank=True)
    parent_run = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_runs")
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    endpoint = models.ForeignKey(EndpointTrigger, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    idempotency_key = models.CharField(
        max_length=64, blank=True, help_text="A digest of the caller's Idempotency-Key (or a schedule's message id)."
    )
    caller = models.CharField(
        max_length=64, blank=True, help_text="A digest of who called the endpoint; its status URL answers only them."
    )
    queued_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="A waiting run is not picked up before this.")
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task was last sent again (empty: sent once, when it was queued)."
    )
    pickups = models.PositiveSmallIntegerField(default=0, help_text="How often a worker took this run up.")
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    secret_ids = models.JSONField(
        default=list, blank=True, help_text="The flow's bindings when the run started: who may see its data."
    )
    connection = models.ForeignKey(
        "secrets_app.Secret",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="An app flow's run: the connection (an app's secret) it runs with.",
    )

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [models.Index(fields=["flow", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["flow", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="flows_run_unique_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.flow.slug} #{self.pk}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


class StepRun(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="step_runs")
    step_key = models.CharField(max_length=64)
    step_kind = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices)
    attempt = models.PositiveSmallIntegerField(default=1)
    input = models.JSONField(null=True, blank=True, help_text="The step's configuration as rendered, redacted.")
    output = models.JSONField(null=True, blank=True, help_text="Redacted.")
    raw_output = EncryptedJSONField(null=True, blank=True, default=None)
    error = models.TextField(blank=True)
    logs = models.TextField(blank=True)
    next_step_key = models.CharField(max_length=64, blank=True, help_text="Where the run continues; empty when it ends.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.step_key} ({self.status})"


class StepItem(models.Model):
    """One item of a ``for_each`` step (``flows_app.fanout``): its value, its result, and the
    lease of the worker running it. ``round`` counts the step's earlier visits in the run (a
    loop may come back to it). A finished item is never run again."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="items")
    step_key = models.CharField(max_length=64)
    round = models.PositiveIntegerField(default=0)
    index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    #: The item exactly as the template gave it (it may hold what a secret revealed).
    item = EncryptedJSONField(null=True, blank=True, default=None)
    output = models.JSONField(null=True, blank=True, help_text="Redacted.")
    raw_output = EncryptedJSONField(null=True, blank=True, default=None)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    pickups = models.PositiveSmallIntegerField(default=0, help_text="How often a worker took this item up.")
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "step_key", "round", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_key", "round", "index"], name="flows_stepitem_unique_index")
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"{self.step_key}[{self.index}] ({self.status})"


class ClientPolicy(models.Model):
    """What an OAuth2 client application (django-oauth-toolkit) may get from ``/o/token/``.

    Its access tokens are JWTs signed by ``signing_secret`` (an RS256 key pair from the
    vault), with ``iss`` = BASE_URL, ``aud`` = ``audience``, ``exp``, ``scope`` (only scopes
    listed here), so JWT endpoint triggers verify them like any other JWT.
    """

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="flowgate_policy"
    )
    scopes = models.CharField(max_length=500, help_text="Space-separated scopes this client may ask for.")
    audience = models.CharField(max_length=200, blank=True, help_text="The tokens' aud; BASE_URL when blank.")
    token_lifetime_seconds = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(60), MaxValueValidator(86400)]
    )
    signing_secret = models.ForeignKey(
        "secrets_app.Secret", on_delete=models.PROTECT, related_name="+", help_text="An RS256 secret with a private key."
    )

    class Meta:
        verbose_name = "token policy"

    def __str__(self) -> str:
        return f"token policy of {self.application}"

    def scope_list(self) -> list[str]:
        return self.scopes.split()
