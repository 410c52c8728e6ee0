"""The admin's front page: the product's sections first, and what runs, fails and needs attention."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from flows_app.models import FlowRun
from secrets_app.models import OAuth2Connection, Secret
from secrets_app.services.secrets import secret_create
from tests.conftest import screenshot
from tests.flows_app.conftest import execute, make_endpoint_flow, make_flow

INDEX = reverse("admin:index")


def failing_flow(slug="nightly-sync"):
    return make_flow(slug, [{"key": "fetch", "kind": "transform", "value": "{{ missing.field }}"}])


def fine_flow(slug="greeter"):
    return make_flow(slug, [{"key": "greet", "kind": "transform", "value": {"hello": "world"}}])


def counts(response) -> dict[str, int]:
    return {entry.status: entry.count for entry in response.context["run_counts"]}


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_counts_as_failed_and_its_flow_is_listed_with_its_error(admin_client):
    broken = failing_flow()
    failed = execute(broken)
    execute(fine_flow())
    response = admin_client.get(INDEX)
    assert counts(response)["failed"] == 1 and counts(response)["succeeded"] == 1
    [(flow, failures_url)] = response.context["failed_flows"]
    assert flow == broken and flow.failures == 1 and flow.last_failure_pk == failed.pk
    assert flow.last_failure_at == failed.finished_at
    page = response.content.decode()
    assert "&#x27;missing&#x27; is undefined" in page  # the error excerpt
    assert reverse("admin:flows_app_flowrun_change", args=[failed.pk]) in page
    listing = admin_client.get(failures_url)
    assert list(listing.context["cl"].result_list) == [failed]


@pytest.mark.django_db(transaction=True)
def test_each_status_count_links_to_exactly_the_runs_it_counts(admin_client):
    flow = failing_flow()
    recent = execute(flow)
    old = execute(flow)
    FlowRun.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(hours=25))
    response = admin_client.get(INDEX)
    failed = next(entry for entry in response.context["run_counts"] if entry.status == "failed")
    assert failed.count == 1
    listing = admin_client.get(failed.url)
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [recent]
    assert failed.url in response.content.decode().replace("&amp;", "&")


def test_connections_that_need_attention_are_listed(admin_client):
    tested = secret_create(name="warehouse-db", kind="basic_auth", data={"username": "u", "password": "p"})
    Secret.objects.filter(pk=tested.pk).update(status=Secret.Status.FAILING, status_detail="password authentication failed")
    secret_create(name="healthy", kind="basic_auth", data={"username": "u", "password": "p"})
    crm = secret_create(
        name="crm",
        kind="oauth2",
        data={"client_id": "c", "client_secret": "s", "authorize_url": "https://idp.example.com/a", "token_url": "https://idp.example.com/t"},
    )
    OAuth2Connection.objects.filter(secret=crm).update(
        status=OAuth2Connection.Status.NEEDS_REAUTHORIZATION, last_error="invalid_grant: the refresh token was revoked"
    )
    response = admin_client.get(INDEX)
    problems = {problem.name: problem.problem for problem in response.context["connection_problems"]}
    assert problems == {
        "crm": "Needs re-authorization: invalid_grant: the refresh token was revoked",
        "warehouse-db": "Test failed: password authentication failed",
    }
    assert reverse("admin:secrets_app_secret_oauth2", args=[crm.pk]) in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_front_page_makes_the_same_number_of_queries_however_much_there_is(admin_client, django_assert_max_num_queries):
    execute(failing_flow("first-broken"))
    secret_create(name="one", kind="basic_auth", data={"username": "u", "password": "p"})
    admin_client.get(INDEX)  # the session and permission caches warm up on the first request
    with CaptureQueriesContext(connection) as few:
        admin_client.get(INDEX)
    for number in range(8):
        flow = failing_flow(f"broken-{number}")
        execute(flow)
        execute(flow)
        secret = secret_create(name=f"failing-{number}", kind="basic_auth", data={"username": "u", "password": "p"})
        Secret.objects.filter(pk=secret.pk).update(status=Secret.Status.FAILING)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(INDEX)
    assert len(response.context["failed_flows"]) == 9 and len(response.context["connection_problems"]) == 8


def test_the_products_sections_come_before_the_libraries_and_there_is_no_view_site_link(admin_client):
    response = admin_client.get(INDEX)
    labels = [app["app_label"] for app in response.context["app_list"]]
    assert labels[:2] == ["flows_app", "secrets_app"]
    assert {"oauth2_provider", "django_celery_beat", "auth"} <= set(labels[2:])
    flows_models = [model["object_name"] for model in response.context["app_list"][0]["models"]]
    assert flows_models[:2] == ["Flow", "FlowRun"]
    assert "View site" not in response.content.decode()


def test_getting_started_shows_what_is_left_until_everything_is_done(admin_client, call):
    page = admin_client.get(INDEX)
    started = page.context["getting_started"]
    assert (started.account_connected, started.flow_built, started.flow_called) == (False, False, False)
    assert 'id="getting-started"' in page.content.decode()
    secret_create(name="api-key", kind="basic_auth", data={"username": "u", "password": "p"})
    make_endpoint_flow("orders", {"path": "orders", "auth": {"kind": "open"}})
    started = admin_client.get(INDEX).context["getting_started"]
    assert (started.account_connected, started.flow_built, started.flow_called) == (True, True, False)
    assert call("orders", {"id": 1}).status_code == 202
    page = admin_client.get(INDEX)
    assert page.context["getting_started"] is None
    assert 'id="getting-started"' not in page.content.decode()


def test_a_user_who_may_not_view_runs_or_secrets_sees_neither(client, django_user_model):
    failing_flow()
    user = django_user_model.objects.create_user("viewer", password="viewer-password-1", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_flow"))
    client.force_login(user)
    response = client.get(INDEX)
    assert response.context["getting_started"].flow_built  # the front page is there, for what they may see
    assert "run_counts" not in response.context and "connection_problems" not in response.context
    assert 'id="run-counts"' not in response.content.decode()


@pytest.mark.browser
def test_a_person_sees_a_failed_run_counted_and_opens_it_from_the_front_page(live_server, django_user_model, page):
    from tests.conftest import admin_login

    failed = execute(failing_flow())
    secret = secret_create(name="warehouse-db", kind="basic_auth", data={"username": "u", "password": "p"})
    Secret.objects.filter(pk=secret.pk).update(status=Secret.Status.FAILING, status_detail="401 Unauthorized")
    django_user_model.objects.create_superuser("ops", "ops@example.com", "ops-password-1")
    admin_login(page, live_server.url, "ops", "ops-password-1")
    failed_count = page.locator("#run-counts .status-failed")
    assert failed_count.locator(".count").inner_text() == "1"
    assert "nightly-sync" in page.inner_text("#failed-flows")
    assert "Test failed: 401 Unauthorized" in page.inner_text("#connection-problems")
    assert page.locator("#content-main .module").first.get_attribute("id") == "getting-started"
    screenshot(page, "front-page", walkthrough=True)
    failed_count.locator("a").click()
    page.wait_for_url("**/flows_app/flowrun/?*")
    assert page.locator("#result_list tbody tr").count() == 1
    assert f"#{failed.pk}" in page.inner_text("#result_list tbody tr")
