"""Triggers in the config-as-code file, and schedules kept in step with django-celery-beat."""

import json
import zoneinfo
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from flows_app.models import EndpointTrigger, Flow, FlowRun, ScheduleTrigger
from flows_app.services.triggers import schedule_fire, schedule_next_run, schedules_sync
from project.config_as_code import ConfigError, config_apply, config_dump, config_export, config_load
from secrets_app.services.secrets import secret_create

pytestmark = pytest.mark.django_db

DOCUMENT = """
flows:
  whoami:
    steps:
      - {key: reply, kind: respond, status: 200, body: {user: "{{ trigger.caller.subject }}"}}
    triggers:
      - {kind: endpoint, path: whoami, methods: [POST], auth: {kind: jwt, secret: hook-key, scopes: ["orders:write"]}, response: sync}
      - {kind: endpoint, path: partner-in, auth: {kind: basic, secret: partner}, response: async, headers: [X-Request-Id]}
      - {kind: schedule, cron: "*/5 * * * *"}
      - {kind: schedule, cron: "0 9 * * 1-5", timezone: Europe/Paris, input: {report: daily}}
"""


@pytest.fixture
def secrets():
    secret_create(name="hook-key", kind="hs256", data={"secret": "k" * 40})
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": "pw-123456"})
    secret_create(name="partner-key", kind="api_token", data={"token": "key-123456"})


def apply(text):
    return config_apply(config_load(text), env={})


def test_apply_creates_endpoints_and_schedules_with_their_beat_entries(secrets):
    apply(DOCUMENT)
    flow = Flow.objects.get(slug="whoami")
    whoami = EndpointTrigger.objects.get(path="whoami")
    assert whoami.flow == flow and whoami.auth == "jwt" and whoami.auth_secret.name == "hook-key"
    assert whoami.auth_config == {"scopes": ["orders:write"]} and whoami.response == "sync" and whoami.methods == "POST"
    assert EndpointTrigger.objects.get(path="partner-in").header_list() == ["X-Request-Id"]
    entries = {schedule.cron: schedule.periodic_task for schedule in flow.schedules.all()}
    assert set(entries) == {"*/5 * * * *", "0 9 * * 1-5"}
    paris = entries["0 9 * * 1-5"]
    assert paris.enabled and paris.task == "flows_app.tasks.flow_schedule_fire"
    assert str(paris.crontab.timezone) == "Europe/Paris" and paris.crontab.hour == "9" and paris.crontab.day_of_week == "1-5"
    assert json.loads(paris.args) == [ScheduleTrigger.objects.get(cron="0 9 * * 1-5").pk]


def test_applying_the_same_file_again_changes_nothing(secrets):
    apply(DOCUMENT)
    entries = set(PeriodicTask.objects.values_list("pk", flat=True))
    assert [change.action for change in apply(DOCUMENT)] == ["unchanged"]
    assert set(PeriodicTask.objects.values_list("pk", flat=True)) == entries  # beat keeps its entries
    changed = PeriodicTasks.last_change()
    schedules_sync(flow=Flow.objects.get(slug="whoami"))  # as after a save in the admin
    assert PeriodicTasks.last_change() == changed  # beat has nothing to reload


def test_export_writes_the_triggers_back(secrets):
    apply(DOCUMENT)
    exported = config_export()["flows"]["whoami"]["triggers"]
    assert exported[0] == {"kind": "endpoint", "path": "partner-in", "methods": ["POST"], "auth": {"kind": "basic", "secret": "partner"}, "headers": ["X-Request-Id"]}
    assert exported[1]["auth"] == {"kind": "jwt", "secret": "hook-key", "scopes": ["orders:write"]}
    assert {"kind": "schedule", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "input": {"report": "daily"}} in exported
    text = config_dump({"flows": config_export()["flows"]})
    Flow.objects.all().delete()
    apply(text)
    assert config_export()["flows"]["whoami"]["triggers"] == exported  # a round trip


def test_removing_triggers_from_the_file_removes_them_and_their_beat_entries(secrets):
    apply(DOCUMENT)
    apply(DOCUMENT.split("    triggers:")[0] + "    triggers: []\n")
    assert not EndpointTrigger.objects.exists() and not ScheduleTrigger.objects.exists()
    assert not PeriodicTask.objects.filter(task="flows_app.tasks.flow_schedule_fire").exists()


def test_deleting_a_flow_deletes_its_beat_entries(secrets):
    apply(DOCUMENT)
    Flow.objects.get(slug="whoami").delete()
    assert not PeriodicTask.objects.filter(task="flows_app.tasks.flow_schedule_fire").exists()


