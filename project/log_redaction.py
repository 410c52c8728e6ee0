"""A last line of defence for log output.

Flowgate never formats a secret value into a log message on purpose; this filter masks
the shapes that third-party code is known to log (authorization headers, token fields in
form or JSON bodies, credentials in URLs) in case one slips through.
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


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        return True
