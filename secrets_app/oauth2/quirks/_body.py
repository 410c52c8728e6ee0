"""Reading and rewriting a token response body, for quirks that fix one before oauthlib."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import requests

from project import jsonsafe


def parsed_body(response: requests.Response) -> dict[str, Any]:
    """The body as a dict, whether JSON or form-encoded (``{}`` when neither)."""
    try:
        body = jsonsafe.loads(response.content)
    except ValueError:
        body = dict(parse_qsl(response.text))
    return body if isinstance(body, dict) else {}


def replace_body(response: requests.Response, body: dict[str, Any]) -> requests.Response:
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


def comma_scope_to_spaces(body: dict[str, Any]) -> None:
    if isinstance(body.get("scope"), str):
        body["scope"] = " ".join(part for part in body["scope"].replace(",", " ").split() if part)
