"""Declared fields: JSON typed by a person is JSON, in a form and in the apply file."""

import pytest
from django.core.exceptions import ValidationError

from project.declarative import Field

BODY = Field("body", "Body", type="json", required=False, template=True)
# A trailing comma, and a template inside: once stored as text, answered as text/plain.
TRAILING_COMMA = '{\n  "id": "{{ trigger.id }}",\n}'
WHERE = "Not valid JSON at line 3, column 1: Expecting property name enclosed in double quotes."


def test_json_text_in_the_apply_file_that_does_not_parse_is_refused_with_line_and_column():
    with pytest.raises(ValidationError) as error:
        BODY.coerce(TRAILING_COMMA)
    assert error.value.messages == [WHERE]


def test_json_text_typed_in_a_form_that_does_not_parse_is_refused_with_line_and_column():
    with pytest.raises(ValidationError) as error:
        BODY.form_field().clean(TRAILING_COMMA)
    assert error.value.messages == [WHERE]


def test_json_text_in_the_apply_file_is_read_as_json_while_a_bare_template_and_a_json_string_stay_text():
    assert BODY.coerce('{"id": "{{ trigger.id }}"}') == {"id": "{{ trigger.id }}"}
    assert BODY.coerce(" [1, 2]") == [1, 2]
    assert BODY.coerce("{{ steps.me.body }}") == "{{ steps.me.body }}"
    assert BODY.form_field().clean("{{ steps.me.body }}") == "{{ steps.me.body }}"
    assert BODY.coerce(BODY.form_field().clean('"[not a list]"')) == "[not a list]"
    assert BODY.coerce(BODY.form_field().clean('"{{ trigger.name }}"')) == "{{ trigger.name }}"
