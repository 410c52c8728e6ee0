"""script: Python code in a separate, limited process.

Each run of the step starts a fresh interpreter (``python -I -S -B``: no environment, no
site-packages, no bytecode) with an empty environment, in its own session, with limits
on memory, CPU time, open files, file size and processes, and is killed at the step's
timeout. Where the kernel allows it the child gets a network namespace of its own (no
network at all); started as root it becomes ``nobody`` before running the code. It sees
``input``, ``steps`` and ``secrets`` — and only the secrets the step names, fetched from
the parent one call at a time and registered for redaction.

``FLOWGATE_SCRIPT_STEPS_ENABLED = False`` turns the kind off; saving a script step needs
the ``flows_app.edit_script_steps`` permission.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from flows_app.steps.base import StepError, StepKind, StepResult
from flows_app.steps.script_runner import script_source
from project import jsonsafe
from project.declarative import Field
from secrets_app.exceptions import VaultError

RUNNER = Path(__file__).with_name("script_runner.py")
MAX_MESSAGE_BYTES = 5 * 1024 * 1024
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 38, 4
ALLOWED_CALLS = ("get_password", "get_field", "basic_auth", "sign_jws", "verify_jws", "encrypt_jwe", "decrypt_jwe")


def scripts_enabled() -> bool:
    return getattr(settings, "FLOWGATE_SCRIPT_STEPS_ENABLED", True)


def _limit_child(memory_bytes: int, cpu_seconds: int):
    """preexec_fn: runs in the child between fork and exec."""

    def limit():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (32, 32))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
        libc.unshare(flags)  # best effort: without it the child keeps the network

    return limit


class Script(StepKind):
    slug = "script"
    label = "Script (Python)"
    description = "Runs Python in a separate, limited process; return a JSON value."
    fields = (
        Field("code", "Code", type="code", help_text="The body of a function of input, steps and secrets; 'return' a JSON value."),
        Field("secrets", "Secrets it may use", type="list", required=False, help_text="Names, comma-separated."),
        Field("memory_mb", "Memory limit (MB)", type="integer", default=256, min_value=64, max_value=4096),
    )

    @classmethod
    def validate(cls, config, *, step_keys):
        if not scripts_enabled():
            raise ValidationError({"code": "Script steps are turned off on this installation (FLOWGATE_SCRIPT_STEPS_ENABLED)."})
        try:
            compile(script_source(config["code"]), "<script>", "exec")
        except SyntaxError as exc:
            raise ValidationError({"code": f"Line {(exc.lineno or 2) - 1}: {exc.msg}."}) from None

    @classmethod
    def secret_names(cls, config, secret_name):
        return super().secret_names(config, secret_name) | set(config.get("secrets", []))

    def execute(self, context):
        if not scripts_enabled():
            raise StepError("Script steps are turned off on this installation.")
        config = context.config
        memory = config["memory_mb"] * 1024 * 1024
        job = {"code": config["code"], "input": context.data.get("trigger"), "steps": context.data.get("steps", {})}
        with tempfile.TemporaryDirectory(prefix="flowgate-script-") as workdir:
            os.chmod(workdir, 0o777)
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(RUNNER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env={},
                preexec_fn=_limit_child(memory, int(context.timeout) + 1),
            )
            try:
                return self._talk(process, job, context)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _talk(self, process, job, context) -> StepResult:
        deadline = time.monotonic() + context.timeout
        allowed = set(context.config.get("secrets", []))
        process.stdin.write((json.dumps(job) + "\n").encode())
        process.stdin.flush()
        while True:
            line = self._read_line(process, deadline, context.timeout)
            message = jsonsafe.loads(line)
            if "call" in message:
                process.stdin.write((json.dumps(self._answer(message, allowed, context)) + "\n").encode())
                process.stdin.flush()
                continue
            logs = str(message.get("logs", ""))
            if message.get("done"):
                return StepResult(output=message.get("result"), logs=logs)
            raise StepError(f"The script failed:\n{message.get('error', '')}".strip(), output={"logs": logs})

    @staticmethod
    def _read_line(process, deadline: float, timeout: float) -> bytes:
        buffer = b""
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepError(f"The script took longer than {timeout:g} s and was stopped.")
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                code = process.wait()
                reason = "ran out of memory or CPU time" if code in (-signal.SIGKILL, -signal.SIGXCPU, 1) else f"exited ({code})"
                raise StepError(f"The script process {reason} before answering.")
            buffer += chunk
            if len(buffer) > MAX_MESSAGE_BYTES:
                raise StepError("The script's answer is larger than 5 MB.")
        return buffer

    @staticmethod
    def _answer(message, allowed: set[str], context) -> dict:
        call, args = message.get("call"), message.get("args", [])
        if call not in ALLOWED_CALLS or not args or args[0] not in allowed:
            return {"error": f"The secret {args[0] if args else ''!r} is not listed on this step."}
        try:
            vault = context.vault
            if call == "basic_auth":
                return {"result": list(vault.basic_auth(args[0]))}
            if call == "sign_jws":
                return {"result": vault.sign_jws(args[0], args[1], expires_in=args[2])}
            if call == "verify_jws":
                return {"result": vault.verify_jws(args[0], args[1], audience=args[2], issuer=args[3], scopes=args[4])}
            if call == "decrypt_jwe":
                return {"result": vault.decrypt_jwe(args[0], args[1]).decode(errors="replace")}
            return {"result": getattr(vault, call)(*args)}
        except (VaultError, IndexError, TypeError) as exc:
            return {"error": str(exc)}
