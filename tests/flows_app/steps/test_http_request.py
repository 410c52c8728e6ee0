"""http_request steps: bodies, statuses, the outbound guard, OAuth2 secrets."""

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError

from flows_app.models import Flow
from flows_app.services.flows import step_spec_from_data
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import execute, make_flow, steps_of
from tests.flows_app.test_admin import ADD, flow_post, form_errors
from tests.servers import RecordingServer, Reply, TricklingServer

pytestmark = pytest.mark.django_db(transaction=True)


def http_flow(**step):
    return make_flow("http", [{"key": "call", "kind": "http_request", **step}])


def test_json_form_and_raw_bodies(local_server):
    execute(http_flow(method="POST", url=local_server.url, body_type="json", body={"id": "{{ trigger.id }}"}), {"id": 5})
    assert json.loads(local_server.last.body) == {"id": 5}
    assert local_server.last.headers["Content-Type"] == "application/json"
    execute(http_flow(method="POST", url=local_server.url, body_type="form", body={"a": "1", "b": "{{ trigger.b }}"}), {"b": "x y"})
    assert local_server.last.body == b"a=1&b=x+y"
    execute(http_flow(method="PUT", url=local_server.url, body_type="raw", body="line {{ trigger.n }}", headers={"Content-Type": "text/plain"}), {"n": 1})
    assert local_server.last.body == b"line 1" and local_server.last.method == "PUT"


def test_query_and_headers_are_templates(local_server):
    execute(http_flow(url=local_server.url + "/search", query={"q": "{{ trigger.q }}", "page": 2}, headers={"X-Request": "{{ trigger.id }}"}), {"q": "a&b", "id": 9})
    assert local_server.last.path == "/search?q=a%26b&page=2"
    assert local_server.last.headers["X-Request"] == "9"


def test_the_output_has_status_headers_and_parsed_body(local_server):
    local_server.handler = lambda request: Reply(status=201, body={"id": 3}, headers={"X-Seen": "yes"})
    output = execute(http_flow(url=local_server.url)).output
    assert output["status"] == 201 and output["body"] == {"id": 3} and output["headers"]["X-Seen"] == "yes"


@pytest.mark.parametrize("answer", [b'{"rate": NaN}', b'{"rate": -Infinity}', b"[" * 65 + b"]" * 65])
def test_an_api_answer_that_json_columns_cannot_hold_is_stored_as_its_text(local_server, answer):
    local_server.handler = lambda request: Reply(body=answer, headers={"Content-Type": "application/json"})
    run = execute(http_flow(url=local_server.url))
    assert run.status == "succeeded", run.error
    assert run.step_runs.get().output["body"] == answer.decode()


def test_success_statuses_can_include_a_404(local_server):
    local_server.handler = lambda request: Reply(status=404, body="missing")
    assert execute(http_flow(url=local_server.url, success_statuses="2xx, 404")).status == "succeeded"
    failed = execute(http_flow(url=local_server.url))
    assert failed.status == "failed" and failed.step_runs.get().output["body"] == "missing"


def test_http_step_total_deadline_holds_against_a_slow_body():
    server = TricklingServer(declared=100_000, interval=0.2, limit=100)
    run = execute(http_flow(url=server.url, timeout=1))
    assert run.status == "failed"
    assert "did not finish within its 1 s deadline" in run.step_runs.get().error
    assert server.finished.wait(60)
    assert server.sent < 100  # the step hung up; the server did not run out of bytes


def test_redirects_can_be_left_unfollowed(local_server):
    local_server.handler = lambda request: Reply(status=302, headers={"Location": "/elsewhere"})
    output = execute(http_flow(url=local_server.url, follow_redirects=False, success_statuses="3xx")).output
    assert output["status"] == 302 and len(local_server.requests) == 1


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/", "http://10.1.2.3/"],
)
def test_the_outbound_guard_applies_to_steps(settings, url):
    settings.FLOWGATE_ALLOW_NETWORKS = []
    run = execute(http_flow(url=url))
    assert run.status == "failed" and "FLOWGATE_ALLOW_NETWORKS" in run.error


def test_a_redirect_to_a_private_address_is_refused(settings, local_server):
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    local_server.handler = lambda request: Reply(status=302, headers={"Location": "http://192.168.0.1/admin"})
    run = execute(http_flow(url=local_server.url))
    assert run.status == "failed" and "192.168.0.1" in run.error and "private" in run.error


