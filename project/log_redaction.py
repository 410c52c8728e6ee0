"""A last line of defence for log output.

Flowgate never formats a secret value into a log message on purpose; this filter masks
the shapes that third-party code is known to log (authorization headers, token fields in
form or JSON bodies, credentials and query strings in URLs) in case one slips through.
The web servers' request logs go through it too: Django's (``LOGGING`` in settings) and
gunicorn's (``project/gunicorn.conf.py``).
"""

import logging
import re
import traceback

_MASK = "[redacted]"
_PATTERNS = (
    # Authorization: Bearer abc / Basic abc (header dumps, repr of header dicts)
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1 {_MASK}"),
    # token=..., "client_secret": "...", password=... in forms, JSON and reprs
    (
        re.compile(
            r"(?i)([\"']?\b(?:access_token|refresh_token|id_token|client_secret|password|passwd"
            r"|code_verifier|api_key|apikey|secret|assertion)\b[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,;}]+"
        ),
        rf"\1{_MASK}",
    ),
    # scheme://user:password@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\1{_MASK}@"),
)
# A query string after a URL path (a request line, a URL, a Referer). Every value in it
# is masked whatever its name: endpoint callers name their keys as they like, and OAuth2
# redirects carry `code` and `state`. The names stay, to tell requests apart.
_QUERY_STRING = re.compile(r"(?<=[\w/.~%-])\?[^\s\"'<>#]+")


def _query_parameter_redacted(parameter: str) -> str:
    name, equals, value = parameter.partition("=")
    if not equals:
        return _MASK if name else ""
    return f"{name}={_MASK}" if value else parameter


def _query_string_redacted(match: re.Match) -> str:
    parameters = match.group(0)[1:].split("&")
    return "?" + "&".join(_query_parameter_redacted(parameter) for parameter in parameters)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _QUERY_STRING.sub(_query_string_redacted, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        return True
