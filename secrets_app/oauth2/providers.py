"""Provider presets: data in providers.yaml, checked against providers.schema.json by the tests
(tests/secrets_app/oauth2/test_providers.py), not at run time: the file ships with the code,
and jsonschema would cost every process 4 MB for a check that cannot fail after the tests pass."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

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
    return yaml.safe_load((HERE / "providers.yaml").read_text())


def preset_choices() -> tuple[tuple[str, str], ...]:
    return tuple((slug, preset["label"]) for slug, preset in presets().items())
