"""Creating, changing, testing, revealing and deleting secrets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import router, transaction
from django.db.models import ProtectedError, Q
from django.db.models.deletion import Collector
from django.utils import timezone

from secrets_app import access
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import ProbeFailed, SecretInUse, VaultError
from secrets_app.kinds import SECRET_KINDS
from secrets_app.kinds.base import CleanedSecret, ProbeResult, SecretKind
from secrets_app.models import Secret
from secrets_app.selectors import secret_rename_consequences
from secrets_app.services.audit import audit_record


def secret_kind_get(kind: str) -> type[SecretKind]:
    try:
        return SECRET_KINDS[kind]
    except KeyError:
        known = ", ".join(SECRET_KINDS)
        raise ValidationError({"kind": f"Unknown kind {kind!r}; known kinds: {known}."}) from None


def _validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError({"name": "A secret needs a name."})
    try:
        validate_slug(name)
    except ValidationError:
        raise ValidationError({"name": f"{name!r} is not a valid name: use letters, digits, '-' and '_'."}) from None
    if len(name) > 100:
        raise ValidationError({"name": "A name has at most 100 characters."})
    return name


def secret_changed_fields(secret: Secret, cleaned: CleanedSecret) -> list[str]:
    """Names of fields whose stored value ``cleaned`` would change (values never compared out loud)."""
    names = set(secret.config) | set(cleaned.config) | set(secret.values) | set(cleaned.values)
    return sorted(
        name
        for name in names
        if secret.config.get(name) != cleaned.config.get(name) or secret.values.get(name) != cleaned.values.get(name)
    )


@transaction.atomic
def secret_create(
    *,
    name: str,
    kind: str,
    data: Mapping[str, Any],
    description: str = "",
    acting_user=None,
    actor_label: str = "",
    app_slug: str = "",
) -> Secret:
    """Validate and store a new secret (``app_slug``: a connection of that installed app).
    Raises ValidationError keyed by field."""
    kind_class = secret_kind_get(kind)
    name = _validate_name(name)
    if Secret.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A secret named {name!r} already exists."})
    cleaned = kind_class.clean(data)
    secret = Secret.objects.create(
        name=name,
        kind=kind,
        description=description,
        config=cleaned.config,
        values=cleaned.values,
        created_by=_user(acting_user),
        updated_by=_user(acting_user),
        owner=_user(acting_user),
        app_slug=app_slug,
    )
    secret.handler.created(acting_user)
    audit_record(
        acting_user=acting_user,
        actor_label=actor_label,
        action="secret.create",
        target_type="secret",
        target_name=name,
        detail={"kind": kind, "fields": sorted([*cleaned.config, *cleaned.values])},
    )
    return secret


@transaction.atomic
def secret_update(
    *,
    secret: Secret,
    data: Mapping[str, Any],
    description: str | None = None,
    acting_user=None,
    actor_label: str = "",
) -> list[str]:
    """Validate and store new field values; blank secret fields keep their value.

    Returns the names of the fields that changed (nothing is written when none did).
    """
    access.require_manage(acting_user, secret)
    cleaned = secret.handler.clean(data, CleanedSecret(config=dict(secret.config), values=dict(secret.values)))
    changed = secret_changed_fields(secret, cleaned)
    if description is not None and description != secret.description:
        changed.append("description")
        secret.description = description
    if not changed:
        return []
    secret.config, secret.values = cleaned.config, cleaned.values
    secret.updated_by = _user(acting_user)
    secret.status, secret.status_detail = Secret.Status.UNTESTED, ""
    secret.save()
    audit_record(
        acting_user=acting_user,
        actor_label=actor_label,
        action="secret.update",
        target_type="secret",
        target_name=secret.name,
        detail={"changed": changed},
    )
    secret.handler.changed(changed, acting_user)
    return changed


@transaction.atomic
def secret_rename(*, secret: Secret, name: str, acting_user=None, force: bool = False) -> None:
    """Rename a secret, only knowingly when that breaks or changes something else.

    Flows and templates name secrets, and an OAuth2 secret's redirect URI holds its name,
    so a rename that has consequences (``selectors.secret_rename_consequences``: flows that
    name it, a redirect URI to register again) is refused with a ValidationError on
    ``name`` listing them, unless ``force``: every path that renames (the admin after its
    "I understand" confirmation, scripts, the API) has to say it accepts them, and the
    audit row records what was accepted.
    """
    access.require_manage(acting_user, secret)
    old = secret.name
    name = _validate_name(name)
    if name == old:
        return
    if Secret.objects.filter(name=name).exclude(pk=secret.pk).exists():
        raise ValidationError({"name": f"A secret named {name!r} already exists."})
    consequences = secret_rename_consequences(secret=secret, name=name)
    if consequences and not force:
        raise ValidationError({"name": [f"Renaming {old!r} to {name!r} needs confirming:", *consequences]})
    secret.name = name
    secret.save(update_fields=["name", "updated_at"])
    audit_record(
        acting_user=acting_user,
        action="secret.rename",
        target_type="secret",
        target_name=name,
        detail={"from": old, **({"accepted": consequences} if consequences else {})},
    )


def secret_delete(*, secret: Secret, acting_user=None, force: bool = False) -> list[str]:
    """Delete a secret; its kind acts first (an OAuth2 connection is revoked at the provider).

    A secret that steps or triggers use is not deleted, and its kind is not asked
    (SecretInUse). When the kind refuses (RevocationFailed: its tokens would stay valid at
    the provider with nothing here to revoke them later) the secret is kept, unless
    ``force``: then it is deleted anyway and the kind's warnings are returned.
    """
    access.require_manage(acting_user, secret)
    try:
        # Before the kind acts: a secret that cannot be deleted must keep its tokens.
        Collector(using=router.db_for_write(Secret)).collect([secret])
    except ProtectedError as exc:
        raise SecretInUse(secret.name, sorted(str(user) for user in exc.protected_objects)) from None
    warnings = secret.handler.before_delete(acting_user, force=force)
    with transaction.atomic():
        audit_record(
            acting_user=acting_user,
            action="secret.delete",
            target_type="secret",
            target_name=secret.name,
            detail={"kind": secret.kind, **({"forced": True, "warnings": warnings} if warnings else {})},
        )
        secret.delete()
    return warnings


def secret_probe(*, secret: Secret, acting_user=None, probe: Callable[[], ProbeResult] | None = None) -> ProbeResult:
    """Run "Test" (the kind's, or ``probe``: an app's test flow) and record the outcome as
    the secret's status, and the account it found as its identity."""
    access.require_manage(acting_user, secret)
    try:
        result = (probe or secret.handler.probe)()
    except (ProbeFailed, VaultError) as exc:
        result = ProbeResult(ok=False, summary=str(exc))
    found = {"identity": result.identity[:255]} if result.identity else {}
    Secret.objects.filter(pk=secret.pk).update(
        status=Secret.Status.OK if result.ok else Secret.Status.FAILING,
        status_detail=result.summary[:300],
        last_tested_at=timezone.now(),
        **found,
    )
    audit_record(
        acting_user=acting_user,
        action="secret.test",
        target_type="secret",
        target_name=secret.name,
        detail={"ok": result.ok},
    )
    return result


