"""What the admin and the ``apply`` file hand to the flow services, already validated.

A spec is a plain dataclass whose fields are named after the model fields they set, so
that ``spec_values`` fills a model and ``spec_of`` reads one back for comparison (``apply``
decides "unchanged" by comparing specs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import models

from flows_app.models import EndpointTrigger, Step
from secrets_app.models import Secret

SpecT = TypeVar("SpecT")


def spec_values(spec: Any) -> dict[str, Any]:
    return {item.name: getattr(spec, item.name) for item in dataclasses.fields(spec)}


def spec_of(spec_class: type[SpecT], instance: models.Model) -> SpecT:
    return spec_class(**{item.name: getattr(instance, item.name) for item in dataclasses.fields(spec_class)})


@dataclass
class StepSpec:
    key: str
    kind: str
    config: dict[str, Any]
    secret: Secret | None = None
    uses_connection: bool = False
    max_attempts: int = 1
    retry_backoff_seconds: float = 1.0
    timeout_seconds: int = 30
    on_error: str = Step.OnError.STOP
    error_step_key: str = ""
    for_each: str = ""
    for_each_concurrency: int = 4
    for_each_errors: str = Step.ForEachErrors.FAIL


@dataclass
class EndpointSpec:
    path: str
    auth: str
    auth_secret: Secret | None = None
    auth_config: dict[str, Any] = field(default_factory=dict)
    methods: str = "POST"
    response: str = EndpointTrigger.Response.ASYNC
    sync_timeout_seconds: int = 30
    max_body_kb: int = 1024
    pass_headers: str = ""
    enabled: bool = True


@dataclass
class ScheduleSpec:
    cron: str = ""
    interval_seconds: int | None = None
    timezone: str = "UTC"
    input: Any = field(default_factory=dict)
    enabled: bool = True

    def identity(self) -> tuple:
        """What makes two schedules the same (an unchanged one keeps its beat entry)."""
        return (self.cron, self.interval_seconds, self.timezone, json.dumps(self.input, sort_keys=True), self.enabled)


@dataclass
class FlowSpec:
    slug: str
    name: str
    description: str = ""
    enabled: bool = True
    timeout_seconds: int = 300
    concurrency_limit: int = 0
    error_handler: str = ""  # a flow's slug
    app_slug: str = ""  # an installed app's flow: its slug is "<app_slug>/<name>"
    app_private: bool = False
    steps: list[StepSpec] = field(default_factory=list)
    #: None: leave the flow's triggers as they are (a file without a ``triggers`` key).
    endpoints: list[EndpointSpec] | None = None
    schedules: list[ScheduleSpec] | None = None
