import jwt as pyjwt
import pytest

from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import execute, make_flow

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "hs256-shared-secret-0123456789abcdef"


def test_sign_then_verify_then_encrypt_and_decrypt():
    secret_create(name="hook-key", kind="hs256", data={"secret": KEY})
    secret_create(name="signer", kind="rs256", data={"generate": True})
    flow = make_flow(
        "jose",
        [
            {"key": "sign", "kind": "jwt", "secret": "hook-key", "operation": "sign", "claims": {"sub": "{{ trigger.user }}", "scope": "orders:write"}},
            {"key": "verify", "kind": "jwt", "secret": "hook-key", "operation": "verify", "token": "{{ steps.sign.token }}", "scopes": ["orders:write"]},
            {"key": "seal", "kind": "jwt", "secret": "signer", "operation": "encrypt", "payload": {"card": "{{ trigger.card }}"}},
            {"key": "open", "kind": "jwt", "secret": "signer", "operation": "decrypt", "token": "{{ steps.seal.token }}"},
        ],
    )
    run = execute(flow, {"user": "u-1", "card": "4111"})
    assert run.status == "succeeded", run.error
    steps = {step.step_key: step.output for step in run.step_runs.all()}
    assert pyjwt.decode(steps["sign"]["token"], KEY, algorithms=["HS256"])["sub"] == "u-1"
    assert steps["verify"]["claims"]["sub"] == "u-1"
    assert run.output == {"plaintext": '{"card":"4111"}'}


def test_a_token_without_the_scope_fails_the_step():
    secret_create(name="hook-key", kind="hs256", data={"secret": KEY})
    token = pyjwt.encode({"exp": 9999999999, "scope": "orders:read"}, KEY, algorithm="HS256")
    flow = make_flow("check", [{"key": "v", "kind": "jwt", "secret": "hook-key", "operation": "verify", "token": token, "scopes": ["orders:write"]}])
    run = execute(flow)
    assert run.status == "failed" and "lacks the scope orders:write" in run.error
