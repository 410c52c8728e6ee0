"""Checks across a flow's steps, and the flow's own settings, on save."""

import pytest
from django.core.exceptions import ValidationError

from flows_app.services.flows import flow_steps_check, step_spec_from_data
from tests.flows_app.conftest import make_flow


def check(*steps):
    return flow_steps_check([step_spec_from_data(step) for step in steps])


class TestStepReferences:
    def test_a_template_reading_a_step_that_does_not_exist_is_refused(self, db):
        errors = check(
            {"key": "me", "kind": "transform", "value": 1},
            {"key": "reply", "kind": "respond", "body": {"id": "{{ steps.me }}", "name": "{{ steps['nosuch'].name }}"}},
        )
        assert errors == {"steps[1].body": ["steps.nosuch: there is no step 'nosuch' before this one."]}

    def test_a_template_reading_a_later_step_is_refused(self, db):
        errors = check(
            {"key": "reply", "kind": "respond", "body": "{{ steps.me.body }}"},
            {"key": "me", "kind": "transform", "value": 1},
            {"key": "gate", "kind": "condition", "expression": "steps.gate.result", "then": "continue"},
        )
        assert errors == {
            "steps[0].body": ["steps.me: there is no step 'me' before this one."],
            "steps[2].expression": ["steps.gate: there is no step 'gate' before this one."],
        }

    def test_a_later_step_is_accepted_when_a_condition_jumps_back(self, db):
        # Pagination: the request reads the cursor a later step sets, when the condition loops back.
        def steps(more_then):
            return (
                {"key": "page", "kind": "http_request", "url": "https://api.example.com/items?after={{ steps.cursor.next | default('') }}"},
                {"key": "cursor", "kind": "transform", "value": {"next": "{{ steps.page.body.next }}"}},
                {"key": "more", "kind": "condition", "expression": "steps.cursor.next", "then": more_then, "otherwise": "stop"},
            )

        assert check(*steps("page")) == {}
        assert check(*steps("stop")) == {"steps[0].url": ["steps.cursor: there is no step 'cursor' before this one."]}

    def test_a_later_step_is_accepted_when_an_error_step_jumps_back(self, db):
        def steps(fallback_error):
            return (
                {"key": "reply", "kind": "respond", "body": "{{ steps.fallback | default('') }}"},
                {"key": "call", "kind": "http_request", "url": "https://api.example.com/x", "on_error": "goto", "error_step": "fallback"},
                {"key": "done", "kind": "condition", "expression": "true", "then": "stop"},
                {"key": "fallback", "kind": "transform", "value": "{{ steps.call.error }}", **fallback_error},
            )

        assert check(*steps({"on_error": "goto", "error_step": "reply"})) == {}
        assert check(*steps({})) == {"steps[0].body": ["steps.fallback: there is no step 'fallback' before this one."]}


class TestErrorHandler:
    def test_a_flow_cannot_handle_its_own_errors(self, db):
        steps = [{"key": "log", "kind": "transform", "value": 1}]
        make_flow("notify", steps)
        for slug in ("notify", "fresh"):  # a flow already saved, and a new one
            with pytest.raises(ValidationError) as error:
                make_flow(slug, steps, error_handler=slug)
            assert error.value.message_dict == {"error_handler": ["A flow cannot handle its own errors; choose another flow, or none."]}
