"""Calls to endpoint triggers: the answers a caller relies on, in the order checks happen."""

import base64
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from flows_app.models import EndpointTrigger, Flow, FlowRun
from secrets_app.services.secrets import secret_create
from tests.flows_app.conftest import make_endpoint_flow
from tests.servers import RecordingServer, Reply

BASIC = {"Authorization": "Basic " + base64.b64encode(b"partner:pw-1234567").decode()}


@pytest.fixture
def partner_hook(db):
    secret_create(name="partner", kind="basic_auth", data={"username": "partner", "password": "pw-1234567"})
    make_endpoint_flow(
        "intake",
        {"path": "partners/intake", "methods": ["POST", "PUT"], "auth": {"kind": "basic", "secret": "partner"}, "max_body_kb": 1, "headers": ["X-Request-Id"]},
    )
    return "partners/intake"


class TestRefusals:
    def test_unknown_paths_disabled_triggers_and_disabled_flows_all_look_the_same(self, call, partner_hook):
        unknown = call("nowhere", {}, headers=BASIC)
        endpoint = EndpointTrigger.objects.get()
        endpoint.enabled = False
        endpoint.save()  # takes effect at once in this process (and within a second in others)
        disabled = call(partner_hook, {}, headers=BASIC)
        endpoint.enabled = True
        endpoint.save()
        flow = Flow.objects.get()
        flow.enabled = False
        flow.save()
        flow_off = call(partner_hook, {}, headers=BASIC)
        for response in (unknown, disabled, flow_off):
            assert response.status_code == 404 and response.json() == {"error": "not_found"}

    def test_a_method_that_is_not_allowed_gets_405(self, call, partner_hook):
        response = call(partner_hook, method="GET", headers=BASIC)
        assert response.status_code == 405 and response["Allow"] == "POST, PUT"

    def test_a_body_over_the_limit_gets_413_before_anything_else(self, call, partner_hook):
        response = call(partner_hook, {"blob": "x" * 2000})  # not even authenticated
        assert response.status_code == 413 and response.json() == {"error": "body_too_large", "limit_kb": 1}

    def test_a_body_whose_length_was_not_announced_is_still_capped(self, partner_hook):
        from flows_app.services.endpoints import IncomingCall, endpoint_call

        chunks = iter([b"x" * 700, b"x" * 700, b"x" * 700])
        read_so_far = []

        def read(limit):
            data = b"".join(chunk for chunk in chunks)[:limit]
            read_so_far.append(len(data))
            return data

        call = IncomingCall(method="POST", headers=BASIC, query={}, content_type="text/plain", content_length=None, read=read)
        assert endpoint_call(path=partner_hook, call=call).status == 413
        assert read_so_far == [1025]  # never more than the limit and one byte

    def test_without_credentials_nothing_is_said_about_the_body(self, call, partner_hook):
        assert call(partner_hook, "{nope", headers={}).status_code == 401
        assert call(partner_hook, "a=1", content_type="application/pdf").status_code == 401

    def test_malformed_json_gets_400_with_a_short_reason(self, call, partner_hook):
        response = call(partner_hook, '{"a": ', headers=BASIC)
        assert response.status_code == 400
        assert response.json() == {"error": "malformed_json", "detail": "Expecting value at line 1 column 7."}
        assert not FlowRun.objects.exists()

    @pytest.mark.parametrize("body", ['{"amount": NaN}', "[Infinity]", '{"a": [-Infinity]}', '{"a": 1e400}'])
    def test_nan_and_infinity_in_a_json_body_are_refused_with_400(self, call, partner_hook, body):
        response = call(partner_hook, body, headers=BASIC)
        assert response.status_code == 400 and response.json()["error"] == "malformed_json"
        assert response.json()["detail"] in {
            "NaN is not a JSON number.",
            "Infinity is not a JSON number.",
            "-Infinity is not a JSON number.",
            "The number 1e400 is out of range.",
        }
        assert not FlowRun.objects.exists()

    def test_deeply_nested_json_body_is_refused_with_400(self, call, partner_hook):
        for levels in (65, 400):
            response = call(partner_hook, "[" * levels + "]" * levels, headers=BASIC)
            assert response.status_code == 400
            assert response.json() == {"error": "malformed_json", "detail": "Nested too deeply (more than 64 levels)."}
        assert not FlowRun.objects.exists()
        assert call(partner_hook, "[" * 64 + "]" * 64, headers=BASIC).status_code == 202

    def test_an_unsupported_content_type_gets_415(self, call, partner_hook):
        response = call(partner_hook, "%PDF-1.7", headers=BASIC, content_type="application/pdf")
        assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"