def test_an_oauth2_secret_is_refreshed_before_use(connected, provider, local_server):
    from datetime import timedelta

    from django.utils import timezone

    from secrets_app.models import OAuth2Connection

    secret = connected()
    OAuth2Connection.objects.filter(secret=secret).update(expires_at=timezone.now() - timedelta(seconds=5))
    run = execute(http_flow(url=local_server.url, secret="crm"))
    assert run.status == "succeeded", run.error
    token = OAuth2Connection.objects.get(secret=secret).tokens["access_token"]
    assert local_server.last.headers["Authorization"] == f"Bearer {token}"
    assert len(provider.log.grants("refresh_token")) == 1
    assert token not in json.dumps(run.step_runs.get().output)


def test_the_first_failure_after_a_revoked_grant_names_the_secret_in_the_step_error(connected, provider, local_server):
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import RefreshToken

    from secrets_app.models import OAuth2Connection

    secret = connected()
    for refresh_token in RefreshToken.objects.all():
        refresh_token.revoke()  # the user removed the application at the provider
    OAuth2Connection.objects.filter(secret=secret).update(expires_at=timezone.now() - timedelta(seconds=5))
    run = execute(http_flow(url=local_server.url, secret="crm"))
    assert run.status == "failed"
    assert "OAuth2 secret 'crm' needs re-authorization: " in run.error and "invalid_grant" in run.error
    assert "OAuth2 secret 'crm' needs re-authorization: " in run.step_runs.get().error


def test_a_url_that_is_not_http_is_refused_on_save(db):
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "c", "kind": "http_request", "url": "file:///etc/passwd"})
    assert "url" in error.value.message_dict


# -- pagination -------------------------------------------------------------------------

PAGES = [[{"id": 1}, {"id": 2}], [{"id": 3}, {"id": 4}], [{"id": 5}]]


def query_of(request) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(request.path).query).items()}


def page_number_of(request, name="page") -> int:
    return int(query_of(request).get(name, "1"))


def linked_pages(request):
    """PAGES as an API with ``Link`` headers serves them (a relative next link)."""
    number = page_number_of(request)
    more = number < len(PAGES)
    links = f'</items?page={number + 1}>; rel="next", </items?page=1>; rel="first"' if more else '</items?page=1>; rel="first"'
    return Reply(body={"data": PAGES[number - 1]}, headers={"Link": links})


def test_link_header_pagination_collects_every_page_in_order_with_the_secret_on_each(local_server):
    secret_create(name="api", kind="api_token", data={"token": "t-pages-5521"})
    local_server.handler = linked_pages
    run = execute(http_flow(url=local_server.url + "/items", secret="api", paginate="link_header", items="data"))
    assert run.status == "succeeded", run.error
    output = run.step_runs.get().output
    assert output["items"] == [item for page in PAGES for item in page]
    assert (output["pages"], output["truncated"], output["status"]) == (3, False, 200)
    assert [request.path for request in local_server.requests] == ["/items", "/items?page=2", "/items?page=3"]
    assert all(request.headers["Authorization"] == "Bearer t-pages-5521" for request in local_server.requests)


def test_cursor_pagination_sends_each_cursor_until_there_is_none(local_server):
    cursors = {None: ("c-2", 0), "c-2": ("c-3", 1), "c-3": (None, 2)}

    def handler(request):
        following, index = cursors[query_of(request).get("after")]
        return Reply(body={"results": PAGES[index], "meta": {"next_cursor": following}})

    local_server.handler = handler
    step = {"paginate": "cursor", "items": "results", "cursor_field": "meta.next_cursor", "cursor_param": "after"}
    output = execute(http_flow(url=local_server.url + "/items", query={"limit": 2}, **step)).output
    assert output["items"] == [item for page in PAGES for item in page] and output["pages"] == 3
    assert [query_of(request) for request in local_server.requests] == [
        {"limit": "2"},
        {"limit": "2", "after": "c-2"},
        {"limit": "2", "after": "c-3"},
    ]


def test_page_number_pagination_stops_at_an_empty_page(local_server):
    def numbered_pages(request):
        number = page_number_of(request, "p")
        return Reply(body={"data": {"items": PAGES[number - 1] if number <= len(PAGES) else []}})

    local_server.handler = numbered_pages
    step = {"paginate": "page_number", "items": "data.items", "page_param": "p", "page_start": 1}
    output = execute(http_flow(url=local_server.url + "/items", **step)).output
    assert output["items"] == [item for page in PAGES for item in page]
    assert (output["pages"], output["truncated"]) == (4, False)
    assert [page_number_of(request, "p") for request in local_server.requests] == [1, 2, 3, 4]


def test_max_pages_stops_early_and_marks_the_output_truncated(local_server):
    local_server.handler = linked_pages
    output = execute(http_flow(url=local_server.url + "/items", paginate="link_header", items="data", max_pages=2)).output
    assert output["items"] == PAGES[0] + PAGES[1]
    assert (output["pages"], output["truncated"]) == (2, True)
    assert len(local_server.requests) == 2


