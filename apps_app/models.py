"""Installed apps and their connections.

An ``App`` is a packaged integration installed from a manifest (``apps_app.manifest``):
a connection type, and flows saved as ``<app slug>/<flow>`` with ``Flow.app_slug`` set.
A ``Connection`` is one account connected to one app: a vault secret (kind ``oauth2`` or
``generic``, ``Secret.app_slug`` set) that holds its values, tokens, owner and grants,
plus what only apps know (the end user it belongs to). Its primary key is its secret's,
so a connection id and its secret id are the same number.
"""

from django.conf import settings
from django.db import models

from secrets_app.fields import EncryptedJSONField, SecretValues


class App(models.Model):
    class ConnectionKind(models.TextChoices):
        OAUTH2 = "oauth2", "OAuth2"
        GENERIC = "generic", "Fields"

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=50)
    description = models.TextField(blank=True)
    icon = models.TextField(blank=True, help_text="A data: URL (SVG or PNG), shown beside the app's name.")
    connection_kind = models.CharField(max_length=16, choices=ConnectionKind.choices)
    manifest = models.JSONField(help_text="The manifest as installed (flows included, never a value).")
    client_id = models.CharField(
        "OAuth2 client ID", max_length=500, blank=True, help_text="The app's registration at the provider."
    )
    client_values = EncryptedJSONField("OAuth2 client secret", default=SecretValues, help_text="client_secret")
    notice_flow = models.CharField(
        max_length=201,
        blank=True,
        help_text="Slug of the flow to run when a connection needs re-authorization, recovers or will expire; "
        "blank: FLOWGATE_CONNECTION_NOTICE_FLOW.",
    )
    installed_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Connection(models.Model):
    secret = models.OneToOneField(
        "secrets_app.Secret", primary_key=True, on_delete=models.CASCADE, related_name="app_connection"
    )
    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="connections")
    end_user = models.CharField(
        max_length=200, blank=True, help_text="Who this account belongs to in your own product (a customer id)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "secret_id"]

    def __str__(self) -> str:
        return f"{self.app.name} #{self.pk}"


class ConnectLink(models.Model):
    """A signed, single-use, expiring invitation to connect an account to one app, for
    someone without an account here (``apps_app.services.connect_links``).

    ``connection``: for a reconnect link, the connection it connects again (keeping its id);
    for a new one, the connection it made once used. Whoever made the link owns what it makes.
    """

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="connect_links")
    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.SET_NULL, related_name="connect_links"
    )
    reconnect = models.BooleanField(default=False)
    end_user = models.CharField(max_length=200, blank=True)
    return_url = models.CharField(max_length=2000, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, help_text="Set once, by whoever used it first.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"connect link #{self.pk} to {self.app.slug}"
