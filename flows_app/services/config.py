"""The ``flows:`` section of the config-as-code file."""

from typing import Any

from django.core.exceptions import ValidationError


def flows_apply(spec: Any, *, env, acting_user=None) -> list:
    if spec:
        raise ValidationError({"__all__": "Flows are not supported yet."})
    return []


def flows_export() -> dict:
    return {}
