"""Parsing JSON that comes from outside (request bodies, API answers, tokens, forms).

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (and reads ``1e400`` as
infinity), which RFC 8259 does not allow and PostgreSQL's JSON type refuses when the value
is stored, so such a document would fail later, far from its source, as a 500. And the
parser recurses once per level, so depth is bounded here where the reason can be given.
``loads`` refuses both with ``JsonRefused``: a ``ValueError`` (callers that already treat
a ``ValueError`` as "not JSON" keep doing so) whose message is a short reason to show.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Arrays and objects inside one another; deeper documents are refused.
MAX_DEPTH = 64


class JsonRefused(ValueError):
    """Valid to Python's json module, refused here; ``str()`` is the reason."""


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise JsonRefused(f"The number {text[:20]} is out of range")
    return number


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so that checking a document cannot itself exhaust the stack.
    pending = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > limit:
            return True
        children = container.values() if isinstance(container, dict) else container
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document in ``data`` (bytes: UTF-8, -16 or -32, as RFC 8259 allows).

    Raises ``json.JSONDecodeError`` for text that is not JSON, ``JsonRefused`` for
    non-finite numbers and for more than ``max_depth`` levels of nesting.
    """
    too_deep = JsonRefused(f"Nested too deeply (more than {max_depth} levels)")
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise too_deep from None
    if isinstance(value, (dict, list)) and _depth_exceeds(value, max_depth):
        raise too_deep
    return value
