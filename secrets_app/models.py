"""What the vault stores.

A ``Secret`` is a named credential of one kind (``secrets_app.kinds``). Non-secret settings
(a user name, a URL, a header name) live in ``config``; everything secret lives in
``values``, encrypted by its field. ``AuditEvent`` rows record who changed or revealed
what and when, never a value.

Access (``secrets_app.access``): a secret has an ``owner`` and ``SecretGrant`` rows; a
``SecretBinding`` records that something (a flow) uses a secret on its owner's behalf.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
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
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_secrets",
        help_text="May use and manage it, and grant others. None: the operator's (apply, the Python API).",
    )
    identity = models.CharField(
        max_length=255, blank=True, help_text="The account it stands for, as its connection test found it."
    )
    app_slug = models.CharField(
        max_length=100,
        blank=True,
        db_index=True,
        help_text="Set when this secret is a connection of an installed app: that app's flows run with it.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Secret {self.name!r} kind={self.kind!r}>"

    @property
    def label(self) -> str:
        """How messages name this secret ("secret 'crm'"): the one place where the app a
        secret belongs to joins its name once secrets have one."""
        return f"secret {self.name!r}"

    @property
    def handler(self):
        """This secret's kind, bound to it: what it can do (authenticate, sign, connect...)."""
        from secrets_app.kinds import SECRET_KINDS

        return SECRET_KINDS[self.kind](self)


class SecretGrant(models.Model):
    """Lets one user or one group use (or also manage) one secret."""

    class Level(models.TextChoices):
        USE = "use", "Use in flows"
        MANAGE = "manage", "Use and manage (change, test, connect, delete, grant)"

    secret = models.ForeignKey(Secret, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.USE)
    granted_at = models.DateTimeField(default=timezone.now)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["secret", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False),
                name="secrets_grant_user_or_group",
            ),
            models.UniqueConstraint(fields=["secret", "user"], name="secrets_grant_unique_user"),
            models.UniqueConstraint(fields=["secret", "group"], name="secrets_grant_unique_group"),
        ]

    def __str__(self) -> str:
        return f"{self.grantee_label} may {self.level} {self.secret.name}"

    @property
    def grantee_label(self) -> str:
        return f"user {self.user.get_username()}" if self.user_id else f"group {self.group.name}"


class SecretBinding(models.Model):
    """``holder`` (a flow) uses ``secret`` with the grants of the holder's ``owner``.

    Written by the holder's app when the holder is saved; the vault lets a holder reach
    only its bindings. Deleting a bound secret is refused (PROTECT) with the holders named.
    """

    secret = models.ForeignKey(Secret, on_delete=models.PROTECT, related_name="bindings")
    holder_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    holder_id = models.PositiveBigIntegerField()
    holder = GenericForeignKey("holder_type", "holder_id")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["holder_type", "holder_id", "secret"], name="secrets_binding_unique")
        ]
        indexes = [models.Index(fields=["holder_type", "holder_id"])]

    def __str__(self) -> str:
        return f"{self.holder_type.name} {self.holder}"


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


class OAuth2Connection(models.Model):
    """The live side of an OAuth2 secret: its tokens and what happened to them.

    Tokens change only through ``secrets_app.oauth2.tokens``: every change bumps
    ``version``, and a refresh takes the row's lease first (``lease_owner`` and
    ``lease_expires_at``, a compare-and-set that works on every database), so that
    exactly one process talks to the provider per expired token.
    """

    class Status(models.TextChoices):
        NOT_CONNECTED = "not_connected", "Not connected"
        CONNECTED = "connected", "Connected"
        NEEDS_REAUTHORIZATION = "needs_reauthorization", "Needs re-authorization"
        REVOKED = "revoked", "Revoked"

    secret = models.OneToOneField(Secret, on_delete=models.CASCADE, related_name="oauth2_connection")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.NOT_CONNECTED, db_index=True)
    tokens = EncryptedJSONField(default=SecretValues, help_text="access_token, refresh_token, id_token")
    token_type = models.CharField(max_length=40, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    expires_in = models.PositiveIntegerField(
        null=True, blank=True, help_text="The access token's lifetime in seconds, as the provider gave it at issue."
    )
    granted_scope = models.TextField(blank=True)
    identity = models.CharField(max_length=255, blank=True, help_text="The connected account (e-mail or user name).")
    connected_at = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    failure_count = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_refresh_at = models.DateTimeField(null=True, blank=True, db_index=True)
    provider_data = EncryptedJSONField(
        default=SecretValues,
        help_text="What flows need of the token response besides the tokens (Salesforce's instance_url, "
        "Slack's team): the fields the secret's token_data_fields name, else what its hooks return.",
    )
    reconnect_by = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When the refresh token expires, as the provider or preset says."
    )
    # When each notice about this connection went out (``apps_app.services.notices``); the
    # expiry notice also records which ``reconnect_by`` it was about, so it goes out once per date.
    reauthorization_notice_at = models.DateTimeField(null=True, blank=True)
    recovery_notice_at = models.DateTimeField(null=True, blank=True)
    expiry_notice_at = models.DateTimeField(null=True, blank=True)
    expiry_notice_for = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OAuth2 connection"

    def __str__(self) -> str:
        return self.secret.name

    def __repr__(self) -> str:
        return f"<OAuth2Connection {self.secret_id} {self.status} v{self.version}>"

    @property
    def has_access_token(self) -> bool:
        return bool(self.tokens.get("access_token"))

    @property
    def has_refresh_token(self) -> bool:
        return bool(self.tokens.get("refresh_token"))


class OAuth2AuthorizationRequest(models.Model):
    """One "Request access token" attempt, waiting for the provider's redirect.

    The ``state`` sent to the provider is stored only as a hash; the row is bound to the
    user and the browser session that started it, expires, and is consumed once. One that
    a connect link started has no user: it is bound to the session and to the link instead.
    """

    state_hash = models.CharField(max_length=64, unique=True)
    secret = models.ForeignKey(Secret, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    bound_to = models.CharField(
        max_length=100, blank=True, help_text="What started it without a user (a connect link); completion names it."
    )
    session_hash = models.CharField(max_length=64)
    pkce = EncryptedJSONField(default=SecretValues, help_text="code_verifier")
    redirect_uri = models.CharField(max_length=500)
    requested_scope = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    consumed_at = models.DateTimeField(null=True, blank=True)
