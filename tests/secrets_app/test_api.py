"""secrets_app.api: clear errors that name the secret and kind, never a value."""

import pytest

from secrets_app import api
from secrets_app.exceptions import SecretAccessDenied, SecretNotFound, WrongSecretKind
from secrets_app.services.secrets import secret_create


@pytest.fixture
def secrets(db):
    secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": "partner-password-1"})
    secret_create(name="hook-key", kind="hs256", data={"secret": "hs256-shared-secret-0123456789abcdef"})


def test_an_unknown_name_is_named(secrets):
    with pytest.raises(SecretNotFound, match="No secret named 'nope'"):
        api.get_password("nope")


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: api.get_password("hook-key"),
            "Secret 'hook-key' is of kind 'hs256'; get_password needs an api_token or basic_auth secret.",
        ),
        (
            lambda: api.auth_for("hook-key"),
            "Secret 'hook-key' is of kind 'hs256'; it cannot authenticate HTTP requests.",
        ),
        (
            lambda: api.sign_jws("partner", {}),
            "Secret 'partner' is of kind 'basic_auth'; sign_jws needs an hs256 or rs256 secret.",
        ),
        (
            lambda: api.db_connection("partner").__enter__(),
            "Secret 'partner' is of kind 'basic_auth'; db_connection needs a postgresql or mysql secret.",
        ),
        (
            lambda: api.basic_auth("hook-key"),
            "Secret 'hook-key' is of kind 'hs256'; basic_auth needs a basic_auth secret.",
        ),
        (
            lambda: api.get_field("partner", "colour"),
            "Secret 'partner' is of kind 'basic_auth'; it has no field 'colour'.",
        ),
    ],
)
def test_a_wrong_kind_names_the_secret_and_kind_and_no_value(secrets, call, message):
    with pytest.raises(WrongSecretKind) as error:
        call()
    assert str(error.value) == message
    assert "partner-password-1" not in str(error.value)


def test_get_password_of_basic_auth_is_its_password(secrets):
    assert api.get_password("partner") == "partner-password-1"


def test_use_updates_last_used(secrets):
    from secrets_app.models import Secret

    assert Secret.objects.get(name="partner").last_used_at is None
    api.get_password("partner")
    assert Secret.objects.get(name="partner").last_used_at is not None


def test_a_vault_limited_to_some_names_refuses_the_others_by_name(secrets):
    vault = api.Vault(allowed={"partner"})
    assert vault.get_password("partner")
    with pytest.raises(SecretAccessDenied, match="'hook-key'.*not among the secrets this flow binds"):
        vault.sign_jws("hook-key", {})
