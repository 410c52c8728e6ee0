"""The contract every secret kind passes.

A kind's test module subclasses ``SecretKindContract`` and says how to define a secret of
its kind and how to exercise it against a real local server. The contract then checks
what every user relies on: the kind does its job, and its secret values never appear in
the raw database, in admin pages after saving, in ``repr``, or in log records (captured
at DEBUG, before any redacting filter).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from secrets_app.api import Vault
from secrets_app.models import Secret
from secrets_app.services.secrets import secret_create, secret_probe


def raw_database_text() -> str:
    """Every row of every table the product writes secrets near, as the database holds it."""
    tables = [
        table
        for table in connection.introspection.table_names()
        if table.startswith(("secrets_app_", "flows_app_", "django_admin_log", "django_celery"))
    ]
    texts = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            texts.extend(" ".join(str(column) for column in row) for row in cursor.fetchall())
    return "\n".join(texts)


class SecretKindContract:
    kind: str
    name = "contract-secret"

    # -- what a kind's test module provides --------------------------------------------

    @pytest.fixture
    def definition(self) -> dict[str, Any]:
        raise NotImplementedError

    def secret_values(self, definition: dict[str, Any]) -> list[str]:
        """The strings that must never leak: by default every secret field's value."""
        from secrets_app.kinds import SECRET_KINDS

        values = []
        for field in SECRET_KINDS[self.kind].fields:
            value = definition.get(field.name)
            if field.secret and isinstance(value, dict):
                values.extend(value.values())
            elif field.secret and value:
                values.append(value)
        return values

    def exercise(self, vault: Vault, name: str, definition: dict[str, Any]) -> None:
        """Do the kind's job against a real server, asserting it worked."""
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------------

    @pytest.fixture
    def secret(self, db, definition):
        return secret_create(name=self.name, kind=self.kind, data=definition)

    def test_does_its_job_against_a_real_server(self, secret, definition):
        self.exercise(Vault(), secret.name, definition)

    def admin_pages(self, secret) -> list[str]:
        return [
            reverse("admin:secrets_app_secret_change", args=[secret.pk]),
            reverse("admin:secrets_app_secret_changelist"),
        ]

    def test_values_are_encrypted_in_the_database(self, secret, definition):
        raw = raw_database_text()
        for value in self.secret_values(definition):
            assert value not in raw

    def test_admin_never_shows_values_after_saving(self, secret, definition, admin_client):
        pages = [admin_client.get(url) for url in self.admin_pages(secret)]
        for page in pages:
            assert page.status_code == 200
            html = page.content.decode()
            for value in self.secret_values(definition):
                assert value not in html

    def test_saving_the_admin_form_unchanged_keeps_the_values(self, secret, definition, admin_client):
        url = reverse("admin:secrets_app_secret_change", args=[secret.pk])
        form = admin_client.get(url).context["adminform"].form
        posted = {name: form.initial.get(name, "") for name in form.fields}
        posted = {
            name: ("on" if value is True else "" if value in (None, False) else value) for name, value in posted.items()
        }
        response = admin_client.post(url, posted)
        assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
        stored = Secret.objects.get(pk=secret.pk)
        assert stored.values == secret.values
        self.exercise(Vault(), secret.name, definition)

    def test_repr_and_str_never_show_values(self, secret, definition):
        stored = Secret.objects.get(pk=secret.pk)
        shown = [
            repr(stored),
            str(stored),
            repr(stored.values),
            str(stored.values),
            repr(stored.handler),
            f"{stored.values}",
        ]
        try:
            shown.append(repr(Vault().auth_for(stored.name)))
        except Exception:
            pass  # kinds that do not authenticate HTTP requests
        for value in self.secret_values(definition):
            assert all(value not in text for text in shown)

    def test_logs_never_show_values(self, secret, definition, caplog):
        caplog.set_level(logging.DEBUG)
        self.exercise(Vault(), secret.name, definition)
        secret_probe(secret=secret) if secret.handler.testable else None
        logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
        for value in self.secret_values(definition):
            assert value not in logged
