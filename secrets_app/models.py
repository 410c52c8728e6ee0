"""What the vault stores.

A ``Secret`` is a named credential of one kind (``secrets_app.kinds``). Non-secret settings
(a user name, a URL, a header name) live in ``config``; everything secret lives in
``values``, encrypted by its field. ``AuditEvent`` rows record who changed or revealed
what and when, never a value.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from secrets_app.fields import EncryptedJSONField, SecretValues


def kind_choices():
    from secrets_app.kinds import SECRET_KINDS

    return [(slug, kind.label) for slug, kind in SECRET_KINDS.items()]


class Secret(models.Model):
    class Status(models.TextChoices):
        UNTESTED = "untested", "Not tested"
        OK = "ok", "OK"
        FAILING = "failing", "Failing"

    name = models.SlugField(
        max_length=100,
        unique=True,
        help_text="How flows and the API refer to this secret: letters, digits, '-' and '_'.",
    )
    kind = models.CharField(max_length=32, choices=kind_choices)
    description = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True, help_text="Settings that are not secret.")
    values = EncryptedJSONField(default=SecretValues)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNTESTED)
    status_detail = models.CharField(max_length=300, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Secret {self.name!r} kind={self.kind!r}>"

    @property
    def handler(self):
        """This secret's kind, bound to it: what it can do (authenticate, sign, connect...)."""
        from secrets_app.kinds import SECRET_KINDS

        return SECRET_KINDS[self.kind](self)


class AuditEvent(models.Model):
    """Who did what to which secret or flow, and when. Never a value."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="User name, or the process that acted.")
    action = models.CharField(max_length=50, db_index=True)
    target_type = models.CharField(max_length=50)
    target_name = models.CharField(max_length=200, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type} {self.target_name}"
