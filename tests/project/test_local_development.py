"""The first ten minutes: ./scripts/run on a laptop, local development, one launch's notices."""

import json
import os
import shutil
import signal
import subprocess
import sys

from tests.project.test_checks import PRODUCTION_ENV, ROOT, product_environment, run
from tests.workers import free_port

SHOW_LOCAL_SETTINGS = (
    "import os, django; django.setup(); from django.conf import settings; "
    "print(json.dumps([settings.FLOWGATE_ALLOW_NETWORKS, os.environ.get('OAUTHLIB_INSECURE_TRANSPORT')]))"
)


def local_settings(tmp_path, **env):
    """(allowed networks, OAUTHLIB_INSECURE_TRANSPORT) as a process started with ``env`` sees them."""
    environment = product_environment(tmp_path, **env)
    environment.pop("OAUTHLIB_INSECURE_TRANSPORT", None)  # the test settings set it for this process
    result = subprocess.run(
        [sys.executable, "-c", f"import json; {SHOW_LOCAL_SETTINGS}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_local_development_opens_loopback_and_http_for_oauth2_and_says_so(tmp_path):
    (networks, insecure), stderr = local_settings(
        tmp_path, DEBUG="true", FLOWGATE_LOCAL_DEVELOPMENT="true", FLOWGATE_ALLOW_NETWORKS="10.0.0.0/8"
    )
    assert networks == ["10.0.0.0/8", "127.0.0.0/8", "::1/128"] and insecure == "1"
    assert stderr.count("local development is on (FLOWGATE_LOCAL_DEVELOPMENT)") == 1
    (networks, insecure), stderr = local_settings(tmp_path, DEBUG="true")
    assert networks == [] and insecure is None and "local development" not in stderr


def test_local_development_with_debug_off_refuses_to_start(tmp_path):
    result = run([sys.executable, "manage.py", "check"], tmp_path, **PRODUCTION_ENV, FLOWGATE_LOCAL_DEVELOPMENT="true")
    assert result.returncode != 0
    assert "flowgate.E007" in result.stderr and "FLOWGATE_LOCAL_DEVELOPMENT is on with DEBUG off" in result.stderr


def test_start_up_notices_are_left_to_the_first_process_of_a_launch(tmp_path):
    first = run([sys.executable, "manage.py", "check"], tmp_path, DEBUG="true", FLOWGATE_LOCAL_DEVELOPMENT="true")
    later = run(
        [sys.executable, "manage.py", "check"],
        tmp_path,
        DEBUG="true",
        FLOWGATE_LOCAL_DEVELOPMENT="true",
        FLOWGATE_NOTICES_SHOWN="true",
    )
    assert first.returncode == 0 and later.returncode == 0
    assert "using development keys" in first.stderr and "local development is on" in first.stderr
    assert "Flowgate:" not in later.stderr


def repository_copy(tmp_path):
    """The tracked files in a temporary folder, with this virtualenv already installed
    (its entries linked, plus the marker that skips installing again)."""
    copy = tmp_path / "flowgate"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    venv, real_venv = copy / ".venv", ROOT / ".venv"
    venv.mkdir()
    for entry in real_venv.resolve().iterdir():
        if not entry.name.startswith("."):
            (venv / entry.name).symlink_to(entry)
    digest = subprocess.run(
        "cat requirements*.txt | sha256sum | cut -c1-16", shell=True, cwd=copy, capture_output=True, text=True, check=True
    ).stdout.strip()
    (venv / f".installed-{digest}-requirements.txt").touch()
    return copy


def test_scripts_run_warns_once_and_ctrl_c_stops_the_worker_warm(tmp_path):
    copy = repository_copy(tmp_path)
    env = product_environment(
        tmp_path, PORT=str(free_port()), FLOWGATE_ADMIN_USER="admin", FLOWGATE_ADMIN_PASSWORD="admin-password-1"
    )
    launch = subprocess.Popen(
        ["./scripts/run"],
        cwd=copy,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    output = []
    try:
        started = {"worker": False, "beat": False, "web": False}
        for line in launch.stdout:
            output.append(line)
            started["worker"] |= line.startswith("worker|") and " ready." in line
            started["beat"] |= line.startswith("worker|") and "beat: Starting..." in line  # beat runs in the worker
            started["web"] |= line.startswith("web   |") and "Quit the server with CONTROL-C" in line
            if all(started.values()):
                break
        assert all(started.values()), "".join(output)
        os.killpg(launch.pid, signal.SIGINT)  # Ctrl-C in the terminal
        output.extend(launch.stdout)
        launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    log = "".join(output)
    assert log.count("using development keys") == 1, log
    assert log.count("local development is on") == 1, log
    assert "No hostname was supplied" not in log, log
    assert "worker: Warm shutdown" in log and "Cold shutdown" not in log, log
    assert "exited with 'signal" not in log, log  # no pool process was killed mid-task
    assert launch.returncode == 130
