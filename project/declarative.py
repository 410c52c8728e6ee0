"""Declared fields: how secret kinds and step kinds say what configuration they take.

A kind lists ``Field`` objects. The same declaration validates input from an admin form
(strings) and from the ``apply`` YAML file (native types), builds the admin form field,
and says what ``export`` writes. ``coerce()`` returns the value in its type or raises a
ValidationError with a short reason; ``clean_fields`` does it for a whole mapping and
reports every field's problem at once.

Template fields (step configuration) may hold Jinja text instead of a value of their
type; such text is compiled now and typed when the step runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from project import jsonsafe

FIELD_TYPES = ("text", "textarea", "code", "url", "integer", "number", "boolean", "choice", "mapping", "json", "list")
_url_validator = URLValidator(schemes=["http", "https"])
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(value: Any) -> bool:
    """Whether a value is Jinja text (an expression, a statement or a comment)."""
    return isinstance(value, str) and any(marker in value for marker in _TEMPLATE_MARKERS)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number"
    return "nothing" if value is None else "text"


def parse_mapping_lines(text: str, separator: str) -> dict[str, str]:
    result = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if separator not in line:
            raise ValidationError(f"Line {number}: expected 'name{separator} value'.")
        key, value = line.split(separator, 1)
        result[key.strip()] = value.strip()
    return result


def is_json_text(value: Any) -> bool:
    """Whether ``value`` is text typed as a JSON object or array (a ``{`` or ``[`` that does
    not open a template). A JSON string a form already read (``"[1]"``) stays a string."""
    if not isinstance(value, str) or isinstance(value, forms.fields.JSONString):
        return False
    text = value.lstrip()
    return text[:1] in ("{", "[") and not text.startswith(_TEMPLATE_MARKERS)


def json_text_loads(text: str) -> Any:
    """The JSON in text a person typed; the error says where it breaks."""
    try:
        return jsonsafe.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    except ValueError as exc:
        raise ValidationError(f"Not valid JSON: {exc}.") from None


class DetailedJSONField(forms.JSONField):
    """A form JSONField whose error says where the JSON is broken.

    With ``bare_templates``, text that is not JSON but holds a template
    (``{{ steps.me.body }}``) is taken as that string: nobody should have to quote it.
    Text that opens an object or array is JSON, template or not: a broken one is an
    error, never a string rendered as text.
    """

    def __init__(self, *, bare_templates: bool = False, **kwargs):
        self.bare_templates = bare_templates
        super().__init__(**kwargs)

    def to_python(self, value):
        if isinstance(value, str) and value.strip() and not isinstance(value, forms.fields.JSONString):
            try:
                parsed = json_text_loads(value)
            except ValidationError:
                if self.bare_templates and is_template(value) and not is_json_text(value):
                    return value.strip()
                raise
            return forms.fields.JSONString(parsed) if isinstance(parsed, str) else parsed
        return super().to_python(value)

    def prepare_value(self, value):
        # No value shows as an empty box (which reads back as no value), not as "null".
        return "" if value is None else super().prepare_value(value)


@dataclass(frozen=True)
class Field:
    """One declared field.

    ``secret``: stored encrypted, write-only in forms (secret kinds only).
    ``template``: may hold Jinja text (step kinds only); mapping/json/list values may hold
    templates in their strings.
    ``separator``: for mappings typed as lines in a form (``name: value`` or ``name=value``).
    """

    name: str
    label: str
    type: str = "text"
    secret: bool = False
    required: bool = True
    default: Any = None
    choices: tuple[tuple[str, str], ...] = ()
    help_text: str = ""
    min_value: float | None = None
    max_value: float | None = None
    separator: str = ":"
    template: bool = False

    def __post_init__(self):
        assert self.type in FIELD_TYPES, self.type

    def is_blank(self, value: Any) -> bool:
        return value is None or (isinstance(value, (str, dict, list)) and len(value) == 0)

    def coerce(self, value: Any) -> Any:
        if self.type == "json" and is_json_text(value):
            value = json_text_loads(value)  # YAML text typed as JSON, as the form reads it
        elif self.template and is_template(value):
            return value  # typed when the step runs
        return getattr(self, f"_coerce_{self.type}")(value)

    def _text(self, value: Any, *, strip: bool = True) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValidationError(f"Expected text, got {_type_name(value)}.")
        return str(value).strip() if strip else str(value)

    def _coerce_text(self, value):
        return self._text(value)

    def _coerce_textarea(self, value):
        return self._text(value, strip=False)

    _coerce_code = _coerce_textarea

    def _coerce_url(self, value):
        value = self._text(value)
        try:
            _url_validator(value)
        except ValidationError:
            raise ValidationError("Enter a valid http or https URL.") from None
        return value

    def _coerce_choice(self, value):
        value = self._text(value)
        if value not in {choice for choice, _ in self.choices}:
            raise ValidationError(f"{value!r} is not one of: {', '.join(choice for choice, _ in self.choices)}.")
        return value

    def _coerce_integer(self, value):
        if isinstance(value, bool):
            raise ValidationError("Expected a whole number, got a boolean.")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if not isinstance(value, int):
            raise ValidationError(f"Expected a whole number, got {_type_name(value)}.")
        return self._in_range(value)

    def _coerce_number(self, value):
        if isinstance(value, bool):
            raise ValidationError("Expected a number, got a boolean.")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValidationError("Expected a number, got text.") from None
        if not isinstance(value, (int, float)):
            raise ValidationError(f"Expected a number, got {_type_name(value)}.")
        return self._in_range(value)

    def _in_range(self, value):
        if self.min_value is not None and value < self.min_value:
            raise ValidationError(f"Must be at least {self.min_value:g}.")
        if self.max_value is not None and value > self.max_value:
            raise ValidationError(f"Must be at most {self.max_value:g}.")
        return value

    def _coerce_boolean(self, value):
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "on", "off", "1", "0", "yes", "no"}:
            return value.strip().lower() in {"true", "on", "1", "yes"}
        if not isinstance(value, bool):
            raise ValidationError(f"Expected true or false, got {_type_name(value)}.")
        return value

    def _coerce_mapping(self, value):
        if isinstance(value, str):
            value = parse_mapping_lines(value, self.separator)
        if not isinstance(value, Mapping):
            raise ValidationError(f"Expected name/value pairs, got {_type_name(value)}.")
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip():
                raise ValidationError("Every name must be non-empty text.")
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ValidationError(f"The value of {key!r} must be text, got {_type_name(item)}.")
            result[key.strip()] = str(item)
        return result

    def _coerce_json(self, value):
        # A native value (from YAML, or already parsed by the form's JSONField); a string
        # here is a JSON string, unless it opens an object or array (``coerce``).
        try:
            json.dumps(value, allow_nan=False)  # YAML has .nan and .inf; stored JSON cannot
        except (TypeError, ValueError):
            raise ValidationError("Not a JSON value.") from None
        return value

    def _coerce_list(self, value):
        if isinstance(value, str):
            value = [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, (str, int)) for item in value):
            raise ValidationError(f"Expected a list of names, got {_type_name(value)}.")
        return [str(item) for item in value]

    # -- forms ------------------------------------------------------------------------

    def form_field(self) -> forms.Field:
        """The admin form field for a non-secret value (secret fields: secrets_app.forms)."""
        common = {"label": self.label, "required": False, "help_text": self.help_text}
        if self.type == "boolean":
            return forms.BooleanField(**common)
        if self.type == "choice" and not self.template:
            return forms.ChoiceField(choices=self.choices, **common)
        if self.type in ("integer", "number") and not self.template:
            return (forms.IntegerField if self.type == "integer" else forms.FloatField)(**common)
        if self.type == "json":
            return DetailedJSONField(
                bare_templates=self.template, widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), **common
            )
        if self.type in ("textarea", "code", "mapping", "list"):
            attrs = {"rows": 8 if self.type == "code" else 4, "cols": 80}
            if self.type == "code":
                attrs["style"] = "font-family: monospace"
            return forms.CharField(widget=forms.Textarea(attrs=attrs), strip=False, **common)
        return forms.CharField(widget=forms.TextInput(attrs={"size": 60}), **common)

    def form_initial(self, value: Any) -> Any:
        """A stored value as the form shows it."""
        if value is None:
            return self.default
        if self.type == "mapping":
            glue = f"{self.separator} " if self.separator == ":" else self.separator
            return "\n".join(f"{key}{glue}{item}" for key, item in value.items())
        if self.type == "list":
            return ", ".join(value)
        return value


def clean_fields(
    fields: tuple[Field, ...],
    data: Mapping[str, Any],
    *,
    owner: str,
    keep: Callable[[Field], Any] = lambda field: None,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Coerce ``data`` against ``fields``: (values, errors keyed by field name).

    ``keep(field)`` gives the stored value to keep when a field is left blank (write-only
    secret fields); ``owner`` names the kind in the message for unknown fields.
    """
    errors: dict[str, list[str]] = {}
    known = {field.name for field in fields}
    for key in data:
        if key not in known:
            errors.setdefault(str(key), []).append(f"Unknown field for {owner}; known fields: {', '.join(sorted(known))}.")
    values: dict[str, Any] = {}
    for field in fields:
        raw = data.get(field.name)
        if field.is_blank(raw):
            kept = keep(field)
            if kept is not None:
                values[field.name] = kept
            elif field.default is not None:
                values[field.name] = field.default
            elif field.required:
                errors.setdefault(field.name, []).append("This field is required.")
            continue
        try:
            values[field.name] = field.coerce(raw)
        except ValidationError as exc:
            errors.setdefault(field.name, []).extend(exc.messages)
    return values, errors


def clean_config(
    fields: tuple[Field, ...],
    data: Mapping[str, Any],
    *,
    owner: str,
    validate: Callable[[dict[str, Any]], None],
    check: Callable[[dict[str, Any]], dict[str, list[str]]] = lambda config: {},
) -> dict[str, Any]:
    """``clean_fields``, then ``check`` (more errors by field), then the kind's cross-field
    ``validate`` once every field is valid; raises one ValidationError with all of them."""
    config, errors = clean_fields(fields, data, owner=owner)
    for name, messages in check(config).items():
        errors.setdefault(name, []).extend(messages)
    if not errors:
        try:
            validate(config)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return config


def secret_kind_check(*, owner: str, kinds: tuple[str, ...], required: bool, secret: Any) -> None:
    """Whether ``secret`` suits what ``owner`` (a step, an authentication mode) takes.

    Raises ValidationError({"secret": ...}) naming the kinds it takes.
    """
    if secret is None:
        if required:
            raise ValidationError({"secret": f"{owner[:1].upper()}{owner[1:]} needs a secret ({', '.join(kinds)})."})
        return
    if secret.kind not in kinds:
        allowed = ", ".join(kinds) or "no secret"
        raise ValidationError({"secret": f"Secret {secret.name!r} is of kind {secret.kind!r}; {owner} takes: {allowed}."})


def is_whole_number(value: Any, *, low: int, high: int | None = None) -> bool:
    """An int (not a bool, as YAML's true would be) from ``low`` to ``high``."""
    return not isinstance(value, bool) and isinstance(value, int) and low <= value and (high is None or value <= high)


def unknown_keys(data: Mapping[Any, Any], known: set[str]) -> list[str]:
    """Errors for keys of a mapping from the ``apply`` file that nothing reads ([] when none)."""
    unknown = sorted(set(map(str, data)) - set(known))
    return [f"Unknown keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}."] if unknown else []
