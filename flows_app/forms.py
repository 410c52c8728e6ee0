"""Admin forms for flows: each step kind shows its own validated fields.

A step form carries every kind's declared fields, named ``<kind>__<field>`` and grouped
in one fieldset per kind; a small script shows the fieldset of the chosen kind. Only the
chosen kind's fields are read, validated by the kind (templates compiled), and stored
as the step's ``config``. Errors name the step and the field.
"""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from flows_app.models import Step
from flows_app.services.flows import StepSpec, flow_steps_check, step_permission_check, step_secret_check
from flows_app.steps import STEP_KINDS

COMMON_STEP_FIELDS = [
    "position",
    "key",
    "kind",
    "secret",
    "max_attempts",
    "retry_backoff_seconds",
    "timeout_seconds",
    "on_error",
    "error_step_key",
]


def kind_field_name(kind: str, field: str) -> str:
    return f"{kind}__{field}"


def _declared_kind_fields() -> dict[str, forms.Field]:
    return {
        kind_field_name(kind.slug, field.name): field.form_field() for kind in STEP_KINDS.values() for field in kind.fields
    }


class StepForm(forms.ModelForm):
    #: Set per request by the admin, for the script-step permission.
    acting_user = None

    class Meta:
        model = Step
        fields = COMMON_STEP_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].widget.attrs["class"] = "step-kind-select"
        instance = self.instance
        for kind in STEP_KINDS.values():
            for field in kind.fields:
                name = kind_field_name(kind.slug, field.name)
                stored = instance.config.get(field.name) if instance.pk and instance.kind == kind.slug else None
                self.initial[name] = field.form_initial(stored)
        self.config: dict = {}

    def clean(self):
        cleaned = super().clean()
        kind_class = STEP_KINDS.get(cleaned.get("kind"))
        if kind_class is None:
            return cleaned
        key = cleaned.get("key") or "(new)"
        data = {field.name: cleaned.get(kind_field_name(kind_class.slug, field.name)) for field in kind_class.fields}
        try:
            self.config = kind_class.clean_config(data)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                label = kind_class.field(name).label if name in {field.name for field in kind_class.fields} else name
                target = kind_field_name(kind_class.slug, name) if kind_field_name(kind_class.slug, name) in self.fields else None
                for message in messages:
                    self.add_error(target, f"Step '{key}', {label}: {message}")
        for check in (
            lambda: step_secret_check(kind_class, cleaned.get("secret")),
            lambda: step_permission_check(kind_class, self.acting_user),
        ):
            try:
                check()
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    self.add_error(name if name in self.fields else None, [f"Step '{key}': {message}" for message in messages])
        if cleaned.get("on_error") == Step.OnError.GOTO and not cleaned.get("error_step_key"):
            self.add_error("error_step_key", f"Step '{key}': name the step to go to.")
        return cleaned

    def save(self, commit=True):
        self.instance.config = self.config
        return super().save(commit)

    def spec(self) -> StepSpec:
        data = self.cleaned_data
        return StepSpec(
            key=data.get("key", ""),
            kind=data.get("kind", ""),
            config=self.config,
            on_error=data.get("on_error", Step.OnError.STOP),
            error_step_key=data.get("error_step_key", ""),
        )


StepForm = type("StepForm", (StepForm,), _declared_kind_fields())


class StepFormSet(BaseInlineFormSet):
    """Checks across the flow's steps: unique keys, jumps to steps that exist."""

    def clean(self):
        # Ours first: Django's own uniqueness check raises and would hide the jump checks.
        forms_in_use = [
            form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE") and not form.errors
        ]
        ordered = sorted(forms_in_use, key=lambda form: form.cleaned_data.get("position") or 0)
        specs = [form.spec() for form in ordered]  # read now: add_error() drops a field from cleaned_data
        for path, messages in flow_steps_check(specs).items():
            index, _, field = path.partition("].")
            form, spec = ordered[int(index.removeprefix("steps["))], specs[int(index.removeprefix("steps["))]
            target = {"error_step": "error_step_key"}.get(field, field)
            name = target if target in form.fields else kind_field_name(spec.kind, target)
            for message in messages:
                form.add_error(name if name in form.fields else None, f"Step '{spec.key}': {message}")
        super().clean()


class RunInputForm(forms.Form):
    input = forms.CharField(
        label="Input (JSON)",
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "style": "font-family: monospace"}),
        help_text="Becomes 'trigger' in the flow's templates.",
    )

    def clean_input(self):
        try:
            return json.loads(self.cleaned_data["input"])
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}.") from None
