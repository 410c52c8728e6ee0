"""http_request steps: bodies, statuses, the outbound guard, OAuth2 secrets."""

import json

import pytest
from django.core.exceptions import ValidationError

from flows_app.services.flows import step_spec_from_data
from tests.flows_app.conftest import execute, make_flow
from tests.servers import Reply, TricklingServer

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


def test_a_url_that_is_not_http_is_refused_on_save(db):
    with pytest.raises(ValidationError) as error:
        step_spec_from_data({"key": "c", "kind": "http_request", "url": "file:///etc/passwd"})
    assert "url" in error.value.message_dict
