"""script steps: a separate, limited process with only the secrets the step names."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from flows_app.services.flows import step_spec_from_data
from flows_app.steps.script import RUNNER
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import execute, make_flow

pytestmark = pytest.mark.django_db(transaction=True)


def script_flow(code, **step):
    return make_flow("script", [{"key": "s", "kind": "script", "code": textwrap.dedent(code).strip(), "timeout": 10, **step}])


def test_it_computes_from_input_and_returns_json():
    flow = make_flow(
        "calc",
        [
            {"key": "prices", "kind": "transform", "value": [3, 4, 5]},
            {"key": "s", "kind": "script", "code": "print('summing')\nreturn {'total': sum(steps['prices']) * input['factor']}"},
        ],
    )
    run = execute(flow, {"factor": 2})
    assert run.status == "succeeded", run.error
    assert run.output == {"total": 24}
    assert run.step_runs.get(step_key="s").logs == "summing\n"


def test_only_the_named_secrets_are_available_and_they_are_masked():
    secret_create(name="crm", kind="api_token", data={"token": "crm-token-4455"})
    secret_create(name="other", kind="api_token", data={"token": "other-token-6677"})
    flow = script_flow(
        """
        token = secrets.get_password('crm')
        print('using', token)
        try:
            secrets.get_password('other')
            other = 'leaked'
        except Exception as exc:
            other = str(exc)
        return {'token': token, 'other': other}
        """,
        secrets=["crm"],
    )
    run = execute(flow)
    step = run.step_runs.get(step_key="s")
    assert run.status == "succeeded", run.error
    assert step.output == {"token": "[secret]", "other": "The secret 'other' is not listed on this step."}
    assert "crm-token-4455" not in step.logs and "[secret]" in step.logs
    assert "other-token-6677" not in str(step.output)


def test_it_has_no_environment_no_settings_and_no_site_packages():
    flow = script_flow(
        f"""
        import os, sys
        try:
            import django
            django_found = True
        except ImportError:
            django_found = False
        try:
            open('/proc/{os.getpid()}/environ').read()
            worker_env = 'readable'
        except OSError as exc:
            worker_env = type(exc).__name__
        return {{'env': dict(os.environ), 'django': django_found, 'worker_env': worker_env, 'uid': os.getuid()}}
        """
    )
    output = execute(flow).output
    assert set(output["env"]) <= {"LC_CTYPE"} and output["django"] is False  # Python's own locale coercion at most
    assert output["worker_env"] == "PermissionError"  # this test process is the worker that ran the step
    assert output["uid"] != 0


def test_it_has_no_network(local_server):
    flow = script_flow(
        f"""
        import socket
        try:
            socket.create_connection(('127.0.0.1', {local_server.port}), timeout=2)
            return 'connected'
        except OSError as exc:
            return type(exc).__name__
        """
    )
    assert execute(flow).output in ("OSError", "ConnectionRefusedError")
    assert local_server.requests == []


def test_memory_is_limited():
    run = execute(script_flow("block = bytearray(2 * 1024 ** 3)\nreturn len(block)", memory_mb=128))
    assert run.status == "failed" and "MemoryError" in run.error


def test_open_files_file_size_processes_and_core_dumps_are_limited():
    run = execute(
        script_flow(
            """
            import errno, os, resource
            handles = []
            try:
                while True:
                    handles.append(open('/dev/null'))
            except OSError as exc:
                files_error = errno.errorcode[exc.errno]
            files_opened = len(handles)
            for handle in handles:
                handle.close()
            with open('big', 'wb') as big:
                try:
                    big.write(bytes(2 * 1024 ** 2))
                    big.flush()
                    size_error = None
                except OSError as exc:
                    size_error = errno.errorcode[exc.errno]
            limits = {name: resource.getrlimit(getattr(resource, 'RLIMIT_' + name)) for name in ('CPU', 'NPROC', 'CORE', 'AS')}
            return {'files_opened': files_opened, 'files_error': files_error, 'size_error': size_error, 'limits': limits}
            """,
            memory_mb=128,
        )
    )
    assert run.status == "succeeded", run.error
    assert run.output["files_opened"] < 64 and run.output["files_error"] == "EMFILE"
    assert run.output["size_error"] == "EFBIG"
    assert run.output["limits"] == {"CPU": [11, 12], "NPROC": [32, 32], "CORE": [0, 0], "AS": [128 * 1024**2] * 2}


def test_time_is_limited():
    run = execute(script_flow("while True:\n    pass", timeout=2))
    assert run.status == "failed" and "longer than 2 s" in run.error


def test_every_run_gets_a_fresh_process():
    flow = script_flow("import builtins\nbuiltins.counter = getattr(builtins, 'counter', 0) + 1\nreturn builtins.counter")
    assert execute(flow).output == 1
    assert execute(flow).output == 1


def test_errors_show_the_scripts_own_traceback():
    run = execute(script_flow("x = 1\nreturn x / 0"))
    assert run.status == "failed"
    assert "ZeroDivisionError: division by zero" in run.error and 'File "<script>", line 3' in run.error


def test_a_value_that_is_not_json_is_an_error():
    run = execute(script_flow("return {1, 2}"))
    assert run.status == "failed" and "not JSON" in run.error


def test_a_result_with_nan_or_infinity_is_an_error_not_a_storage_failure():
    run = execute(script_flow("return {'ratio': float('nan'), 'max': float('inf')}"))
    assert run.status == "failed" and "Out of range float values are not JSON compliant" in run.error


def test_syntax_errors_are_found_when_saving():
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "s", "kind": "script", "code": "return (1"})
    assert error.value.message_dict["code"][0].startswith("Line 1:")


def test_the_kind_can_be_turned_off(settings):
    settings.FLOWGATE_SCRIPT_STEPS_ENABLED = False
    with pytest.raises(ValidationError, match="turned off"):
        step_spec_from_data({"key": "s", "kind": "script", "code": "return 1"})


# Forks twice with a new session in between, like a daemon, and returns the daemon's pid as
# the machine sees it (/proc is the host's, so /proc/self names it even inside a PID namespace).
DAEMON = """
import os, time
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        try:
            os.write(write_end, os.readlink('/proc/self').encode())
            os.closerange(0, 256)  # like a real daemon: let go of stdin, stdout and the step's channel
            time.sleep(3600)
        finally:
            os._exit(0)
    os._exit(0)
