"""The vault's settings come from the environment, as the README says."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OAUTH2_SETTINGS = (
    "FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS",
    "FLOWGATE_OAUTH2_PROACTIVE_WINDOW_SECONDS",
    "FLOWGATE_OAUTH2_HOOK_MODULES",
)


def production_settings(**environment):
    """The named settings as project/settings.py computes them in a fresh process."""
    env = {key: value for key, value in os.environ.items() if key not in OAUTH2_SETTINGS}
    script = (
        f"import json, project.settings as s; print(json.dumps([getattr(s, name) for name in {OAUTH2_SETTINGS!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**env, **environment}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_oauth2_settings_are_read_from_the_environment():
    assert production_settings(
        FLOWGATE_OAUTH2_REFRESH_LEEWAY_SECONDS="120",
        FLOWGATE_OAUTH2_PROACTIVE_WINDOW_SECONDS="1800",
        FLOWGATE_OAUTH2_HOOK_MODULES="acme.hooks., partner_quirks.",
    ) == [120, 1800, ["acme.hooks.", "partner_quirks."]]


def test_oauth2_settings_have_their_documented_defaults():
    assert production_settings() == [60, 900, []]
