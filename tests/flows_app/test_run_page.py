"""The run page shows what happened: live status, a timeline, skipped steps, secrets and refreshes."""

import re
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from flows_app.admin import run_timeline
from flows_app.models import FlowRun, StepRun
from flows_app.services.runs import flow_run_start
from secrets_app.models import OAuth2Connection
from secrets_app.services.secrets import secret_create
from tests.conftest import screenshot
from tests.flows_app.conftest import execute, make_flow
from tests.servers import Reply



def run_page(client, run):
    return client.get(reverse("admin:flows_app_flowrun_change", args=[run.pk]))


def status_of(client, run):
    return client.get(reverse("admin:flows_app_flowrun_status", args=[run.pk]))


def two_steps(slug="greeter"):
    return make_flow(
        slug,
        [
            {"key": "shout", "kind": "transform", "value": "{{ trigger.name | upper }}"},
            {"key": "greet", "kind": "transform", "value": {"message": "Hello {{ steps.shout }}, once"}},
        ],
    )


class TestStatusEndpoint:
    def test_it_answers_the_runs_status_and_how_many_steps_ran(self, admin_client):
        flow = two_steps()
        queued = FlowRun.objects.create(flow=flow)
        assert status_of(admin_client, queued).json() == {
            "status": "queued",
            "label": "Queued",
            "finished": False,
            "state": "queued/0",
        }
        done = execute(flow, {"name": "ada"})
        assert status_of(admin_client, done).json() == {
            "status": "succeeded",
            "label": "Succeeded",
            "finished": True,
            "state": "succeeded/2",
        }

    def test_it_needs_the_permission_to_view_runs(self, client, django_user_model):
        run = FlowRun.objects.create(flow=two_steps())
        assert status_of(client, run).status_code == 302  # to the login page
        user = django_user_model.objects.create_user("staff", password="staff-password-1", is_staff=True)
        client.force_login(user)
        assert status_of(client, run).status_code == 403

    def test_it_tells_a_viewer_without_grants_nothing_of_the_runs_data(self, client, django_user_model):
        secret = secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": "pw"})
        flow = make_flow("partnered", [{"key": "take", "kind": "transform", "value": {"kept": "visible-with-grant-only"}}])
        run = execute(flow, {"order": "input-with-grant-only"})
        FlowRun.objects.filter(pk=run.pk).update(secret_ids=[secret.pk])
        viewer = django_user_model.objects.create_user("viewer", password="viewer-password-1", is_staff=True)
        viewer.user_permissions.set(Permission.objects.filter(codename="view_flowrun"))
        client.force_login(viewer)
        answer = status_of(client, run)
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded/1"
        assert "grant-only" not in answer.content.decode()
        page = run_page(client, run).content.decode()
        assert "grant-only" not in page and 'id="run-timeline"' in page


def test_the_timeline_draws_every_attempt_and_names_the_waits_between_them():
    start = timezone.now()

    def at(seconds):
        return start + timedelta(seconds=seconds)

    run = FlowRun(status="succeeded", queued_at=at(-2), started_at=at(0), finished_at=at(10))
    step_runs = [
        StepRun(step_key="call", status="failed", attempt=1, started_at=at(0), finished_at=at(1), duration_ms=1000),
        StepRun(step_key="call", status="succeeded", attempt=2, started_at=at(5), finished_at=at(6), duration_ms=1000),
        StepRun(step_key="shape", status="succeeded", attempt=1, started_at=at(6), finished_at=at(10), duration_ms=4000),
    ]
    timeline = run_timeline(run, step_runs, now=at(60))
    assert timeline.queue_note == "Waited 2.00 s in the queue before a worker took it up."
    assert [(bar.label, bar.text) for bar in timeline.bars] == [
        ("call", "1.00 s"),
        ("call (attempt 2)", "1.00 s, after waiting 4.00 s"),
        ("shape", "4.00 s"),
    ]
    first, retry, last = timeline.bars
    assert first.x < first.x + first.width < retry.x < retry.x + retry.width <= last.x  # gaps are the waits
    assert last.x + last.width == pytest.approx(timeline.ticks[-1][0])  # the axis ends with the run
    assert [label for _, label in timeline.ticks] == ["0 s", "2.50 s", "5.00 s", "7.50 s", "10.00 s"]


def test_timestamps_on_the_run_page_have_seconds(admin_client):
    run = execute(two_steps(), {"name": "ada"})
    page = run_page(admin_client, run).content.decode()
    queued = re.search(r'field-queued_at.*?<div class="readonly">([^<]*)</div>', page, re.S).group(1)
    assert queued == timezone.localtime(run.queued_at).strftime("%Y-%m-%d %H:%M:%S %Z")


def test_steps_that_did_not_run_are_listed_as_skipped(admin_client):
    flow = make_flow(
        "stops-early",
        [
            {"key": "first", "kind": "transform", "value": 1},
            {"key": "broken", "kind": "transform", "value": "{{ nope }}"},
            {"key": "never", "kind": "transform", "value": 3},
        ],
    )
    run = execute(flow)
    response = run_page(admin_client, run)
    reports = {report.key: [attempt.status for attempt in report.attempts] for report in response.context["step_reports"]}
    assert reports == {"first": ["succeeded"], "broken": ["failed"], "never": []}
    never = re.search(r'<tr class="step-report not-run" data-step="never">(.*?)</tr>', response.content.decode(), re.S)
    assert never and "skipped" in never.group(1)


