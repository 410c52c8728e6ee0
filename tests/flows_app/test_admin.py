"""Flows in the admin: per-kind step forms, validation beside the field, runs."""

import json
import re
import subprocess

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from flows_app.forms import kind_field_name
from flows_app.models import Flow, FlowRun
from flows_app.steps import STEP_KINDS
from secrets_app.services.secrets import secret_create
from tests.conftest import screenshot
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
                f"{prefix}for_each": step.get("for_each", ""),
                f"{prefix}for_each_concurrency": str(step.get("for_each_concurrency", 4)),
                f"{prefix}for_each_errors": step.get("for_each_errors", "fail"),
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
    errors = [f"{field}: {message}" for field, messages in response.context["adminform"].form.errors.items() for message in messages]
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
    assert "transform__value: Not valid JSON at line 1, column 7: Expecting value." in errors


def test_json_text_holding_templates_that_does_not_parse_is_refused_not_kept_as_text(admin_client):
    data = flow_post("hook", [{"key": "reply", "kind": "respond"}])
    data["steps-0-respond__body"] = '{\n  "id": "{{ trigger.id }}",\n}'
    errors = form_errors(admin_client.post(ADD, data))
    assert errors == ["respond__body: Not valid JSON at line 3, column 1: Expecting property name enclosed in double quotes."]
    assert not Flow.objects.exists()


def test_templates_reading_a_step_that_has_not_run_are_refused_beside_the_field(admin_client):
    steps = [
        {"key": "gate", "kind": "condition", "expression": "steps.me.ok", "then": "continue"},
        {"key": "me", "kind": "transform", "value": 1},
        {"key": "reply", "kind": "respond", "body": {"id": "{{ steps.nosuch.id }}"}},
    ]
    errors = form_errors(admin_client.post(ADD, flow_post("refs", steps)))
    assert errors == [
        "condition__expression: Step 'gate': steps.me: there is no step 'me' before this one.",
        "respond__body: Step 'reply': steps.nosuch: there is no step 'nosuch' before this one.",
    ]
    assert not Flow.objects.exists()


def test_a_for_each_step_is_saved_and_a_bad_one_refused_beside_its_fields(admin_client):
    steps = [
        {"key": "ids", "kind": "transform", "value": [1, 2]},
        {"key": "each", "kind": "transform", "value": "{{ item }}", "for_each": "{{ steps.ids", "for_each_errors": "drop"},
        {"key": "gate", "kind": "condition", "expression": "true", "for_each": "{{ steps.ids }}"},
    ]
    errors = form_errors(admin_client.post(ADD, flow_post("fans", steps)))
    assert errors[0] == "for_each_errors: Select a valid choice. drop is not one of the available choices."
    assert errors[1].startswith("for_each: Step 'each': Template error")
    assert errors[2:] == ["for_each: Step 'gate': A Condition step cannot run once per item."]
    assert not Flow.objects.exists()
    steps = [steps[0], {**steps[1], "for_each": "{{ steps.ids }}", "for_each_errors": "collect", "for_each_concurrency": 2}]
    response = admin_client.post(ADD, flow_post("fans", steps))
    assert response.status_code == 302, form_errors(response)
    each = Flow.objects.get(slug="fans").steps.get(key="each")
    assert (each.for_each, each.for_each_concurrency, each.for_each_errors) == ("{{ steps.ids }}", 2, "collect")


def test_a_flow_chosen_as_its_own_error_handler_is_refused(admin_client, db):
    flow = make_flow("alone", [])
    data = flow_post("alone", [])
    data["error_handler"] = str(flow.pk)
    errors = form_errors(admin_client.post(reverse("admin:flows_app_flow_change", args=[flow.pk]), data))
    assert errors == ["error_handler: A flow cannot handle its own errors; choose another flow, or none."]
    flow.refresh_from_db()
    assert flow.error_handler is None


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


# -- the flow editor: steps on one line, reordered by dragging, saved through flow_save ------



def change_url(flow):
    return reverse("admin:flows_app_flow_change", args=[flow.pk])


