"""The child side of a script step. Runs as ``python -I -S -B script_runner.py MEMORY CPU WORKER``.

Standard library only, no settings, no keys, an empty environment. The process the worker
starts is a launcher: it contains the script, starts it in a forked child and ends every
process the script started before it exits itself.

Containment, by what the kernel allows:

* **PID namespace** (root, or any user where unprivileged user namespaces are enabled): the
  launcher unshares a new PID and network namespace (and a user namespace when not root), so
  its forked child is PID 1 of a namespace with no network. When PID 1 exits or is killed, the
  kernel kills every process in the namespace, daemons that called ``setsid`` included, and
  the launcher's wait for PID 1 returns only once they are all gone.
* **Child subreaper** (when ``unshare`` fails: not root and no user namespaces): orphaned
  grandchildren re-parent to the launcher instead of init, so they stay its descendants. There
  is no network isolation on this path.

On both paths the launcher, when its child exits or the worker sends SIGTERM, kills every
descendant it finds in /proc and reaps them until it has no children left, then exits with its
child's status (128 + the signal when it was killed). The child dies with the launcher
(``PR_SET_PDEATHSIG``) and the launcher with the worker. ``--without-namespaces`` skips
``unshare`` so the subreaper path can be tested on a machine where namespaces work.

The child gives up root (when started as root), sets its limits (address space, CPU time, open
files, file size, processes, no core dumps, no new privileges, not dumpable), then runs the
user's code as the body of a function ``(input, steps, secrets)`` and writes its return value
as JSON.

Protocol, one JSON object per line on the child's stdin and stdout (inherited through the
fork; the launcher lets go of its copies): the parent sends the job; the child may ask for
secrets (``{"call": "get_password", "args": ["crm"]}``) and reads the answer; it ends with
``{"done": true, "result": ...}`` or ``{"done": false, "error": ...}``. What the script prints
is captured and returned as ``logs``.
"""

import base64  # noqa: F401  (pre-imported for scripts: after giving up root, /root is unreadable)
import collections  # noqa: F401
import ctypes
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
import resource
import signal
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
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
LIBC = ctypes.CDLL(None, use_errno=True)
# The launcher waits for these instead of handling them, so neither can interrupt its clean-up.
STOP_SIGNALS = {signal.SIGCHLD, signal.SIGTERM}


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

    def get_access_token(self, name):
        return self._call("get_access_token", name)

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


def launch(memory_bytes: int, cpu_seconds: int, worker_pid: int, *, namespaces: bool = True) -> None:
    """The launcher: contain, fork the script's process, wait for it or for SIGTERM, end everything."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != worker_pid:  # the worker died before the line above could take effect
        os._exit(1)
    if namespaces:
        flags = CLONE_NEWPID | CLONE_NEWNET | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
        LIBC.unshare(flags)  # when it fails, the subreaper below is what contains the script
    LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        code = 1
        try:
            confine(memory_bytes, cpu_seconds)
            run_script()
            code = 0
        finally:  # never return into the launcher's code
            os._exit(code)
    # Only the child may hold the worker's pipes, so the worker sees end-of-file when it is gone.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    status = None
    while status is None and signal.sigwait(STOP_SIGNALS) == signal.SIGCHLD:
        reaped, child_status = os.waitpid(child, os.WNOHANG)
        status = child_status if reaped else None
    code = os.waitstatus_to_exitcode(end_descendants(child, status))
    os._exit(code if code >= 0 else 128 - code)


def end_descendants(child: int, status: int | None) -> int:
    """Kills and reaps every process below the launcher; returns the wait status of ``child``."""
    while True:
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            reaped, reaped_status = os.waitpid(-1, 0)
        except ChildProcessError:
            # No children left, so nothing below either: orphans re-parent to the launcher (a
            # subreaper) before their parent can be reaped, and a namespace's init is reaped last.
            return status
        if reaped == child:
            status = reaped_status


def descendants(ancestor: int) -> list[int]:
    """The processes below ``ancestor``, from each process's parent in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rpartition(")")[2].split()[1])  # the name may hold ") "
            except (OSError, ValueError, IndexError):  # gone meanwhile
                continue
            children.setdefault(parent, []).append(int(entry))
    found, pending = [], [ancestor]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def confine(memory_bytes: int, cpu_seconds: int) -> None:
    """In the script's process, before anything of the job is read."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # As PID 1 of its namespace the script never gets the soft limit's SIGXCPU (the kernel spares
    # an init the signals it has no handler for); the hard limit's SIGKILL a second later ends it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (32, 32))


def run_script() -> None:
    channel_in = sys.stdin
    channel_out = os.fdopen(os.dup(1), "w")
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
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
    memory, cpu, worker = (int(argument) for argument in sys.argv[1:4])
    launch(memory, cpu, worker, namespaces="--without-namespaces" not in sys.argv[4:])
