"""script: Python code in a separate, limited process.

Each run of the step starts a fresh interpreter (``python -I -S -B``: no environment, no
site-packages, no bytecode) with an empty environment, in its own session. That process is
a launcher (see ``script_runner``): it runs the code in a child of its own, in a PID and
network namespace where the kernel allows it (else as a child subreaper), with limits on
memory, CPU time, open files, file size and processes, as ``nobody`` when started as root.
When the step ends — answered, failed or timed out — the launcher is told to stop and ends
every process the script started, daemons included, before it is reaped. The code sees
``input``, ``steps`` and ``secrets`` — and only the secrets the step names, fetched from
the parent one call at a time and registered for redaction.

``FLOWGATE_SCRIPT_STEPS_ENABLED = False`` turns the kind off; saving a script step needs
the ``flows_app.edit_script_steps`` permission.
"""

from __future__ import annotations

import json
import os
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
# The launcher stops at once on SIGTERM; it needs longer only when it cannot run at all (on the
# subreaper path a script running as the same user could stop it), and is then killed.
STOP_GRACE_SECONDS = 5
ALLOWED_CALLS = (
    "get_password", "get_field", "get_access_token", "basic_auth", "sign_jws", "verify_jws", "encrypt_jwe", "decrypt_jwe",
)  # fmt: skip


def scripts_enabled() -> bool:
    return getattr(settings, "FLOWGATE_SCRIPT_STEPS_ENABLED", True)


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
            # No preexec_fn (deadlock-prone in a threaded worker): the launcher confines itself.
            limits = [str(memory), str(int(context.timeout) + 1)]
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(RUNNER), *limits, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env={},
                start_new_session=True,
            )
            try:
                return self._talk(process, job, context)
            finally:
                self._stop(process)

    @staticmethod
    def _stop(launcher) -> None:
        """Ends every process the script started, also after a good answer, and reaps the launcher."""
        if launcher.poll() is None:
            launcher.terminate()
            try:
                launcher.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                # Killing its session takes the launcher and, through PR_SET_PDEATHSIG, its child.
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()

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
                code = process.wait()  # the launcher's: 128 + the signal that killed the script
                reason = "ran out of memory or CPU time" if code in (128 + signal.SIGKILL, 128 + signal.SIGXCPU, 1) else f"exited ({code})"
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
