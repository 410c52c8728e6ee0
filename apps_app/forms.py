"""The form a connect link shows for a generic app: the fields its manifest declares."""

from django import forms

from project.declarative import Field


class ConnectionFieldsForm(forms.Form):
    """One form field per declared field; sensitive ones are password inputs that never
    show a value back (reconnecting: left blank, they keep their value). Checking the
    values is the connections service's (``clean_fields``)."""

    def __init__(self, fields: tuple[Field, ...], *args, reconnect: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        for spec in fields:
            if spec.secret:
                field = forms.CharField(
                    label=spec.label, help_text=spec.help_text, widget=forms.PasswordInput(render_value=False)
                )
            else:
                field = spec.form_field()
                field.initial = spec.default
            field.required = spec.required and not (spec.secret and reconnect)
            self.fields[spec.name] = field
