"""The child side of a script step. Runs as ``python -I -S -B script_runner.py``.

Standard library only, no settings, no keys, an empty environment. It imports what
scripts may use, gives up root (when started as root) and the network (when the parent
could create a namespace), then runs the user's code as the body of a function
``(input, steps, secrets)`` and writes its return value as JSON.

Protocol, one JSON object per line: the parent sends the job on stdin; the child may
ask for secrets (``{"call": "get_password", "args": ["crm"]}``) and reads the answer;
it ends with ``{"done": true, "result": ...}`` or ``{"done": false, "error": ...}``. What
the script prints is captured and returned as ``logs``.
"""

import base64  # noqa: F401  (pre-imported for scripts: after giving up root, /root is unreadable)
import collections  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import encodings.ascii  # noqa: F401
import encodings.idna  # noqa: F401
import encodings.latin_1  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import hmac  # noqa: F401
import io
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import socket  # noqa: F401  (imports fine; the network namespace leaves nothing to reach)
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import textwrap
import time  # noqa: F401
import traceback
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

NOBODY = 65534
MAX_LOGS = 64 * 1024


class SecretUnavailable(Exception):
    pass


class Secrets:
    """The vault, for the secrets this step names (asked of the parent, one call at a time)."""

    def __init__(self, channel_in, channel_out):
        self._in, self._out = channel_in, channel_out

    def _call(self, name, *args):
        self._out.write(json.dumps({"call": name, "args": list(args)}) + "\n")
        self._out.flush()
        answer = json.loads(self._in.readline())
        if "error" in answer:
            raise SecretUnavailable(answer["error"])
        return answer["result"]

    def get_password(self, name):
        return self._call("get_password", name)

    def get_field(self, name, field):
        return self._call("get_field", name, field)

    def basic_auth(self, name):
        return tuple(self._call("basic_auth", name))

    def sign_jws(self, name, claims, expires_in=300):
        return self._call("sign_jws", name, claims, expires_in)

    def verify_jws(self, name, token, audience=None, issuer=None, scopes=()):
        return self._call("verify_jws", name, token, audience, issuer, list(scopes))

    def encrypt_jwe(self, name, plaintext):
        return self._call("encrypt_jwe", name, plaintext)

    def decrypt_jwe(self, name, token):
        return self._call("decrypt_jwe", name, token)


def script_source(code: str) -> str:
    """The step's code as the body of the function this process calls (also used to check it on save)."""
    return "def __flowgate_script__(input, steps, secrets):\n" + textwrap.indent(code or "pass", "    ") + "\n"


def drop_root() -> None:
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def main() -> None:
    channel_in = sys.stdin
    channel_out = os.fdopen(os.dup(1), "w")
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
    drop_root()
    job = json.loads(channel_in.readline())
    try:
        source = script_source(job["code"])
        namespace = {"__name__": "__flowgate_script__"}
        exec(compile(source, "<script>", "exec"), namespace)  # noqa: S102  (this process exists to run it)
        result = namespace["__flowgate_script__"](job["input"], job["steps"], Secrets(channel_in, channel_out))
        message = {"done": True, "result": result}
        json.dumps(message, allow_nan=False)  # what cannot be stored fails here, as the script's error
    except BaseException as exc:  # the script's own errors, reported to the parent
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<script>"]
        shown = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
        message = {"done": False, "error": shown.rstrip()}
    message["logs"] = captured.getvalue()[-MAX_LOGS:]
    try:
        channel_out.write(json.dumps(message) + "\n")
    except (TypeError, ValueError):
        channel_out.write(json.dumps({"done": False, "error": "The script returned a value that is not JSON.", "logs": message["logs"]}) + "\n")
    channel_out.flush()


if __name__ == "__main__":
    main()
