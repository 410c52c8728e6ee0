from typing import Any

from secrets_app.models import AuditEvent


def audit_record(
    *,
    acting_user=None,
    actor_label: str = "",
    action: str,
    target_type: str,
    target_name: str,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record who did what. ``detail`` holds field names and outcomes, never values."""
    if acting_user is not None and getattr(acting_user, "is_authenticated", False):
        label = acting_user.get_username()
    else:
        acting_user = None
        label = actor_label or "system"
    return AuditEvent.objects.create(
        actor=acting_user,
        actor_label=label[:150],
        action=action,
        target_type=target_type,
        target_name=target_name[:200],
        detail=detail or {},
    )
