"""The operation contract as the vault checks it, with a stand-in for the flows layer's runner
(``tests/apps_app/test_operations.py`` runs real flows)."""

import pytest

from secrets_app.exceptions import ReauthorizationRequired, SecretMisconfigured, TokenEndpointUnavailable
from secrets_app.oauth2 import operations
from secrets_app.oauth2.client import OAuth2Config, OAuth2Hooks, hooks_for
from secrets_app.oauth2.operations import OperationFailed, OperationHooks, output_secrets
from secrets_app.services.secrets import secret_create

pytestmark = pytest.mark.django_db


class StandIn:
    """Records what the vault asks a runner for and answers ``output`` (or raises it)."""

    def __init__(self, output):
        self.output = output
        self.calls = []

    def __call__(self, flow_slug, input, secret, *, sensitive, output_secrets):
        self.calls.append({"flow": flow_slug, "input": input, "secret": secret, "sensitive": list(sensitive)})
        if isinstance(self.output, Exception):
            raise self.output
        return self.output


@pytest.fixture
def runner():
    def install(output):
        stand_in = StandIn(output)
        operations.runner_install(stand_in)
        return stand_in

    from apps_app.services.operations import operation_flow_run

    yield install
    operations.runner_install(operation_flow_run)


@pytest.fixture
def config():
    secret = secret_create(
        name="shop",
        kind="oauth2",
        data={
            "client_id": "shop-client",
            "client_secret": "shop-client-secret",
            "authorize_url": "https://shop.example/authorize",
            "token_url": "https://shop.example/token",
            "scope": "orders",
            "operations": {"authorize_url": "shop/url", "exchange": "shop/exchange", "refresh": "shop/refresh"},
        },
    )
    return OAuth2Config.from_secret(secret)


class TestContract:
    def test_named_operations_wrap_the_secrets_hooks(self, config, db):
        assert isinstance(hooks_for(config), OperationHooks)
        plain = OAuth2Config.from_secret(secret_create(name="plain", kind="oauth2", data={
            "client_id": "c", "client_secret": "s", "authorize_url": "https://a.example/", "token_url": "https://a.example/t",
        }))  # fmt: skip
        assert type(hooks_for(plain)) is OAuth2Hooks

    def test_authorize_url_gets_the_contract_input(self, config, runner):
        stand_in = runner({"authorize_url": "https://shop.example/authorize?x=1"})
        url = hooks_for(config).authorization_url(config, redirect_uri="https://me/cb", state="state-1234", code_challenge="cc")
        assert url == "https://shop.example/authorize?x=1"
        [call] = stand_in.calls
        assert call["flow"] == "shop/url" and call["secret"].name == "shop"
        assert call["input"] == {"redirect_uri": "https://me/cb", "state": "state-1234", "code_challenge": "cc", "scope": "orders"}
        assert call["sensitive"] == ["state-1234"]

    def test_exchange_gets_the_whole_callback_and_masks_code_verifier_and_state(self, config, runner):
        stand_in = runner({"access_token": "at-1", "expires_in": "60", "refresh_token": "rt-1", "identity": "ann", "data": {"k": "v"}})
        result = hooks_for(config).exchange_code(
            config, code="code-1", redirect_uri="https://me/cb", code_verifier="verifier-1",
            callback={"code": "code-1", "state": "state-1", "shop": "acme"},
        )  # fmt: skip
        assert (result.token, result.refresh_token, result.expires_in) == ("at-1", "rt-1", 60.0)
        assert (result.identity_name, result.extra) == ("ann", {"k": "v"})
        [call] = stand_in.calls
        assert call["input"]["callback"] == {"code": "code-1", "state": "state-1", "shop": "acme"}
        assert sorted(call["sensitive"]) == ["code-1", "state-1", "verifier-1"]

    def test_a_refresh_without_a_refresh_token_leaves_it_to_the_store(self, config, runner):
        runner({"access_token": "at-2"})
        result = hooks_for(config).refresh(config, refresh_token="rt-1")
        assert result.token == "at-2" and result.refresh_token is None and result.expires_in is None

    @pytest.mark.parametrize(
        "output, message",
        [
            ({"token": "at"}, "The refresh operation flow 'shop/refresh' gave no 'access_token': the key is missing."),
            ({"access_token": 42}, "gave no 'access_token': the key must be text, not int."),
            ({"access_token": "at", "expires_in": "soon"}, "gave 'expires_in' 'soon': expected seconds."),
            ({"access_token": "at", "data": "x"}, "gave 'data' as str; expected an object."),
            (["at"], "The refresh operation flow 'shop/refresh' must output an object, not list."),
        ],
    )
    def test_a_wrong_output_shape_names_the_flow_and_the_key(self, config, runner, output, message):
        runner(output)
        with pytest.raises(SecretMisconfigured) as failure:
            hooks_for(config).refresh(config, refresh_token="rt-1")
        assert message in str(failure.value)

    def test_an_authorize_url_that_is_not_a_web_address_is_refused(self, config, runner):
        runner({"authorize_url": "javascript:alert(1)"})
        with pytest.raises(SecretMisconfigured, match="'shop/url' gave a URL that is not http"):
            hooks_for(config).authorization_url(config, redirect_uri="https://me/cb", state="s", code_challenge=None)

    def test_an_error_output_is_the_providers_refusal(self, config, runner):
        runner({"error": "invalid_grant", "error_description": "revoked"})
        with pytest.raises(ReauthorizationRequired, match=r"invalid_grant: revoked\), said flow 'shop/refresh'"):
            hooks_for(config).refresh(config, refresh_token="rt-1")
        runner({"error": "temporarily_unavailable"})
        with pytest.raises(TokenEndpointUnavailable):
            hooks_for(config).refresh(config, refresh_token="rt-1")

    def test_a_failed_run_is_transient(self, config, runner):
        runner(OperationFailed("run #7 failed: HTTP 503"))
        with pytest.raises(TokenEndpointUnavailable, match="'shop/refresh' failed: run #7 failed: HTTP 503"):
            hooks_for(config).refresh(config, refresh_token="rt-1")

    def test_without_a_runner_a_named_operation_is_a_misconfiguration(self, config, runner):
        operations.runner_install(None)
        with pytest.raises(SecretMisconfigured, match="no flow runner is installed"):
            hooks_for(config).refresh(config, refresh_token="rt-1")


class TestOutputSecrets:
    def test_the_tokens_of_a_contract_output(self):
        output = {"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 60, "identity": "ann", "data": {"u": "x"}}
        assert output_secrets(output) == ["at-1", "rt-1"]

    def test_every_string_outside_identity_and_data_when_the_shape_is_unknown(self):
        output = {"result": {"token": "at-1", "scopes": ["a-b-c"]}, "identity": "ann", "data": {"u": "https://x"}}
        assert sorted(output_secrets(output)) == ["a-b-c", "at-1"]
