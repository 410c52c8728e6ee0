"""Templates run in Jinja2's immutable sandbox; hostile ones are refused."""

import threading

import pytest

from flows_app import templating
from flows_app.templating import TemplateFailed, render, render_value

DATA = {"trigger": {"body": {"id": 7, "items": [1, 2, 3], "name": "ada"}}, "steps": {"fetch": {"body": {"data": [{"id": 9}]}}}}


def test_a_lone_expression_keeps_its_type():
    assert render("{{ trigger.body.id }}", DATA) == 7
    assert render("{{ trigger.body.items }}", DATA) == [1, 2, 3]
    assert render("{{ steps.fetch.body.data[0] }}", DATA) == {"id": 9}


def test_mixed_text_renders_to_a_string():
    assert render("id={{ trigger.body.id }}", DATA) == "id=7"
    assert render_value({"a": ["{{ trigger.body.name | upper }}", 1]}, DATA) == {"a": ["ADA", 1]}


def test_the_useful_filters():
    assert render("{{ trigger.body | tojson }}", DATA) == '{"id":7,"items":[1,2,3],"name":"ada"}'
    assert render("{{ 'hello' | b64encode }}", DATA) == "aGVsbG8="
    assert render("{{ 'aGVsbG8=' | b64decode }}", DATA) == "hello"
    assert render("{{ '2026-11-23T10:30:00Z' | datetime('%d.%m.%Y') }}", DATA) == "23.11.2026"
    assert render("{{ 0 | datetime('%Y') }}", DATA) == "1970"
    assert render('{{ \'{"a": 1}\' | fromjson }}', DATA) == {"a": 1}


def test_a_missing_value_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateFailed, match="has no attribute 'missing'"):
        render("{{ trigger.body.missing }}", DATA)
    assert render("{{ trigger.body.missing | default('none') }}", DATA) == "none"


@pytest.mark.parametrize(
    "hostile",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''|attr('__class__') }}",
        "{{ ('{0.__class__}')|attr('format')(1) }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(trigger) }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ range(10**9) | list }}",
        "{{ 'a' * 10**9 }}",
        "{{ [1] * 10**8 }}",
        "{{ 9 ** 999999 }}",
        "{{ trigger.body.items.append(4) }}",
        "{{ trigger.body.update({'x': 1}) }}",
    ],
)
def test_hostile_templates_are_refused(hostile):
    with pytest.raises(TemplateFailed):
        render(hostile, DATA)


def test_data_is_never_rendered_as_a_template():
    payload = {"trigger": {"body": {"name": "{{ ''.__class__.__mro__ }}", "calc": "{{ 7 * 7 }}"}}}
    assert render("{{ trigger.body.name }}", payload) == "{{ ''.__class__.__mro__ }}"
    assert render("{{ trigger.body.calc }} and more", payload) == "{{ 7 * 7 }} and more"


def test_syntax_errors_are_found_when_saving():
    assert templating.check_all({"url": "https://x/{{ trigger.id", "ok": "{{ 1 }}"}) == [
        ("url", "line 1: unexpected end of template, expected 'end of print statement'.")
    ]


def test_a_step_with_a_broken_template_is_refused_naming_the_field(db):
    from django.core.exceptions import ValidationError

    from flows_app.services.flows import step_spec_from_data

    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "t", "kind": "transform", "value": {"a": "{{ steps.x. }}"}})
    assert error.value.message_dict["value"][0].startswith("Template error at a: line 1:")


def test_the_steps_a_template_reads_are_found_when_saving():
    assert templating.step_names("{{ steps.me.body }} {{ steps['other'].id }} {{ steps[key] }}") == {"me", "other"}
    assert templating.step_names("{{ steps.get('optional') }} {{ trigger.steps.x }}") == set()
    assert templating.step_names("{% for steps in trigger.pages %}{{ steps.x }}{% endfor %}") == set()


SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("where", ["main thread", "pool thread"])
def test_a_template_that_runs_too_long_is_stopped_in_any_thread(where, monkeypatch):
    """A threads pool runs steps outside the main thread, where SIGALRM cannot reach."""
    monkeypatch.setattr(templating, "RENDER_SECONDS", 0.2)
    outcome = []

    def render_slow():
        try:
            templating.render(SLOW, {})
        except templating.TemplateFailed as exc:
            outcome.append(str(exc))

    if where == "main thread":
        render_slow()
    else:
        thread = threading.Thread(target=render_slow)
        thread.start()
        thread.join()
    assert outcome == ["rendering took longer than 0.2 s"]
