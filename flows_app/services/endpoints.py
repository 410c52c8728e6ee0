"""Answering calls to endpoint triggers: ``/hooks/<path>`` and its run status URLs.

The order of checks is part of the contract: an unknown path, a disabled trigger and a
disabled flow all look the same (404); the method comes next (405); the body is read
only up to the trigger's limit (413); then the caller must authenticate (401/403), and
only an authenticated caller learns anything about the body (415, 400). A request that
passes starts a run (or, with an ``Idempotency-Key`` or a signed delivery seen within
24 h, finds the first run) and is answered at once (async: 202) or with the flow's
respond step (sync).

A run remembers a digest of who started it (``FlowRun.caller``), and its status URL
answers only that caller; others get the 404 of a run that does not exist. A caller the
mode cannot tell apart from others (open access, a shared signing key, a JWT without
``sub`` or ``client_id``) gets a status URL with a token only this run's URL carries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.utils.crypto import salted_hmac

from flows_app.metrics import endpoint_timed
from flows_app.models import EndpointTrigger, FlowRun
from flows_app.selectors import endpoint_get
from flows_app.services.runs import flow_run_start, flow_run_start_once, flow_run_wait
from flows_app.triggers import ENDPOINT_AUTH
from flows_app.triggers.base import Caller, Forbidden, IncomingRequest, Unauthenticated
from project import jsonsafe
from secrets_app import api

MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: Endpoint paths under this prefix belong to installed apps' flows.
APP_HOOKS = "apps/"
TEXT_TYPES = ("application/xml", "application/javascript")


@dataclass
class Answer:
    """An HTTP answer: ``body`` is JSON data, or text (str) sent as it is."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """Ends a call early with ``answer``."""

    def __init__(self, answer: Answer):
        self.answer = answer
        super().__init__(answer.status)


def _error(status: int, error: str, headers: Mapping[str, str] | None = None, **detail: Any) -> Refused:
    return Refused(Answer(status, {"error": error, **detail}, dict(headers or {})))


@dataclass
class IncomingCall:
    """What the view hands over: the request's parts, and a reader for at most n bytes."""

    method: str
    headers: Mapping[str, str] = field(repr=False)  # credentials
    query: Mapping[str, list[str]]
    content_type: str
    content_length: int | None
    read: Callable[[int], bytes]


def _trigger(path: str) -> tuple[EndpointTrigger, Any]:
    """The trigger a call's path names and, for an app's endpoint, the connection it names.

    An app's endpoint is served at ``/hooks/apps/<app>/<connection id>/<path>``: one
    trigger for every connection of the app; the URL chooses the connection.
    """
    trigger_path, connection_id = app_call_target(path)
    trigger = endpoint_get(trigger_path)
    if trigger is None or not trigger.enabled or not trigger.flow.enabled:
        raise _error(404, "not_found")
    connection = None
    if trigger.flow.app_slug:
        connection = api.app_connection_get(app_slug=trigger.flow.app_slug, pk=connection_id)
        if connection is None:
            raise _error(404, "not_found")
    return trigger, connection


def app_call_target(path: str) -> tuple[str, int | None]:
    """(trigger path, connection id) of ``apps/<app>/<id>/<path>``; (path, None) otherwise."""
    if not path.startswith(APP_HOOKS):
        return path, None
    parts = path.split("/", 3)
    if len(parts) < 4 or not parts[2].isdigit():
        raise _error(404, "not_found")
    return f"{APP_HOOKS}{parts[1]}/{parts[3]}", int(parts[2])


def app_trigger_path(app_slug: str, path: str) -> str:
    """Where an app's endpoint ``path`` is stored (its URL adds the connection id)."""
    return f"{APP_HOOKS}{app_slug}/{path}"


