"""Flows in the config-as-code file, beside the secrets."""

import pytest
import yaml

from flows_app.models import Flow
from project.config_as_code import ConfigError, config_apply, config_export, config_load

DOCUMENT = """
secrets:
  crm: {kind: api_token, token: "${CRM_TOKEN}"}
flows:
  notify:
    steps:
      - {key: log, kind: transform, value: "{{ trigger }}"}
  whoami:
    name: Who am I
    timeout: 120
    error_handler: notify
    steps:
      - {key: me, kind: http_request, method: GET, url: "https://crm.example.com/api/me", secret: crm, max_attempts: 3}
      - {key: reply, kind: respond, status: 200, body: {user: "{{ steps.me.body.name }}"}}
"""
ENV = {"CRM_TOKEN": "crm-token-1"}


def apply(text, **kwargs):
    return config_apply(config_load(text), env=ENV, **kwargs)


def test_flows_and_steps_are_created_after_the_secrets(db):
    assert [str(change) for change in apply(DOCUMENT)] == ["create secret crm", "create flow notify", "create flow whoami"]
    flow = Flow.objects.get(slug="whoami")
    assert (flow.name, flow.timeout_seconds, flow.error_handler.slug) == ("Who am I", 120, "notify")
    me, reply = flow.steps.order_by("position")
    assert (me.key, me.kind, me.secret.name, me.max_attempts, me.config["url"]) == ("me", "http_request", "crm", 3, "https://crm.example.com/api/me")
    assert reply.config == {"status": 200, "body": {"user": "{{ steps.me.body.name }}"}}


def test_applying_again_changes_nothing(db):
    apply(DOCUMENT)
    assert {change.action for change in apply(DOCUMENT)} == {"unchanged"}


def test_a_changed_step_updates_the_flow(db):
    apply(DOCUMENT)
    changes = apply(DOCUMENT.replace("max_attempts: 3", "max_attempts: 5"))
    assert "update flow whoami (steps)" in [str(change) for change in changes]
    assert Flow.objects.get(slug="whoami").steps.get(key="me").max_attempts == 5


def test_step_errors_name_the_flow_step_and_field_and_nothing_is_saved(db):
    text = """
flows:
  broken:
    steps:
      - {key: a, kind: http_request, url: "https://x/{{ trigger.id"}
      - {key: b, kind: teleport}
      - {key: a, kind: transform, value: 1}
      - {key: c, kind: condition, expression: "true", then: nowhere}
      - {key: d, kind: sql, query: "SELECT 1", secret: missing}
"""
    with pytest.raises(ConfigError) as error:
        apply(text)
    messages = error.value.messages
    assert any(m.startswith("flows.broken.steps[0].url: Template error: line 1:") for m in messages)
    assert any(m.startswith("flows.broken.steps[1].kind: Unknown step kind 'teleport'") for m in messages)
    assert "flows.broken.steps[4].secret: There is no secret 'missing'." in messages
    assert not Flow.objects.exists()


def test_cross_step_errors(db):
    text = """
flows:
  jumpy:
    steps:
      - {key: a, kind: transform, value: 1}
      - {key: a, kind: condition, expression: "true", then: nowhere}
"""
    with pytest.raises(ConfigError) as error:
        apply(text)
    assert "flows.jumpy.steps[1].key: Another step is also called 'a'." in error.value.messages
    assert "flows.jumpy.steps[1].then: 'nowhere' is not a step of this flow." in error.value.messages


def test_export_round_trips(db):
    apply(DOCUMENT)
    exported = config_export()
    assert exported["flows"]["whoami"]["steps"][0] == {
        "key": "me", "kind": "http_request", "url": "https://crm.example.com/api/me", "secret": "crm", "max_attempts": 3
    }
    text = yaml.safe_dump(exported)
    env = {"CRM_TOKEN": "crm-token-1"}
    assert {change.action for change in config_apply(config_load(text), env=env)} == {"unchanged"}
