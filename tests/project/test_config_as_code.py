"""apply and export: idempotent, all-or-nothing, values only from the environment."""

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from project.config_as_code import ConfigError, config_apply, config_export, config_load
from secrets_app.models import AuditEvent, Secret

DOCUMENT = """
secrets:
  crm-token: {kind: api_token, token: "${CRM_TOKEN}", header: X-API-KEY}
  hook-key:  {kind: hs256, secret: "${HOOK_KEY}"}
  partner:   {kind: basic_auth, username: partner, password: "${PARTNER_PASSWORD}"}
  crm:
    kind: oauth2
    client_id: abc123
    client_secret: "${CRM_CLIENT_SECRET}"
    authorize_url: https://crm.example.com/oauth/authorize
    token_url: https://crm.example.com/oauth/token
    revocation_url: https://crm.example.com/oauth/revoke
    userinfo_url: https://crm.example.com/oauth/userinfo
    scope: "openid email offline_access"
    client_auth: basic
"""
ENV = {
    "CRM_TOKEN": "crm-token-value-1",
    "HOOK_KEY": "hook-key-value-0123456789abcdef0123",
    "PARTNER_PASSWORD": "partner-pw-2",
    "CRM_CLIENT_SECRET": "client-secret-3",
}


def apply(text, env=ENV, **kwargs):
    return config_apply(config_load(text), env=env, **kwargs)


def test_apply_creates_every_secret_with_values_from_the_environment(db):
    changes = apply(DOCUMENT)
    assert [str(change) for change in changes] == [
        "create secret crm-token",
        "create secret hook-key",
        "create secret partner",
        "create secret crm",
    ]
    assert Secret.objects.get(name="crm-token").values["token"] == "crm-token-value-1"
    assert Secret.objects.get(name="crm").config["scope"] == "openid email offline_access"


def test_applying_again_changes_nothing_and_writes_no_audit_row(db):
    apply(DOCUMENT)
    audited = AuditEvent.objects.count()
    assert {change.action for change in apply(DOCUMENT)} == {"unchanged"}
    assert AuditEvent.objects.count() == audited


def test_a_changed_value_is_an_update_naming_the_field(db):
    apply(DOCUMENT)
    changes = apply(DOCUMENT, env={**ENV, "CRM_TOKEN": "rotated-token-9"})
    assert "update secret crm-token (token)" in [str(change) for change in changes]


def test_dry_run_changes_nothing(db):
    changes = apply(DOCUMENT, dry_run=True)
    assert len(changes) == 4 and not Secret.objects.exists()


def test_an_unset_variable_is_named_and_nothing_is_saved(db):
    env = {key: value for key, value in ENV.items() if key != "HOOK_KEY"}
    with pytest.raises(ConfigError) as error:
        apply(DOCUMENT, env=env)
    assert error.value.messages == ["secrets.hook-key.secret: The environment variable HOOK_KEY is not set."]
    assert not Secret.objects.exists()


def test_every_error_is_reported_with_its_path(db):
    text = """
secrets:
  "not a slug": {kind: api_token, token: abcd}
  weird: {kind: carrier_pigeon}
  db: {kind: postgresql, host: db.example.com, port: "five", database: x, user: y, password: z}
  partner: {kind: basic_auth, username: partner}
  headers: {kind: http_headers, headers: [a, b]}
  token: {kind: api_token, token: abcd, colour: blue}
"""
    with pytest.raises(ConfigError) as error:
        apply(text)
    messages = error.value.messages
    assert "secrets.not a slug.name: 'not a slug' is not a valid name: use letters, digits, '-' and '_'." in messages
    assert any(m.startswith("secrets.weird.kind: Unknown kind 'carrier_pigeon'") for m in messages)
    assert "secrets.db.port: Expected a whole number, got text." in messages
    assert "secrets.partner.password: This field is required." in messages
    assert "secrets.headers.headers: Expected name/value pairs, got a list." in messages
    assert any(m.startswith("secrets.token.colour: Unknown field for kind 'api_token'") for m in messages)
    assert not Secret.objects.exists()


