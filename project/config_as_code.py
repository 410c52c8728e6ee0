"""The config-as-code file: one YAML document with a ``secrets:`` and a ``flows:`` section.

``config_apply`` applies the whole document in one transaction, secrets first (flows
refer to them): either everything is valid and saved, or nothing is, and every error is
reported with its path (``secrets.crm.token_url: This field is required.``). Each app owns
its section (``secrets_app.services.config``, ``flows_app.services.config``); this module
only joins them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from secrets_app.services.config import Change, secrets_apply, secrets_export


class ConfigError(Exception):
    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


def _sections():
    from flows_app.services.config import flows_apply, flows_export

    return {"secrets": (secrets_apply, secrets_export), "flows": (flows_apply, flows_export)}


def config_load(text: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"The file is not valid YAML{where}: {problem}."]) from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(["The file must be a mapping with 'secrets' and/or 'flows'."])
    return dict(document)


def config_apply(
    document: Mapping[str, Any], *, env: Mapping[str, str] | None = None, dry_run: bool = False, acting_user=None
) -> list[Change]:
    env = os.environ if env is None else env
    sections = _sections()
    unknown = sorted(str(key) for key in document if key not in sections)
    if unknown:
        raise ConfigError([f"Unknown section(s): {', '.join(unknown)}; expected: {', '.join(sections)}."])
    changes: list[Change] = []
    errors: list[str] = []
    with transaction.atomic():
        for section, (apply, _export) in sections.items():
            try:
                changes += apply(document.get(section), env=env, acting_user=acting_user)
            except ValidationError as exc:
                for path, messages in exc.message_dict.items():
                    prefix = section if path == "__all__" else f"{section}.{path}"
                    errors.extend(f"{prefix}: {message}" for message in messages)
        if errors:
            raise ConfigError(errors)
        if dry_run:
            transaction.set_rollback(True)
    return changes


def config_export() -> dict[str, Any]:
    document = {}
    for section, (_apply, export) in _sections().items():
        exported = export()
        if exported:
            document[section] = exported
    return document


def config_dump(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=120)
