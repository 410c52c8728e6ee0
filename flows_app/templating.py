"""Templates in step configuration: Jinja2's immutable sandbox, compiled and checked on save.

    {{ trigger.body.id }}   {{ steps.fetch.body.data[0].id }}   {{ secrets.get_password('crm') }}

Only strings in a step's configuration are templates. Data (a webhook body, an API
answer) is passed in as values and never rendered, so a caller cannot inject template
code. A string that is exactly one ``{{ expression }}`` yields the expression's value
with its type (a dict stays a dict, a number a number); anything else renders to text.

``secrets`` may appear only as ``secrets.get_password('name')``,
``secrets.get_field('name', 'field')`` or ``secrets.get_access_token('name')`` (an OAuth2
connection's raw token, for a scheme other than Bearer) with the name written out: the names are the
flow's bindings, found on save (``secret_names``), and the only secrets a run may reach.

Beyond Jinja's sandbox (no underscore attributes, no unsafe callables, a capped
``range``): repetition and powers that would build huge values are refused, rendered
text is capped, and rendering has a wall-clock limit in every thread.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from project import jsonsafe
from project.declarative import is_template

MAX_RESULT_LENGTH = 1_000_000
MAX_EXPONENT = 1000
RENDER_SECONDS = 5
_EXPRESSION = re.compile(r"^\s*\{\{(?P<expression>(?:(?!\}\}|\{\{|\{%).)*)\}\}\s*$", re.S)


class TemplateFailed(Exception):
    """A template that does not compile, or fails while rendering. ``str()`` is the reason."""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _from_json(text: str) -> Any:
    return jsonsafe.loads(text)


def _from_form(text: str) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` text as a mapping (a repeated name: its last value)."""
    return dict(parse_qsl(text or "", keep_blank_values=True, max_num_fields=1000))


def _b64encode(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def _b64decode(value: str) -> str:
    return base64.b64decode(value + "=" * (-len(value) % 4)).decode()


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _datetime_format(value: Any, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    """Format an ISO-8601 string, a Unix timestamp or a datetime."""
    return _to_datetime(value).strftime(fmt)


def _now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


_deadline = threading.local()


def _check_deadline() -> None:
    """Raise once this thread's rendering is past its time (see ``_time_limit``)."""
    until = getattr(_deadline, "until", None)
    if until is not None and time.monotonic() > until:
        raise TemplateFailed(f"rendering took longer than {_deadline.seconds:g} s")


class _TimedRange:
    """The sandbox's capped ``range``, looking at the clock while a loop walks it (a loop
    body may touch nothing else the sandbox sees)."""

    def __init__(self, *args):
        self._range = safe_range(*args)

    def __iter__(self):
        for index, item in enumerate(self._range):
            if index % 1000 == 0:
                _check_deadline()
            yield item

    def __len__(self):
        return len(self._range)

    def __getitem__(self, index):
        return self._range[index]


class FlowgateSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def call(self, __context, __obj, *args, **kwargs):
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        _check_deadline()
        # JSON data first: {{ body.items }} is the "items" key, not dict.items.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"An exponent above {MAX_EXPONENT} is not allowed in templates.")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    if len(sequence) * count > MAX_RESULT_LENGTH:
                        raise SecurityError("That repetition would build a value too large for a template.")
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            if len(left) + len(right) > MAX_RESULT_LENGTH:
                raise SecurityError("That value is too large for a template.")
        return super().call_binop(context, operator, left, right)


def _environment() -> FlowgateSandbox:
    environment = FlowgateSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    for name in ("lipsum", "cycler", "joiner"):
        environment.globals.pop(name, None)
    environment.globals["range"] = _TimedRange
    environment.globals["now"] = _now
    environment.filters.update(
        {
            "tojson": _json,
            "fromjson": _from_json,
            "fromform": _from_form,
            "b64encode": _b64encode,
            "b64decode": _b64decode,
            "datetime": _datetime_format,
        }
    )
    return environment


ENVIRONMENT = _environment()


@functools.lru_cache(maxsize=4096)
def _compiled(text: str):
    """A compiled expression (typed result) or template (text), cached by source."""
    match = _EXPRESSION.match(text)
    try:
        if match:
            return "expression", ENVIRONMENT.compile_expression(match.group("expression"), undefined_to_none=False)
        return "template", ENVIRONMENT.from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"line {exc.lineno}: {exc.message}") from None


SECRET_READERS = ("get_password", "get_field", "get_access_token")


@functools.lru_cache(maxsize=4096)
def secret_names(text: str) -> frozenset[str]:
    """The secrets ``text`` reads. TemplateFailed where a name is computed at run time,
    or ``secrets`` is used any other way (passed on, assigned, subscripted, filtered)."""
    if not is_template(text) or "secrets" not in text:
        return frozenset()
    _compiled(text)  # syntax errors first, with their line
    tree = ENVIRONMENT.parse(text)
    names, reads = set(), set()
    for call in tree.find_all(nodes.Call):
        target = call.node
        if not (isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name) and target.node.name == "secrets"):
            continue
        if target.attr not in SECRET_READERS:
            raise TemplateFailed(f"secrets.{target.attr} does not exist; use secrets.get_password('name') or secrets.get_field('name', 'field')")
        first = call.args[0] if call.args else None
        if not (isinstance(first, nodes.Const) and isinstance(first.value, str)) or call.dyn_args or call.kwargs:
            raise TemplateFailed(
                f"secrets.{target.attr} needs the secret's name written out, e.g. secrets.{target.attr}('crm'"
                f"{', ' + repr('field') if target.attr == 'get_field' else ''}): a flow's secrets are fixed when it is "
                "saved, not computed at run time"
            )
        names.add(first.value)
        reads.add(id(target.node))
    if any(name.name == "secrets" and id(name) not in reads for name in tree.find_all(nodes.Name)):
        raise TemplateFailed("'secrets' can only be used as secrets.get_password('name') or secrets.get_field('name', 'field')")
    return frozenset(names)