class TestAsync:
    def test_202_with_the_run_and_a_status_url_protected_like_the_endpoint(self, call, partner_hook, client):
        response = call(partner_hook, {"order": 7}, headers={**BASIC, "X-Request-Id": "req-1", "X-Other": "dropped"}, query="dry=1&tag=a&tag=b")
        assert response.status_code == 202
        run = FlowRun.objects.get()
        assert response.json() == {"run_id": run.pk, "status": "queued", "status_url": f"http://testserver/hooks/{partner_hook}/runs/{run.pk}/"}
        assert response["Location"] == response.json()["status_url"]
        assert run.trigger == "endpoint" and run.endpoint.path == partner_hook
        assert run.input == {
            "method": "POST",
            "path": partner_hook,
            "query": {"dry": "1", "tag": ["a", "b"]},
            "headers": {"X-Request-Id": "req-1"},
            "body": {"order": 7},
            "caller": {"auth": "basic", "subject": "partner", "claims": {}},
        }
        status_path = f"/hooks/{partner_hook}/runs/{run.pk}/"
        assert client.get(status_path).status_code == 401
        status = client.get(status_path, HTTP_AUTHORIZATION=BASIC["Authorization"])
        assert status.status_code == 200 and status.json()["status"] == "queued" and status.json()["run_id"] == run.pk

    def test_the_status_url_shows_only_runs_of_its_own_endpoint(self, call, partner_hook, client):
        make_endpoint_flow("other", {"path": "other", "auth": {"kind": "open"}})
        call("other", {})
        foreign = FlowRun.objects.get()
        response = client.get(f"/hooks/{partner_hook}/runs/{foreign.pk}/", HTTP_AUTHORIZATION=BASIC["Authorization"])
        assert response.status_code == 404

    def test_an_open_endpoint_s_status_url_answers_only_with_the_token_of_its_run(self, db, call, client):
        make_endpoint_flow("public", {"path": "public", "auth": {"kind": "open"}})
        first, second = call("public", {}).json(), call("public", {}).json()
        url, token = first["status_url"].split("?token=")
        assert url.endswith(f"/hooks/public/runs/{first['run_id']}/") and token
        path = url.removeprefix("http://testserver")
        assert client.get(f"{path}?token={token}").status_code == 200
        other_token = second["status_url"].split("?token=")[1]
        for query in ("", "?token=", f"?token={other_token}", f"?token={token[:-1]}"):
            assert client.get(path + query).json() == {"error": "not_found"}

    def test_form_and_text_bodies(self, call, partner_hook):
        call(partner_hook, "name=Ada&tags=a&tags=b", headers=BASIC, content_type="application/x-www-form-urlencoded")
        call(partner_hook, "plain words", headers=BASIC, content_type="text/plain; charset=utf-8")
        assert [run.input["body"] for run in FlowRun.objects.order_by("id")] == [{"name": "Ada", "tags": ["a", "b"]}, "plain words"]


