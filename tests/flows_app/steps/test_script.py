"""script steps: a separate, limited process with only the secrets the step names."""

import textwrap

import pytest
from django.core.exceptions import ValidationError

from flows_app.services.flows import step_spec_from_data
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
        """
        import os, sys
        try:
            import django
            django_found = True
        except ImportError:
            django_found = False
        try:
            open(f'/proc/{os.getppid()}/environ').read()
            parent_env = 'readable'
        except OSError as exc:
            parent_env = type(exc).__name__
        return {'env': dict(os.environ), 'django': django_found, 'parent_env': parent_env, 'uid': os.getuid()}
        """
    )
    output = execute(flow).output
    assert set(output["env"]) <= {"LC_CTYPE"} and output["django"] is False  # Python's own locale coercion at most
    assert output["parent_env"] == "PermissionError"
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
