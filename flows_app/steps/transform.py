"""transform: build a new value from the trigger input and earlier step outputs."""

from flows_app.steps.base import StepKind, StepResult
from project.declarative import Field


class Transform(StepKind):
    slug = "transform"
    label = "Transform"
    description = "Builds a value from templates: {\"user\": \"{{ steps.me.body.name }}\"}."
    pure = True
    fields = (
        Field(
            "value",
            "Value",
            type="json",
            template=True,
            help_text="JSON; strings may be templates. A string that is one {{ expression }} keeps its type.",
        ),
    )

    def execute(self, context):
        return StepResult(output=context.config["value"])
