"""The vault in the Django admin.

Thin: forms come from the kinds (``secrets_app.forms``), and every change, test, key
generation or deletion goes through ``secrets_app.services``. Django's own
``delete_selected`` is replaced so that deletions are audited and OAuth2 connections are
revoked first; both deletion pages say what will be revoked, and offer "Delete anyway"
when the provider could not revoke.
"""

import copy
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from secrets_app import access
from secrets_app.app_settings import vault_settings
from secrets_app.exceptions import RevocationFailed, SecretInUse, VaultError
from secrets_app.forms import secret_form_for
from secrets_app.kinds import SECRET_KINDS, kinds_with
from secrets_app.kinds.base import Capability
from secrets_app.models import AuditEvent, OAuth2Connection, Secret, SecretGrant
from secrets_app.selectors import secret_deletion_previews
from secrets_app.services.grants import grant_give, grant_withdraw, grant_withdrawal_preview
from secrets_app.services.oauth2 import (
    oauth2_connection_refresh,
    oauth2_connection_revoke,
    oauth2_connection_test,
    oauth2_redirect_uri,
)
from secrets_app.services.secrets import (
    rs256_key_pair_generate,
    secret_create,
    secret_delete,
    secret_probe,
    secret_rename,
    secret_update,
)

STATUS_COLOURS = {"ok": "#2e7d32", "failing": "#c62828", "neutral": "#757575"}


def expiry_label(expires_at, now) -> str:
    """When a token expires, as precisely as it matters: "in 42 s", "in 58 min", "at 14:03:20"."""
    if expires_at is None:
        return "-"
    local = timezone.localtime(expires_at)
    clock = f"{local:%H:%M:%S}" if local.date() == timezone.localtime(now).date() else f"{local:%Y-%m-%d %H:%M:%S}"
    seconds = (expires_at - now).total_seconds()
    if seconds <= 0:
        return f"expired at {clock}"
    if seconds < 60:
        return f"in {int(seconds)} s"
    if seconds < 60 * 60:
        return f"in {int(seconds // 60)} min"
    return f"at {clock}"