def _body(trigger: EndpointTrigger, call: IncomingCall) -> bytes:
    limit = trigger.max_body_kb * 1024
    if call.content_length is not None and call.content_length > limit:
        raise _error(413, "body_too_large", limit_kb=trigger.max_body_kb)
    body = call.read(limit + 1)
    if len(body) > limit:
        raise _error(413, "body_too_large", limit_kb=trigger.max_body_kb)
    return body


def _authenticate(trigger: EndpointTrigger, request: IncomingRequest) -> Caller:
    mode = ENDPOINT_AUTH[trigger.auth]
    try:
        return mode().authenticate(request, config=trigger.auth_config, secret=trigger.auth_secret)
    except Unauthenticated as exc:
        raise _error(401, "unauthorized", {"WWW-Authenticate": exc.challenge}) from None
    except Forbidden as exc:
        raise _error(403, "insufficient_scope", {"WWW-Authenticate": exc.challenge}) from None


def _single_values(fields: Mapping[str, list[str]]) -> dict[str, str | list[str]]:
    """Form or query fields as the flow sees them: a value, or a list when repeated."""
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def _parsed_body(body: bytes, content_type: str) -> Any:
    """The body as the flow sees it: JSON data, form fields, or text."""
    if not body:
        return None
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = "utf-8"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        if media_type == "application/json" or media_type.endswith("+json"):
            return jsonsafe.loads(body.decode(charset))
        if media_type == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(charset), keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
            return _single_values(fields)
        if media_type.startswith("text/") or media_type in TEXT_TYPES or media_type.endswith("+xml"):
            return body.decode(charset)
    except json.JSONDecodeError as exc:
        raise _error(400, "malformed_json", detail=f"{exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except jsonsafe.JsonRefused as exc:
        raise _error(400, "malformed_json", detail=f"{exc}.") from None
    except (UnicodeDecodeError, LookupError):
        raise _error(400, "malformed_body", detail=f"The body is not valid {charset} text.") from None
    except ValueError as exc:
        raise _error(400, "malformed_body", detail=f"{str(exc)[:200]}.") from None
    raise _error(
        415,
        "unsupported_media_type",
        detail="Send application/json, application/x-www-form-urlencoded or text.",
    )


def _flow_input(trigger: EndpointTrigger, call: IncomingCall, body: Any, caller: Caller) -> dict[str, Any]:
    return {
        "method": call.method,
        "path": trigger.path,
        "query": _single_values(call.query),
        "headers": {name: call.headers[name] for name in trigger.header_list() if name in call.headers},
        "body": body,
        "caller": caller.as_input(),
    }


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(part) for part in parts).encode()).hexdigest()


def _caller_digest(trigger: EndpointTrigger, caller: Caller) -> str:
    """What a run stores about who started it: never a credential, only this digest."""
    return _digest("caller", trigger.pk, caller.mode, caller.identity)


def _status_token(run: FlowRun) -> str:
    # Derived, not stored: a replayed call's answer carries the same URL as the first.
    return salted_hmac("flowgate.endpoint-run-status", str(run.pk)).hexdigest()


def status_url(trigger: EndpointTrigger, run: FlowRun, caller: Caller) -> str:
    path = trigger.path
    if run.connection_id:
        app_slug, rest = path.removeprefix(APP_HOOKS).split("/", 1)
        path = f"{APP_HOOKS}{app_slug}/{run.connection_id}/{rest}"
    url = f"{settings.BASE_URL}/hooks/{path}/runs/{run.pk}/"
    return url if caller.identity else f"{url}?token={_status_token(run)}"


def _idempotency_key(trigger: EndpointTrigger, caller: Caller, headers: Mapping[str, str]) -> str:
    """A digest naming this call for idempotency, scoped to this trigger and caller ('' when none).

    A signed delivery is named by what its signature covers, before any Idempotency-Key:
    that header is not signed, so a replay could otherwise pass as new with a fresh one.
    """
    if caller.replay_key:
        return _digest("endpoint-delivery", trigger.pk, caller.mode, caller.replay_key)
    presented = headers.get("Idempotency-Key", "")
    if not presented:
        return ""
    if len(presented) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise _error(400, "bad_idempotency_key", detail=f"At most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.")
    return _digest("endpoint", trigger.pk, caller.mode, caller.subject, presented)