def flow_change_post(flow, steps, **fields):
    """The POST for ``flow``'s change page: its stored steps as rows with their ids, in ``steps``' order."""
    data = {**flow_post(flow.slug, steps), "name": flow.name, **fields}
    stored = {step.key: step for step in flow.steps.all()}
    data["steps-INITIAL_FORMS"] = str(len(stored))
    for index, step in enumerate(steps):
        if step["key"] in stored:
            data.update({f"steps-{index}-id": str(stored[step["key"]].pk), f"steps-{index}-flow": str(flow.pk)})
    return data


@pytest.mark.parametrize(
    "auth, placeholder",
    [
        ({"kind": "api_key", "secret": "hook-token"}, '-H "X-API-Key: $API_KEY"'),
        ({"kind": "api_key", "secret": "hook-token", "header": "Authorization"}, '-H "Authorization: Bearer $API_KEY"'),
        ({"kind": "basic", "secret": "hook-login"}, '-u "$USERNAME:$PASSWORD"'),
        ({"kind": "jwt", "secret": "hook-key"}, '-H "Authorization: Bearer $TOKEN"'),
        ({"kind": "signature", "secret": "hook-token"}, '-H "X-Hub-Signature-256: sha256=$SIGNATURE"'),
        ({"kind": "signature", "secret": "hook-key", "scheme": "stripe"}, '-H "Stripe-Signature: t=$TIMESTAMP,v1=$SIGNATURE"'),
        ({"kind": "open"}, '-d "{}"'),
    ],
)
def test_each_endpoint_shows_its_full_url_and_a_curl_line_with_placeholders_never_the_secret(admin_client, db, auth, placeholder):
    from django.utils.html import escape

    from tests.flows_app.conftest import make_endpoint_flow

    values = {"hook-token": "tok-never-shown-7781", "hook-login": "pw-never-shown-7782", "hook-key": "k-never-shown-7783" * 3}
    secret_create(name="hook-token", kind="api_token", data={"token": values["hook-token"]})
    secret_create(name="hook-login", kind="basic_auth", data={"username": "partner", "password": values["hook-login"]})
    secret_create(name="hook-key", kind="hs256", data={"secret": values["hook-key"]})
    flow = make_endpoint_flow("orders", {"path": "orders/new", "auth": auth})
    page = admin_client.get(change_url(flow)).content.decode()
    assert '<code class="hook-url">http://testserver/hooks/orders/new</code>' in page
    assert escape('curl -X POST "http://testserver/hooks/orders/new"') in page
    assert escape(placeholder) in page and 'class="button copy-button"' in page
    assert not any(value in page for value in values.values())


def test_saving_from_the_admin_goes_through_flow_save_and_writes_one_audit_row(admin_client):
    from secrets_app.models import AuditEvent

    steps = [{"key": "first", "kind": "transform", "value": 1}, {"key": "second", "kind": "transform", "value": 2}]
    response = admin_client.post(ADD, flow_post("audited", steps))
    assert response.status_code == 302, form_errors(response)
    flow = Flow.objects.get(slug="audited")
    # flow_save names a created flow "created" and gives it its owner; the old admin listed form fields.
    assert list(AuditEvent.objects.values_list("action", "target_name", "detail")) == [("flow.create", "audited", {"changed": ["created"]})]
    assert flow.owner.username == "admin"

    response = admin_client.post(change_url(flow), flow_change_post(flow, steps[::-1], slug="audited-renamed"))
    assert response.status_code == 302, form_errors(response)
    renamed = Flow.objects.get(pk=flow.pk)
    assert renamed.slug == "audited-renamed" and not Flow.objects.filter(slug="audited").exists()
    assert [(step.position, step.key) for step in renamed.steps.order_by("position")] == [(0, "second"), (1, "first")]
    update = AuditEvent.objects.filter(action="flow.update").get()
    assert update.target_name == "audited-renamed" and update.detail == {"changed": ["slug", "steps"]}


