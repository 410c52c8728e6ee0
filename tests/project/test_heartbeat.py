"""A heartbeat extends a lease from a thread while the work that holds it runs."""

import threading
import time

import pytest
from django.db import OperationalError, transaction

from project.heartbeat import Heartbeat


class Recording(Heartbeat):
    def __init__(self, answers):
        super().__init__(interval=0.02, name="test-heartbeat")
        self.answers = list(answers)
        self.beats = 0
        self.finished = threading.Event()

    def beat(self):
        self.beats += 1
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        if answer is False:
            self.finished.set()
        return answer


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_it_beats_while_the_block_runs_and_stops_after_it():
    with Recording([]) as heartbeat:
        wait_for(lambda: heartbeat.beats >= 3)
    stopped_at = heartbeat.beats
    time.sleep(0.1)
    assert heartbeat.beats == stopped_at


def test_a_lost_lease_ends_the_heartbeat():
    with Recording([True, False]) as heartbeat:
        assert heartbeat.finished.wait(5)
        time.sleep(0.1)
        assert heartbeat.beats == 2


def test_a_database_error_is_logged_and_the_next_beat_tries_again(caplog):
    with Recording([OperationalError("server closed the connection"), True]) as heartbeat:
        wait_for(lambda: heartbeat.beats >= 3)
    assert "test-heartbeat: could not extend the lease: OperationalError" in caplog.text
    assert "server closed" not in caplog.text  # driver messages can quote SQL parameters


@pytest.mark.django_db
def test_inside_a_transaction_there_is_no_thread_because_the_row_lock_holds_the_lease():
    with transaction.atomic(), Recording([]) as heartbeat:
        time.sleep(0.1)
    assert heartbeat.beats == 0
