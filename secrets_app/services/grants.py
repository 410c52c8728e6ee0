"""Owners, grants and bindings: giving and withdrawing access, and recording who uses what.

Every change is audited (``grant.give``, ``grant.withdraw``, ``secret.owner``); only a user
who may manage the secret (or the operator) may change its grants.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from secrets_app import access
from secrets_app.exceptions import SecretNotFound
from secrets_app.models import Secret, SecretBinding, SecretGrant
from secrets_app.services.audit import audit_record


@transaction.atomic
def grant_give(*, secret: Secret, level: str, user=None, group=None, acting_user=None) -> SecretGrant:
    """Give (or change the level of) a grant to one user or one group."""
    access.require_manage(acting_user, secret)
    if (user is None) == (group is None):
        raise ValidationError("A grant is for one user or one group.")
    if level not in SecretGrant.Level.values:
        raise ValidationError({"level": f"Use one of: {', '.join(SecretGrant.Level.values)}."})
    grant, created = SecretGrant.objects.get_or_create(
        secret=secret,
        user=user,
        group=group,
        defaults={"level": level, "granted_by": acting_user if getattr(acting_user, "pk", None) else None},
    )
    if not created and grant.level == level:
        return grant
    previous = None if created else grant.level
    grant.level = level
    grant.save(update_fields=["level"])
    audit_record(
        acting_user=acting_user,
        action="grant.give",
        target_type="secret",
        target_name=secret.name,
        detail={"to": grant.grantee_label, "level": level, **({"previous": previous} if previous else {})},
    )
    return grant


def grant_withdrawal_preview(grant: SecretGrant) -> list[str]:
    """The holders (flows) that would stop working if ``grant`` were withdrawn."""
    members = [grant.user] if grant.user_id else list(grant.group.user_set.all())
    lost = {user.pk for user in access.users_who_would_lose_use(grant, members)}
    if not lost:
        return []
    return sorted(
        str(binding)
        for binding in SecretBinding.objects.filter(secret=grant.secret).select_related("holder_type")
        if getattr(binding.holder, "owner_id", None) in lost
    )


@transaction.atomic
def grant_withdraw(*, grant: SecretGrant, acting_user=None) -> list[str]:
    """Withdraw a grant. Returns the holders that stop working (the preview, now true)."""
    access.require_manage(acting_user, grant.secret)
    stopped = grant_withdrawal_preview(grant)
    audit_record(
        acting_user=acting_user,
        action="grant.withdraw",
        target_type="secret",
        target_name=grant.secret.name,
        detail={"from": grant.grantee_label, "level": grant.level, "stops": stopped},
    )
    grant.delete()
    return stopped


@transaction.atomic
def secret_owner_set(*, secret: Secret, owner, acting_user=None) -> None:
    """Hand a secret to another owner (superusers and the operator only)."""
    if not (acting_user is None or acting_user.is_superuser):
        raise PermissionDenied("Only a superuser may change a secret's owner.")
    if secret.owner_id == getattr(owner, "pk", None):
        return
    previous = secret.owner.get_username() if secret.owner_id else "the operator"
    secret.owner = owner
    secret.save(update_fields=["owner", "updated_at"])
    audit_record(
        acting_user=acting_user,
        action="secret.owner",
        target_type="secret",
        target_name=secret.name,
        detail={"from": previous, "to": access.user_label(owner)},
    )


def bindings_resolve(names: Iterable[str]) -> list[Secret]:
    """The secrets named, in one query; SecretNotFound for the first missing name."""
    names = sorted(set(names))
    found = {secret.name: secret for secret in Secret.objects.filter(name__in=names)}
    for name in names:
        if name not in found:
            raise SecretNotFound(name)
    return [found[name] for name in names]


def bindings_of(holder):
    """The holder's bindings, found by its model's natural key rather than a cached content
    type id (a long-lived worker must not depend on its process's cache)."""
    meta = holder._meta
    return SecretBinding.objects.filter(
        holder_type__app_label=meta.app_label, holder_type__model=meta.model_name, holder_id=holder.pk
    )


def bindings_replace(*, holder, secrets: Iterable[Secret]) -> None:
    """Record that ``holder`` uses exactly ``secrets`` (called inside the holder's save)."""
    holder_type = ContentType.objects.get_for_model(holder)
    wanted = {secret.pk for secret in secrets}
    current = SecretBinding.objects.filter(holder_type=holder_type, holder_id=holder.pk)
    current.exclude(secret_id__in=wanted).delete()
    existing = set(current.values_list("secret_id", flat=True))
    SecretBinding.objects.bulk_create(
        SecretBinding(secret_id=pk, holder_type=holder_type, holder_id=holder.pk) for pk in wanted - existing
    )
