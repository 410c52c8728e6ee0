"""call_flow: run another flow with an input and use its result.

The called flow runs inside this run's worker, as a child run of its own (visible in the
history), and this step's output is its output. Calls nest at most ``MAX_DEPTH`` deep.
"""

from flows_app.steps.base import StepError, StepKind, StepResult
from project.declarative import Field


class CallFlow(StepKind):
    slug = "call_flow"
    label = "Call flow"
    description = "Runs another flow and uses its output."
    fields = (
        Field("flow", "Flow (slug)"),
        Field("input", "Input", type="json", required=False, template=True),
    )

    @classmethod
    def called_flows(cls, config):
        return {config["flow"]} if config.get("flow") else set()

    def execute(self, context):
        child = context.engine.call_flow(
            parent=context.run,
            slug=context.config["flow"],
            input=context.config.get("input") or {},
            timeout=context.timeout,
            redactor=context.vault.redactor,
        )
        if child.status != child.Status.SUCCEEDED:
            raise StepError(f"The called flow {context.config['flow']!r} {child.status} (run {child.pk}): {child.error}")
        return StepResult(output=child.output)