def test_invalid_keys_are_refused_with_the_secret_and_field(db):
    from tests.secrets_app.kinds.test_rs256 import private_pem

    weak = private_pem(1024).replace("\n", "\n      ")
    text = f"""
secrets:
  signer:
    kind: rs256
    private_key: |
      {weak}
  garbage: {{kind: rs256, private_key: "not a pem"}}
"""
    with pytest.raises(ConfigError) as error:
        apply(text)
    assert "secrets.signer.private_key: The RSA key has 1024 bits; at least 2048 are required." in error.value.messages
    assert "secrets.garbage.private_key: Not a valid unencrypted PEM private key." in error.value.messages


def test_what_would_break_at_run_time_is_refused_on_save_with_its_path(db):
    from flows_app.models import Flow

    text = """
secrets:
  hook-key: {kind: hs256, encoding: base64url, secret: "not base64url: just a long sentence, shared with partner!"}
flows:
  trailing-comma:
    steps:
      - key: reply
        kind: respond
        body: |
          {
            "id": "{{ trigger.id }}",
          }
  reads-nothing:
    steps:
      - {key: reply, kind: respond, body: {id: "{{ steps.nosuch.id }}"}}
  own-handler:
    error_handler: own-handler
    steps:
      - {key: reply, kind: respond}
"""
    with pytest.raises(ConfigError) as error:
        apply(text)
    assert error.value.messages == [
        "secrets.hook-key.secret: Not valid base64url: use only letters, digits, '-' and '_' (and '=' at the end).",
        "flows.trailing-comma.steps[0].body: Not valid JSON at line 3, column 1: Expecting property name enclosed in double quotes.",
        "flows.reads-nothing.steps[0].body: steps.nosuch: there is no step 'nosuch' before this one.",
        "flows.own-handler.error_handler: A flow cannot handle its own errors; choose another flow, or none.",
    ]
    assert not Secret.objects.exists() and not Flow.objects.exists()


def test_a_secret_cannot_change_kind(db):
    apply(DOCUMENT)
    with pytest.raises(ConfigError) as error:
        apply("secrets:\n  partner: {kind: api_token, token: abcdef}\n")
    assert "cannot change kind" in error.value.messages[0]


def test_yaml_errors_name_the_line():
    with pytest.raises(ConfigError, match="at line 2, column 13"):
        config_load("secrets:\n  a: {kind: : }\n")


def test_unknown_sections_are_refused(db):
    with pytest.raises(ConfigError, match="Unknown section"):
        apply("secrets: {}\nsecretz: {}\n")


def test_export_writes_placeholders_and_never_a_value(db):
    apply(DOCUMENT)
    exported = config_export()
    text = yaml.safe_dump(exported)
    for value in ENV.values():
        assert value not in text
    assert exported["secrets"]["crm-token"] == {
        "kind": "api_token",
        "token": "${CRM_TOKEN_TOKEN}",
        "header": "X-API-KEY",
    }
    assert exported["secrets"]["crm"]["client_secret"] == "${CRM_CLIENT_SECRET}"


def test_export_then_apply_round_trips(db):
    apply(DOCUMENT)
    exported = yaml.safe_dump(config_export())
    env = {"CRM_TOKEN_TOKEN": "crm-token-value-1", "HOOK_KEY_SECRET": ENV["HOOK_KEY"], **ENV}
    assert {change.action for change in apply(exported, env=env)} == {"unchanged"}


def test_the_commands(db, tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "flowgate.yaml"
    path.write_text(DOCUMENT)
    out = io.StringIO()
    call_command("apply", str(path), "--dry-run", stdout=out)
    assert "would create secret crm-token" in out.getvalue() and not Secret.objects.exists()
    call_command("apply", str(path), stdout=io.StringIO())
    out = io.StringIO()
    call_command("export", stdout=out)
    assert "crm-token:" in out.getvalue() and ENV["CRM_TOKEN"] not in out.getvalue()
    monkeypatch.delenv("HOOK_KEY")
    with pytest.raises(CommandError, match="Nothing was applied"):
        call_command("apply", str(path), stdout=io.StringIO())
