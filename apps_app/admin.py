"""Apps in the Django admin: the Apps page (with an upload), an app's page, and the
connections manager.

Thin: installing, the OAuth2 registration, adding, testing, changing and deleting a
connection, exporting and uninstalling all go through ``apps_app.services`` (and the
vault's services, for what a connection shares with every secret). Model permissions
choose the pages; the vault's owners and grants choose the connections (a user sees the
ones they may use, and changes, tests or deletes the ones they may manage).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from apps_app.admin_connect_links import make_connect_links
from apps_app.exceptions import AppInUse
from apps_app.manifest import MAX_UPLOAD_BYTES, ManifestError, manifest_from_upload
from apps_app.models import App, Connection
from apps_app.notice_admin import AppNoticeFlowForm
from apps_app.selectors import (
    STATUS_LABELS,
    apps_with_counts,
    connection_identity,
    connection_last_error,
    connection_status_counts,
    connection_statuses,
    connections_with_status,
)
from apps_app.services.apps import app_export, app_install, app_redirect_uri, app_registration_set, app_uninstall
from apps_app.services.connections import connection_create, connection_fields, connection_test, connection_update
from apps_app.services.notices import app_notice_flow_set
from apps_app.services.operations import app_operations_customize
from flows_app.models import Flow
from secrets_app import access
from secrets_app.exceptions import RevocationFailed, SecretInUse, VaultError
from secrets_app.forms import declared_form_field
from secrets_app.services.oauth2 import oauth2_authorization_start
from secrets_app.services.secrets import secret_delete

STATUS_COLOURS = {
    "connected": "#2e7d32",
    "failing": "#c62828",
    "needs_reauthorization": "#c62828",
    "revoked": "#c62828",
    "not_connected": "#ef6c00",
    "untested": "#757575",
}


def icon_tag(app: App, size: int = 24):
    if not app.icon:
        return format_html('<span class="app-icon app-icon-blank" style="width:{0}px;height:{0}px"></span>', size)
    return format_html('<img class="app-icon" src="{}" width="{}" height="{}" alt="">', app.icon, size, size)


def status_badge(status: str):
    return format_html(
        '<strong class="connection-status status-{}" style="color:{}">{}</strong>',
        status,
        STATUS_COLOURS.get(status, "#000"),
        STATUS_LABELS[status],
    )


class UploadForm(forms.Form):
    manifest = forms.FileField(
        label="App manifest", help_text="An app.yaml, or a zip of the app's folder (app.yaml and its icon)."
    )


class RegistrationForm(forms.Form):
    """The app's OAuth2 client at the provider; the secret is write-only."""

    client_id = forms.CharField(label="Client ID", max_length=500)
    client_secret = forms.CharField(
        label="Client secret",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


#: The form field that says whose account a new connection is: a name no declared key can take.
END_USER = "end-user"


def connection_form(app: App, connection: Connection | None = None, data=None) -> forms.Form:
    """A generic app's declared fields as a form, sensitive ones write-only (an OAuth2
    app declares none). Adding a connection also asks for its end user."""
    form = forms.Form(data)
    secret = connection.secret if connection is not None else None
    public = secret.config.get("public", {}) if secret else {}
    stored = set(secret.values.get("secret", {})) if secret else set()
    for field in connection_fields(app):
        form.fields[field.name] = declared_form_field(field, stored_secret=field.name in stored, stored_names=[])
        if not field.secret:
            form.initial[field.name] = public.get(field.name, field.default)
    if connection is None:
        form.fields[END_USER] = forms.CharField(
            label="End user", required=False, max_length=200, help_text=Connection._meta.get_field("end_user").help_text
        )
    return form


def form_errors_from(form: forms.Form, exc: ValidationError) -> None:
    """A service's ValidationError beside the form's fields (others above them)."""
    for name, problems in exc.message_dict.items():
        form.add_error(name if name in form.fields else None, problems)


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ("icon_image", "name", "version", "description", "connection_count")
    list_display_links = ("name",)
    search_fields = ("name", "slug", "description")
    change_list_template = "admin/apps_app/app/change_list.html"

    def get_queryset(self, request):
        return apps_with_counts(super().get_queryset(request))

    actions = [make_connect_links]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # uninstalling goes through its own page and service
        return actions

    @admin.display(description="")
    def icon_image(self, obj):
        return icon_tag(obj)

    @admin.display(description="Connections", ordering="connection_count")
    def connection_count(self, obj):
        url = reverse("admin:apps_app_connection_changelist") + f"?app__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.connection_count)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            "title": "Apps",
            **(extra_context or {}),
            "upload_form": UploadForm(),
            "can_upload": self._may_upload(request),
        }
        return super().changelist_view(request, extra_context)

    def _may_upload(self, request) -> bool:
        return request.user.has_perm("apps_app.add_app") or request.user.has_perm("apps_app.change_app")

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path("upload/", view(self.upload_view), name="apps_app_app_upload"),
            path("<int:pk>/registration/", view(self.registration_view), name="apps_app_app_registration"),
            path("<int:pk>/connections/add/", view(self.add_connection_view), name="apps_app_app_add_connection"),
            path("<int:pk>/export/", view(self.export_view), name="apps_app_app_export"),
            path("<int:pk>/customize/", view(self.customize_view), name="apps_app_app_customize"),
            path("<int:pk>/notices/", view(self.notices_view), name="apps_app_app_notices"),
            path("<int:pk>/connect-link/", view(self.connect_link_view), name="apps_app_app_connect_link"),
        ]
        return own + super().get_urls()

    # -- install and upgrade: the upload ----------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        # An app is installed from its manifest: the upload on the Apps page.
        return HttpResponseRedirect(reverse("admin:apps_app_app_changelist") + "#upload")

    def upload_view(self, request):
        changelist = HttpResponseRedirect(reverse("admin:apps_app_app_changelist"))
        if request.method != "POST":
            return changelist
        if not self._may_upload(request):
            raise PermissionDenied
        form = UploadForm(request.POST, request.FILES)
        if not form.is_valid():
            self.message_user(request, "Choose a manifest file to upload.", messages.ERROR)
            return changelist
        try:
            manifest = manifest_from_upload(form.cleaned_data["manifest"].read(MAX_UPLOAD_BYTES + 1))
            upgrade = App.objects.filter(slug=manifest.slug).exists()
            if not request.user.has_perm("apps_app.change_app" if upgrade else "apps_app.add_app"):
                raise PermissionDenied(f"You may not {'upgrade' if upgrade else 'install'} apps.")
            change = app_install(manifest=manifest, acting_user=request.user)
        except (ManifestError, ValidationError) as exc:  # the manifest, or what upgrading it would change
            problems = format_html_join("", "<li>{}</li>", ((problem,) for problem in exc.messages))
            self.message_user(
                request, format_html('The app was not installed:<ul id="manifest-errors">{}</ul>', problems), messages.ERROR
            )
            return changelist
        self.message_user(request, change.headline, messages.SUCCESS)
        for line in change.changes:
            self.message_user(request, line, messages.INFO)
        return HttpResponseRedirect(reverse("admin:apps_app_app_change", args=[change.app.pk]))

    # -- an app's page ------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        app = self.get_object(request, unquote(object_id))
        if app is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, app):
            raise PermissionDenied
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET"])
        connections = connections_with_status(user=request.user, app=app.slug)
        status = request.GET.get("status", "")
        shown = connections.filter(status=status) if status in STATUS_LABELS else connections
        counts = connection_status_counts(connections)
        flows = Flow.objects.filter(app_slug=app.slug).order_by("app_private", "slug")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": app,
            "app": app,
            "title": app.name,
            "icon": icon_tag(app, 48),
            "icon_small": icon_tag(app, 20),
            "flows": [(flow, flow.slug.split("/", 1)[1]) for flow in flows],
            "may_run": request.user.has_perm("flows_app.run_flow"),
            "connections": [
                (connection, connection_identity(connection), status_badge(connection.status)) for connection in shown
            ],
            "status_filters": [
                (value, label, counts.get(value, 0), value == status) for value, label in connection_statuses(app)
            ],
            "all_count": sum(counts.values()),
            "status": status,
            "can_change": self.has_change_permission(request, app),
            "can_delete": self.has_delete_permission(request, app),
            "can_add_connection": request.user.has_perm("apps_app.add_connection"),
            "is_oauth2": app.connection_kind == App.ConnectionKind.OAUTH2,
            "registration_form": RegistrationForm(initial={"client_id": app.client_id}),
            "client_secret_stored": bool(app.client_values.get("client_secret")),
            "redirect_uri": app_redirect_uri(app),
            "test_flow": app.manifest["connection"].get("test", ""),
            "operations": sorted(app.manifest["connection"].get("operations", {}).items()),
            "notice_form": AppNoticeFlowForm(instance=app),
        }
        return TemplateResponse(request, "admin/apps_app/app/app_page.html", context)

    def _app_for(self, request, pk, permission: str) -> App:
        app = get_object_or_404(App, pk=pk)
        if not request.user.has_perm(f"apps_app.{permission}"):
            raise PermissionDenied
        return app

    def _back_to(self, app):
        return HttpResponseRedirect(reverse("admin:apps_app_app_change", args=[app.pk]))

    def registration_view(self, request, pk):
        app = self._app_for(request, pk, "change_app")
        if request.method != "POST":
            return self._back_to(app)
        form = RegistrationForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "The client ID is required.", messages.ERROR)
            return self._back_to(app)
        try:
            app_registration_set(app=app, acting_user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, f"{app.name}: the OAuth2 client is saved.", messages.SUCCESS)
        return self._back_to(app)

    def notices_view(self, request, pk):
        """The flow run when one of the app's connections needs re-authorization, recovers or expires."""
        app = self._app_for(request, pk, "change_app")
        if request.method != "POST":
            return self._back_to(app)
        form = AppNoticeFlowForm(request.POST, instance=app)
        if not form.is_valid():
            self.message_user(request, " ".join(form.errors.get("notice_flow", [])), messages.ERROR)
            return self._back_to(app)
        app_notice_flow_set(app=app, flow_slug=form.cleaned_data["notice_flow"], acting_user=request.user)
        self.message_user(request, f"{app.name}: notices go to {form.cleaned_data['notice_flow'] or 'the default flow'}.", messages.SUCCESS)
        return self._back_to(app)

    def connect_link_view(self, request, pk):
        """A new-connection link, shown once with a copy button (as the list's action does)."""
        app = get_object_or_404(App, pk=pk)
        if request.method == "POST":
            make_connect_links(self, request, App.objects.filter(pk=app.pk))
        return self._back_to(app)

    def customize_view(self, request, pk):
        """Write the OAuth2 operations the app leaves standard as its own flows, to edit."""
        app = self._app_for(request, pk, "change_app")
        if request.method != "POST":
            return self._back_to(app)
        try:
            change = app_operations_customize(app=app, acting_user=request.user)
        except (ManifestError, ValidationError) as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, change.headline, messages.SUCCESS)
            for line in change.changes:
                self.message_user(request, line, messages.INFO)
        return self._back_to(app)

    def export_view(self, request, pk):
        app = get_object_or_404(App, pk=pk)
        if not self.has_view_or_change_permission(request, app):
            raise PermissionDenied
        response = HttpResponse(app_export(app=app), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{app.slug}.yaml"'
        return response

    # -- adding a connection ------------------------------------------------------------

    def add_connection_view(self, request, pk):
        app = self._app_for(request, pk, "add_connection")
        is_oauth2 = app.connection_kind == App.ConnectionKind.OAUTH2
        form = connection_form(app, data=request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            end_user = data.pop(END_USER)
            try:
                connection = connection_create(app=app, data=data, end_user=end_user, acting_user=request.user)
            except ValidationError as exc:
                form_errors_from(form, exc)
            else:
                if is_oauth2:  # connected when the provider sends the user back (apps_app.views)
                    return authorize_redirect(self, request, connection)
                self.message_user(request, f"Connection #{connection.pk} added.", messages.SUCCESS)
                report_test(self, request, connection)
                return HttpResponseRedirect(reverse("admin:apps_app_connection_change", args=[connection.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": app,
            "app": app,
            "icon": icon_tag(app, 32),
            "title": f"Add a connection to {app.name}",
            "form": form,
            "is_oauth2": is_oauth2,
        }
        return TemplateResponse(request, "admin/apps_app/app/add_connection.html", context)

    # -- uninstalling: the delete page --------------------------------------------------

    def delete_view(self, request, object_id, extra_context=None):
        app = self.get_object(request, unquote(object_id))
        if app is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_delete_permission(request, app):
            raise PermissionDenied
        if request.method == "POST":
            force = request.POST.get("force") == "yes"
            try:
                warnings = app_uninstall(app=app, acting_user=request.user, force=force)
            except AppInUse as exc:
                self.message_user(
                    request, f"{app.name} still has {exc.count} connection(s): choose to revoke them too.", messages.ERROR
                )
            except (PermissionDenied, VaultError) as exc:  # someone else's connection, or one a flow uses
                self.message_user(request, f"Not uninstalled: {exc}", messages.ERROR)
            else:
                for warning in warnings:
                    self.message_user(request, warning, messages.WARNING)
                self.message_user(request, f"{app.name} was uninstalled.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:apps_app_app_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": app,
            "app": app,
            "icon": icon_tag(app, 32),
            "title": f"Uninstall {app.name}",
            "connection_count": app.connections.count(),
            "flow_count": Flow.objects.filter(app_slug=app.slug).count(),
        }
        return TemplateResponse(request, "admin/apps_app/app/uninstall.html", context)


def authorize_redirect(model_admin, request, connection: Connection):
    """Send the user to the provider to connect ``connection`` (back through the app's callback)."""
    if not request.session.session_key:
        request.session.save()
    try:
        url = oauth2_authorization_start(
            secret=connection.secret, user=request.user, session_key=request.session.session_key
        )
    except VaultError as exc:
        model_admin.message_user(request, f"Cannot connect: {exc}", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:apps_app_connection_change", args=[connection.pk]))
    return HttpResponseRedirect(url)


def report_test(model_admin, request, connection: Connection) -> None:
    """Run the app's test flow with ``connection`` and say how it went."""
    result = connection_test(connection=connection, acting_user=request.user)
    if result is None:
        model_admin.message_user(request, f"{connection.app.name} has no test flow: nothing to test.", messages.INFO)
        return
    identity = f" ({result.identity})" if result.identity else ""
    model_admin.message_user(
        request, f"Connection #{connection.pk}{identity}: {result.summary}", messages.SUCCESS if result.ok else messages.ERROR
    )


class ConnectionStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return list(STATUS_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() in STATUS_LABELS else queryset


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    """The connections manager: every connection of every app this user may use."""

    list_display = (
        "app_icon", "label", "app", "identity", "owner", "end_user", "status_label", "last_tested", "last_error",
    )  # fmt: skip
    list_display_links = ("label",)
    list_filter = ("app", ConnectionStatusFilter)
    search_fields = ("secret__name", "secret__identity", "end_user", "app__name")
    actions = ["test_selected", make_connect_links]

    def get_queryset(self, request):
        return connections_with_status(user=request.user)

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Connections", **(extra_context or {})})

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deleting revokes first: one at a time, from its page
        return actions

    def has_add_permission(self, request):
        return False  # added from its app's page, with the app's fields or its provider

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or access.may_manage(request.user, obj.secret))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or access.may_manage(request.user, obj.secret))

    @admin.display(description="")
    def app_icon(self, obj):
        return icon_tag(obj.app)

    @admin.display(description="Connection", ordering="pk")
    def label(self, obj):
        return f"#{obj.pk}"

    @admin.display(description="Identity", ordering="secret__identity")
    def identity(self, obj):
        return connection_identity(obj) or "-"

    @admin.display(description="Owner", ordering="secret__owner__username")
    def owner(self, obj):
        return obj.secret.owner.get_username() if obj.secret.owner_id else "the operator"

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return status_badge(obj.status)

    @admin.display(description="Last tested", ordering="secret__last_tested_at")
    def last_tested(self, obj):
        return obj.secret.last_tested_at or "-"

    @admin.display(description="Last error")
    def last_error(self, obj):
        return connection_last_error(obj)[:160] or "-"

    @admin.action(description="Test selected connections", permissions=["change"])
    def test_selected(self, request, queryset):
        for connection in queryset:
            if not access.may_manage(request.user, connection.secret):
                self.message_user(request, f"#{connection.pk}: skipped, you may not manage it.", messages.WARNING)
                continue
            report_test(self, request, connection)

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path("<int:pk>/test/", view(self.test_view), name="apps_app_connection_test"),
            path("<int:pk>/connect/", view(self.connect_view), name="apps_app_connection_connect"),
        ]
        return own + super().get_urls()

    def _connection_for_change(self, request, pk) -> Connection:
        connection = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, connection):
            raise PermissionDenied
        return connection

    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:apps_app_connection_change", args=[pk]))
        connection = self._connection_for_change(request, pk)
        report_test(self, request, connection)
        if request.POST.get("back") == "app":  # pressed in the list on the app's page
            return HttpResponseRedirect(reverse("admin:apps_app_app_change", args=[connection.app_id]))
        return HttpResponseRedirect(reverse("admin:apps_app_connection_change", args=[pk]))

    def connect_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:apps_app_connection_change", args=[pk]))
        connection = self._connection_for_change(request, pk)
        return authorize_redirect(self, request, connection)

    # -- a connection's page: details, and a generic connection's fields to change ------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        connection = self.get_object(request, unquote(object_id))
        if connection is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        can_change = self.has_change_permission(request, connection)
        is_generic = connection.app.connection_kind == App.ConnectionKind.GENERIC
        form = None
        if is_generic and can_change:
            form = connection_form(connection.app, connection, request.POST if request.method == "POST" else None)
        if request.method == "POST":
            if not can_change:
                raise PermissionDenied
            if form is None:  # an OAuth2 connection changes by connecting again
                return HttpResponseNotAllowed(["GET"])
            if form.is_valid():
                try:
                    connection_update(connection=connection, data=form.cleaned_data, acting_user=request.user)
                except ValidationError as exc:
                    form_errors_from(form, exc)
                else:
                    self.message_user(request, f"Connection #{connection.pk} saved.", messages.SUCCESS)
                    report_test(self, request, connection)
                    return HttpResponseRedirect(request.path)
        secret = connection.secret
        public = secret.config.get("public", {})
        stored = set(secret.values.get("secret", {})) if is_generic else set()
        fields = [
            (field.label, "stored" if field.name in stored else "not set") if field.secret
            else (field.label, public.get(field.name, "-"))
            for field in connection_fields(connection.app)
        ]  # fmt: skip
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": connection,
            "connection": connection,
            "secret": secret,
            "app": connection.app,
            "icon": icon_tag(connection.app, 32),
            "title": f"{connection.app.name} connection #{connection.pk}",
            "identity": connection_identity(connection),
            "status": status_badge(connection.status),
            "last_error": connection_last_error(connection),
            "tokens": getattr(secret, "oauth2_connection", None),
            "fields": fields,
            "form": form,
            "can_change": can_change,
            "can_delete": self.has_delete_permission(request, connection),
            "is_oauth2": not is_generic,
        }
        return TemplateResponse(request, "admin/apps_app/connection/connection_page.html", context)

    def delete_view(self, request, object_id, extra_context=None):
        connection = self.get_object(request, unquote(object_id))
        if connection is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_delete_permission(request, connection):
            raise PermissionDenied
        revocation_failed = ""
        if request.method == "POST":
            try:
                warnings = secret_delete(
                    secret=connection.secret, acting_user=request.user, force=request.POST.get("force") == "yes"
                )
            except RevocationFailed as exc:
                revocation_failed = str(exc)
            except SecretInUse as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                for warning in warnings:
                    self.message_user(request, warning, messages.WARNING)
                self.message_user(request, f"Connection #{object_id} deleted.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:apps_app_app_change", args=[connection.app_id]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": connection,
            "connection": connection,
            "app": connection.app,
            "icon": icon_tag(connection.app, 32),
            "title": f"Delete {connection.app.name} connection #{connection.pk}",
            "revocation_failed": revocation_failed,
            "is_oauth2": connection.app.connection_kind == App.ConnectionKind.OAUTH2,
        }
        return TemplateResponse(request, "admin/apps_app/connection/delete.html", context)
