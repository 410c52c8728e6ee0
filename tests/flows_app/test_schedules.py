"""Schedules fire through a real beat process and a real worker."""

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flows_app.models import FlowRun
from flows_app.services.flows import flow_save, step_spec_from_data
from flows_app.services.specs import FlowSpec, ScheduleSpec
from tests.workers import BeatProcess, WorkerProcess

pytestmark = pytest.mark.worker


def ticker(enabled=True):
    spec = FlowSpec(
        slug="ticker",
        name="Ticker",
        enabled=enabled,
        steps=[step_spec_from_data({"key": "tick", "kind": "transform", "value": "{{ trigger.n }}"})],
        schedules=[ScheduleSpec(interval_seconds=1, input={"n": 7})],
    )
    return flow_save(spec=spec)[0]


def scheduled_runs():
    return FlowRun.objects.filter(flow__slug="ticker", trigger="schedule")


def test_beat_fires_a_schedule_and_stops_when_the_flow_is_disabled(worker, tmp_path):
    ticker()
    beat = BeatProcess(schedule_file=tmp_path / "beat-schedule").start()
    try:
        deadline = time.monotonic() + 40
        while scheduled_runs().filter(status="succeeded").count() < 2 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert scheduled_runs().filter(status="succeeded").count() >= 2, beat.log()[-3000:]
        assert scheduled_runs().first().output == 7

        ticker(enabled=False)
        time.sleep(7)  # beat notices changed entries within its 5-second loop
        settled = scheduled_runs().count()
        time.sleep(4)
        assert scheduled_runs().count() == settled
    finally:
        beat.stop()


def test_the_embedded_worker_runs_beat_in_a_thread_of_its_own_process(transactional_db, tmp_path):
    ticker()
    # As the Procfile starts it: one process, a pool of threads, beat inside.
    args = ["--beat-thread", "--schedule", str(tmp_path / "beat-schedule")]
    embedded = WorkerProcess(pool="threads", concurrency=4, name="embedded", args=args).start()
    try:
        deadline = time.monotonic() + 40
        while scheduled_runs().filter(status="succeeded").count() < 2 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert scheduled_runs().filter(status="succeeded").count() >= 2, embedded.log()[-3000:]
        assert embedded.children() == []  # --beat would have forked a beat process
    finally:
        embedded.stop()


def test_a_cron_schedule_fires_at_the_minute_in_its_own_time_zone(worker, tmp_path):
    # Kolkata is UTC+05:30: these hours never match in UTC, so a run proves the time zone.
    zone = ZoneInfo("Asia/Kolkata")
    now = datetime.now(zone)
    hours = sorted({now.hour, (now + timedelta(minutes=2)).hour})
    spec = FlowSpec(
        slug="minutely",
        name="Minutely",
        steps=[step_spec_from_data({"key": "tick", "kind": "transform", "value": "{{ trigger.n }}"})],
        schedules=[ScheduleSpec(cron=f"* {','.join(map(str, hours))} * * *", timezone="Asia/Kolkata", input={"n": 1})],
    )
    flow_save(spec=spec)
    beat = BeatProcess(schedule_file=tmp_path / "beat-schedule").start()
    try:
        runs = FlowRun.objects.filter(flow__slug="minutely", trigger="schedule", status="succeeded")
        deadline = time.monotonic() + 75  # the next minute, and time to run
        while not runs.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert runs.exists(), beat.log()[-3000:]
        assert runs.first().queued_at.astimezone(zone).second < 15  # at the minute, not on an interval
    finally:
        beat.stop()
