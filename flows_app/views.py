"""HTTP views of the flow engine: endpoint triggers and their run status URLs.

Thin: parse the request into an ``IncomingCall``, call one service, turn its ``Answer``
into a response. No session, no CSRF: callers are machines authenticated per request.
"""

from __future__ import annotations

import json

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from flows_app.services.endpoints import Answer, IncomingCall, endpoint_call, endpoint_run_status


def _incoming(request) -> IncomingCall:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = None
    return IncomingCall(
        method=request.method,
        headers=request.headers,
        query={name: request.GET.getlist(name) for name in request.GET},
        content_type=request.META.get("CONTENT_TYPE", ""),
        content_length=length,
        read=request.read,
    )


def _response(answer: Answer) -> HttpResponse:
    if isinstance(answer.body, str):
        content, content_type = answer.body.encode(), "text/plain; charset=utf-8"
    elif answer.body is None and answer.status in (204, 304):
        content, content_type = b"", None
    else:
        content, content_type = json.dumps(answer.body, ensure_ascii=False).encode(), "application/json"
    response = HttpResponse(content, status=answer.status, content_type=content_type)
    for name, value in answer.headers.items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
def hook(request, path: str):
    return _response(endpoint_call(path=path, call=_incoming(request)))


@csrf_exempt
def hook_run_status(request, path: str, run_id: int):
    if request.method != "GET":
        return _response(Answer(405, {"error": "method_not_allowed"}, {"Allow": "GET"}))
    return _response(endpoint_run_status(path=path, run_id=run_id, call=_incoming(request)))
