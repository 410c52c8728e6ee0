"""HTTP views of installed apps: the OAuth2 redirect that all of an app's connections share.

Thin: the vault's authorization services do the work; the state names the connection.
"""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from apps_app.models import Connection
from secrets_app.exceptions import VaultError
from secrets_app.services.oauth2 import oauth2_authorization_complete, oauth2_authorization_secret
from secrets_app.views import oauth2_error_page


@require_GET
@staff_member_required
def oauth2_callback(request, slug: str):
    """The provider's redirect back for a connection of app ``slug``; then its test flow runs."""
    from apps_app.services.connections import connection_test

    secret = oauth2_authorization_secret(state=request.GET.get("state", ""))
    connection = Connection.objects.filter(secret=secret, app__slug=slug).select_related("app", "secret").first()
    if connection is None:
        return oauth2_error_page(request, "This authorization attempt is unknown or was already used. Start again.")
    try:
        outcome = oauth2_authorization_complete(
            secret_name=connection.secret.name,
            user=request.user,
            session_key=request.session.session_key or "",
            params=request.GET,
        )
    except VaultError as exc:
        return oauth2_error_page(request, str(exc))
    for warning in outcome.warnings:
        messages.warning(request, warning)
    identity = f" as {outcome.connection.identity}" if outcome.connection.identity else ""
    result = connection_test(connection=connection, acting_user=request.user)
    if result is None or result.ok:
        messages.success(request, f"Connected{identity}.")
    else:
        messages.error(request, f"Connected{identity}, but the test failed: {result.summary}")
    return HttpResponseRedirect(reverse("admin:apps_app_app_change", args=[connection.app.pk]))
