"""Flows in the Django admin: steps inline, "Run now", and the run history.

Thin: validation is the step kinds' own (``flows_app.forms``); a flow is saved with its
steps and triggers by ``flow_save``, as ``apply`` saves it; runs are started, cancelled
and re-run through ``flows_app.services.runs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
import re

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from oauth2_provider.admin import ApplicationAdmin
from oauth2_provider.models import get_application_model

from flows_app.forms import (
    COMMON_ENDPOINT_FIELDS,
    COMMON_STEP_FIELDS,
    ClientPolicyForm,
    EndpointTriggerForm,
    FlowForm,
    RunInputForm,
    ScheduleTriggerForm,
    SpecFormSet,
    StepForm,
    StepFormSet,
    kind_fieldsets,
)
from flows_app.models import ClientPolicy, EndpointTrigger, Flow, FlowRun, ScheduleTrigger, Step, StepRun
from flows_app.selectors import run_step_reports
from flows_app.services.access import run_data_refusal
from flows_app.services.flows import flow_save
from flows_app.services.runs import FlowDisabled, RunNotAllowed, flow_run_cancel, flow_run_rerun, flow_run_start
from flows_app.services.triggers import schedule_next_run
from flows_app.steps import STEP_KINDS
from flows_app.triggers import ENDPOINT_AUTH
from secrets_app import api

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "running": "#1565c0",
    "queued": "#6a1b9a",
    "waiting": "#ef6c00",
}


def status_badge(status: str, label: str):
    return format_html('<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(status, "#000"), label)


def pretty_json(value):
    if value in (None, "", {}, []):
        return "-"
    return preformatted(json.dumps(value, indent=2, ensure_ascii=False))


class FlowNotSaved(Exception):
    """flow_save refused what the forms had accepted (something changed in between)."""


def require_run_permission(request) -> None:
    if not request.user.has_perm("flows_app.run_flow"):
        raise PermissionDenied


class RequestUserInline(admin.StackedInline):
    """An inline whose form knows the request's user (permissions and grants it needs)."""

    common_fields = None

    def get_formset(self, request, obj=None, **kwargs):
        if self.common_fields is not None:
            kwargs["fields"] = self.common_fields
        formset = super().get_formset(request, obj, **kwargs)
        formset.form = type(f"Request{formset.form.__name__}", (formset.form,), {"acting_user": request.user})
        return formset


