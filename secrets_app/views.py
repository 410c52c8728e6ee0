"""HTTP views of the vault: the OAuth2 redirect endpoints and the published JWKS.

Thin: each parses the request, calls one service and answers. Vault errors map to a page
with a short reason (``oauth2_error_page``), never a value.
"""

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from secrets_app import access
from secrets_app.exceptions import SecretNotFound, VaultError
from secrets_app.selectors import published_jwks
from secrets_app.services.oauth2 import oauth2_authorization_complete, oauth2_authorization_start, oauth2_secret_get


def oauth2_error_page(request, message: str, *, secret=None, status: int = 400):
    manage_url = reverse("admin:secrets_app_secret_oauth2", args=[secret.pk]) if secret is not None else None
    context = {
        **admin.site.each_context(request),
        "message": message,
        "manage_url": manage_url,
        "title": "OAuth2 connection failed",
    }
    return render(request, "secrets_app/oauth2_error.html", context, status=status)


def _manage_url(secret) -> str:
    return reverse("admin:secrets_app_secret_oauth2", args=[secret.pk])


@require_GET
@staff_member_required
def oauth2_authorize(request, name: str):
    """Send the user to the provider with a fresh state and PKCE challenge."""
    if not request.user.has_perm("secrets_app.change_secret"):
        raise PermissionDenied
    try:
        secret = oauth2_secret_get(name=name)
    except SecretNotFound as exc:
        return oauth2_error_page(request, str(exc), status=404)
    if not access.may_manage(request.user, secret):
        raise PermissionDenied
    if not request.session.session_key:
        request.session.save()
    try:
        url = oauth2_authorization_start(secret=secret, user=request.user, session_key=request.session.session_key)
    except VaultError as exc:
        return oauth2_error_page(request, str(exc), secret=secret)
    return HttpResponseRedirect(url)


@require_GET
@staff_member_required
def oauth2_callback(request, name: str):
    """The provider's redirect back: check it, exchange the code, go to the tokens page."""
    try:
        outcome = oauth2_authorization_complete(
            secret_name=name,
            user=request.user,
            session_key=request.session.session_key or "",
            params=request.GET,
        )
    except VaultError as exc:  # AuthorizationFailed, and anything the vault refused on the way
        secret = None
        try:
            secret = oauth2_secret_get(name=name)
        except SecretNotFound:
            pass
        return oauth2_error_page(request, str(exc), secret=secret)
    identity = f" as {outcome.connection.identity}" if outcome.connection.identity else ""
    messages.success(request, f"Connected{identity}. The access token is stored.")
    for warning in outcome.warnings:
        messages.warning(request, warning)
    return HttpResponseRedirect(_manage_url(outcome.secret))


@require_GET
def jwks(request):
    response = JsonResponse(published_jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response
