"""Flows in the admin: per-kind step forms, validation beside the field, runs."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from flows_app.forms import kind_field_name
from flows_app.models import Flow, FlowRun
from flows_app.steps import STEP_KINDS
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import execute, make_flow

ADD = reverse("admin:flows_app_flow_add")


def flow_post(name, steps):
    """The POST an admin user sends for a flow with ``steps`` (dicts of common and kind fields)."""
    data = {
        "name": name,
        "slug": name,
        "enabled": "on",
        "description": "",
        "timeout_seconds": "300",
        "concurrency_limit": "0",
        "error_handler": "",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for inline in ("endpoints", "schedules"):  # the trigger inlines, empty
        data.update({f"{inline}-TOTAL_FORMS": "0", f"{inline}-INITIAL_FORMS": "0", f"{inline}-MIN_NUM_FORMS": "0", f"{inline}-MAX_NUM_FORMS": "1000"})
    for index, step in enumerate(steps):
        prefix = f"steps-{index}-"
        kind = step["kind"]
        data.update(
            {
                f"{prefix}position": str(index),
                f"{prefix}key": step["key"],
                f"{prefix}kind": kind,
                f"{prefix}secret": step.get("secret", ""),
                f"{prefix}max_attempts": "1",
                f"{prefix}retry_backoff_seconds": "1.0",
                f"{prefix}timeout_seconds": "30",
                f"{prefix}on_error": "stop",
                f"{prefix}error_step_key": "",
            }
        )
        for kind_class in STEP_KINDS.values():  # every kind's fields are in the form, with their defaults
            for field in kind_class.fields:
                default = field.form_initial(None)
                value = step.get(field.name, default) if kind_class.slug == kind else default
                if field.type == "boolean":
                    if value:
                        data[f"{prefix}{kind_field_name(kind_class.slug, field.name)}"] = "on"
                    continue
                if isinstance(value, (dict, list)) and field.type == "json":
                    value = json.dumps(value)
                data[f"{prefix}{kind_field_name(kind_class.slug, field.name)}"] = "" if value is None else value
    return data


def form_errors(response):
    errors = []
    for formset in response.context["inline_admin_formsets"]:
        for form in formset.formset.forms:
            for field, messages in form.errors.items():
                errors.extend(f"{field}: {message}" for message in messages)
    return errors


def test_a_flow_with_steps_is_saved_from_the_admin(admin_client):
    response = admin_client.post(
        ADD,
        flow_post("greeter", [{"key": "greet", "kind": "transform", "value": {"message": "Hello {{ trigger.name }}"}}]),
    )
    assert response.status_code == 302, form_errors(response)
    step = Flow.objects.get(slug="greeter").steps.get()
    assert step.kind == "transform" and step.config == {"value": {"message": "Hello {{ trigger.name }}"}}


def test_a_broken_template_is_reported_with_the_step_and_field(admin_client):
    response = admin_client.post(ADD, flow_post("broken", [{"key": "greet", "kind": "transform", "value": "{{ trigger.name "}]))
    assert response.status_code == 200
    assert any(error.startswith("transform__value: Step 'greet', Value: Template error: line 1:") for error in form_errors(response))
    assert not Flow.objects.exists()


def test_invalid_json_is_reported_on_its_field(admin_client):
    data = flow_post("badjson", [{"key": "greet", "kind": "transform", "value": 1}])
    data["steps-0-transform__value"] = '{"a": }'
    errors = form_errors(admin_client.post(ADD, data))
    assert any(error.startswith("transform__value: Not valid JSON: Expecting value") for error in errors)


def test_a_secret_of_the_wrong_kind_is_refused(admin_client):
    secret = secret_create(name="pg", kind="api_token", data={"token": "t-123456"})
    errors = form_errors(admin_client.post(ADD, flow_post("wrong", [{"key": "q", "kind": "sql", "query": "SELECT 1", "secret": str(secret.pk)}])))
    assert "secret: Step 'q': Secret 'pg' is of kind 'api_token'; a SQL query step takes: postgresql, mysql." in errors


def test_duplicate_keys_and_missing_jump_targets_are_refused(admin_client):
    steps = [
        {"key": "a", "kind": "transform", "value": 1},
        {"key": "a", "kind": "condition", "expression": "true", "then": "nowhere", "otherwise": "stop"},
    ]
    errors = form_errors(admin_client.post(ADD, flow_post("jumpy", steps)))
    assert "key: Step 'a': Another step is also called 'a'." in errors
    assert "condition__then: Step 'a': 'nowhere' is not a step of this flow." in errors


def test_script_steps_need_their_own_permission(client, django_user_model, db):
    user = django_user_model.objects.create_user("builder", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="flows_app").exclude(codename="edit_script_steps"))
    client.login(username="builder", password="pw")
    errors = form_errors(client.post(ADD, flow_post("scripted", [{"key": "s", "kind": "script", "code": "return 1"}])))
    assert "kind: Step 's': Saving a script step needs the 'Can save script steps' permission." in errors
    user.user_permissions.add(Permission.objects.get(codename="edit_script_steps"))
    response = client.post(ADD, flow_post("scripted", [{"key": "s", "kind": "script", "code": "return 1"}]))
    assert response.status_code == 302


def test_the_change_page_shows_the_stored_configuration(admin_client, db):
    flow = make_flow("shown", [{"key": "call", "kind": "http_request", "url": "https://api.example.com/x", "headers": {"Accept": "application/json"}}])
    page = admin_client.get(reverse("admin:flows_app_flow_change", args=[flow.pk])).content.decode()
    assert 'value="https://api.example.com/x"' in page and "Accept: application/json" in page


def test_run_now_starts_a_run_with_the_input(admin_client, db, monkeypatch):
    flow = make_flow("manual", [{"key": "x", "kind": "transform", "value": "{{ trigger.n }}"}])
    monkeypatch.setattr("flows_app.dispatch.enqueue_run", lambda run_id, countdown=0: None)
    response = admin_client.post(reverse("admin:flows_app_flow_run", args=[flow.pk]), {"input": '{"n": 3}'})
    run = FlowRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:flows_app_flowrun_change", args=[run.pk])
    assert run.input == {"n": 3} and run.trigger == "admin"
    bad = admin_client.post(reverse("admin:flows_app_flow_run", args=[flow.pk]), {"input": "{nope"})
    assert "Not valid JSON" in bad.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_run_page_shows_each_step_with_status_and_output(admin_client):
    flow = make_flow("shown", [{"key": "first", "kind": "transform", "value": {"greeting": "hi"}}, {"key": "second", "kind": "transform", "value": "{{ nope }}"}])
    run = execute(flow)
    page = admin_client.get(reverse("admin:flows_app_flowrun_change", args=[run.pk])).content.decode()
    assert "&quot;greeting&quot;: &quot;hi&quot;" in page
    assert "&#x27;nope&#x27; is undefined" in page
    assert 'id="rerun"' in page
    listing = admin_client.get(reverse("admin:flows_app_flowrun_changelist"), {"status__exact": "failed", "flow__id__exact": flow.pk})
    assert list(listing.context["cl"].result_list) == [run]


@pytest.mark.browser
@pytest.mark.worker
def test_a_person_builds_a_two_step_flow_runs_it_and_reads_the_result(worker, live_server, django_user_model, page):
    from tests.conftest import admin_login

    django_user_model.objects.create_superuser("builder", "builder@example.com", "builder-password-1")
    admin_login(page, live_server.url, "builder", "builder-password-1")
    page.goto(f"{live_server.url}{ADD}")
    page.fill("#id_name", "Greeter")
    for index, (key, value) in enumerate(
        [("shout", '"{{ trigger.name | upper }}"'), ("greet", '{"message": "Hello {{ steps.shout }}!"}')]
    ):
        page.click("#steps-group .add-row a")
        page.fill(f"#id_steps-{index}-position", str(index))
        page.fill(f"#id_steps-{index}-key", key)
        page.select_option(f"#id_steps-{index}-kind", "transform")
        assert page.is_visible(f"#id_steps-{index}-transform__value")  # only the chosen kind's fields show
        assert not page.is_visible(f"#id_steps-{index}-http_request__url")
        page.fill(f"#id_steps-{index}-transform__value", value)
    page.click("input[name=_continue]")
    assert "was added successfully" in page.inner_text(".messagelist")

    page.click("#run-now")
    page.fill("#id_input", '{"name": "ada"}')
    page.click("#start-run")
    assert "started" in page.inner_text(".messagelist")
    for _ in range(100):
        if page.inner_text(".field-status_label .readonly") == "Succeeded":
            break
        page.wait_for_timeout(200)
        page.reload()
    assert page.inner_text(".field-status_label .readonly") == "Succeeded"
    assert '"message": "Hello ADA!"' in page.inner_text(".field-output_pretty .readonly")
    steps = page.locator("#step_runs-group tbody tr.has_original, #step_runs-group tbody tr.form-row")
    assert [steps.nth(n).locator(".field-step_key").inner_text() for n in range(steps.count())] == ["shout", "greet"]


def endpoint_rows(data, endpoints):
    """Add endpoint trigger rows (common fields and the chosen authentication's fields) to a POST."""
    from flows_app.triggers import ENDPOINT_AUTH

    data["endpoints-TOTAL_FORMS"] = str(len(endpoints))
    for index, endpoint in enumerate(endpoints):
        prefix = f"endpoints-{index}-"
        data.update(
            {
                f"{prefix}path": endpoint["path"],
                f"{prefix}enabled": "on",
                f"{prefix}methods": endpoint.get("methods", "POST"),
                f"{prefix}auth": endpoint["auth"],
                f"{prefix}auth_secret": endpoint.get("secret", ""),
                f"{prefix}response": endpoint.get("response", "async"),
                f"{prefix}sync_timeout_seconds": "30",
                f"{prefix}max_body_kb": "1024",
                f"{prefix}pass_headers": "",
            }
        )
        for mode in ENDPOINT_AUTH.values():
            for field in mode.fields:
                value = endpoint.get(field.name, field.form_initial(None)) if mode.slug == endpoint["auth"] else field.form_initial(None)
                data[f"{prefix}{kind_field_name(mode.slug, field.name)}"] = "" if value is None else value
    return data


def test_an_endpoint_trigger_is_saved_with_its_authentication_fields(admin_client):
    secret = secret_create(name="hook-key", kind="hs256", data={"secret": "k" * 40})
    data = flow_post("orders", [{"key": "x", "kind": "transform", "value": 1}])
    endpoint_rows(data, [{"path": "orders", "auth": "jwt", "secret": str(secret.pk), "scopes": "orders:write, orders:read", "issuer": "https://idp.example.com"}])
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, form_errors(response)
    endpoint = Flow.objects.get(slug="orders").endpoints.get()
    assert endpoint.auth_config == {"issuer": "https://idp.example.com", "scopes": ["orders:write", "orders:read"]}
    listing = admin_client.get(reverse("admin:flows_app_flow_changelist")).content.decode()
    assert "/hooks/orders" in listing and "(open access)" not in listing


def test_endpoint_errors_name_the_endpoint_and_field(admin_client):
    secret = secret_create(name="partner", kind="basic_auth", data={"username": "p", "password": "pw-123456"})
    data = flow_post("bad-hooks", [{"key": "x", "kind": "transform", "value": 1}])
    endpoint_rows(
        data,
        [
            {"path": "a", "auth": "jwt", "secret": str(secret.pk)},
            {"path": "b", "auth": "signature", "secret": "", "scheme": "generic", "header": ""},
            {"path": "c", "auth": "open", "methods": "FETCH"},
        ],
    )
    errors = form_errors(admin_client.post(ADD, data))
    assert "auth_secret: Endpoint '/hooks/a': Secret 'partner' is of kind 'basic_auth'; JWT bearer token takes: hs256, rs256." in errors
    assert "auth_secret: Endpoint '/hooks/b': HMAC signature of the body needs a secret (api_token, hs256)." in errors
    assert "signature__header: Endpoint '/hooks/b', Header (generic): Name the header that carries the signature." in errors
    assert any(error.startswith("methods: Use one or more of") for error in errors)
    assert not Flow.objects.exists()


def test_schedules_are_saved_with_their_beat_entry_and_show_the_next_run(admin_client):
    from django_celery_beat.models import PeriodicTask

    data = flow_post("nightly", [{"key": "x", "kind": "transform", "value": 1}])
    data.update({"schedules-TOTAL_FORMS": "1", "schedules-0-enabled": "on", "schedules-0-cron": "30 2 * * *", "schedules-0-interval_seconds": "", "schedules-0-timezone": "Europe/Paris", "schedules-0-input": "{}"})
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, form_errors(response)
    flow = Flow.objects.get(slug="nightly")
    entry = PeriodicTask.objects.get(pk=flow.schedules.get().periodic_task_id)
    assert entry.enabled and entry.crontab.minute == "30" and str(entry.crontab.timezone) == "Europe/Paris"
    page = admin_client.get(reverse("admin:flows_app_flow_change", args=[flow.pk])).content.decode()
    assert '<time class="next-run">' in page

    data["schedules-0-cron"] = "61 * * * *"
    errors = form_errors(admin_client.post(ADD.replace("nightly", "x"), {**data, "slug": "other", "name": "other"}))
    assert any(error.startswith("cron: Schedule: Not a valid cron expression") for error in errors)


@pytest.mark.django_db
def test_the_flow_list_shows_steps_triggers_and_last_run_in_a_fixed_number_of_queries(admin_client, django_assert_max_num_queries):
    from flows_app.services.specs import ScheduleSpec
    from tests.flows_app.conftest import make_endpoint_flow

    make_endpoint_flow("hook", {"path": "hook", "auth": {"kind": "open"}})
    for number in range(3):
        flow = make_flow(f"flow-{number}", [{"key": "a", "kind": "transform", "value": 1}, {"key": "b", "kind": "transform", "value": 2}], schedules=[ScheduleSpec(interval_seconds=60)])
        execute(flow)
    changelist = reverse("admin:flows_app_flow_changelist")
    admin_client.get(changelist)  # sessions, permissions and content types cached
    with django_assert_max_num_queries(12):
        html = admin_client.get(changelist).content.decode()
    assert html.count('<td class="field-step_count">2</td>') == 3
    assert "/hooks/hook (open access)" in html and html.count("every 60 s") == 3
    assert html.count(">Succeeded</strong></a>") == 3