@pytest.mark.parametrize(
    "trigger,path,message",
    [
        ('{kind: schedule, cron: "61 * * * *"}', "triggers[0].cron", "Not a valid cron expression"),
        ('{kind: schedule, cron: "* * *"}', "triggers[0].cron", "Use five fields"),
        ('{kind: schedule, cron: "* * * * *", interval: 60}', "triggers[0].cron", "either a cron expression or an interval"),
        ('{kind: schedule, interval: 60, timezone: Mars/Olympus}', "triggers[0].timezone", "Unknown time zone 'Mars/Olympus'"),
        ("{kind: endpoint, path: x}", "triggers[0].auth", "Name the authentication"),
        ("{kind: endpoint, path: x, auth: {kind: magic}}", "triggers[0].auth.kind", "Unknown authentication 'magic'"),
        ("{kind: endpoint, path: x, auth: {kind: jwt, secret: partner}}", "triggers[0].auth.secret", "is of kind 'basic_auth'"),
        ("{kind: endpoint, path: x, auth: {kind: jwt, secret: nobody}}", "triggers[0].auth.secret", "There is no secret 'nobody'"),
        ("{kind: endpoint, path: x, auth: {kind: basic}}", "triggers[0].auth.secret", "Basic auth needs a secret"),
        ("{kind: endpoint, path: Bad Path, auth: {kind: open}}", "triggers[0].path", "lower-case letters"),
        ("{kind: endpoint, path: a/runs, auth: {kind: open}}", "triggers[0].path", "'runs' cannot be a part"),
        ("{kind: endpoint, path: x, methods: [FETCH], auth: {kind: open}}", "triggers[0].methods", "Use one or more of"),
        ("{kind: endpoint, path: x, auth: {kind: signature, secret: hook-key, scheme: generic}}", "triggers[0].auth.header", "Name the header"),
        ("{kind: webhook}", "triggers[0].kind", "A trigger is"),
        ("{kind: endpoint, path: x, auth: {kind: open}, headers: [Authorization]}", "triggers[0].headers", "carries the caller's credentials"),
        (
            "{kind: endpoint, path: x, auth: {kind: api_key, secret: partner-key, header: X-Partner-Key}, headers: [x-partner-key]}",
            "triggers[0].headers",
            "x-partner-key carries the caller's credentials",
        ),
    ],
)
def test_bad_triggers_are_refused_naming_the_place_and_nothing_is_saved(secrets, trigger, path, message):
    with pytest.raises(ConfigError) as error:
        apply(f"flows:\n  broken:\n    steps: [{{key: x, kind: transform, value: 1}}]\n    triggers:\n      - {trigger}\n")
    assert any(line.startswith(f"flows.broken.{path}: ") and message in line for line in error.value.messages), error.value.messages
    assert not Flow.objects.exists() and not PeriodicTask.objects.filter(task="flows_app.tasks.flow_schedule_fire").exists()


def test_a_path_cannot_belong_to_two_flows(secrets):
    apply("flows:\n  one:\n    steps: []\n    triggers: [{kind: endpoint, path: shared, auth: {kind: open}}]\n")
    with pytest.raises(ConfigError) as error:
        apply("flows:\n  two:\n    steps: []\n    triggers: [{kind: endpoint, path: shared, auth: {kind: open}}]\n")
    assert "flows.two.triggers: The path 'shared' belongs to another flow's endpoint." in error.value.messages


def test_a_disabled_flow_disables_its_beat_entries_and_does_not_fire(secrets):
    apply(DOCUMENT)
    apply(DOCUMENT.replace("  whoami:\n", "  whoami:\n    enabled: false\n"))
    schedule = ScheduleTrigger.objects.first()
    assert not PeriodicTask.objects.filter(task="flows_app.tasks.flow_schedule_fire", enabled=True).exists()
    assert schedule_fire(schedule_id=schedule.pk, message_id="m-1") is None
    assert schedule_next_run(schedule) is None and not FlowRun.objects.exists()


def test_a_message_delivered_twice_starts_one_run(secrets):
    apply(DOCUMENT)
    schedule = ScheduleTrigger.objects.get(cron="0 9 * * 1-5")
    first = schedule_fire(schedule_id=schedule.pk, message_id="message-1")
    again = schedule_fire(schedule_id=schedule.pk, message_id="message-1")
    later = schedule_fire(schedule_id=schedule.pk, message_id="message-2")
    assert first.pk == again.pk != later.pk
    assert first.trigger == "schedule" and first.input == {"report": "daily"}


def test_the_next_run_is_computed_in_the_schedules_time_zone(secrets, monkeypatch):
    apply(DOCUMENT)
    schedule = ScheduleTrigger.objects.get(cron="0 9 * * 1-5")
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=paris)  # the next weekday 09:00 is Monday's
    monkeypatch.setattr(timezone, "now", lambda: friday_evening.astimezone(zoneinfo.ZoneInfo("UTC")))
    assert schedule_next_run(schedule).astimezone(paris) == datetime(2026, 11, 30, 9, 0, tzinfo=paris)


def test_an_interval_schedule_runs_again_after_its_interval(secrets):
    apply("flows:\n  ticker:\n    steps: []\n    triggers: [{kind: schedule, interval: 90}]\n")
    schedule = ScheduleTrigger.objects.get()
    last = timezone.now() - timedelta(seconds=30)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=last)
    schedule.refresh_from_db()
    assert abs((schedule_next_run(schedule) - (last + timedelta(seconds=90))).total_seconds()) < 1
