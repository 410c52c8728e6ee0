"""Re-encrypting stored values with the newest encryption key."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.db import connection, transaction

from secrets_app.fields import EncryptedJSONField, rotate_token
from secrets_app.services.audit import audit_record


@dataclass
class RotationReport:
    rows: int = 0
    retried: int = 0


def _encrypted_columns():
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedJSONField):
                yield model._meta.db_table, model._meta.pk.column, field.column


def encryption_keys_rotate(*, batch_size: int = 200, acting_user=None) -> RotationReport:
    """Re-encrypt every encrypted column with the first key of FLOWGATE_ENCRYPTION_KEYS.

    Safe while the product runs: each row is rewritten with a compare-and-set on its old
    ciphertext, so a value changed meanwhile by another process is read again and
    rotated, never overwritten with stale data. Rows are handled in small batches, each
    its own transaction, so no lock is held for long.
    """
    report = RotationReport()
    quote = connection.ops.quote_name
    for table, pk_column, column in _encrypted_columns():
        select_batch = (
            f"SELECT {quote(pk_column)}, {quote(column)} FROM {quote(table)} "
            f"WHERE {quote(pk_column)} > %s ORDER BY {quote(pk_column)} LIMIT %s"
        )
        select_one = f"SELECT {quote(column)} FROM {quote(table)} WHERE {quote(pk_column)} = %s"
        update = (
            f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE {quote(pk_column)} = %s AND {quote(column)} = %s"
        )
        last_pk = 0
        while True:
            with connection.cursor() as cursor:
                cursor.execute(select_batch, [last_pk, batch_size])
                rows = cursor.fetchall()
            if not rows:
                break
            for pk, ciphertext in rows:
                last_pk = pk
                while ciphertext is not None:
                    with transaction.atomic(), connection.cursor() as cursor:
                        cursor.execute(update, [rotate_token(ciphertext), pk, ciphertext])
                        if cursor.rowcount == 1:
                            report.rows += 1
                            break
                        report.retried += 1
                        cursor.execute(select_one, [pk])
                        row = cursor.fetchone()
                        ciphertext = row[0] if row else None
    audit_record(
        acting_user=acting_user,
        actor_label="rotate_secret_keys",
        action="vault.rotate_keys",
        target_type="vault",
        target_name="encryption keys",
        detail={"rows": report.rows},
    )
    return report