def test_max_items_caps_the_items_collected_across_pages(local_server):
    local_server.handler = linked_pages
    output = execute(http_flow(url=local_server.url + "/items", paginate="link_header", items="data", max_items=3)).output
    assert output["items"] == PAGES[0] + PAGES[1][:1]
    assert (output["pages"], output["truncated"]) == (2, True)


def test_a_next_link_to_another_origin_is_refused_and_not_requested(local_server):
    other = RecordingServer()
    try:
        secret_create(name="api", kind="api_token", data={"token": "t-pages-5521"})
        local_server.handler = lambda request: Reply(
            body=[{"id": 1}], headers={"Link": f'<http://localhost:{other.port}/items?page=2>; rel="next"'}
        )
        run = execute(http_flow(url=local_server.url + "/items", secret="api", paginate="link_header"))
        assert run.status == "failed"
        assert f"the next link leads to another origin (http://localhost:{other.port})" in run.error
        assert len(local_server.requests) == 1 and other.requests == []
    finally:
        other.stop()


def test_a_page_without_a_list_at_the_items_path_fails_the_step(local_server):
    local_server.handler = lambda request: Reply(body={"data": {"id": 1}})
    run = execute(http_flow(url=local_server.url, paginate="page_number", page_param="page", items="data"))
    assert run.status == "failed" and "Page 1: the answer has no list of items at 'data'" in run.error


def test_a_transient_failure_on_a_later_page_retries_the_step_from_the_first_page(local_server):
    failures = []

    def handler(request):
        if page_number_of(request) == 2 and not failures:
            failures.append(request)
            return Reply(status=503, body="busy")
        return linked_pages(request)

    local_server.handler = handler
    flow = http_flow(url=local_server.url + "/items", paginate="link_header", items="data", max_attempts=2, retry_backoff=0)
    run = execute(flow)
    assert run.status == "succeeded", run.error
    assert steps_of(run) == [("call", "failed", 1), ("call", "succeeded", 2)]
    failed = run.step_runs.order_by("id").first()
    assert failed.error.startswith("Page 2: HTTP 503 from") and failed.output["body"] == "busy"
    assert [page_number_of(request) for request in local_server.requests] == [1, 2, 1, 2, 3]
    assert run.step_runs.order_by("id").last().output["items"] == [item for page in PAGES for item in page]


def test_the_step_timeout_covers_all_pages_together(local_server):
    def slow_page(request):
        time.sleep(0.4)  # each page alone is well within the timeout; four are not
        return Reply(body={"data": [page_number_of(request)]})

    local_server.handler = slow_page
    run = execute(http_flow(url=local_server.url, paginate="page_number", page_param="page", items="data", max_pages=4, timeout=1))
    assert run.status == "failed"
    assert "did not finish within its 1 s deadline (connect, headers and body, all pages together)" in run.error


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ({"paginate": "cursor", "cursor_param": "after"}, "cursor_field", "'cursor' pagination needs this."),
        ({"paginate": "cursor", "cursor_field": "next"}, "cursor_param", "'cursor' pagination needs this."),
        ({"paginate": "page_number"}, "page_param", "'page_number' pagination needs this."),
        ({"items": "data"}, "items", "Not used when paginate is 'none'."),
        ({"paginate": "link_header", "page_param": "page"}, "page_param", "Not used when paginate is 'link_header'."),
        ({"paginate": "link_header", "items": "data..items"}, "items", "Use keys separated by single dots, e.g. 'data.items'."),
        ({"paginate": "page_number", "page_param": "page", "query": {"page": "2"}}, "page_param", "The query already sets 'page'; pagination sets it on each page."),
        ({"paginate": "link_header", "max_pages": 1001}, "max_pages", "Must be at most 1000."),
        ({"paginate": "sideways"}, "paginate", "'sideways' is not one of: none, link_header, cursor, page_number."),
    ],
)
def test_pagination_settings_are_checked_on_save(db, step, field, message):
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "c", "kind": "http_request", "url": "https://api.example.com/items", **step})
    assert error.value.message_dict[field] == [message]


def test_the_admin_reports_pagination_settings_beside_their_fields(admin_client):
    step = {"key": "call", "kind": "http_request", "url": "https://api.example.com/items", "paginate": "cursor", "cursor_field": "meta.next"}
    errors = form_errors(admin_client.post(ADD, flow_post("paged", [step])))
    assert errors == ["http_request__cursor_param: Step 'call', Cursor parameter: 'cursor' pagination needs this."]
    step["cursor_param"] = "after"
    response = admin_client.post(ADD, flow_post("paged", [step]))
    assert response.status_code == 302, form_errors(response)
    config = Flow.objects.get(slug="paged").steps.get().config
    assert (config["paginate"], config["cursor_field"], config["cursor_param"], config["max_pages"]) == ("cursor", "meta.next", "after", 10)
