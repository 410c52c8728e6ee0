"""Who may use and who may manage each secret.

A secret has an **owner** and **grants** (``SecretGrant``). A grant gives one user or one
group one of two levels on one secret:

- *use*: flows owned by the grantee may bind the secret (steps authenticate with it,
  templates and scripts read it), and the grantee may see the stored data of runs that
  touched it;
- *manage*: use, and also change, test, connect, refresh, revoke, delete and grant.

The owner and superusers hold both on every secret they own (superusers: on all). An
inactive user holds nothing. ``None`` stands for the **operator**: the deployment pipeline
(``apply`` without ``--as``) and the Python API, which act for the installation itself.

Django's model permissions still decide which admin pages a user sees; these rules decide,
per secret, what the user may do there. A small explicit model rather than
django-guardian: the engine asks "may this owner use these secrets" on every run, and the
admin asks "which flows rely on this grant": both are one indexed join on typed foreign
keys here, where guardian keeps object ids as text behind a generic relation.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.db.models import Q

from secrets_app.models import Secret, SecretGrant

USE, MANAGE = SecretGrant.Level.USE, SecretGrant.Level.MANAGE
LEVELS_THAT_ALLOW = {USE: (USE, MANAGE), MANAGE: (MANAGE,)}


def user_label(user) -> str:
    return "the operator" if user is None else user.get_username()


def _holds_everything(user) -> bool | None:
    """True or False when the user's standing decides alone; None when grants decide."""
    if user is None:
        return True
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    return None


def secrets_denied(user, secrets: Iterable[Secret], level: str = USE) -> list[Secret]:
    """The secrets among ``secrets`` that ``user`` may not use (or manage), in one query."""
    secrets = list(secrets)
    standing = _holds_everything(user)
    if standing is not None or not secrets:
        return [] if standing is not False else secrets
    candidates = [secret for secret in secrets if secret.owner_id != user.pk]
    if not candidates:
        return []
    granted = set(
        SecretGrant.objects.filter(secret__in=candidates, level__in=LEVELS_THAT_ALLOW[level])
        .filter(Q(user=user) | Q(group__in=user.groups.all()))
        .values_list("secret_id", flat=True)
    )
    return [secret for secret in candidates if secret.pk not in granted]


def secret_ids_denied(user, secret_ids: Iterable[int]) -> list[str]:
    """Names of the secrets (by id) that ``user`` may not use; a deleted one counts as
    denied for everyone but superusers and the operator."""
    secret_ids = set(secret_ids)
    if not secret_ids or _holds_everything(user):
        return []
    found = list(Secret.objects.filter(pk__in=secret_ids))
    denied = [secret.name for secret in secrets_denied(user, found)]
    return denied + (["(a deleted secret)"] if len(found) < len(secret_ids) else [])


def may_use(user, secret: Secret) -> bool:
    return not secrets_denied(user, [secret], USE)


def may_manage(user, secret: Secret) -> bool:
    return not secrets_denied(user, [secret], MANAGE)


def require_manage(user, secret: Secret) -> None:
    """PermissionDenied unless ``user`` may manage ``secret`` (every service that changes it asks)."""
    if not may_manage(user, secret):
        raise PermissionDenied(f"{user_label(user)} may not manage the secret {secret.name!r}.")


def secrets_manageable(user, queryset):
    """``queryset`` narrowed to the secrets ``user`` may manage (for bulk admin actions)."""
    return secrets_allowed(user, queryset, MANAGE)


def secrets_allowed(user, queryset, level: str = USE):
    """``queryset`` narrowed to the secrets ``user`` may use (or manage), in one query."""
    standing = _holds_everything(user)
    if standing is not None:
        return queryset if standing else queryset.none()
    granted = SecretGrant.objects.filter(level__in=LEVELS_THAT_ALLOW[level]).filter(
        Q(user=user) | Q(group__in=user.groups.all())
    )
    return queryset.filter(Q(owner=user) | Q(pk__in=granted.values("secret_id")))


def users_who_would_lose_use(grant: SecretGrant, candidates: Iterable) -> list:
    """Which of ``candidates`` (users) could no longer use the grant's secret without it."""
    secret = grant.secret
    lost = []
    for user in candidates:
        if user is None or _holds_everything(user) is not None or secret.owner_id == user.pk:
            continue
        others = SecretGrant.objects.filter(secret=secret).exclude(pk=grant.pk)
        if not others.filter(Q(user=user) | Q(group__in=user.groups.all())).exists():
            lost.append(user)
    return lost
