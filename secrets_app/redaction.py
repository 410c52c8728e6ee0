"""Masking secret values that come back where they should not.

A response may echo a token (an API that reflects headers, an error page quoting the
request); a script may print a password. Whatever is stored or shown goes through a
``Redactor`` that knows the values in play and replaces each with ``MASK``.

Values shorter than ``MIN_LENGTH`` are not masked: replacing every "a" or "12" in a
response would destroy it without protecting anything worth protecting.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any

MASK = "[secret]"
MIN_LENGTH = 4


def _encodings(value: str) -> set[str]:
    """The forms a value commonly takes in transit, besides itself."""
    forms = {value}
    encoded = value.encode()
    forms.add(base64.b64encode(encoded).decode())
    forms.add(base64.urlsafe_b64encode(encoded).decode().rstrip("="))
    return forms


class Redactor:
    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        self._pattern: re.Pattern | None = None
        self.add(*values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def add(self, *values: str) -> None:
        before = len(self._values)
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_LENGTH:
                self._values.update(form for form in _encodings(value) if len(form) >= MIN_LENGTH)
        if len(self._values) != before:
            self._pattern = None

    def text(self, text: str) -> str:
        if not self._values or not text:
            return text
        if self._pattern is None:
            # Longest first, so a value that contains another is masked whole.
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(value) for value in alternatives))
        return self._pattern.sub(MASK, text)

    def data(self, value: Any) -> Any:
        """Mask strings anywhere inside JSON-like data (keys included)."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(key) if isinstance(key, str) else key: self.data(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(item) for item in value]
        return value

    def learn(self, raw: Any, redacted: Any) -> None:
        """Add the values that ``redacted`` masks in ``raw`` (the same data, stored before
        and after masking), so that a run taken up again by a new process masks what its
        earlier steps revealed without revealing those secrets again."""
        if isinstance(raw, str) and isinstance(redacted, str):
            if MASK in redacted:
                pieces = redacted.split(MASK)
                masked = re.fullmatch("(.+?)".join(re.escape(piece) for piece in pieces), raw, re.S)
                if masked:
                    self.add(*masked.groups())
        elif isinstance(raw, dict) and isinstance(redacted, dict):
            for key, value in redacted.items():
                if key in raw:
                    self.learn(raw[key], value)
        elif isinstance(raw, list) and isinstance(redacted, list):
            for raw_item, redacted_item in zip(raw, redacted, strict=False):
                self.learn(raw_item, redacted_item)