def secret_mark_used(*, secret: Secret) -> None:
    """Set ``last_used_at``, at most once per resolution window (a hot path: one cheap UPDATE)."""
    now = timezone.now()
    resolution = timedelta(seconds=vault_settings.last_used_resolution_seconds)
    if secret.last_used_at and now - secret.last_used_at < resolution:
        return
    Secret.objects.filter(pk=secret.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - resolution)
    ).update(last_used_at=now)
    secret.last_used_at = now


def secret_reveal_record(*, secret: Secret, field: str, acting_user=None, actor_label: str = "") -> None:
    """Audit that a secret value left the vault as plaintext (to a template, script or caller)."""
    audit_record(
        acting_user=acting_user,
        actor_label=actor_label,
        action="secret.reveal",
        target_type="secret",
        target_name=secret.name,
        detail={"field": field},
    )


@transaction.atomic
def rs256_key_pair_generate(*, secret: Secret, acting_user=None) -> None:
    """Replace an RS256 secret's keys with a newly generated pair."""
    from secrets_app import jose

    pem = jose.generate_rsa_private_pem(vault_settings.generated_rsa_bits)
    secret_update(
        secret=secret,
        data={**secret.config, "private_key": pem, "public_key": "", "jwks_url": ""},
        acting_user=acting_user,
    )


def _user(acting_user):
    return acting_user if acting_user is not None and getattr(acting_user, "is_authenticated", False) else None
