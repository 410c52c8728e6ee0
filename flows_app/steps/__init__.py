"""The step kinds, one module each, in one explicit registry."""

from flows_app.steps.base import StepKind
from flows_app.steps.call_flow import CallFlow
from flows_app.steps.condition import Condition
from flows_app.steps.http_request import HttpRequest
from flows_app.steps.jwt import Jwt
from flows_app.steps.respond import Respond
from flows_app.steps.script import Script
from flows_app.steps.sql import Sql
from flows_app.steps.transform import Transform

STEP_KINDS: dict[str, type[StepKind]] = {
    kind.slug: kind for kind in (HttpRequest, Sql, Transform, Condition, Script, Jwt, CallFlow, Respond)
}
