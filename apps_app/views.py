"""HTTP views of installed apps: the OAuth2 redirect that all of an app's connections share,
and the page a connect link opens.

Thin: the vault's authorization services and the connect-link services do the work; the
state names the connection.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from apps_app.exceptions import ConnectLinkError
from apps_app.forms import ConnectionFieldsForm
from apps_app.models import App, Connection
from apps_app.services import connect_links
from apps_app.services.connections import connection_fields
from secrets_app.exceptions import VaultError
from secrets_app.services.oauth2 import oauth2_authorization_complete, oauth2_authorization_secret
from secrets_app.views import oauth2_error_page

#: The session key listing the connect links whose OAuth2 authorization this browser is in
#: (the last few: one person may have several tabs open).
CONNECT_LINK_SESSION_KEY = "apps_app.connect_links"
CONNECT_LINKS_KEPT = 5


@require_GET
@never_cache
def oauth2_callback(request, slug: str):
    """The provider's redirect back for a connection of app ``slug``: an admin's, or one a
    connect link started in this browser session (no account needed for that one)."""
    secret = oauth2_authorization_secret(state=request.GET.get("state", ""))
    in_session = request.session.get(CONNECT_LINK_SESSION_KEY, [])
    link = connect_links.connect_link_in_progress(link_ids=in_session, secret=secret)
    if link is not None and link.app.slug == slug:
        # Forgotten first: a reloaded callback finds no link and cannot undo the outcome.
        request.session[CONNECT_LINK_SESSION_KEY] = [pk for pk in in_session if pk != link.pk]
        outcome = connect_links.connect_link_callback(
            link=link, session_key=request.session.session_key or "", params=request.GET
        )
        return _connect_outcome_page(request, outcome)
    if not (request.user.is_active and request.user.is_staff):
        return _connect_refused(
            request, "This authorization attempt is unknown, was already used, or was started in another browser.",
            status=400,
        )
    return _admin_oauth2_callback(request, slug)


def _admin_oauth2_callback(request, slug: str):
    """A staff user's authorization: back to the app's page; then its test flow runs."""
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


def _connect_refused(request, message: str, *, status: int):
    return render(request, "apps_app/connect_refused.html", {"message": message}, status=status)


def _connect_outcome_page(request, outcome: connect_links.ConnectOutcome):
    if outcome.return_to:
        return HttpResponseRedirect(outcome.return_to)
    succeeded = outcome.status in ("connected", "failed")
    context = {
        "app": outcome.link.app,
        "outcome": outcome,
        # Nothing was kept, and the link may be used again.
        "retry_url": "" if succeeded else connect_links.connect_link_url(outcome.link),
    }
    return render(request, "apps_app/connect_done.html", context, status=200 if succeeded else 400)


@never_cache
@require_http_methods(["GET", "POST"])
def connect_page(request):
    """What a connect link opens: the app, what it may do, then its fields or "Continue"
    to the provider. Needs no account; the form is CSRF-protected like every POST."""
    try:
        link = connect_links.connect_link_open(request.GET.get("link", ""))
    except ConnectLinkError as exc:
        return _connect_refused(request, str(exc), status=exc.status)
    app = link.app
    form = None
    if app.connection_kind == App.ConnectionKind.GENERIC:
        form = ConnectionFieldsForm(
            connection_fields(app), request.POST if request.method == "POST" else None, reconnect=link.reconnect
        )
    error = ""
    if request.method == "POST":
        try:
            if form is None:
                if not request.session.session_key:
                    request.session.save()
                url = connect_links.connect_link_authorize(link=link, session_key=request.session.session_key)
                in_session = request.session.get(CONNECT_LINK_SESSION_KEY, [])
                request.session[CONNECT_LINK_SESSION_KEY] = [*in_session, link.pk][-CONNECT_LINKS_KEPT:]
                return HttpResponseRedirect(url)
            if form.is_valid():
                outcome = connect_links.connect_link_submit_fields(link=link, data=form.cleaned_data)
                return _connect_outcome_page(request, outcome)
        except ConnectLinkError as exc:
            return _connect_refused(request, str(exc), status=exc.status)
        except ValidationError as exc:
            if form is None or not hasattr(exc, "error_dict"):
                error = " ".join(exc.messages)
            else:
                for name, errors in exc.error_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
        except VaultError as exc:  # the provider's settings cannot start an authorization
            error = str(exc)
    context = {
        "app": app,
        "link": link,
        "form": form,
        "error": error,
        "scopes": connect_links.connect_link_scopes(app),
    }
    return render(request, "apps_app/connect.html", context, status=400 if error else 200)
