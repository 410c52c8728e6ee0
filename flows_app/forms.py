"""Admin forms for flows: each step kind and each endpoint authentication shows its own
validated fields.

A ``KindConfigForm`` row picks a kind from a registry (a step's ``kind``, an endpoint's
``auth``) and carries every kind's declared fields, named ``<kind>__<field>`` and grouped
in one fieldset per kind; ``flows_app/static/flows_app/kinds.js`` shows the fieldset of the
chosen kind. Only the chosen kind's fields are read, validated by the kind, and stored
in the row's JSON configuration. Errors name the step (or endpoint) and the field.
"""

from __future__ import annotations

from project import jsonsafe
import dataclasses
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.utils.html import escape

from flows_app.models import ClientPolicy, EndpointTrigger, Flow, ScheduleTrigger, Step, comma_list
from flows_app.services.access import access_problems, step_access_problems
from flows_app.services.flows import (
    flow_error_handler_check,
    flow_steps_check,
    step_for_each_errors,
    step_permission_check,
    step_secret_check,
)
from flows_app.services.specs import EndpointSpec, FlowSpec, ScheduleSpec, StepSpec
from flows_app.services.triggers import (
    endpoint_auth_clean,
    endpoint_headers_check,
    endpoint_methods_clean,
    schedule_clean,
)
from flows_app.steps import STEP_KINDS
from flows_app.triggers import ENDPOINT_AUTH

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
    "for_each",
    "for_each_concurrency",
    "for_each_errors",
]
COMMON_ENDPOINT_FIELDS = [
    "path",
    "enabled",
    "methods",
    "auth",
    "auth_secret",
    "response",
    "sync_timeout_seconds",
    "max_body_kb",
    "pass_headers",
]


def kind_field_name(kind: str, field: str) -> str:
    return f"{kind}__{field}"