@functools.lru_cache(maxsize=4096)
def step_names(text: str) -> frozenset[str]:
    """The steps whose results ``text`` (already checked) reads as ``steps.name`` or
    ``steps['name']``; not method calls such as ``steps.get('name')``, nor a ``steps`` the
    template defines itself. A name computed at run time cannot be known here."""
    if not is_template(text) or "steps" not in text:
        return frozenset()
    tree = ENVIRONMENT.parse(text)
    if any(name.name == "steps" and name.ctx != "load" for name in tree.find_all(nodes.Name)):
        return frozenset()
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    names = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not (isinstance(node.node, nodes.Name) and node.node.name == "steps") or id(node) in called:
            continue
        if isinstance(node, nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names.add(node.arg.value)
    return frozenset(names)


def check(text: str) -> None:
    """Raise TemplateFailed when ``text`` does not compile or reads secrets by computed names."""
    if is_template(text):
        _compiled(text)
        secret_names(text)


def check_all(value: Any) -> list[tuple[str, str]]:
    """(path, reason) for every string in ``value`` that does not compile."""
    problems = []
    for path, text in _strings(value):
        try:
            check(text)
        except TemplateFailed as exc:
            problems.append((path, str(exc)))
    return problems


def secret_names_in(value: Any) -> set[str]:
    """``secret_names`` of every string inside ``value`` (already checked)."""
    return {name for _path, text in _strings(value) for name in secret_names(text)}


def step_names_in(value: Any) -> set[str]:
    """``step_names`` of every string inside ``value`` (already checked)."""
    return {name for _path, text in _strings(value) for name in step_names(text)}


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Rendering stops after ``seconds``. In every thread the sandbox looks at the clock on
    each call, attribute and ``range`` loop; in a main thread (a prefork worker's) SIGALRM
    also interrupts whatever the template is doing."""
    _deadline.until, _deadline.seconds = time.monotonic() + seconds, seconds
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:

        def expired(signum, frame):
            raise TemplateFailed(f"rendering took longer than {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _deadline.until = None
        if in_main_thread:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def render(text: str, context: dict[str, Any]) -> Any:
    """Render one string: the typed value of a lone expression, or text."""
    if not is_template(text):
        return text
    mode, compiled = _compiled(text)
    try:
        with _time_limit(RENDER_SECONDS):
            result = compiled(**context) if mode == "expression" else compiled.render(**context)
        if isinstance(result, Undefined):
            result._fail_with_undefined_error()
    except TemplateFailed:
        raise
    except SecurityError as exc:
        raise TemplateFailed(f"not allowed: {exc}") from None
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, OverflowError, ZeroDivisionError, AttributeError) as exc:
        raise TemplateFailed(f"{type(exc).__name__}: {exc}") from None
    if isinstance(result, str) and len(result) > MAX_RESULT_LENGTH:
        raise TemplateFailed("the rendered text is larger than 1 MB")
    return result


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside ``value`` (dict keys stay as written)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    return value