os.close(write_end)
return int(os.read(read_end, 32))
"""


def assert_gone(pid: int) -> None:
    """The process is gone; if not, it is killed here so a failing test leaves nothing behind."""
    alive = Path(f"/proc/{pid}").exists()
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"process {pid} outlived its step"


def test_script_daemon_dies_with_its_step():
    run = execute(script_flow(DAEMON))
    assert run.status == "succeeded", run.error
    assert_gone(run.output)


@pytest.fixture
def shared_dir():
    """A directory the script, running as nobody, can write to (pytest's tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(prefix="flowgate-test-") as path:
        os.chmod(path, 0o777)
        yield Path(path)


def test_without_namespaces_the_launcher_ends_the_daemon_before_it_exits(shared_dir):
    """The subreaper path, which applies where unshare fails, forced on this machine."""
    job = {"code": DAEMON, "input": None, "steps": {}}
    launcher = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(RUNNER), str(256 * 1024**2), "10", str(os.getpid()), "--without-namespaces"],
        input=json.dumps(job).encode() + b"\n",
        capture_output=True,
        cwd=shared_dir,
        env={},
        start_new_session=True,
    )
    answer = json.loads(launcher.stdout)
    assert answer["done"], answer
    assert launcher.returncode == 0
    assert_gone(answer["result"])


def test_a_daemon_dies_when_its_step_times_out(shared_dir):
    daemon_then_spin = DAEMON.replace(
        "return int(os.read(read_end, 32))",
        f"open('{shared_dir}/pid', 'wb').write(os.read(read_end, 32))\nwhile True:\n    pass",
    )
    run = execute(script_flow(daemon_then_spin, timeout=2))
    assert run.status == "failed" and "longer than 2 s" in run.error
    assert_gone(int((shared_dir / "pid").read_text()))