class StepInline(RequestUserInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    common_fields = COMMON_STEP_FIELDS
    extra = 0
    ordering = ["position", "id"]

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": COMMON_STEP_FIELDS}), *kind_fieldsets(STEP_KINDS)]


def shell_quoted(text: str) -> str:
    """``text`` in double quotes for a POSIX shell: its ``$NAME`` placeholders expand, the rest is literal."""
    escaped = re.sub(r"\$(?![A-Z])", r"\\$", re.sub(r'([\\"`])', r"\\\1", text))
    return f'"{escaped}"'


def endpoint_url(endpoint: EndpointTrigger) -> str:
    return settings.BASE_URL + reverse("flows_app:hook", kwargs={"path": endpoint.path})


def endpoint_curl(endpoint: EndpointTrigger) -> str:
    """A curl command that calls the endpoint, its credentials as shell variables (never values)."""
    method = (endpoint.method_list() or ["POST"])[0]
    body = ["-H", "Content-Type: application/json", "-d", "{}"] if method != "GET" else []
    arguments = [*ENDPOINT_AUTH[endpoint.auth].curl_arguments(endpoint.auth_config), *body]
    lines = [f"curl -X {method} {shell_quoted(endpoint_url(endpoint))}"]
    lines += [f"  {option} {shell_quoted(value)}" for option, value in zip(arguments[::2], arguments[1::2])]
    return " \\\n".join(lines)


class EndpointTriggerInline(RequestUserInline):
    model = EndpointTrigger
    form = EndpointTriggerForm
    formset = SpecFormSet
    common_fields = COMMON_ENDPOINT_FIELDS
    extra = 0
    readonly_fields = ("how_to_call",)
    verbose_name = "endpoint trigger"
    verbose_name_plural = "Endpoint triggers (/hooks/<path>)"

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": ["how_to_call", *COMMON_ENDPOINT_FIELDS]}), *kind_fieldsets(ENDPOINT_AUTH)]

    @admin.display(description="How to call")
    def how_to_call(self, obj):
        if obj is None or not obj.pk:
            return "Save the flow to see the URL to call."
        secret = f" with the credentials of the secret '{obj.auth_secret.name}'" if obj.auth_secret_id else ""
        return format_html(
            '<div class="hook-call"><code class="hook-url">{}</code><pre class="hook-curl">{}</pre>'
            '<button type="button" class="button copy-button">Copy</button>'
            '<p class="hook-note">Set the shell variables in capitals{} before you run it.</p></div>',
            endpoint_url(obj),
            endpoint_curl(obj),
            secret,
        )


class ScheduleTriggerInline(admin.TabularInline):
    model = ScheduleTrigger
    form = ScheduleTriggerForm
    formset = SpecFormSet
    extra = 0
    fields = ("enabled", "cron", "interval_seconds", "timezone", "input", "next_run")
    readonly_fields = ("next_run",)
    verbose_name_plural = "Schedules"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("periodic_task__interval", "periodic_task__crontab")

    @admin.display(description="Next run")
    def next_run(self, obj):
        when = schedule_next_run(obj) if obj.pk else None
        return format_html('<time class="next-run">{}</time>', localize_time(when)) if when else "-"


def localize_time(value) -> str:
    """The admin's timestamp format (``project/formats``), in the admin's time zone."""
    from django.utils import timezone
    from django.utils.formats import date_format

    return date_format(timezone.localtime(value), "DATETIME_FORMAT")


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "enabled", "step_count", "triggers", "last_run", "history_link")
    list_filter = ("enabled",)
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    form = FlowForm
    fields = (*FlowForm.Meta.fields, "owner_label")
    readonly_fields = ("owner_label",)
    inlines = [StepInline, EndpointTriggerInline, ScheduleTriggerInline]
    change_form_template = "admin/flows_app/flow/change_form.html"

    class Media:
        js = ("flows_app/kinds.js", "flows_app/flow_editor.js")
        css = {"all": ("flows_app/flow_editor.css",)}

    def get_queryset(self, request):
        # What the list shows, in one query per page instead of four per row.
        latest = FlowRun.objects.filter(flow=OuterRef("pk")).order_by("-queued_at")
        return (
            super()
            .get_queryset(request)
            .annotate(
                step_total=Count("steps", distinct=True),
                last_run_pk=Subquery(latest.values("pk")[:1]),
                last_run_status=Subquery(latest.values("status")[:1]),
            )
            .prefetch_related("endpoints", "schedules")
        )

    @admin.display(description="Steps", ordering="step_total")
    def step_count(self, obj):
        return obj.step_total

    @admin.display(description="Triggers")
    def triggers(self, obj):
        endpoints = [
            f"/hooks/{endpoint.path}" + (" (open access)" if endpoint.auth == "open" else "") for endpoint in obj.endpoints.all()
        ]
        schedules = [str(schedule) for schedule in obj.schedules.all()]
        return ", ".join(endpoints + schedules) or "-"

    @admin.display(description="Last run")
    def last_run(self, obj):
        if obj.last_run_pk is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:flows_app_flowrun_change", args=[obj.last_run_pk]),
            status_badge(obj.last_run_status, FlowRun.Status(obj.last_run_status).label),
        )

    @admin.display(description="History")
    def history_link(self, obj):
        return format_html('<a href="{}?flow__id__exact={}">runs</a>', reverse("admin:flows_app_flowrun_changelist"), obj.pk)

    @admin.display(description="Runs as")
    def owner_label(self, obj):
        if obj is None or not obj.pk:
            return "you: the flow will use your grants"
        if obj.owner is None:
            return "the operator (created by apply): the flow may use every secret"
        return f"{obj.owner.get_username()}: the flow uses this user's grants"

    def save_form(self, request, form, change):
        flow = super().save_form(request, form, change)
        if not change:
            flow.owner = request.user  # before the inlines validate: they check the owner's grants
        return flow

    def save_model(self, request, obj, form, change):
        """Nothing yet: save_related saves the flow with its steps and triggers, in one service call."""

    def save_related(self, request, form, formsets, change):
        # The forms validated every row with the services' checks (errors beside their fields);
        # flow_save checks access again, saves, records the bindings and the audit row.
        specs = {formset.model: formset.specs() for formset in formsets}
        spec = form.spec(steps=specs[Step], endpoints=specs[EndpointTrigger], schedules=specs[ScheduleTrigger])
        try:
            flow, _, form.flow_changed = flow_save(spec=spec, acting_user=request.user, flow_id=form.instance.pk)
        except ValidationError as exc:
            # Only what changed since the forms checked it (a grant withdrawn, a path taken).
            raise FlowNotSaved(" ".join(exc.messages)) from None
        form.instance.pk = flow.pk
        form.instance.refresh_from_db()

    def construct_change_message(self, request, form, formsets, add=False):
        # flow_save, not the formsets, saved the rows: the history names what it changed.
        if add:
            return [{"added": {}}]
        return [{"changed": {"fields": form.flow_changed}}] if form.flow_changed else []

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except FlowNotSaved as refused:  # raised inside the view's transaction: nothing was saved
            self.message_user(request, f"The flow was not saved: {refused}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def get_urls(self):
        own = [path("<int:pk>/run/", self.admin_site.admin_view(self.run_view), name="flows_app_flow_run")]
        return own + super().get_urls()

    def run_view(self, request, pk):
        flow = get_object_or_404(Flow, pk=pk)
        require_run_permission(request)
        connections = api.app_connections_usable(app_slug=flow.app_slug, user=request.user) if flow.app_slug else None
        form = RunInputForm(request.POST or None, connections=connections)
        if request.method == "POST" and form.is_valid():
            try:
                run = flow_run_start(
                    flow=flow,
                    input=form.cleaned_data["input"],
                    trigger="admin",
                    acting_user=request.user,
                    connection=form.cleaned_data.get("connection"),
                )
            except (FlowDisabled, RunNotAllowed) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Run #{run.pk} started.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:flows_app_flowrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": flow,
            "title": f"Run {flow.name}",
            "form": form,
        }
        return TemplateResponse(request, "admin/flows_app/flow/run.html", context)


