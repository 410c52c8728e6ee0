"""Presets are data: checked against their schema, and applied to blank fields only."""

import pytest
from django.core.exceptions import ValidationError

from secrets_app.oauth2.client import load_hooks_class
from secrets_app.oauth2.providers import presets
from secrets_app.services.secrets import secret_create

REQUIRED_PROVIDERS = {
    "x",
    "google",
    "github",
    "slack",
    "microsoft",
    "atlassian",
    "salesforce",
    "hubspot",
    "dropbox",
    "notion",
    "zoom",
    "linkedin",
}


def test_the_preset_file_matches_its_schema_and_covers_the_providers():
    import json

    import jsonschema

    from secrets_app.oauth2.providers import HERE

    jsonschema.validate(presets(), json.loads((HERE / "providers.schema.json").read_text()))
    assert REQUIRED_PROVIDERS <= set(presets())


@pytest.mark.parametrize("slug", sorted(REQUIRED_PROVIDERS))
def test_every_preset_hook_can_be_loaded(slug):
    hooks = presets()[slug].get("hooks")
    if hooks:
        load_hooks_class(hooks)


def test_x_needs_offline_access_and_basic_auth():
    x = presets()["x"]
    assert "offline.access" in x["scope"].split() and x["client_auth"] == "basic"


def test_a_preset_fills_blank_fields_and_keeps_what_the_user_set(db):
    secret = secret_create(
        name="tw",
        kind="oauth2",
        data={"preset": "x", "client_id": "c", "client_secret": "s-1234", "scope": "tweet.read offline.access"},
    )
    assert secret.config["token_url"] == "https://api.x.com/2/oauth2/token"
    assert secret.config["client_auth"] == "basic"
    assert secret.config["scope"] == "tweet.read offline.access"


def test_hooks_outside_the_allowed_modules_are_refused(db):
    with pytest.raises(ValidationError) as error:
        secret_create(
            name="evil",
            kind="oauth2",
            data={
                "client_id": "c",
                "client_secret": "s-1234",
                "authorize_url": "https://a.example/a",
                "token_url": "https://a.example/t",
                "hooks": "os.system",
            },
        )
    assert "Hooks must live under" in error.value.message_dict["hooks"][0]


def test_extra_parameters_cannot_replace_the_ones_flowgate_sets(db):
    with pytest.raises(ValidationError) as error:
        secret_create(
            name="sneaky",
            kind="oauth2",
            data={
                "client_id": "c",
                "client_secret": "s-1234",
                "authorize_url": "https://a.example/a",
                "token_url": "https://a.example/t",
                "extra_authorize_params": {"redirect_uri": "https://evil.example/cb"},
            },
        )
    assert "redirect_uri" in error.value.message_dict["extra_authorize_params"][0]


@pytest.mark.parametrize("slug", sorted(REQUIRED_PROVIDERS))
def test_every_preset_gives_a_test_url_or_says_why_not(slug):
    preset = presets()[slug]
    assert bool(preset.get("test_url")) != bool(preset.get("no_test_url"))  # the schema holds it to one
    if preset.get("userinfo_url"):
        assert preset.get("test_url") == preset["userinfo_url"]  # userinfo is the cheapest "who am I"


def test_a_preset_without_a_test_url_or_a_reason_is_refused_by_the_schema():
    import json

    import jsonschema

    from secrets_app.oauth2.providers import HERE

    schema = json.loads((HERE / "providers.schema.json").read_text())
    untested = {"label": "P", "token_url": "https://p.example/token", "client_auth": "post", "notes": "n"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"p": untested}, schema)
    jsonschema.validate({"p": {**untested, "no_test_url": "It has none."}}, schema)


def test_a_preset_fills_the_test_url(db):
    secret = secret_create(name="gh", kind="oauth2", data={"preset": "github", "client_id": "c", "client_secret": "s-1234"})
    assert secret.config["test_url"] == "https://api.github.com/user"