def test_a_queued_runs_steps_have_not_run_yet(admin_client):
    run = FlowRun.objects.create(flow=two_steps())
    page = run_page(admin_client, run).content.decode()
    assert page.count("not run yet") == 2 and "skipped" not in page
    assert 'data-state="queued/0"' in page and reverse("admin:flows_app_flowrun_status", args=[run.pk]) in page


def test_the_runs_output_is_shown_once(admin_client):
    run = execute(two_steps(), {"name": "ada"})
    assert run.output == {"message": "Hello ADA, once"}
    page = run_page(admin_client, run).content.decode()
    shown = "{\n  &quot;message&quot;: &quot;Hello ADA, once&quot;\n}"  # (the step's input nests it deeper)
    assert page.count(shown) == 1
    assert "The run&#x27;s output (above)." in page  # the last step's row says where it is


def field(page: str, name: str) -> str:
    return re.search(rf'field-{name}.*?<div class="readonly">(.*?)</div>', page, re.S).group(1)


def test_a_response_that_is_the_output_is_not_repeated(admin_client):
    ends_with_respond = make_flow(
        "answers", [{"key": "reply", "kind": "respond", "status": 201, "body": {"answer": "only-once"}}]
    )
    run = execute(ends_with_respond)
    assert run.response == run.output
    page = run_page(admin_client, run).content.decode()
    assert "only-once" in field(page, "output_pretty")
    assert field(page, "response_pretty") == "The run&#x27;s output (above)."
    body_is_output = make_flow(
        "answers-early",
        [
            {"key": "reply", "kind": "respond", "status": 202, "body": {"answer": "body-once"}},
            {"key": "keep", "kind": "transform", "value": {"answer": "body-once"}},
        ],
    )
    run = execute(body_is_output)
    response = field(run_page(admin_client, run).content.decode(), "response_pretty")
    assert "body-once" not in response
    assert "&quot;status&quot;: 202" in response and "Body: the run's output (above)." in response


def test_each_step_names_the_secrets_it_uses_and_the_token_refresh_it_caused(admin_client, connected, local_server):
    secret = connected("crm")
    OAuth2Connection.objects.filter(secret=secret).update(expires_at=timezone.now() - timedelta(seconds=5))
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": "pw"})
    flow = make_flow(
        "refreshing",
        [
            {"key": "call", "kind": "http_request", "url": local_server.url, "secret": "crm"},
            {"key": "reveal", "kind": "transform", "value": {"n": "{{ secrets.get_password('partner') | length }}"}},
        ],
    )
    run = execute(flow)
    assert run.status == "succeeded", run.error
    response = run_page(admin_client, run)
    reports = {report.key: report for report in response.context["step_reports"]}
    assert reports["call"].secret_names == ["crm"] and reports["reveal"].secret_names == ["partner"]
    assert [event.action for event in reports["call"].refreshes] == ["oauth2.refresh"]
    assert reports["reveal"].refreshes == []
    row = re.search(r'data-step="call">(.*?)</tr>', response.content.decode(), re.S).group(1)
    assert "crm: token refreshed at" in row


@pytest.mark.browser
@pytest.mark.worker
def test_the_run_page_turns_from_queued_to_succeeded_by_itself_and_draws_its_timeline(
    worker, live_server, django_user_model, page, local_server
):
    """A run queued behind the flow's concurrency limit: the page updates as it waits and runs."""
    from playwright.sync_api import expect

    from tests.conftest import admin_login

    arrived, release = threading.Event(), threading.Event()

    def held(request):
        arrived.set()
        release.wait(timeout=120)
        return Reply(body={"ok": True})

    local_server.handler = held
    flow = make_flow(
        "one-at-a-time",
        [
            {"key": "fetch", "kind": "http_request", "url": local_server.url},
            {"key": "shape", "kind": "transform", "value": {"fetched": "{{ steps.fetch.body.ok }}"}},
        ],
        concurrency_limit=1,
    )
    first = flow_run_start(flow=flow, input={})
    assert arrived.wait(timeout=120), "the first run never reached its HTTP step"
    second = flow_run_start(flow=flow, input={})

    django_user_model.objects.create_superuser("watcher", "watcher@example.com", "watcher-password-1")
    admin_login(page, live_server.url, "watcher", "watcher-password-1")
    page.goto(f"{live_server.url}{reverse('admin:flows_app_flowrun_change', args=[second.pk])}")
    status = page.locator(".field-status_label .readonly")
    expect(status).to_have_text("Queued")
    assert page.locator("#run-steps").inner_text().count("not run yet") == 2
    screenshot(page, "run-page-queued")

    release.set()  # the first run finishes; the second one is admitted and runs
    expect(status).to_have_text("Succeeded", timeout=120_000)
    second.refresh_from_db()
    step_runs = second.step_runs.count()
    assert step_runs == 2
    expect(page.locator("#run-timeline svg g.step-bar rect")).to_have_count(step_runs)
    assert "cancel-run" not in page.content()  # the panel came back whole: a finished run has no Cancel
    screenshot(page, "run-page-succeeded", walkthrough=True)
    first.refresh_from_db()
    assert first.status == "succeeded"
