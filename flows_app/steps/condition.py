"""condition: continue, stop, or jump to a named step, depending on an expression."""

from django.core.exceptions import ValidationError

from flows_app import templating
from flows_app.steps.base import StepError, StepKind, StepResult, next_step_choice, next_step_of
from project.declarative import Field


class Condition(StepKind):
    slug = "condition"
    label = "Condition"
    description = "Evaluates an expression such as steps.me.status == 200 and picks where to go."
    pure = True
    fans_out = False
    fields = (
        Field("expression", "Expression", help_text="A Jinja expression without braces, e.g. trigger.body.amount > 100."),
        Field("then", "When true", default="continue", help_text="'continue', 'stop', or a step key."),
        Field("otherwise", "When false", default="stop", help_text="'continue', 'stop', or a step key."),
    )

    @classmethod
    def step_references(cls, config):
        return {"expression": templating.step_names(_template(config))}

    @classmethod
    def validate(cls, config, *, step_keys):
        errors = {}
        try:
            templating.check(_template(config))
        except templating.TemplateFailed as exc:
            errors["expression"] = f"Expression error: {exc}"
        for name in ("then", "otherwise"):
            problem = next_step_choice(config[name], step_keys=step_keys)
            if problem:
                errors[name] = problem
        if errors:
            raise ValidationError(errors)

    @classmethod
    def secret_names(cls, config, secret_name):
        # The expression is a template too, written without its braces.
        expression = config.get("expression")
        names = templating.secret_names("{{ " + expression + " }}") if isinstance(expression, str) else frozenset()
        return super().secret_names(config, secret_name) | names

    def execute(self, context):
        try:
            result = bool(templating.render(_template(context.config), context.data))
        except templating.TemplateFailed as exc:
            raise StepError(f"Expression failed: {exc}") from None
        branch = context.config["then"] if result else context.config["otherwise"]
        return StepResult(output={"result": result, "branch": branch}, next_step=next_step_of(branch))


def _template(config) -> str:
    """The expression as a template whose value is the expression's."""
    return "{{ " + config["expression"] + " }}"