class WithdrawForm(forms.Form):
    """Withdraw one of this secret's grants (any other id is refused, not looked up)."""

    grant = forms.ModelChoiceField(queryset=SecretGrant.objects.none())

    def __init__(self, *args, secret, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["grant"].queryset = secret.grants.all()


class GrantForm(forms.Form):
    """Give a grant to one user or one group."""

    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), required=False)
    group = forms.ModelChoiceField(queryset=Group.objects.all(), required=False)
    level = forms.ChoiceField(choices=SecretGrant.Level.choices, initial=SecretGrant.Level.USE)

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("user")) == bool(cleaned.get("group")):
            raise ValidationError("Choose a user or a group (one of them).")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "owner", "status_badge", "last_used_at", "updated_at")
    list_filter = ("kind", "status")
    list_select_related = ("owner",)
    search_fields = ("name", "description")
    actions = ["test_selected", "delete_selected_secrets"]
    change_form_template = "admin/secrets_app/secret/change_form.html"
    delete_confirmation_template = "admin/secrets_app/secret/delete_confirmation.html"
    readonly_fields = (
        "owner_label",
        "kind_label",
        "redirect_uri",
        "status_badge",
        "status_detail",
        "last_tested_at",
        "last_used_at",
        "updated_at",
    )

    # -- which kind ----------------------------------------------------------------

    def _kind_class(self, request, obj=None):
        slug = obj.kind if obj is not None else request.GET.get("kind", "")
        return SECRET_KINDS.get(slug)

    def add_view(self, request, form_url="", extra_context=None):
        if self._kind_class(request) is None:
            if not self.has_add_permission(request):
                raise PermissionDenied
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Add secret: choose a kind",
                "kinds": SECRET_KINDS.values(),
            }
            return TemplateResponse(request, "admin/secrets_app/secret/choose_kind.html", context)
        return super().add_view(request, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = secret_form_for(self._kind_class(request, obj))
        kwargs["fields"] = ["name", "description"]
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        kind_class = self._kind_class(request, obj)
        general = ["name", "kind_label", "description", "owner_label"]
        if Capability.REDIRECT_URI in kind_class.capabilities:
            general.append("redirect_uri")
        fieldsets = [
            (None, {"fields": general}),
            (
                kind_class.label,
                {"fields": [field.name for field in kind_class.fields], "description": kind_class.description},
            ),
        ]
        if obj is not None:
            fieldsets.append(
                (
                    "Status",
                    {"fields": ["status_badge", "status_detail", "last_tested_at", "last_used_at", "updated_at"]},
                )
            )
        return fieldsets

    @admin.display(description="Owner")
    def owner_label(self, obj):
        if obj is None or not obj.pk:
            return "you"
        return obj.owner.get_username() if obj.owner_id else "the operator (only superusers and grants reach it)"

    # -- per-secret access: model permissions choose the pages, grants the secrets -------

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or access.may_manage(request.user, obj))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or access.may_manage(request.user, obj))

    def _manageable(self, request, queryset):
        """The selected secrets this user may manage; the others are named in a message."""
        allowed = access.secrets_manageable(request.user, queryset)
        refused = sorted(set(queryset.values_list("name", flat=True)) - set(allowed.values_list("name", flat=True)))
        if refused:
            self.message_user(request, f"Skipped, you may not manage: {', '.join(refused)}.", messages.WARNING)
        return allowed

    @admin.display(description="Kind")
    def kind_label(self, obj):
        kind_class = SECRET_KINDS.get(obj.kind) if obj and obj.pk else None
        return kind_class.label if kind_class else "-"

    @admin.display(description="Redirect URI")
    def redirect_uri(self, obj):
        if obj is None or not obj.pk:
            template = oauth2_redirect_uri(secret=Secret(name="NAME"))
            return format_html(
                '<code id="redirect-uri" data-template="{}">{}</code><div class="help">Register this at the provider; '
                "NAME is the secret's name.</div>",
                template,
                template,
            )
        return format_html('<code id="redirect-uri">{}</code>', oauth2_redirect_uri(secret=obj))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        status = obj.handler.status_display()
        return format_html('<span style="color:{}">{}</span>', STATUS_COLOURS[status.tone], status.label)

    # -- saving through the services -----------------------------------------------

    def save_model(self, request, obj, form, change):
        data = form.service_data()
        description = form.cleaned_data.get("description", "")
        if change:
            current = Secret.objects.get(pk=obj.pk)
            secret_rename(
                secret=current, name=obj.name, acting_user=request.user, force=form.cleaned_data["confirm_rename"]
            )
            secret_update(secret=current, data=data, description=description, acting_user=request.user)
        else:
            current = secret_create(
                name=obj.name,
                kind=self._kind_class(request).slug,
                data=data,
                description=description,
                acting_user=request.user,
            )
            obj.pk = current.pk
        obj.refresh_from_db()
        for warning in form.save_warnings():
            self.message_user(request, f"{obj.name}: {warning}", messages.WARNING)

    def response_add(self, request, obj, post_url_continue=None):
        # A new secret is tested, connected or granted next: "Save" opens it, as "Save and
        # continue editing" does, instead of going back to the list.
        if not {"_addanother", "_popup", "_continue"} & set(request.POST):
            request.POST = request.POST.copy()
            request.POST["_continue"] = "1"
        return super().response_add(request, obj, post_url_continue)

    # -- deleting: revoke first, confirm, offer "delete anyway" -----------------------

    def get_deleted_objects(self, objs, request):
        # An OAuth2 connection is the live side of its secret, not deletable on its own
        # (its admin allows no deletion); deleting the secret revokes and deletes it, and
        # needs only the permission to delete secrets.
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(OAuth2Connection._meta.verbose_name)
        return deleted, model_count, perms_needed, protected

    def delete_view(self, request, object_id, extra_context=None):
        secret = self.get_object(request, unquote(object_id))
        extra_context = {
            **(extra_context or {}),
            "previews": secret_deletion_previews([secret]) if secret is not None else [],
            "offer_force": "revocation_failed" in request.GET,
        }
        try:
            # Not inside one transaction as Django's delete_view is: revocation waits on the
            # provider, which must not hold the database (SQLite would lock every writer), and
            # the connection's lease must be visible to other processes meanwhile.
            return self._delete_view(request, object_id, extra_context)
        except RevocationFailed as exc:
            self.message_user(request, str(exc), messages.ERROR)
            delete_url = reverse("admin:secrets_app_secret_delete", args=[secret.pk])
            return HttpResponseRedirect(f"{delete_url}?revocation_failed=1")

    def log_deletions(self, request, queryset):
        # Logged by delete_model once the secret is gone: a failed revocation keeps it.
        pass

    def delete_model(self, request, obj):
        force = request.POST.get("force") == "yes"
        logged = copy.copy(obj)  # deleting sets obj.pk to None
        for warning in secret_delete(secret=obj, acting_user=request.user, force=force):
            self.message_user(request, f"{obj.name}: {warning}", messages.WARNING)
        super().log_deletions(request, [logged])

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Delete selected secrets", permissions=["delete"])
    def delete_selected_secrets(self, request, queryset):
        """Like Django's delete_selected: a confirmation page first, then the deletion.

        Secrets whose tokens could not be revoked are kept and shown again, with the
        reason and a "Delete anyway" button.
        """
        queryset = self._manageable(request, queryset)
        if request.POST.get("post") != "yes":
            return self._delete_selected_confirmation(request, list(queryset), errors={})
        deleted, errors = [], {}
        for secret in queryset:
            try:
                self.delete_model(request, secret)
            except RevocationFailed as exc:
                errors[secret.pk] = str(exc)
                continue
            except SecretInUse as exc:  # "Delete anyway" cannot help: the user must go first
                self.message_user(request, str(exc), messages.ERROR)
                continue
            deleted.append(secret.name)
        if deleted:
            self.message_user(request, f"Deleted {len(deleted)} secret(s): {', '.join(deleted)}.", messages.SUCCESS)
        if errors:
            kept = [secret for secret in queryset if secret.pk in errors]
            return self._delete_selected_confirmation(request, kept, errors=errors)
        return None

    def _delete_selected_confirmation(self, request, secrets, *, errors):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Delete secrets" if not errors else "Some secrets were not deleted",
            "previews": secret_deletion_previews(secrets),
            "errors": errors,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/secrets_app/secret/delete_selected_confirmation.html", context)

    # -- test and key generation ---------------------------------------------------

    @admin.action(description="Test selected secrets", permissions=["change"])
    def test_selected(self, request, queryset):
        for secret in self._manageable(request, queryset):
            if not SECRET_KINDS[secret.kind].testable:
                self.message_user(request, f"{secret.name}: this kind has nothing to test.", messages.INFO)
                continue
            self._report_probe(request, secret, secret_probe(secret=secret, acting_user=request.user))

    def _report_probe(self, request, secret, result):
        text = f"{secret.name}: {result.summary}"
        if result.excerpt:
            text += f" — {result.excerpt[:200]}"
        self.message_user(request, text, messages.SUCCESS if result.ok else messages.ERROR)

    def get_urls(self):
        own = [
            path("<int:pk>/oauth2/", self.admin_site.admin_view(self.oauth2_view), name="secrets_app_secret_oauth2"),
            path(
                "<int:pk>/oauth2/<str:operation>/",
                self.admin_site.admin_view(self.oauth2_operation_view),
                name="secrets_app_secret_oauth2_operation",
            ),
            path("<int:pk>/test/", self.admin_site.admin_view(self.test_view), name="secrets_app_secret_test"),
            path("<int:pk>/grants/", self.admin_site.admin_view(self.grants_view), name="secrets_app_secret_grants"),
            path(
                "<int:pk>/generate-key/",
                self.admin_site.admin_view(self.generate_key_view),
                name="secrets_app_secret_generate_key",
            ),
        ]
        return own + super().get_urls()

    def _secret_for_change(self, request, pk, **kind):
        secret = get_object_or_404(Secret, pk=pk, **kind)
        if not self.has_change_permission(request, secret):
            raise PermissionDenied
        return secret

    def _back_to_change(self, secret):
        return HttpResponseRedirect(reverse("admin:secrets_app_secret_change", args=[secret.pk]))

    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:secrets_app_secret_change", args=[pk]))
        secret = self._secret_for_change(request, pk)
        self._report_probe(request, secret, secret_probe(secret=secret, acting_user=request.user))
        return self._back_to_change(secret)

    def generate_key_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:secrets_app_secret_change", args=[pk]))
        secret = self._secret_for_change(request, pk)
        if Capability.GENERATE_KEY not in secret.handler.capabilities:
            raise PermissionDenied
        try:
            rs256_key_pair_generate(secret=secret, acting_user=request.user)
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
        except VaultError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{secret.name}: a new key pair was generated.", messages.SUCCESS)
        return self._back_to_change(secret)

    # -- grants: who else may use or manage it ------------------------------------------

    def grants_view(self, request, pk):
        """List, give and withdraw grants; withdrawing first shows which flows would stop."""
        secret = get_object_or_404(Secret.objects.select_related("owner"), pk=pk)
        if not self.has_view_permission(request, secret):
            raise PermissionDenied
        can_manage = self.has_change_permission(request, secret)
        form = GrantForm(request.POST if request.POST.get("action") == "give" else None)
        confirm = None
        if request.method == "POST":
            if not can_manage:
                raise PermissionDenied
            if request.POST.get("action") == "give" and form.is_valid():
                grant = grant_give(secret=secret, acting_user=request.user, **form.cleaned_data)
                self.message_user(request, f"{grant.grantee_label} may now {grant.get_level_display().lower()}.", messages.SUCCESS)
                return HttpResponseRedirect(request.path)
            if request.POST.get("action") == "withdraw":
                withdraw = WithdrawForm(request.POST, secret=secret)
                if not withdraw.is_valid():
                    raise Http404("No such grant on this secret.")
                grant = withdraw.cleaned_data["grant"]
                if request.POST.get("confirm") != "yes":
                    confirm = (grant, grant_withdrawal_preview(grant))
                else:
                    stopped = grant_withdraw(grant=grant, acting_user=request.user)
                    note = f" These flows stop working: {', '.join(stopped)}." if stopped else ""
                    self.message_user(request, f"Withdrawn from {grant.grantee_label}.{note}", messages.SUCCESS)
                    return HttpResponseRedirect(request.path)
        grants = secret.grants.select_related("user", "group", "granted_by")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": secret,
            "title": f"Grants: {secret.name}",
            "secret": secret,
            "grants": [(grant, grant_withdrawal_preview(grant)) for grant in grants],
            "form": form,
            "confirm": confirm,
            "can_manage": can_manage,
        }
        return TemplateResponse(request, "admin/secrets_app/secret/grants.html", context)

    # -- OAuth2: the manage-tokens page -----------------------------------------------

    def oauth2_view(self, request, pk):
        secret = get_object_or_404(Secret, pk=pk, kind__in=kinds_with(Capability.TOKENS))
        if not self.has_view_permission(request, secret):
            raise PermissionDenied
        connection = OAuth2Connection.objects.filter(secret=secret).first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": secret,
            "title": f"OAuth2 tokens: {secret.name}",
            "secret": secret,
            "connection": connection,
            "grant_type": secret.config.get("grant_type", "authorization_code"),
            "redirect_uri": oauth2_redirect_uri(secret=secret),
            "can_change": self.has_change_permission(request, secret),
            "expires": expiry_label(connection.expires_at if connection else None, timezone.now()),
            "operations": [
                ("refresh", "Refresh now" if connection and connection.has_refresh_token else "Fetch access token"),
                ("test", "Test connection"),
                ("revoke", "Revoke"),
            ],
        }
        return TemplateResponse(request, "admin/secrets_app/secret/oauth2.html", context)

    def oauth2_operation_view(self, request, pk, operation):
        manage = HttpResponseRedirect(reverse("admin:secrets_app_secret_oauth2", args=[pk]))
        if request.method != "POST":
            return manage
        secret = self._secret_for_change(request, pk, kind__in=kinds_with(Capability.TOKENS))
        try:
            if operation == "test":
                self._report_probe(request, secret, oauth2_connection_test(secret=secret, acting_user=request.user))
            elif operation == "refresh":
                connection = oauth2_connection_refresh(secret=secret, acting_user=request.user)
                until = f" until {connection.expires_at:%Y-%m-%d %H:%M:%S %Z}" if connection.expires_at else ""
                self.message_user(request, f"New access token stored; valid{until}.", messages.SUCCESS)
            elif operation == "revoke":
                self.message_user(
                    request, oauth2_connection_revoke(secret=secret, acting_user=request.user), messages.SUCCESS
                )
            else:
                raise PermissionDenied
        except VaultError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return manage

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        kind_class = self._kind_class(request, obj)
        context.update({"kind": kind_class, "testable": bool(obj and kind_class.testable)})
        return super().render_change_form(request, context, add, change, form_url, obj)


class ConnectionStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("connected", "Connected"),
            ("expiring", "Expiring soon"),
            ("needs_reauthorization", "Needs re-authorization"),
            ("revoked", "Revoked"),
            ("not_connected", "Not connected"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "expiring":
            soon = timezone.now() + timedelta(seconds=vault_settings.oauth2_proactive_window_seconds)
            return queryset.filter(status=OAuth2Connection.Status.CONNECTED, expires_at__lte=soon)
        if self.value():
            return queryset.filter(status=self.value())
        return queryset


@admin.register(OAuth2Connection)
class OAuth2ConnectionAdmin(admin.ModelAdmin):
    """The connections manager: every OAuth2 connection, its health, bulk actions."""

    list_display = (
        "secret_link", "provider", "status_label", "identity", "expires", "reconnect_by", "notices",
        "last_refreshed_at", "last_error",
    )  # fmt: skip
    list_filter = (ConnectionStatusFilter,)
    search_fields = ("secret__name", "identity")
    actions = ["refresh_selected", "revoke_selected"]
    list_select_related = ("secret",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("secrets_app.view_secret")

    @admin.display(description="Secret", ordering="secret__name")
    def secret_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:secrets_app_secret_oauth2", args=[obj.secret_id]), obj.secret.name
        )

    @admin.display(description="Provider")
    def provider(self, obj):
        return obj.secret.config.get("preset") or "-"

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return obj.get_status_display()

    @admin.display(description="Expires", ordering="expires_at")
    def expires(self, obj):
        return expiry_label(obj.expires_at, timezone.now())

    @admin.display(description="Notices sent")
    def notices(self, obj):
        sent = [
            (label, at)
            for label, at in (
                ("needs re-authorization", obj.reauthorization_notice_at),
                ("recovered", obj.recovery_notice_at),
                ("expiring", obj.expiry_notice_at),
            )
            if at is not None
        ]
        if not sent:
            return "-"
        return format_html_join(
            mark_safe("<br>"), "{}: {}", ((label, f"{timezone.localtime(at):%Y-%m-%d %H:%M}") for label, at in sent)
        )

    def _bulk(self, request, queryset, operation, verb):
        if not request.user.has_perm("secrets_app.change_secret"):
            raise PermissionDenied
        for connection in queryset.select_related("secret"):
            if not access.may_manage(request.user, connection.secret):
                self.message_user(request, f"{connection.secret.name}: skipped, you may not manage it.", messages.WARNING)
                continue
            try:
                operation(secret=connection.secret, acting_user=request.user)
                self.message_user(request, f"{connection.secret.name}: {verb}.", messages.SUCCESS)
            except VaultError as exc:
                self.message_user(request, f"{connection.secret.name}: {exc}", messages.ERROR)

    @admin.action(description="Refresh selected connections")
    def refresh_selected(self, request, queryset):
        self._bulk(request, queryset, oauth2_connection_refresh, "refreshed")

    @admin.action(description="Revoke selected connections")
    def revoke_selected(self, request, queryset):
        self._bulk(request, queryset, oauth2_connection_revoke, "revoked")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_label", "action", "target_type", "target_name")
    list_filter = ("action", "target_type")
    search_fields = ("target_name", "actor_label")
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
