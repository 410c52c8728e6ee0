"""A Celery worker or beat loads what it runs, not the web's URLs, views and API (memory, issue 13)."""

import subprocess
import sys

from tests.project.test_checks import PRODUCTION_ENV, product_environment, ROOT

# What ``celery worker`` and ``celery beat`` do before they start: load the app, then its
# task modules (Celery's Django fix-up sets Django up first).
WORKER_START_UP = """
import sys
from project.celery import app
app.loader.import_default_modules()
print(" ".join(sorted(name for name in sys.argv[1:] if name in sys.modules)))
"""


def loaded(tmp_path, *modules: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_START_UP, *modules], cwd=ROOT, env=product_environment(tmp_path, **PRODUCTION_ENV),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_a_worker_loads_its_tasks_but_not_the_urls_and_views(tmp_path):
    assert loaded(tmp_path, "flows_app.tasks", "project.urls", "flows_app.views") == {"flows_app.tasks"}


def test_a_worker_does_not_load_the_api_library(tmp_path):
    """django-ninja, and pydantic and django.test that it imports, are 11 MB a process."""
    assert loaded(tmp_path, "ninja", "pydantic", "django.test") == set()


def test_a_worker_freezes_its_start_up_objects_before_it_forks_its_children():
    """Frozen objects are skipped by the garbage collector, whose passes over them in a
    prefork child would copy their pages (measured: 29 MB PSS less for 2 children)."""
    import gc

    from celery.signals import worker_init

    from project.celery import _freeze_start_up_objects

    assert any(receiver() is _freeze_start_up_objects for _, receiver in worker_init.receivers)
    try:
        _freeze_start_up_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_jsonschema_waits_for_an_app_to_be_installed(tmp_path):
    """4 MB a process; the provider presets are checked against their schema by the tests."""
    assert loaded(tmp_path, "jsonschema") == set()
