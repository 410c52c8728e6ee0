"""What a run's history keeps of a value: the value, or past the size cap a marker.

Steps see each other's outputs whole, in memory; only the stored copies (a step's input
and output, a run's output) are capped at ``FLOWGATE_MAX_STORED_OUTPUT_BYTES``, so one
large answer cannot grow the database by its size at every step that passes it on. The
run's output is the last step's output again; both are capped, so a large value is never
stored twice whole, while outputs under the cap stay exact for the run page, the status
URL and a sync endpoint without a respond step.

A truncated output cannot be given back to the steps after it. A run that continues from
its checkpoints (after a parked retry, a worker that died, or a re-run) and needs one
fails with the reason instead of going on with the marker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flows_app.app_settings import flow_settings
from flows_app.models import StepRun

if TYPE_CHECKING:
    from secrets_app.redaction import Redactor

PREVIEW_CHARS = 2000
MARKER_KEYS = frozenset({"truncated", "size", "preview"})


def capped(value: Any) -> Any:
    """``value``, or ``{"truncated": true, "size": N, "preview": "..."}`` when its JSON
    text is over the cap (N bytes; the preview is the text's beginning)."""
    limit = flow_settings.max_stored_output_bytes
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    size = len(text.encode())
    if size <= limit:
        return value
    return {"truncated": True, "size": size, "preview": text[: min(PREVIEW_CHARS, limit)]}


def kept(value: Any, redactor: Redactor) -> tuple[Any, Any]:
    """What history stores of an output: (redacted and capped, the exact value when masking
    changed it, for a run that continues later; else None)."""
    shown = capped(redactor.data(value))
    return shown, value if shown != value and not is_truncated(shown) else None


def is_truncated(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == MARKER_KEYS and value["truncated"] is True


def lost_checkpoint_reason(step_runs: Iterable[StepRun]) -> str | None:
    """Why a run cannot continue from these checkpoints, or None when it can: an output
    the following steps see (a success, or a failure the run went on from) was truncated."""
    for step_run in step_runs:
        used = step_run.status == StepRun.Status.SUCCEEDED or step_run.next_step_key != step_run.step_key
        if used and step_run.raw_output is None and is_truncated(step_run.output):
            return (
                f"Step {step_run.step_key!r} produced {step_run.output['size']} bytes, more than "
                f"FLOWGATE_MAX_STORED_OUTPUT_BYTES, so only a truncated copy was stored and the run "
                f"cannot continue from it. Start the run again, or raise the setting."
            )
    return None


def jsonable(value: Any) -> Any:
    """What can be stored in a JSON column: datetimes as ISO text, tuples as lists."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def restore(history: list[StepRun], data: dict[str, Any], redactor: Redactor) -> dict[str, int]:
    """The checkpoint: the outputs so far into ``data["steps"]``, what masking hid taught to
    ``redactor``; returns the attempts of a step awaiting its retry, by key."""
    attempts: dict[str, int] = {}
    for previous in history:
        if previous.raw_output is not None:
            redactor.learn(previous.raw_output, previous.output)
        value = previous.raw_output if previous.raw_output is not None else previous.output
        if previous.status == StepRun.Status.SUCCEEDED:
            data["steps"][previous.step_key], attempts[previous.step_key] = value, 0
        else:
            attempts[previous.step_key] = previous.attempt
            if previous.next_step_key != previous.step_key:
                data["steps"][previous.step_key] = {"error": previous.error, "output": value}
    return attempts
