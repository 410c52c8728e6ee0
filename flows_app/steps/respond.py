"""respond: the HTTP answer for an endpoint trigger (status, headers, body).

The run goes on after it; a caller waiting on a synchronous endpoint gets this answer
as soon as the step has run.
"""

from django.core.exceptions import ValidationError

from flows_app.steps.base import StepError, StepKind, StepResult
from project.declarative import Field


class Respond(StepKind):
    slug = "respond"
    label = "Respond"
    description = "Sets the HTTP response of an endpoint trigger."
    pure = True
    fans_out = False
    fields = (
        Field("status", "Status", type="integer", default=200, min_value=100, max_value=599, template=True),
        Field("headers", "Headers", type="mapping", required=False, template=True, help_text="One 'Name: value' per line."),
        Field("body", "Body", type="json", required=False, template=True, help_text="JSON; strings may be templates."),
    )

    @classmethod
    def validate(cls, config, *, step_keys):
        for name in config.get("headers", {}):
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                raise ValidationError({"headers": f"{name} is set by the server."})

    def execute(self, context):
        status = context.config["status"]
        try:
            status = int(status)
        except (TypeError, ValueError):
            raise StepError(f"The status must be a number, got {status!r}.") from None
        if not 100 <= status <= 599:
            raise StepError(f"{status} is not an HTTP status.")
        response = {"status": status, "headers": context.config.get("headers", {}), "body": context.config.get("body")}
        return StepResult(output=response, response=response)
