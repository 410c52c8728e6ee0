"""Connect links: how someone without an account here connects their account to an app.

A link is a URL ``BASE_URL/connect/?link=<token>``. The token is the link's parameters (its row
id, app, connection, end-user reference, return URL, expiry) signed with Django's signer,
so a change to any of them is refused; the ``ConnectLink`` row makes it single-use (its
``used_at`` is set with a compare-and-set) and lets an operator see what was handed out.

Who owns what a link makes: the user who made the link (an admin user; for the API, the
user of the OAuth2 client application that asked for it, if it has one), otherwise the
operator (``None``: ``manage.py connect_link``, a client without a user). Grants, audit and
the connection's flows then work as for a connection that user added.

Using a link:

- **Generic app**: the person fills the app's fields; the connection is created (or, for a
  reconnect link, changed) and tested. A failed test keeps nothing new and leaves the link
  usable, so the person can correct the fields.
- **OAuth2 app**: "Continue" uses the link, creates the connection (unless reconnecting)
  and starts the vault's authorization bound to this browser session and this link
  (``bound_to``), with the app's shared redirect URI. The callback completes it only in the
  same session. Refused or failed at the provider: a new connection is deleted again and the
  link may be used again; a reconnect's connection keeps its old tokens.

Reconnecting stores the new values or tokens on the same secret: the connection keeps its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps_app.app_settings import apps_settings
from apps_app.exceptions import ConnectLinkGone, ConnectLinkInvalid
from apps_app.models import App, Connection, ConnectLink
from apps_app.services.apps import connection_secret_data
from apps_app.services.connections import connection_create, connection_test, connection_update
from secrets_app import access
from secrets_app.exceptions import AuthorizationFailed
from secrets_app.models import Secret
from secrets_app.oauth2.providers import presets
from secrets_app.services.audit import audit_record
from secrets_app.services.oauth2 import oauth2_authorization_complete, oauth2_authorization_start
from secrets_app.services.secrets import secret_delete

SIGNING_SALT = "apps_app.connect_link"

#: Words for the scopes every OpenID Connect provider knows (OpenID Connect Core, 5.4 and 11);
#: a preset's ``scope_descriptions`` add its own.
STANDARD_SCOPE_WORDS = {
    "openid": "Confirm who you are",
    "profile": "See your name and profile",
    "email": "See your e-mail address",
    "offline_access": "Stay connected when you are not using it",
}


@dataclass(frozen=True)
class IssuedLink:
    link: ConnectLink
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class ConnectOutcome:
    """What the person sees, and where they are sent: ``status`` is ``connected``,
    ``failed`` (connected, but the app's test failed), ``denied`` or ``error``."""

    link: ConnectLink
    status: str
    message: str
    connection: Connection | None = None
    identity: str = ""

    @property
    def return_to(self) -> str:
        """The return URL with ``connection_id`` and ``status``; "" without one."""
        if not self.link.return_url:
            return ""
        parts = urlsplit(self.link.return_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if self.connection is not None:
            query.append(("connection_id", str(self.connection.pk)))
        query.append(("status", self.status))
        return urlunsplit(parts._replace(query=urlencode(query)))


def return_url_allowed(url: str) -> bool:
    """Whether ``url`` starts with one of the allowed return URLs: the same scheme and host
    (port included) exactly, and a path under the allowed one's path."""
    candidate = urlsplit(url)
    if candidate.scheme not in ("http", "https") or not candidate.netloc:
        return False
    for allowed in map(urlsplit, apps_settings.connect_return_urls):
        if (candidate.scheme, candidate.netloc.lower()) != (allowed.scheme, allowed.netloc.lower()):
            continue
        prefix = allowed.path.rstrip("/")
        if candidate.path == prefix or candidate.path.startswith(prefix + "/") or not prefix:
            return True
    return False


def _signed_fields(link: ConnectLink) -> dict[str, Any]:
    return {
        "link": link.pk,
        "app": link.app.slug,
        "connection": link.connection_id if link.reconnect else None,
        "end_user": link.end_user,
        "return_url": link.return_url,
        "expires": int(link.expires_at.timestamp()),
    }


def connect_link_url(link: ConnectLink) -> str:
    """The link to hand out. The token travels in the query string, whose values every log
    line masks (``project.log_redaction``): whoever holds an unused link may use it."""
    token = signing.dumps(_signed_fields(link), salt=SIGNING_SALT, compress=True)
    return f"{apps_settings.base_url}/connect/?{urlencode({'link': token})}"


def connect_link_create(
    *,
    app: App,
    end_user: str = "",
    return_url: str = "",
    connection: Connection | None = None,
    acting_user=None,
) -> IssuedLink:
    """Make a link to connect an account to ``app`` (or connect ``connection`` again: only
    who may manage it). Raises ValidationError for an end-user reference too long or a
    return URL not allowed, PermissionDenied for a connection the user may not manage."""
    if connection is not None:
        access.require_manage(acting_user, connection.secret)
        app, end_user = connection.app, end_user or connection.end_user
    errors = {}
    if len(end_user) > ConnectLink._meta.get_field("end_user").max_length:
        errors["end_user"] = "The end-user reference is longer than 200 characters."
    if return_url and not return_url_allowed(return_url):
        errors["return_url"] = "This return URL is not allowed (FLOWGATE_CONNECT_RETURN_URLS)."
    if app.connection_kind == App.ConnectionKind.OAUTH2 and not app.client_id:
        errors["app"] = f"Set {app.name}'s OAuth2 client (its registration) first."
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    link = ConnectLink.objects.create(
        app=app,
        connection=connection,
        reconnect=connection is not None,
        end_user=end_user,
        return_url=return_url,
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        # Whole seconds: the signed expiry is a timestamp in seconds.
        expires_at=(now + timedelta(seconds=apps_settings.connect_link_lifetime_seconds)).replace(microsecond=0),
    )
    audit_record(
        acting_user=acting_user,
        action="app.connect_link",
        target_type="app",
        target_name=app.slug,
        detail={"link": link.pk, "connection": link.connection_id, "return_url": bool(return_url)},
    )  # never the URL: whoever holds it may use it
    return IssuedLink(link=link, url=connect_link_url(link), expires_at=link.expires_at)


def connect_link_open(token: str) -> ConnectLink:
    """The link ``token`` stands for, if it can still be used.

    ConnectLinkInvalid: changed, cut short, or its return URL no longer allowed;
    ConnectLinkGone: expired or used."""
    try:
        fields = signing.loads(token, salt=SIGNING_SALT)
    except signing.BadSignature:
        raise ConnectLinkInvalid("This link is not valid: it was changed or cut short. Ask for a new link.") from None
    link = ConnectLink.objects.select_related("app", "connection__secret").filter(pk=fields.get("link")).first()
    if link is None or _signed_fields(link) != fields:
        raise ConnectLinkInvalid("This link is not valid. Ask for a new link.")
    if link.used_at is not None:
        raise ConnectLinkGone("This link was already used. Ask for a new link if you need to connect again.")
    if link.expires_at <= timezone.now():
        raise ConnectLinkGone("This link has expired. Ask for a new link.")
    if link.return_url and not return_url_allowed(link.return_url):
        raise ConnectLinkInvalid("This link's return address is no longer allowed. Ask for a new link.")
    return link


def _use(link: ConnectLink) -> None:
    """Mark the link used, once: of two people (or tabs) using it, one wins."""
    now = timezone.now()
    used = ConnectLink.objects.filter(pk=link.pk, used_at__isnull=True, expires_at__gt=now).update(used_at=now)
    if not used:
        raise ConnectLinkGone("This link was already used or has expired. Ask for a new link.")
    link.used_at = now


def _release(link: ConnectLink) -> None:
    """Make a link usable again after an attempt that kept nothing."""
    ConnectLink.objects.filter(pk=link.pk, used_at=link.used_at).update(
        used_at=None, connection=link.connection if link.reconnect else None
    )


def connect_link_scopes(app: App) -> list[tuple[str, str]]:
    """What an OAuth2 app's connection will be allowed to do: (scope, words or "")."""
    if app.connection_kind != App.ConnectionKind.OAUTH2:
        return []
    data = connection_secret_data(app)
    preset = presets().get(data.get("preset", ""), {})
    scope = data.get("scope") or preset.get("scope", "")
    words = {**STANDARD_SCOPE_WORDS, **preset.get("scope_descriptions", {})}
    return [(name, words.get(name, "")) for name in scope.split()]


def _outcome_of_test(link: ConnectLink, connection: Connection, *, identity: str = "") -> ConnectOutcome:
    """Run the app's test with the new connection; ``identity``: the account the
    authorization already named, when the test names none."""
    result = connection_test(connection=connection)
    connection.secret.refresh_from_db()
    identity = connection.secret.identity or identity
    connected = f"Connected as {identity}" if identity else "Connected"
    if result is not None and not result.ok:
        return ConnectOutcome(
            link, "failed", f"{connected}, but {link.app.name} could not use it: {result.summary}", connection, identity
        )
    return ConnectOutcome(link, "connected", f"{connected}.", connection, identity)


#: What a reconnect whose fields fail the app's test puts back as it was.
RECONNECT_RESTORES = ("config", "values", "identity", "status", "status_detail")


def connect_link_submit_fields(*, link: ConnectLink, data: Mapping[str, Any]) -> ConnectOutcome:
    """A generic app's fields, filled in by the person: connect, then test.

    ValidationError for bad fields, and for a failed test (with its reason): then a new
    connection is deleted again (a reconnected one gets its working fields back), and the
    link stays usable so the person can correct them."""
    with transaction.atomic():
        _use(link)
        if link.reconnect:
            before = Secret.objects.filter(pk=link.connection_id).values(*RECONNECT_RESTORES).get()
            connection_update(connection=link.connection, data=data)
            connection = link.connection
        else:
            connection = connection_create(app=link.app, data=data, acting_user=link.created_by, end_user=link.end_user)
            ConnectLink.objects.filter(pk=link.pk).update(connection=connection)
            link.connection = connection
    outcome = _outcome_of_test(link, connection)
    if outcome.status == "failed":
        if link.reconnect:  # the values that worked until now, not the ones that failed
            Secret.objects.filter(pk=connection.pk).update(**before)
        else:
            secret_delete(secret=connection.secret)
            link.connection = None
        _release(link)
        raise ValidationError(outcome.message)
    return outcome


def _binding(link: ConnectLink) -> str:
    return f"connect-link:{link.pk}"


def connect_link_authorize(*, link: ConnectLink, session_key: str) -> str:
    """Use the link for an OAuth2 app: the provider URL to send the person to."""
    with transaction.atomic():
        _use(link)
        if not link.reconnect:
            link.connection = connection_create(app=link.app, acting_user=link.created_by, end_user=link.end_user)
            ConnectLink.objects.filter(pk=link.pk).update(connection=link.connection)
        return oauth2_authorization_start(
            secret=link.connection.secret, user=None, session_key=session_key, bound_to=_binding(link)
        )


def connect_link_in_progress(*, link_ids: Any, secret) -> ConnectLink | None:
    """Of the links a browser session used (``link_ids``), the one whose OAuth2
    authorization is for ``secret``'s connection; None when there is none."""
    if secret is None or not isinstance(link_ids, list):
        return None
    return (
        ConnectLink.objects.select_related("app", "connection__secret")
        .filter(pk__in=[pk for pk in link_ids if isinstance(pk, int)], used_at__isnull=False, connection=secret.pk)
        .first()
    )


def connect_link_callback(*, link: ConnectLink, session_key: str, params: Mapping[str, str]) -> ConnectOutcome:
    """The provider's answer for an authorization the link started in this session (the
    caller forgets the link in the session first, so a reloaded callback cannot undo it)."""
    connection = link.connection
    try:
        authorization = oauth2_authorization_complete(
            secret_name=connection.secret.name,
            user=None,
            session_key=session_key,
            params=params,
            bound_to=_binding(link),
        )
    except AuthorizationFailed as exc:
        denied = params.get("error") == "access_denied"
        if not link.reconnect:
            secret_delete(secret=connection.secret)
            link.connection = None
        _release(link)
        return ConnectOutcome(link, "denied" if denied else "error", str(exc), link.connection)
    return _outcome_of_test(link, connection, identity=authorization.connection.identity)
