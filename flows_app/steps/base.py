"""What a step kind is: declared configuration fields, and the one job it does.

A kind declares its ``fields`` (``project.declarative.Field``); fields marked
``template=True`` are rendered with the run's data before ``execute`` sees them. The
same declaration validates the admin form and the ``apply`` file, and builds the form.

``execute(context)`` does the job and returns a ``StepResult``, or raises ``StepError``
(``retryable=True`` for what may pass: timeouts, connection errors, 5xx, 429).

A ``pure`` kind has no effect outside the run (transform, condition, respond, jwt): the
engine checkpoints it lazily and simply runs it again after a worker died. Every other
kind is checkpointed as soon as it finishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flows_app import templating
from project.declarative import Field, clean_config

if TYPE_CHECKING:
    from flows_app.engine import Engine
    from flows_app.models import FlowRun, Step
    from secrets_app.api import Vault

#: ``StepResult.next_step`` value that ends the run successfully.
STOP = "__stop__"


class StepError(Exception):
    """A step failed. The message is shown in the run history (after redaction)."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None, output: Any = None):
        self.retryable = retryable
        self.retry_after = retry_after
        self.output = output
        super().__init__(message)


@dataclass
class StepResult:
    output: Any = None
    next_step: str | None = None  # None: the following step; STOP: end the run; or a step key
    logs: str = ""
    response: dict[str, Any] | None = None


@dataclass
class StepContext:
    """What a step gets: its rendered configuration and the run's tools."""

    run: FlowRun
    step: Step
    config: dict[str, Any]
    vault: Vault
    timeout: float
    data: dict[str, Any]
    engine: Engine
    secret_name: str | None = None


class StepKind:
    slug: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()
    #: Secret kinds a step of this kind may use; empty: none.
    secret_kinds: ClassVar[tuple[str, ...]] = ()
    secret_required: ClassVar[bool] = False
    pure: ClassVar[bool] = False
    #: Whether a step of this kind may run once per item (``for_each``): not one that
    #: chooses the next step or answers the caller.
    fans_out: ClassVar[bool] = True
    do_not_call_in_templates = True

    @classmethod
    def field(cls, name: str) -> Field:
        return next(item for item in cls.fields if item.name == name)

    @classmethod
    def clean_config(cls, data: Mapping[str, Any], *, step_keys: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Validate a step's configuration; templates are compiled. ValidationError by field."""
        return clean_config(
            cls.fields,
            data,
            owner=f"step kind {cls.slug!r}",
            check=cls._template_errors,
            validate=lambda config: cls.validate(config, step_keys=step_keys),
        )

    @classmethod
    def _template_errors(cls, config: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for item in cls.fields:
            if item.template and item.name in config:
                for path, reason in templating.check_all(config[item.name]):
                    where = f" at {path}" if path else ""
                    errors.setdefault(item.name, []).append(f"Template error{where}: {reason}")
        return errors

    @classmethod
    def secret_names(cls, config: Mapping[str, Any], secret_name: str | None) -> set[str]:
        """The secrets a step of this kind binds: its ``secret`` and those its templates read."""
        names = {secret_name} if secret_name else set()
        for item in cls.fields:
            if item.template and item.name in config:
                names |= templating.secret_names_in(config[item.name])
        return names

    @classmethod
    def step_references(cls, config: Mapping[str, Any]) -> dict[str, set[str]]:
        """The steps whose results each field reads (``steps.name`` in its templates)."""
        return {item.name: templating.step_names_in(config[item.name]) for item in cls.fields if item.template and item.name in config}

    @classmethod
    def called_flows(cls, config: Mapping[str, Any]) -> set[str]:
        """Slugs of the flows a step of this kind runs (their runner needs permission)."""
        return set()

    @classmethod
    def validate(cls, config: dict[str, Any], *, step_keys: frozenset[str]) -> None:
        """Cross-field checks. Raise ValidationError({field: message})."""

    @classmethod
    def render(cls, config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The configuration with every template field rendered against ``data``."""
        rendered = {}
        for name, value in config.items():
            item = next((candidate for candidate in cls.fields if candidate.name == name), None)
            if item is not None and item.template:
                try:
                    value = templating.render_value(value, data)
                except templating.TemplateFailed as exc:
                    raise StepError(f"Template in '{name}' failed: {exc}") from None
            rendered[name] = value
        return rendered

    def execute(self, context: StepContext) -> StepResult:
        raise NotImplementedError


def next_step_choice(value: str, *, step_keys: frozenset[str]) -> str | None:
    """Validate 'continue', 'stop' or a step key; returns an error message or None."""
    if value in ("continue", "stop") or value in step_keys or not step_keys:
        return None
    return f"{value!r} is neither 'continue', 'stop' nor a step of this flow."


def next_step_of(value: str) -> str | None:
    return {"continue": None, "stop": STOP}.get(value, value)