def test_a_save_refused_after_the_forms_checked_it_says_why_and_keeps_nothing(admin_client):
    from django.db.models.signals import post_save

    from flows_app.models import EndpointTrigger

    def another_flow_takes_the_path(sender, instance, **kwargs):
        # What a concurrent save could do between the forms' checks and flow_save's.
        if instance.slug == "racy":
            EndpointTrigger.objects.create(flow=Flow.objects.create(slug="other", name="other"), path="racy", auth="open")

    data = endpoint_rows(flow_post("racy", [{"key": "x", "kind": "transform", "value": 1}]), [{"path": "racy", "auth": "open"}])
    post_save.connect(another_flow_takes_the_path, sender=Flow, weak=False)
    try:
        response = admin_client.post(ADD, data, follow=True)
    finally:
        post_save.disconnect(another_flow_takes_the_path, sender=Flow)
    assert response.status_code == 200
    assert "The flow was not saved: The path &#x27;racy&#x27; belongs to another flow&#x27;s endpoint." in response.content.decode()
    assert not Flow.objects.exists() and not EndpointTrigger.objects.exists()


def test_a_new_step_starts_empty_and_help_texts_show_as_written(admin_client, db):
    page = admin_client.get(ADD).content.decode()
    template_row = page[page.index('id="steps-empty"') :]
    json_boxes = re.findall(r'<textarea name="steps-__prefix__-(\w+)"[^>]*>\n(.*?)</textarea>', template_row, re.S)
    assert ("transform__value", "") in json_boxes and not [name for name, text in json_boxes if text == "null"]
    assert 'type="hidden" name="steps-__prefix__-position"' in template_row
    assert "Later steps read this step&#x27;s output as steps.&lt;key&gt;." in page
    assert "Served at /hooks/&lt;path&gt;." in page
    assert "The caller sends &#x27;Authorization: Bearer &lt;JWT&gt;&#x27;" in page


def add_step(page, index, key, value):
    page.click("#steps-group .add-row a")
    page.fill(f"#id_steps-{index}-key", key)
    page.select_option(f"#id_steps-{index}-kind", "transform")
    page.fill(f"#id_steps-{index}-transform__value", value)


def step_lines(page):
    return page.locator("#steps-group .inline-related:not(.empty-form) .step-line").all_inner_texts()


@pytest.mark.browser
def test_a_person_orders_steps_by_dragging_and_sees_each_on_one_line(live_server, django_user_model, page):
    from tests.conftest import admin_login

    django_user_model.objects.create_superuser("builder", "builder@example.com", "builder-password-1")
    admin_login(page, live_server.url, "builder", "builder-password-1")
    page.goto(f"{live_server.url}{ADD}")
    page.fill("#id_name", "Ordered")
    for index, key in enumerate(["fetch", "shape", "notify"]):
        add_step(page, index, key, f'{{\n  "step": "{key}"\n}}')
    assert [page.input_value(f"#id_steps-{index}-position") for index in range(3)] == ["0", "1", "2"]
    for index in range(3):  # a new step is open; its line closes it
        page.click(f"#steps-{index} .step-line")
    assert not page.is_visible("#id_steps-0-transform__value")

    page.locator("#steps-2 .step-handle").drag_to(page.locator("#steps-0 .step-line"))
    assert [page.input_value(f"#id_steps-{index}-position") for index in range(3)] == ["1", "2", "0"]
    page.click("#steps-0 .step-down")  # and with the keyboard's buttons: fetch below shape
    assert [page.input_value(f"#id_steps-{index}-position") for index in range(3)] == ["2", "1", "0"]

    # A mistake: the page comes back in the chosen order, the step at fault open beside its error.
    page.click("#steps-1 .step-line")
    page.fill("#id_steps-1-transform__value", '{"step": }')
    page.click("input[name=_continue]")
    page.wait_for_selector(".errornote")
    assert [line.split()[0] for line in step_lines(page)] == ["notify", "shape", "fetch"]
    assert page.is_visible("#steps-1 .errorlist") and not page.is_visible("#id_steps-0-transform__value")
    page.fill("#id_steps-1-transform__value", '{"step": "shape"}')
    page.click("input[name=_continue]")
    assert "was added successfully" in page.inner_text(".messagelist")

    flow = Flow.objects.get(slug="ordered")
    assert [(step.position, step.key) for step in flow.steps.order_by("position")] == [(0, "notify"), (1, "shape"), (2, "fetch")]
    # Saved steps come back one line each (key, kind, the value on one line), closed.
    assert [" ".join(line.split()) for line in step_lines(page)] == [f'{key} Transform {{"step": "{key}"}}' for key in ("notify", "shape", "fetch")]
    assert page.locator("#steps-group .inline-related.step-collapsed:not(.empty-form)").count() == 3
    assert not page.is_visible("#id_steps-0-transform__value")
    page.click("#steps-1 .step-line")
    assert page.is_visible("#id_steps-1-transform__value") and not page.is_visible("#id_steps-0-transform__value")
    screenshot(page, "flow-editor-three-steps", walkthrough=True)


