"""Pagination for http_request steps: which page comes next, and where a page's items are.

Modes (the ``paginate`` field):

- ``link_header``: follow the ``Link: <url>; rel="next"`` header (RFC 8288) as given; it
  carries its own query. A next link must stay on the origin (scheme, host, port) of the
  step's URL: the pages are sent with the step's authentication, and an API must not be
  able to point that request at another host. Such a link fails the step, unsent.
- ``cursor``: read the next cursor at ``cursor_field`` in the body and send it in the
  ``cursor_param`` query parameter; a missing, null or empty cursor ends.
- ``page_number``: send ``page_param`` = ``page_start``, ``page_start + 1``, …; a page
  without items ends.

Every page is one request of the step (``send``): same method, headers, body, secret and
size cap, within the step's one timeout. Collecting stops at ``max_pages`` pages or
``max_items`` items; ``truncated`` says the API may have had more. A failing page fails
the whole step (a transient failure is retryable, and the retry starts over from the
first page): the output is all the pages or none, never a silent gap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from flows_app.steps.base import StepError
from project import outbound
from project.declarative import Field

MODES = (
    ("none", "No pagination"),
    ("link_header", "Link header (rel=next)"),
    ("cursor", "Cursor from the body"),
    ("page_number", "Page number"),
)
FIELDS = (
    Field("paginate", "Pagination", type="choice", choices=MODES, default="none"),
    Field(
        "items",
        "Items path",
        required=False,
        help_text="Where a page's list is in its JSON body, e.g. 'data.items'; empty: the body is the list.",
    ),
    Field("cursor_field", "Cursor path", required=False, help_text="Cursor mode: the next cursor, e.g. 'meta.next'."),
    Field("cursor_param", "Cursor parameter", required=False, help_text="Cursor mode: the query parameter to send it in."),
    Field("page_param", "Page parameter", required=False, help_text="Page-number mode: the query parameter, e.g. 'page'."),
    Field("page_start", "First page number", type="integer", default=1, min_value=0, max_value=1_000_000),
    Field("max_pages", "Page limit", type="integer", default=10, min_value=1, max_value=1000),
    Field("max_items", "Item limit", type="integer", default=10_000, min_value=1, max_value=100_000),
)
_DEFAULTS = {field.name: field.default for field in FIELDS}
# The optional fields each mode reads; set for another mode they would be silently ignored.
_MODE_FIELDS = {
    "none": (),
    "link_header": ("items",),
    "cursor": ("items", "cursor_field", "cursor_param"),
    "page_number": ("items", "page_param"),
}
_REQUIRED = {"cursor": ("cursor_field", "cursor_param"), "page_number": ("page_param",)}
_PATH = re.compile(r"^[^.]+(\.[^.]+)*$")

Params = dict[str, str] | None
#: Sends one page: (url, query) -> (response, the step's output for it); raises StepError.
Send = Callable[[str, Params], tuple[requests.Response, dict[str, Any]]]


def pagination_errors(config: Mapping[str, Any]) -> dict[str, str]:
    """Errors by field for the pagination part of a cleaned http_request configuration."""
    mode = config["paginate"]
    errors = {}
    for name in ("items", "cursor_field", "cursor_param", "page_param"):
        if config.get(name) and name not in _MODE_FIELDS[mode]:
            errors[name] = f"Not used when paginate is {mode!r}."
    for name in _REQUIRED.get(mode, ()):
        if not config.get(name):
            errors[name] = f"{mode!r} pagination needs this."
    for name in ("items", "cursor_field"):
        if config.get(name) and not _PATH.match(config[name]):
            errors[name] = "Use keys separated by single dots, e.g. 'data.items'."
    query = config.get("query")
    for name in ("cursor_param", "page_param"):
        if config.get(name) and isinstance(query, Mapping) and config[name] in query:
            errors[name] = f"The query already sets {config[name]!r}; pagination sets it on each page."
    return errors


def _at(body: Any, path: str) -> Any:
    """The value at a dotted path of keys (None when a key is missing); '' is the body."""
    for key in path.split(".") if path else ():
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


@dataclass(frozen=True)
class Pagination:
    mode: str
    items: str
    cursor_field: str
    cursor_param: str
    page_param: str
    page_start: int
    max_pages: int
    max_items: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Pagination | None:
        """None when the step does not paginate (also for steps saved before pagination)."""
        values = {name: config.get(name, default) for name, default in _DEFAULTS.items()}
        mode = values.pop("paginate")
        if mode == "none":
            return None
        return cls(mode=mode, **{name: "" if value is None else value for name, value in values.items()})

    def collect(self, url: str, query: Params, send: Send) -> dict[str, Any]:
        """Every page's items in order: ``{status, headers, items, pages, truncated}``
        (status and headers of the last page)."""
        items: list[Any] = []
        params = {**(query or {}), self.page_param: str(self.page_start)} if self.mode == "page_number" else query
        page_url, pages = url, 0
        while True:
            try:
                response, output = send(page_url, params)
            except StepError as exc:
                raise StepError(
                    f"Page {pages + 1}: {exc}", retryable=exc.retryable, retry_after=exc.retry_after, output=exc.output
                ) from None
            pages += 1
            page_items = self._items(output["body"], pages)
            room = self.max_items - len(items)
            items.extend(page_items[:room])
            following = self._next(url, query, response, output["body"], page_items, pages)
            truncated = len(page_items) > room or (
                following is not None and (pages >= self.max_pages or len(items) >= self.max_items)
            )
            if following is None or truncated:
                last = {"status": output["status"], "headers": output["headers"]}
                return {**last, "items": items, "pages": pages, "truncated": truncated}
            page_url, params = following

    def _items(self, body: Any, page: int) -> list[Any]:
        found = _at(body, self.items)
        if not isinstance(found, list):
            where = f"at {self.items!r}" if self.items else "as the body"
            raise StepError(f"Page {page}: the answer has no list of items {where}.")
        return found

    def _next(
        self, url: str, query: Params, response: requests.Response, body: Any, page_items: list[Any], page: int
    ) -> tuple[str, Params] | None:
        """The next page's (url, query), or None after the last page."""
        if self.mode == "link_header":
            link = response.links.get("next", {}).get("url")
            if not link:
                return None
            following = urljoin(response.url, link)
            if outbound.origin(following) != outbound.origin(url):
                scheme, host, port = outbound.origin(following)
                raise StepError(
                    f"Page {page}: the next link leads to another origin ({scheme}://{host}:{port}); "
                    "pages are only followed on the origin of the step's URL, so it was not requested."
                )
            return following, None  # the link carries the query it wants
        if self.mode == "cursor":
            cursor = _at(body, self.cursor_field)
            if cursor is None or cursor == "":
                return None
            if isinstance(cursor, bool) or not isinstance(cursor, (str, int)):
                raise StepError(f"Page {page}: the cursor at {self.cursor_field!r} is neither text nor a whole number.")
            return url, {**(query or {}), self.cursor_param: str(cursor)}
        if not page_items:
            return None
        return url, {**(query or {}), self.page_param: str(self.page_start + page)}