def preformatted(text: str):
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text) if text else "-"


class RunRecordDisplay:
    """How a run and its step runs show status, data and errors (read-only)."""

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Input")
    def input_pretty(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_pretty(self, obj):
        return pretty_json(obj.output)

    @admin.display(description="Error")
    def error_text(self, obj):
        return preformatted(obj.error)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


#: What a run stores of its data: shown only to users who may use the run's secrets.
RUN_DATA_FIELDS = ("input_pretty", "output_pretty", "response_pretty", "logs_text")


def run_data_hidden(request, run) -> bool:
    return run is not None and run_data_refusal(request.user, run.secret_ids) is not None


class StepRunInline(RunRecordDisplay, admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    fields = ("step_key", "step_kind", "status_label", "attempt", "duration_ms", "input_pretty", "output_pretty", "error_text", "logs_text")
    readonly_fields = fields
    ordering = ["id"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return [name for name in fields if name not in RUN_DATA_FIELDS] if run_data_hidden(request, obj) else fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("run")

    @admin.display(description="Output")
    def output_pretty(self, obj):
        if obj.output is not None and not obj.next_step_key and obj.output == obj.run.output:
            return "The run's output (above)."  # where the run ended: the same data, shown once
        return super().output_pretty(obj)

    @admin.display(description="Logs")
    def logs_text(self, obj):
        return preformatted(obj.logs)


@admin.register(FlowRun)
class FlowRunAdmin(RunRecordDisplay, admin.ModelAdmin):
    list_display = ("run_id", "flow", "status_label", "trigger", "queued_at", "duration", "error_excerpt")
    list_filter = ("status", "trigger", "flow")
    date_hierarchy = "queued_at"
    search_fields = ("flow__slug", "error", "trigger_detail")
    list_select_related = ("flow",)
    inlines = [StepRunInline]
    actions = ["rerun_selected", "cancel_selected"]
    change_form_template = "admin/flows_app/flowrun/change_form.html"
    fields = (
        "flow",
        "status_label",
        "trigger",
        "trigger_detail",
        "started_by",
        "connection",
        "queued_at",
        "started_at",
        "finished_at",
        "duration",
        "pickups",
        "error_text",
        "input_pretty",
        "output_pretty",
        "response_pretty",
        "parent_run",
        "rerun_of",
    )
    readonly_fields = (*fields, "data_hidden")

    def get_fields(self, request, obj=None):
        if run_data_hidden(request, obj):
            return ["data_hidden", *(name for name in self.fields if name not in RUN_DATA_FIELDS)]
        return self.fields

    @admin.display(description="Data")
    def data_hidden(self, obj):
        return "Inputs, outputs and logs are hidden: they need a use grant on every secret this run's flow binds."

    @admin.display(description="Run", ordering="id")
    def run_id(self, obj):
        return f"#{obj.pk}"

    @admin.display(description="Duration")
    def duration(self, obj):
        return f"{obj.duration_ms} ms" if obj.duration_ms is not None else "-"

    @admin.display(description="Error")
    def error_excerpt(self, obj):
        return (obj.error[:120] + "…") if len(obj.error) > 120 else obj.error or "-"

    @admin.display(description="Response")
    def response_pretty(self, obj):
        response = obj.response
        if obj.output is not None and response == obj.output:  # a flow that ends with its respond step
            return "The run's output (above)."
        if isinstance(response, dict) and obj.output is not None and response.get("body") == obj.output:
            status_and_headers = {name: value for name, value in response.items() if name != "body"}
            return format_html("{}<p>Body: the run's output (above).</p>", pretty_json(status_and_headers))
        return pretty_json(response)

    @admin.action(description="Re-run from the failed step")
    def rerun_selected(self, request, queryset):
        require_run_permission(request)
        for run in queryset:
            try:
                new = flow_run_rerun(run=run, acting_user=request.user)
            except RunNotAllowed as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Run #{run.pk} is re-running as #{new.pk}.")

    @admin.action(description="Cancel selected runs")
    def cancel_selected(self, request, queryset):
        require_run_permission(request)
        for run in queryset:
            if flow_run_cancel(run=run, acting_user=request.user):
                self.message_user(request, f"Run #{run.pk} cancelled.")
            else:
                self.message_user(request, f"Run #{run.pk} had already ended.", messages.WARNING)

    def get_urls(self):
        own = [
            path("<int:pk>/rerun/", self.admin_site.admin_view(self.rerun_view), name="flows_app_flowrun_rerun"),
            path("<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view), name="flows_app_flowrun_cancel"),
            path("<int:pk>/status/", self.admin_site.admin_view(self.status_view), name="flows_app_flowrun_status"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, unquote(object_id))
        if run is not None and self.has_view_permission(request, run):
            step_runs = list(run.step_runs.order_by("id"))
            extra_context = {
                **(extra_context or {}),
                "run_state": run_state(run, len(step_runs)),
                "timeline": run_timeline(run, step_runs, timezone.now()),
                "step_reports": run_step_reports(run, step_runs),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def status_view(self, request, pk):
        """What the run page polls while the run is queued or running.

        Only what the page shows everyone who may view the run (status, how many steps
        ran), never its inputs, outputs or logs: it tells nobody more than the page would.
        """
        run = self.get_object(request, str(pk))
        if run is None:
            raise Http404
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return JsonResponse(
            {
                "status": run.status,
                "label": run.get_status_display(),
                "finished": run.finished,
                "state": run_state(run, run.step_runs.count()),
            }
        )

    def rerun_view(self, request, pk):
        run = get_object_or_404(FlowRun, pk=pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:flows_app_flowrun_change", args=[pk]))
        require_run_permission(request)
        try:
            new = flow_run_rerun(run=run, acting_user=request.user)
        except RunNotAllowed as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:flows_app_flowrun_change", args=[pk]))
        self.message_user(request, f"Re-running from the failed step as run #{new.pk}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:flows_app_flowrun_change", args=[new.pk]))

    def cancel_view(self, request, pk):
        run = get_object_or_404(FlowRun, pk=pk)
        if request.method == "POST":
            require_run_permission(request)
            if flow_run_cancel(run=run, acting_user=request.user):
                self.message_user(request, "Cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:flows_app_flowrun_change", args=[pk]))


def run_state(run: FlowRun, step_run_count: int) -> str:
    """Changes whenever the run page would show something new: its status or a step recorded."""
    return f"{run.status}/{step_run_count}"


def seconds_label(seconds: float) -> str:
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


@dataclass(frozen=True)
class TimelineBar:
    label: str
    css_class: str
    colour: str
    x: float
    width: float
    y: float
    text: str  # beside the bar: its duration, and the wait before it

    @property
    def text_x(self) -> float:
        return self.x + self.width + 4

    @property
    def baseline(self) -> float:
        return self.y + 12


@dataclass(frozen=True)
class Timeline:
    queue_note: str
    bars: list[TimelineBar]
    ticks: list[tuple[float, str]]  # (x, label) along the time axis
    width: int
    height: int
    axis_y: float
    chart_x: int

    @property
    def label_x(self) -> int:
        return self.chart_x - 8

    @property
    def tick_label_y(self) -> float:
        return self.axis_y + 16


TIMELINE_LABELS, TIMELINE_CHART, TIMELINE_TEXT, TIMELINE_ROW = 190, 520, 170, 24


def run_timeline(run: FlowRun, step_runs: list[StepRun], now: datetime) -> Timeline:
    """How long the run waited in the queue, then its step runs on a time axis from when a
    worker took it up: one bar per step run (a retry is a bar of its own), the gaps between
    them being the waits. The queue is a sentence, not a bar: it would squeeze the steps."""
    picked_up = run.started_at or (step_runs[0].started_at if step_runs else None)
    queued = seconds_label(((picked_up or run.finished_at or now) - run.queued_at).total_seconds())
    if picked_up:
        queue_note = f"Waited {queued} in the queue before a worker took it up."
    elif run.finished:
        queue_note = f"Ended after {queued} in the queue, before any step ran."
    else:
        queue_note = f"In the queue for {queued} so far."
    if not step_runs:
        return Timeline(queue_note, [], [], 0, 0, 0, TIMELINE_LABELS)
    end = max([run.finished_at or now, *(step_run.finished_at for step_run in step_runs)])
    span = max((end - picked_up).total_seconds(), 0.001)

    def x(moment: datetime) -> float:
        return TIMELINE_LABELS + (moment - picked_up).total_seconds() / span * TIMELINE_CHART

    bars, previous_end = [], picked_up
    for row, step_run in enumerate(step_runs):
        waited = (step_run.started_at - previous_end).total_seconds()
        text = seconds_label(step_run.duration_ms / 1000)
        if waited / span >= 0.02:  # a visible gap: say how long the run waited
            text += f", after waiting {seconds_label(waited)}"
        bars.append(
            TimelineBar(
                label=step_run.step_key + (f" (attempt {step_run.attempt})" if step_run.attempt > 1 else ""),
                css_class=f"step-bar {step_run.status}",
                colour=STATUS_COLOURS.get(step_run.status, "#000"),
                x=x(step_run.started_at),
                width=max(x(step_run.finished_at) - x(step_run.started_at), 2.0),  # an instant step still shows
                y=row * TIMELINE_ROW + 4,
                text=text,
            )
        )
        previous_end = max(previous_end, step_run.finished_at)
    axis_y = len(bars) * TIMELINE_ROW + 6
    ticks = [(TIMELINE_LABELS + TIMELINE_CHART * n / 4, seconds_label(span * n / 4)) for n in range(5)]
    width = TIMELINE_LABELS + TIMELINE_CHART + TIMELINE_TEXT
    return Timeline(queue_note, bars, ticks, width, int(axis_y + 22), axis_y, TIMELINE_LABELS)


class ClientPolicyInline(RequestUserInline):
    model = ClientPolicy
    form = ClientPolicyForm
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = verbose_name_plural = "Token policy (JWT access tokens for endpoint triggers)"


admin.site.unregister(get_application_model())


@admin.register(get_application_model())
class CallerApplicationAdmin(ApplicationAdmin):
    """django-oauth-toolkit's applications, with the token policy of callers of triggers."""

    inlines = [ClientPolicyInline]