@pytest.mark.browser
def test_a_two_step_flow_with_an_endpoint_fits_on_a_page_or_two(live_server, django_user_model, page, settings):
    from tests.conftest import admin_login
    from tests.flows_app.conftest import make_endpoint_flow

    secret_create(name="partner-key", kind="api_token", data={"token": "tok-partner-5521"})
    flow = make_endpoint_flow(
        "whoami",
        {"path": "whoami", "auth": {"kind": "api_key", "secret": "partner-key"}},
        [
            {"key": "me", "kind": "http_request", "method": "POST", "url": "https://api.example.com/me", "body_type": "json", "body": {"id": "{{ trigger.body.id }}"}},
            {"key": "answer", "kind": "transform", "value": {"name": "{{ steps.me.body.name }}"}},
        ],
    )
    settings.BASE_URL = live_server.url
    django_user_model.objects.create_superuser("builder", "builder@example.com", "builder-password-1")
    admin_login(page, live_server.url, "builder", "builder-password-1")
    page.goto(f"{live_server.url}{change_url(flow)}")
    height = page.evaluate("document.body.scrollHeight")
    screenshot(page, "flow-editor-two-steps", walkthrough=True)
    assert height < 2400, height  # about 4,000 px with every step open
    assert [" ".join(line.split()) for line in step_lines(page)] == [
        "me HTTP request POST https://api.example.com/me",
        'answer Transform {"name": "{{ steps.me.body.name }}"}',
    ]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click(".hook-call .copy-button")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f'curl -X POST "{live_server.url}/hooks/whoami"') and '-H "X-API-Key: $API_KEY"' in copied
    assert "tok-partner-5521" not in copied and page.inner_text(".hook-call .copy-button") == "Copied"
    # The command works as copied, once its variable is set.
    called = subprocess.run(["sh", "-c", copied + ' -s -o /dev/null -w "%{http_code}"'], env={"API_KEY": "tok-partner-5521"}, capture_output=True, text=True, check=True)
    assert called.stdout == "202"


@pytest.mark.browser
def test_a_person_sees_each_mistake_beside_its_field_and_nothing_is_saved(live_server, django_user_model, page):
    """The mistakes a new user made in the first ten minutes: a respond body with a trailing
    comma, a template reading a step that does not exist, a flow handling its own errors."""
    from tests.conftest import admin_login

    handler = make_flow("notify-me", [{"key": "note", "kind": "transform", "value": 1}])
    django_user_model.objects.create_superuser("builder", "builder@example.com", "builder-password-1")
    admin_login(page, live_server.url, "builder", "builder-password-1")
    page.goto(f"{live_server.url}{change_url(handler)}")
    page.select_option("#id_error_handler", label=handler.name)
    page.click("#steps-0 .step-line")
    page.fill("#id_steps-0-transform__value", '{"total": "{{ steps.nosuch.total }}"}')
    page.click("#steps-group .add-row a")
    page.fill("#id_steps-1-key", "reply")
    page.select_option("#id_steps-1-kind", "respond")
    page.fill("#id_steps-1-respond__body", '{\n  "ok": true,\n}')
    page.click("input[name=_continue]")
    page.wait_for_selector(".errornote")
    errors = page.locator(".errorlist").all_inner_texts()
    assert "A flow cannot handle its own errors; choose another flow, or none." in errors
    assert any("steps.nosuch: there is no step 'nosuch' before this one" in error for error in errors)
    assert any("Not valid JSON at line 3, column 1" in error for error in errors)
    screenshot(page, "mistakes-beside-their-fields", walkthrough=True)
    handler.refresh_from_db()
    assert handler.error_handler is None and handler.steps.get().config == {"value": 1}