class TestIdempotency:
    def test_a_retried_call_gets_the_first_run(self, call, partner_hook):
        first = call(partner_hook, {"n": 1}, headers={**BASIC, "Idempotency-Key": "order-7"})
        again = call(partner_hook, {"n": 1}, headers={**BASIC, "Idempotency-Key": "order-7"})
        other = call(partner_hook, {"n": 1}, headers={**BASIC, "Idempotency-Key": "order-8"})
        assert first.json()["run_id"] == again.json()["run_id"] != other.json()["run_id"]
        assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
        assert FlowRun.objects.count() == 2

    def test_a_key_names_its_run_for_24_hours(self, call, partner_hook):
        from datetime import timedelta

        from django.utils import timezone

        first = call(partner_hook, {}, headers={**BASIC, "Idempotency-Key": "k"}).json()["run_id"]
        FlowRun.objects.filter(pk=first).update(queued_at=timezone.now() - timedelta(hours=25))
        later = call(partner_hook, {}, headers={**BASIC, "Idempotency-Key": "k"}).json()["run_id"]
        assert later != first and FlowRun.objects.count() == 2

    @pytest.mark.django_db(transaction=True)
    def test_concurrent_calls_with_one_key_start_one_run(self, partner_hook):
        answers, barrier = [], threading.Barrier(6)

        def send():
            barrier.wait()
            response = Client().post(
                f"/hooks/{partner_hook}", "{}", content_type="application/json", HTTP_AUTHORIZATION=BASIC["Authorization"], HTTP_IDEMPOTENCY_KEY="same"
            )
            answers.append((response.status_code, response.json()["run_id"]))
            connection.close()

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 6 and {status for status, _ in answers} == {202}
        assert len({run_id for _, run_id in answers}) == 1 and FlowRun.objects.count() == 1


@pytest.mark.worker
class TestSync:
    def test_the_respond_step_is_the_answer(self, worker, call, local_server):
        make_endpoint_flow(
            "whoami",
            {"path": "whoami", "auth": {"kind": "open"}, "response": "sync"},
            steps=[
                {"key": "me", "kind": "http_request", "url": f"{local_server.url}/me"},
                {"key": "reply", "kind": "respond", "status": 201, "headers": {"X-Flow": "whoami"}, "body": {"path": "{{ steps.me.body.path }}", "id": "{{ trigger.body.id }}"}},
                {"key": "after", "kind": "transform", "value": "the run goes on"},
            ],
        )
        response = call("whoami", {"id": 5})
        assert response.status_code == 201, response.content
        assert response.json() == {"path": "/me", "id": 5} and response["X-Flow"] == "whoami"

    def test_text_bodies_and_flows_without_a_respond_step(self, worker, call):
        make_endpoint_flow("text", {"path": "text", "auth": {"kind": "open"}, "response": "sync"}, steps=[{"key": "r", "kind": "respond", "body": "hello"}])
        make_endpoint_flow("plain", {"path": "plain", "auth": {"kind": "open"}, "response": "sync"}, steps=[{"key": "x", "kind": "transform", "value": 42}])
        text = call("text", {})
        assert text.status_code == 200 and text.content == b"hello" and text["Content-Type"].startswith("text/plain")
        plain = call("plain", {})
        assert plain.status_code == 200 and plain.json()["output"] == 42

    def test_a_failed_flow_gets_502_without_its_error(self, worker, call):
        make_endpoint_flow("broken", {"path": "broken", "auth": {"kind": "open"}, "response": "sync"}, steps=[{"key": "x", "kind": "transform", "value": "{{ secret_detail }}"}])
        response = call("broken", {})
        assert response.status_code == 502
        assert response.json() == {"error": "flow_failed", "run_id": FlowRun.objects.get().pk, "status": "failed"}

    def test_a_slow_flow_gets_504_with_the_run_and_goes_on(self, worker, call):
        answer_late = threading.Event()  # the step's server answers only after the 504
        server = RecordingServer(lambda request: (answer_late.wait(), Reply(body={"late": True}))[1])
        try:
            make_endpoint_flow(
                "slow",
                {"path": "slow", "auth": {"kind": "open"}, "response": "sync", "sync_timeout": 1},
                steps=[{"key": "wait", "kind": "http_request", "url": server.url}, {"key": "r", "kind": "respond", "body": "done"}],
            )
            response = call("slow", {})
            assert response.status_code == 504
            answer_late.set()
            run = FlowRun.objects.get(pk=response.json()["run_id"])
            assert f"/hooks/slow/runs/{run.pk}/?token=" in response.json()["status_url"]  # open access: the run's token
            deadline = time.monotonic() + 30
            while not FlowRun.objects.get(pk=run.pk).finished and time.monotonic() < deadline:
                time.sleep(0.2)
            assert FlowRun.objects.get(pk=run.pk).status == "succeeded"
        finally:
            answer_late.set()
            server.stop()
