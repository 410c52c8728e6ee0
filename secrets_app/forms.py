"""Admin forms built from a kind's declared fields.

Secret fields are write-only: their widgets never render a value (not even dots of the
same length), and leaving them blank keeps what is stored. Validation is the kind's own
``clean()``, run in the form's ``clean()`` so that errors appear beside their fields and
nothing is saved half-way.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from project.declarative import Field, parse_mapping_lines
from secrets_app.kinds.base import CleanedSecret, SecretKind
from secrets_app.models import Secret
from secrets_app.selectors import secret_rename_consequences


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value."""

    def format_value(self, value):
        return ""


class NotedSelect(forms.Select):
    """A select whose choices carry notes: the chosen one's is shown under it, and the
    change form's script swaps it as the choice changes (``data-note`` on each option)."""

    def __init__(self, notes: dict[str, str], attrs=None, choices=()):
        super().__init__(attrs, choices)
        self.notes = notes

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        if self.notes.get(value):
            option["attrs"]["data-note"] = self.notes[value]
        return option

    def render(self, name, value, attrs=None, renderer=None):
        select = super().render(name, value, attrs, renderer)
        field_id = (attrs or {}).get("id", f"id_{name}")
        return format_html(
            '{}<div class="help choice-note" id="{}_note" data-note-for="{}">{}</div>',
            select,
            field_id,
            field_id,
            self.notes.get(str(value or ""), ""),
        )


def declared_form_field(field: Field, stored_secret: bool, stored_names: list[str]) -> forms.Field:
    """The form field for a declared field; a secret one is write-only (and says when a value is stored)."""
    if not field.secret:
        return field.form_field()
    help_text = field.help_text
    if stored_secret:
        kept = "Stored; leave blank to keep it."
        if field.type == "mapping":
            kept = (
                f"Stored names: {', '.join(stored_names) or 'none'}. Lines you enter set those names; "
                f"'name{field.separator}' with nothing after it removes one; leave blank to keep all."
            )
        help_text = f"{help_text} {kept}".strip()
    widget = (
        WriteOnlyTextarea(attrs={"rows": 6, "autocomplete": "off"})
        if field.type in ("textarea", "mapping")
        else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
    )
    return forms.CharField(label=field.label, required=False, widget=widget, help_text=help_text, strip=False)


class SecretForm(forms.ModelForm):
    """Base of the per-kind forms; ``secret_form_for`` declares the kind's fields on it."""

    kind_class: type[SecretKind]
    #: Shown with the list of consequences when a rename needs confirming (not a fieldset field).
    confirm_rename = forms.BooleanField(required=False, label="I understand; rename anyway.")

    class Meta:
        model = Secret
        fields = ["name", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        stored_values = instance.values if instance.pk else {}
        for field in self.kind_class.fields:
            if field.secret and field.name in stored_values:
                stored_names = sorted(stored_values[field.name]) if field.type == "mapping" else []
                self.fields[field.name] = declared_form_field(field, stored_secret=True, stored_names=stored_names)
            elif instance.pk and not field.secret and field.name in instance.config:
                self.initial[field.name] = field.form_initial(instance.config[field.name])
            elif not field.secret and field.default is not None:
                self.initial.setdefault(field.name, field.default)
        for name, notes in self.kind_class.choice_notes().items():
            self.fields[name].widget = NotedSelect(notes, choices=self.fields[name].choices)
        self.cleaned_secret: CleanedSecret | None = None
        self.rename_consequences: list[str] = []

    def previous(self) -> CleanedSecret | None:
        if not self.instance.pk:
            return None
        return CleanedSecret(config=dict(self.instance.config), values=dict(self.instance.values))

    def _kind_input(self, previous: CleanedSecret | None) -> dict:
        data = {}
        for field in self.kind_class.fields:
            value = self.cleaned_data.get(field.name)
            if field.secret and field.type == "mapping" and value and previous:
                value = self._merged_mapping(field, value, previous.values.get(field.name, {}))
            data[field.name] = value
        if self.data.get("_generate_key"):
            data["generate"] = True
        return data

    def _merged_mapping(self, field: Field, text: str, stored: dict) -> dict:
        try:
            entered = parse_mapping_lines(text, field.separator)
        except ValidationError as exc:
            self.add_error(field.name, exc)
            return {}
        merged = {**stored, **entered}
        return {key: value for key, value in merged.items() if value != ""}

    def clean(self):
        cleaned = super().clean()
        self._confirm_rename(cleaned)
        previous = self.previous()
        try:
            self.cleaned_secret = self.kind_class.clean(self._kind_input(previous), previous)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def _confirm_rename(self, cleaned: dict) -> None:
        """A rename that breaks or changes something else is saved only once confirmed."""
        name = cleaned.get("name")
        if not self.instance.pk or not name or cleaned.get("confirm_rename"):
            return
        self.rename_consequences = secret_rename_consequences(secret=self.instance, name=name)
        if self.rename_consequences:
            self.add_error("name", f"Renaming to {name!r} changes what is listed above; confirm it there.")

    def save_warnings(self) -> list[str]:
        """What a kind notices about valid input that will not work here (OAuth2 endpoints
        refused by oauthlib or the outbound guard). Shown after saving; the save happens."""
        return self.kind_class.save_warnings(self.cleaned_secret.config)

    def service_data(self) -> dict:
        """The validated fields, ready for ``secret_create``/``secret_update`` (which validate again)."""
        return {**self.cleaned_secret.config, **self.cleaned_secret.values}


def secret_form_for(kind_class: type[SecretKind]) -> type[SecretForm]:
    declared = {field.name: declared_form_field(field, stored_secret=False, stored_names=[]) for field in kind_class.fields}
    return type(f"{kind_class.__name__}SecretForm", (SecretForm,), {"kind_class": kind_class, **declared})
