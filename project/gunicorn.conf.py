"""gunicorn's settings for Flowgate (``gunicorn -c project/gunicorn.conf.py project.wsgi``).

Threads, not only processes: a synchronous endpoint trigger holds its request while the
flow runs (up to its timeout), and a waiting thread costs little, where a process per
waiting caller would run out fast. A process per core (WEB_CONCURRENCY, 2 by default, for
2 cores): the web process runs sync endpoints' flows itself (``flows_app.local_runs``),
and one Python process uses one core at a time. README, "Process shape", has the figures.
"""

import os

from gunicorn.glogging import Logger

from project.log_redaction import RedactingFilter

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("FLOWGATE_WEB_THREADS", "8"))
timeout = 330  # longer than the longest synchronous endpoint timeout (300 s)
keepalive = 5
# Body limits are the endpoint triggers' own (413 with the limit in the answer).
limit_request_line = 8190


_REDACTING_FILTER = RedactingFilter()  # one instance: a configuration reload adds it once


class RedactingLogger(Logger):
    """gunicorn's logger with the product's log redaction on its access and error lines:
    a request line keeps its path and parameter names, never a query value (keys that
    callers send, OAuth2 codes), whatever handler or file the lines go to."""

    def setup(self, cfg):
        super().setup(cfg)
        self.access_log.addFilter(_REDACTING_FILTER)
        self.error_log.addFilter(_REDACTING_FILTER)


logger_class = RedactingLogger
