"""http_request: call an API, through the outbound guard, with any authenticating secret.

Output: ``{"status": 200, "headers": {...}, "body": <parsed JSON, or text>}``; a JSON
answer that cannot be stored as JSON (``NaN``, ``Infinity``, nested too deeply) is kept
as its text. A status
outside the success list fails the step (with the response kept in the history); 5xx
and 429 (honouring ``Retry-After``), timeouts and connection errors may be retried.
A paginating step (``flows_app.steps.pagination``) sends each page as such a request
and outputs ``{"status", "headers", "items", "pages", "truncated"}`` instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from django.core.exceptions import ValidationError

from flows_app.steps import pagination
from flows_app.steps.base import StepError, StepKind, StepResult
from project import jsonsafe, outbound
from project.declarative import Field, is_template
from secrets_app.exceptions import TokenEndpointUnavailable, VaultError
from secrets_app.oauth2.client import retry_after_seconds

METHODS = tuple((method, method) for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"))
BODY_TYPES = (("none", "No body"), ("json", "JSON"), ("form", "Form (urlencoded)"), ("raw", "Raw text"))
_STATUS_ITEM = re.compile(r"^([1-5])xx$|^([1-5][0-9]{2})$")


def parse_statuses(text: str) -> list[str]:
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items or not all(_STATUS_ITEM.match(item) for item in items):
        raise ValueError("Use status codes and classes, e.g. '2xx, 404'.")
    return items


def status_matches(status: int, items: list[str]) -> bool:
    return any(item == str(status) or (item.endswith("xx") and str(status)[0] == item[0]) for item in items)


class HttpRequest(StepKind):
    slug = "http_request"
    label = "HTTP request"
    description = "Calls an HTTP API; a secret adds its authentication (OAuth2 tokens stay fresh)."
    secret_kinds = ("api_token", "basic_auth", "http_headers", "oauth2")
    fields = (
        Field("method", "Method", type="choice", choices=METHODS, default="GET"),
        Field("url", "URL", template=True, help_text="http or https; may be a template."),
        Field("query", "Query parameters", type="mapping", separator="=", required=False, template=True),
        Field("headers", "Headers", type="mapping", required=False, template=True, help_text="One 'Name: value' per line."),
        Field("body_type", "Body type", type="choice", choices=BODY_TYPES, default="none"),
        Field("body", "Body", type="json", required=False, template=True, help_text="JSON for json, an object for form, a string for raw."),
        Field("success_statuses", "Success statuses", default="2xx", help_text="e.g. '2xx, 404'."),
        Field("follow_redirects", "Follow redirects", type="boolean", default=True, help_text="At most 5, each checked again."),
        Field("max_response_kb", "Response size limit (KB)", type="integer", default=5120, min_value=1, max_value=51200),
        *pagination.FIELDS,
    )

    @classmethod
    def validate(cls, config, *, step_keys):
        errors = {}
        url = config["url"]
        if not is_template(url) and not url.lower().startswith(("http://", "https://")):
            errors["url"] = "Enter an http or https URL (or a template)."
        try:
            parse_statuses(config["success_statuses"])
        except ValueError as exc:
            errors["success_statuses"] = str(exc)
        if config["body_type"] == "form" and not isinstance(config.get("body", {}), dict):
            errors["body"] = "A form body is an object of names and values."
        if config["body_type"] == "raw" and not isinstance(config.get("body", ""), str):
            errors["body"] = "A raw body is a string."
        if config["body_type"] == "none" and config.get("body") not in (None, ""):
            errors["body_type"] = "Choose a body type for the body."
        errors.update(pagination.pagination_errors(config))
        if errors:
            raise ValidationError(errors)

    def execute(self, context):
        config = context.config
        url = config["url"]
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise StepError("The URL must start with http:// or https://.")
        body_type, body = config["body_type"], config.get("body")
        payload = {"json": body} if body_type == "json" else {"data": body} if body_type in ("form", "raw") else {}
        if body_type == "raw" and body is not None and not isinstance(body, str):
            raise StepError("A raw body must render to text.")
        paging = pagination.Pagination.from_config(config)
        statuses = parse_statuses(config["success_statuses"])
        headers = {name: str(value) for name, value in config.get("headers", {}).items()}
        query = {name: str(value) for name, value in config.get("query", {}).items()} or None
        # One deadline for the whole step: every page spends from it.
        expires_at = time.monotonic() + context.timeout
        pages_too = ", all pages together" if paging else ""
        deadline = f"{context.timeout:g} s deadline (connect, headers and body{pages_too})"
        with _step_errors(url, deadline):
            auth = context.vault.auth_for(context.secret_name) if context.secret_name else None

        max_response_bytes = config["max_response_kb"] * 1024
        # One guarded session for every page: the size cap holds per page, connections are reused.
        http = outbound.session(max_response_bytes=max_response_bytes, total_timeout=context.timeout)

        def send(page_url: str, params: pagination.Params) -> tuple[requests.Response, dict]:
            limits = outbound.Limits(
                timeout=expires_at - time.monotonic(),
                max_response_bytes=max_response_bytes,
                max_redirects=outbound.DEFAULT_MAX_REDIRECTS if config["follow_redirects"] else 0,
            )
            with _step_errors(page_url, deadline):
                response = outbound.request(
                    config["method"],
                    page_url,
                    auth=auth,
                    headers=headers,
                    params=params,
                    limits=limits,
                    http=http,
                    **payload,
                )
            output = {"status": response.status_code, "headers": dict(response.headers), "body": _body(response)}
            if not status_matches(response.status_code, statuses):
                transient = response.status_code == 429 or response.status_code >= 500
                raise StepError(
                    f"HTTP {response.status_code} from {page_url}",
                    retryable=transient,
                    retry_after=retry_after_seconds(response) if transient else None,
                    output=output,
                )
            return response, output

        with http:
            if paging is None:
                return StepResult(output=send(url, query)[1])
            return StepResult(output=paging.collect(url, query, send))


@contextmanager
def _step_errors(url: str, deadline: str) -> Iterator[None]:
    """Outbound and vault failures as step errors; those that may pass are retryable.

    ``deadline`` names the step's whole time limit: a page's own limit is only what is left of it.
    """
    try:
        yield
    except (outbound.OutboundBlocked, outbound.OutboundTooLarge) as exc:
        raise StepError(str(exc)) from None
    except outbound.OutboundTimeout:
        raise StepError(f"The request did not finish within its {deadline}. ({url})", retryable=True) from None
    except (outbound.OutboundUnreachable, requests.Timeout, requests.ConnectionError) as exc:
        raise StepError(f"{type(exc).__name__}: the request to {url} did not complete.", retryable=True) from None
    except TokenEndpointUnavailable as exc:
        raise StepError(str(exc), retryable=True) from None
    except (outbound.OutboundError, VaultError) as exc:
        raise StepError(str(exc)) from None
    except requests.RequestException as exc:
        raise StepError(f"The request to {url} failed: {type(exc).__name__}.") from None


def _body(response: requests.Response):
    if not response.content:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return jsonsafe.loads(response.content)
        except ValueError:
            pass
    return response.text