def _accepted(trigger: EndpointTrigger, run: FlowRun, caller: Caller) -> Answer:
    url = status_url(trigger, run, caller)
    return Answer(202, {"run_id": run.pk, "status": run.status, "status_url": url}, {"Location": url})


def _flow_answer(trigger: EndpointTrigger, run: FlowRun) -> Answer:
    """What a sync caller gets from a run that has answered or ended."""
    if run.response is not None:
        response = run.response
        headers = {str(name): str(value) for name, value in (response.get("headers") or {}).items()}
        return Answer(int(response.get("status", 200)), response.get("body"), headers)
    if run.status == FlowRun.Status.SUCCEEDED:
        return Answer(200, {"run_id": run.pk, "status": run.status, "output": run.output})
    return Answer(502, {"error": "flow_failed", "run_id": run.pk, "status": run.status})


@endpoint_timed
def endpoint_call(*, path: str, call: IncomingCall) -> Answer:
    """Authenticate a call to ``/hooks/<path>``, start the flow, and answer."""
    try:
        trigger, connection = _trigger(path)
        allowed = trigger.method_list()
        if call.method not in allowed:
            raise _error(405, "method_not_allowed", {"Allow": ", ".join(allowed)})
        raw = _body(trigger, call)
        request = IncomingRequest(method=call.method, path=path, headers=call.headers, query=call.query, body=raw)
        caller = _authenticate(trigger, request)
        data = _flow_input(trigger, call, _parsed_body(raw, call.content_type), caller)
        key = _idempotency_key(trigger, caller, call.headers)
        start = {
            "input": data,
            "trigger": "endpoint",
            "trigger_detail": f"/hooks/{trigger.path}",
            "endpoint": trigger,
            "caller": _caller_digest(trigger, caller),
            "connection": connection,
            "here": trigger.response == EndpointTrigger.Response.SYNC,  # its caller waits in this process
        }
        replayed = False
        if key:
            run, started = flow_run_start_once(flow=trigger.flow, idempotency_key=key, **start)
            replayed = not started
        else:
            run = flow_run_start(flow=trigger.flow, **start)
    except Refused as refused:
        return refused.answer
    if trigger.response == EndpointTrigger.Response.ASYNC:
        answer = _accepted(trigger, run, caller)
    else:
        finished = flow_run_wait(run=run, timeout=trigger.sync_timeout_seconds, for_response=True)
        if finished is None:
            url = status_url(trigger, run, caller)
            answer = Answer(504, {"error": "timeout", "run_id": run.pk, "status_url": url}, {"Location": url})
        else:
            answer = _flow_answer(trigger, finished)
    if replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


def endpoint_run_status(*, path: str, run_id: int, call: IncomingCall) -> Answer:
    """The status of a run the trigger started, for the caller who started it."""
    try:
        trigger, connection = _trigger(path)
        request = IncomingRequest(method=call.method, path=path, headers=call.headers, query=call.query, body=b"")
        caller = _authenticate(trigger, request)
    except Refused as refused:
        return refused.answer
    run = FlowRun.objects.filter(
        pk=run_id, endpoint=trigger, caller=_caller_digest(trigger, caller), connection=connection
    ).first()
    if run is not None and not caller.identity:
        presented = (call.query.get("token") or [""])[0]
        run = run if hmac.compare_digest(presented.encode(), _status_token(run).encode()) else None
    if run is None:
        return Answer(404, {"error": "not_found"})
    body: dict[str, Any] = {
        "run_id": run.pk,
        "status": run.status,
        "queued_at": run.queued_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if run.response is not None:
        body["response"] = run.response
    if run.status == FlowRun.Status.SUCCEEDED:
        body["output"] = run.output
    return Answer(200, body)
