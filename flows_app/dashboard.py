"""What the admin's front page shows: the last day's runs, what failed, what needs attention,
and the first steps until they are done. A fixed number of queries, whatever the data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from flows_app.models import Flow, FlowRun
from flows_app.selectors import flows_failed_since, getting_started, runs_by_status
from secrets_app.models import Secret
from secrets_app.selectors import connections_needing_attention

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int
    url: str  # the run list filtered to exactly these runs


def dashboard_context(request, site) -> dict:
    # Whole seconds: the links carry the cutoff, and must count the same runs as the page.
    since = (timezone.now() - WINDOW).replace(microsecond=0)
    context = {}
    if site.get_model_admin(FlowRun).has_view_permission(request):
        runs_url = reverse("admin:flows_app_flowrun_changelist", current_app=site.name)

        def runs_link(**filters) -> str:
            return f"{runs_url}?{urlencode({**filters, 'queued_at__gte': since.isoformat()})}"

        counts = runs_by_status(since=since)
        context["run_counts"] = [
            StatusCount(status, label, counts[status], runs_link(status__exact=status))
            for status, label in FlowRun.Status.choices
        ]
        context["runs_since_url"] = runs_link()
        context["failed_flows"] = [
            (flow, runs_link(status__exact=FlowRun.Status.FAILED, flow__id__exact=flow.pk))
            for flow in flows_failed_since(since=since)
        ]
    if site.get_model_admin(Secret).has_view_permission(request):
        context["connection_problems"] = connections_needing_attention()
    if site.get_model_admin(Flow).has_view_permission(request):
        started = getting_started()
        context["getting_started"] = None if started.done else started
    return context
