"""Provider presets: data in providers.yaml, checked against providers.schema.json."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HERE = Path(__file__).parent
#: The preset keys that fill OAuth2 secret fields of the same name.
FIELDS = (
    "issuer",
    "authorize_url",
    "token_url",
    "revocation_url",
    "userinfo_url",
    "jwks_url",
    "identity_url",
    "identity_field",
    "test_url",
    "scope",
    "client_auth",
    "extra_authorize_params",
    "hooks",
    "token_data_fields",
    "refresh_token_idle_days",
)


@functools.cache
def presets() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((HERE / "providers.yaml").read_text())
    jsonschema.validate(data, json.loads((HERE / "providers.schema.json").read_text()))
    return data


def preset_choices() -> tuple[tuple[str, str], ...]:
    return tuple((slug, preset["label"]) for slug, preset in presets().items())