def kind_fieldsets(kinds: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One fieldset per kind, shown by kinds.js only when that kind is chosen."""
    return [
        (
            kind.label,
            {
                "fields": [kind_field_name(kind.slug, field.name) for field in kind.fields],
                "classes": ["kind-fields", f"kind-fields-{kind.slug}"],
                # The admin shows descriptions as HTML; ours are text ("Bearer <JWT>").
                "description": escape(kind.description),
            },
        )
        for kind in kinds.values()
        if kind.fields
    ]


def spec_from_cleaned(spec_class: type, form: forms.ModelForm, **values: Any):
    """A spec from a valid form: spec fields are named after the model's fields. Those the
    form does not edit (an app flow's app, a step's ``secret: connection``) keep the
    instance's value, a new row's default."""
    cleaned = form.cleaned_data
    names = [item.name for item in dataclasses.fields(spec_class) if item.name not in values]
    return spec_class(**{name: cleaned[name] if name in cleaned else getattr(form.instance, name) for name in names}, **values)


class FlowForm(forms.ModelForm):
    class Meta:
        model = Flow
        fields = ["name", "slug", "enabled", "description", "timeout_seconds", "concurrency_limit", "error_handler"]

    def clean(self):
        cleaned = super().clean()
        handler = cleaned.get("error_handler")
        try:  # the stored slugs: the flow may be renamed in this same form
            flow_error_handler_check(slug=self.instance.slug, handler_slug=handler.slug if handler else "")
        except ValidationError as exc:
            self.add_error(None, exc)
        return cleaned

    def spec(self, *, steps: list[StepSpec], endpoints: list[EndpointSpec], schedules: list[ScheduleSpec]) -> FlowSpec:
        handler = self.cleaned_data.get("error_handler")
        return spec_from_cleaned(
            FlowSpec,
            self,
            error_handler=handler.slug if handler else "",
            steps=steps,
            endpoints=endpoints,
            schedules=schedules,
        )


class SpecFormSet(BaseInlineFormSet):
    """An inline formset whose rows are handed to ``flow_save`` as specs (it saves nothing itself)."""

    def kept_forms(self) -> list:
        return [form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")]

    def specs(self) -> list:
        return [form.spec() for form in self.kept_forms()]


class KindConfigForm(forms.ModelForm):
    """A model form that stores the chosen kind's declared fields as JSON (see module doc)."""

    kinds: ClassVar[dict[str, Any]]
    kind_field: ClassVar[str]
    config_field: ClassVar[str]
    spec_class: ClassVar[type]
    #: Set per request by the admin (permissions some kinds need).
    acting_user = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            # The admin shows help texts as HTML; ours are text ("steps.<key>", "/hooks/<path>").
            field.help_text = escape(field.help_text)
        self.fields[self.kind_field].widget.attrs["class"] = "kind-select"
        stored_kind = getattr(self.instance, self.kind_field)
        stored = getattr(self.instance, self.config_field) if self.instance.pk else {}
        for kind in self.kinds.values():
            for field in kind.fields:
                value = stored.get(field.name) if kind.slug == stored_kind else None
                self.initial[kind_field_name(kind.slug, field.name)] = field.form_initial(value)
        self.config: dict[str, Any] = {}

    def label(self) -> str:
        """How errors name this row."""
        raise NotImplementedError

    def access_users(self) -> list:
        """Who must be allowed what this row uses: the saving user and the flow's owner."""
        flow = getattr(self.instance, "flow", None)
        return [self.acting_user, flow.owner if flow is not None else None]

    def chosen_kind_data(self) -> tuple[Any, dict[str, Any]]:
        kind = self.kinds.get(self.cleaned_data.get(self.kind_field))
        if kind is None:
            return None, {}
        return kind, {field.name: self.cleaned_data.get(kind_field_name(kind.slug, field.name)) for field in kind.fields}

    def add_errors(self, error: ValidationError, kind=None) -> None:
        """Put each message beside its field (a kind's field, or a model field), named."""
        declared = {field.name: field for field in kind.fields} if kind is not None else {}
        for name, messages in error.message_dict.items():
            if name in declared:
                target, prefix = kind_field_name(kind.slug, name), f"{self.label()}, {declared[name].label}: "
            else:
                target, prefix = (name if name in self.fields else None), f"{self.label()}: "
            for message in messages:
                self.add_error(target, prefix + message)

    def spec(self):
        return spec_from_cleaned(self.spec_class, self, **{self.config_field: self.config})


def with_kind_fields(form_class: type[KindConfigForm]) -> type[KindConfigForm]:
    """``form_class`` with every kind's fields declared, at class creation as Django wants."""
    declared = {
        kind_field_name(kind.slug, field.name): field.form_field() for kind in form_class.kinds.values() for field in kind.fields
    }
    return type(form_class.__name__, (form_class,), declared)


@with_kind_fields
class StepForm(KindConfigForm):
    kinds = STEP_KINDS
    kind_field = "kind"
    config_field = "config"
    spec_class = StepSpec

    class Meta:
        model = Step
        fields = COMMON_STEP_FIELDS
        # Kept in the order the steps are shown: flow_editor.js renumbers on every move.
        widgets = {"position": forms.HiddenInput}

    def label(self) -> str:
        return f"Step '{self.cleaned_data.get('key') or '(new)'}'"

    def clean(self):
        cleaned = super().clean()
        kind_class, data = self.chosen_kind_data()
        if kind_class is None:
            return cleaned
        checks = [
            lambda: setattr(self, "config", kind_class.clean_config(data)),
            lambda: step_permission_check(kind_class, self.acting_user),
        ]
        if not self.instance.uses_connection:  # an app's step: its secret is the run's connection
            checks.append(lambda: step_secret_check(kind_class, cleaned.get("secret")))
        for check in checks:
            try:
                check()
            except ValidationError as exc:
                self.add_errors(exc, kind_class)
        secret = cleaned.get("secret")
        for problem in step_access_problems(kind_class, self.config, secret.name if secret else None, self.access_users()):
            self.add_error("secret" if secret else None, f"{self.label()}: {problem}")
        if cleaned.get("on_error") == Step.OnError.GOTO and not cleaned.get("error_step_key"):
            self.add_error("error_step_key", f"{self.label()}: name the step to go to.")
        fan_out = step_for_each_errors(
            kind_class, cleaned.get("for_each", ""), cleaned.get("for_each_concurrency"), cleaned.get("for_each_errors")
        )
        for name, messages in fan_out.items():
            for message in messages if name in cleaned else ():  # else the field's own check said why
                self.add_error(name, f"{self.label()}: {message}")
        return cleaned


class StepFormSet(SpecFormSet):
    """The flow's steps in position order; checks across them: unique keys, jumps to steps that exist."""

    def kept_forms(self) -> list:
        # Stable: steps with the same position keep the order they are shown in.
        return sorted(super().kept_forms(), key=lambda form: form.cleaned_data.get("position") or 0)

    def clean(self):
        # Ours first: Django's own uniqueness check raises and would hide the jump checks.
        ordered = [form for form in self.kept_forms() if not form.errors]
        specs = [form.spec() for form in ordered]  # read now: add_error() drops a field from cleaned_data
        for path, messages in flow_steps_check(specs).items():
            index, _, field = path.partition("].")
            form, spec = ordered[int(index.removeprefix("steps["))], specs[int(index.removeprefix("steps["))]
            target = {"error_step": "error_step_key"}.get(field, field)
            name = target if target in form.fields else kind_field_name(spec.kind, target)
            for message in messages:
                form.add_error(name if name in form.fields else None, f"Step '{spec.key}': {message}")
        super().clean()


@with_kind_fields
class EndpointTriggerForm(KindConfigForm):
    kinds = ENDPOINT_AUTH
    kind_field = "auth"
    config_field = "auth_config"
    spec_class = EndpointSpec

    class Meta:
        model = EndpointTrigger
        fields = COMMON_ENDPOINT_FIELDS

    def label(self) -> str:
        return f"Endpoint '/hooks/{self.cleaned_data.get('path') or '(new)'}'"

    def clean_methods(self):
        try:
            return endpoint_methods_clean(self.cleaned_data.get("methods"))
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None

    def clean(self):
        cleaned = super().clean()
        mode, data = self.chosen_kind_data()
        if mode is None:
            return cleaned
        try:
            self.config = endpoint_auth_clean(auth=mode.slug, secret=cleaned.get("auth_secret"), config=data)
            endpoint_headers_check(comma_list(cleaned.get("pass_headers", "")), auth=mode.slug, config=self.config)
        except ValidationError as exc:
            self.add_errors(ValidationError({"auth_secret" if name == "secret" else name: messages for name, messages in exc.message_dict.items()}), mode)
        secret = cleaned.get("auth_secret")
        for problem in access_problems([secret.name] if secret else [], self.access_users()):
            self.add_error("auth_secret", f"{self.label()}: {problem}")
        return cleaned


class ScheduleTriggerForm(forms.ModelForm):
    class Meta:
        model = ScheduleTrigger
        fields = ["enabled", "cron", "interval_seconds", "timezone", "input"]

    def clean(self):
        cleaned = super().clean()
        try:
            cleaned["cron"], cleaned["interval_seconds"], cleaned["timezone"] = schedule_clean(
                cron=cleaned.get("cron"), interval_seconds=cleaned.get("interval_seconds"), timezone_name=cleaned.get("timezone")
            )
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                for message in messages:
                    self.add_error(name, f"Schedule: {message}")
        return cleaned

    def spec(self) -> ScheduleSpec:
        schedule_input = self.cleaned_data.get("input")
        return spec_from_cleaned(ScheduleSpec, self, input={} if schedule_input is None else schedule_input)


class ClientPolicyForm(forms.ModelForm):
    #: Set per request by the admin: signing tokens with a key needs a use grant on it.
    acting_user = None

    class Meta:
        model = ClientPolicy
        fields = ["scopes", "audience", "token_lifetime_seconds", "signing_secret"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["signing_secret"].queryset = self.fields["signing_secret"].queryset.filter(kind="rs256")

    def clean_scopes(self):
        scopes = self.cleaned_data["scopes"].split()
        # RFC 6749 §3.3: scope tokens are printable ASCII without space, '"' or '\\'.
        bad = [scope for scope in scopes if any(ord(char) < 0x21 or ord(char) > 0x7E or char in '"\\' for char in scope)]
        if not scopes or bad:
            raise ValidationError("Space-separated scope names of printable ASCII, e.g. orders:read orders:write.")
        return " ".join(dict.fromkeys(scopes))

    def clean_signing_secret(self):
        secret = self.cleaned_data["signing_secret"]
        if secret.kind != "rs256" or not secret.values.get("private_key"):
            raise ValidationError(f"Secret {secret.name!r} must be an RS256 key pair with a private key.")
        if problems := access_problems([secret.name], [self.acting_user]):
            raise ValidationError(problems)
        return secret


def connection_label(secret) -> str:
    return f"#{secret.pk} {secret.identity or secret.name}" + (f" ({secret.owner})" if secret.owner_id else "")


class RunInputForm(forms.Form):
    input = forms.CharField(
        label="Input (JSON)",
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "style": "font-family: monospace"}),
        help_text="Becomes 'trigger' in the flow's templates.",
    )

    def __init__(self, *args, connections=None, **kwargs):
        """``connections``: for an app's flow, the app's connections the user may run it with."""
        super().__init__(*args, **kwargs)
        if connections is not None:
            self.fields["connection"] = forms.ModelChoiceField(
                queryset=connections, help_text="The account of the app this run acts for."
            )
            self.fields["connection"].label_from_instance = connection_label
            self.order_fields(["connection", "input"])

    def clean_input(self):
        try:
            return jsonsafe.loads(self.cleaned_data["input"])
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}.") from None
