"""The ``secrets:`` section of the config-as-code file (``manage.py apply`` / ``export``).

    secrets:
      crm-token: {kind: api_token, token: "${CRM_TOKEN}", header: X-API-KEY}

Values come from the environment as ``${VAR}`` (``$$`` is a literal ``$``), so no value
has to live in the file. Applying is idempotent: an entry that matches the vault changes
nothing. A secret field left out keeps its stored value, so a file may manage the
settings while the values were typed into the admin. Export writes the same shape with a
``${NAME_FIELD}`` placeholder for every secret value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError

from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create, secret_kind_get, secret_update

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Change:
    action: str  # create | update | unchanged
    target_type: str
    name: str
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.action == "update" and self.fields else ""
        return f"{self.action} {self.target_type} {self.name}{detail}"


def interpolate_environment(value: Any, env: Mapping[str, str], errors: list[str]) -> Any:
    """Replace ``${VAR}`` in every string; unset variables are reported, not replaced."""
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in env:
                errors.append(f"The environment variable {name} is not set.")
                return ""
            return env[name]

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, Mapping):
        return {key: interpolate_environment(item, env, errors) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate_environment(item, env, errors) for item in value]
    return value


def _apply_one(name: Any, definition: Any, env: Mapping[str, str], acting_user) -> Change:
    if not isinstance(definition, Mapping):
        raise ValidationError({"__all__": "Expected a mapping with 'kind' and the kind's fields."})
    definition = dict(definition)
    kind = definition.pop("kind", None)
    if not isinstance(kind, str):
        raise ValidationError({"kind": "This field is required."})
    secret_kind_get(kind)
    description = definition.pop("description", "")
    if not isinstance(description, str):
        raise ValidationError({"description": "Expected text."})
    data, unset = {}, {}
    for key, value in definition.items():
        problems: list[str] = []
        data[key] = interpolate_environment(value, env, problems)
        if problems:
            unset[key] = problems
    if unset:
        raise ValidationError(unset)
    existing = Secret.objects.filter(name=name).first() if isinstance(name, str) else None
    if existing is None:
        secret_create(
            name=name, kind=kind, data=data, description=description, acting_user=acting_user, actor_label="apply"
        )
        return Change("create", "secret", str(name))
    if existing.app_slug:
        raise ValidationError({"__all__": f"{name!r} is a connection of the app {existing.app_slug!r}; the app manages it."})
    if existing.kind != kind:
        raise ValidationError(
            {"kind": f"The vault holds {name!r} as {existing.kind!r}; a secret cannot change kind (delete it first)."}
        )
    changed = secret_update(
        secret=existing, data=data, description=description, acting_user=acting_user, actor_label="apply"
    )
    return Change("update" if changed else "unchanged", "secret", name, changed)


def secrets_apply(spec: Any, *, env: Mapping[str, str], acting_user=None) -> list[Change]:
    """Create or update every secret in ``spec``; errors for all of them, keyed ``name.field``."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ValidationError({"__all__": "Expected a mapping of secret names to definitions."})
    changes, errors = [], {}
    for name, definition in spec.items():
        try:
            changes.append(_apply_one(name, definition, env, acting_user))
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                errors[str(name) if field_name == "__all__" else f"{name}.{field_name}"] = messages
        except PermissionDenied as exc:  # apply --as a user who may not manage it
            errors[str(name)] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    return changes


def placeholder(*parts: str) -> str:
    return "${" + re.sub(r"[^A-Za-z0-9]+", "_", "_".join(parts)).strip("_").upper() + "}"


def secrets_export() -> dict[str, Any]:
    """Every secret but the installed apps' connections (accounts of their users, not config)."""
    exported = {}
    for secret in Secret.objects.filter(app_slug="").order_by("name"):
        kind_class = secret_kind_get(secret.kind)
        entry: dict[str, Any] = {"kind": secret.kind}
        if secret.description:
            entry["description"] = secret.description
        config = kind_class.exportable_config(dict(secret.config), dict(secret.values))
        for kind_field in kind_class.fields:
            if kind_field.secret and kind_field.name in secret.values:
                value = secret.values[kind_field.name]
                if kind_field.type == "mapping":
                    entry[kind_field.name] = {key: placeholder(secret.name, kind_field.name, key) for key in value}
                else:
                    entry[kind_field.name] = placeholder(secret.name, kind_field.name)
            elif not kind_field.secret and kind_field.name in config:
                entry[kind_field.name] = config[kind_field.name]
        exported[secret.name] = entry
    return exported
