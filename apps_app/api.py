"""The connections API for a SaaS builder's backend, at ``/api/`` (OpenAPI at
``/api/openapi.json``, docs at ``/api/docs``), described from the type hints by django-ninja.

Callers authenticate with a bearer token from Flowgate's own OAuth2 server (``/o/token/``,
client-credentials grant; see ``flows_app.oauth2_server``) carrying the operation's scope:
``connections:write`` to make connect links, ``connections:read`` to list connections.
A client acts as the user its application belongs to: it lists the connections that user may
use, and makes reconnect links for those the user may manage; a client without a user acts
as the operator (every connection).
The token is checked by django-oauth-toolkit against its store (expired or revoked tokens
are refused). Errors are ``{"detail": "..."}``: 401 without a valid token, 403 without the
scope (or when the client application's user may not manage the connection), 400 for bad
input, 404 for an unknown app or connection. Never a secret's value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as RequestInvalid
from ninja.openapi.docs import ABS_TPL_PATH, Swagger
from ninja.security import HttpBearer
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OAuthRequest
from pydantic import AfterValidator

from apps_app.models import App, Connection
from apps_app.selectors import (
    CONNECTION_STATUSES,
    connection_identity,
    connection_last_error,
    connections_with_status,
)
from apps_app.services.connect_links import connect_link_create


class LocalSwagger(Swagger):
    """ninja's docs page with this installation's copy of its static files, not a CDN's.
    ninja renders that page only when it is an installed app, which it is not (settings.py,
    NINJA_DIR); else it renders the file named here, its CDN page by default."""

    template_cdn = str(ABS_TPL_PATH / "swagger.html")


api = NinjaAPI(
    title="Flowgate connections API",
    version="1",
    description=__doc__.split("\n\n", 1)[1],
    urls_namespace="apps_api",
    docs_url="/docs",
    docs=LocalSwagger(),
    openapi_url="/openapi.json",
)


class ClientToken(HttpBearer):
    """A bearer access token from ``/o/token/`` that carries ``scope``."""

    openapi_bearerFormat = "JWT"
    openapi_description = (
        "An access token from this installation's /o/token/ (client-credentials grant) with the "
        "operation's scope: connections:write or connections:read."
    )

    def __init__(self, scope: str):
        super().__init__()
        self.scope = scope

    def authenticate(self, request, token: str):
        # The validator directly, not the OAuth2 server's verify_request: with OpenID
        # Connect on, that takes a JWT-shaped bearer token for an ID token.
        checked = OAuthRequest(request.build_absolute_uri())
        if not oauth2_settings.OAUTH2_VALIDATOR_CLASS().validate_bearer_token(token, [], checked):
            return None
        access_token = checked.access_token
        if self.scope not in access_token.scope.split():
            raise HttpError(403, f"This token does not carry the scope {self.scope}.")
        return access_token


def _acting_user(request):
    """Who makes what the caller asks for: the user its client application belongs to
    (None, the operator, for a client without one)."""
    return request.auth.application.user


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")  # a database text cannot hold one
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class Problem(Schema):
    detail: str


class ConnectLinkIn(Schema):
    app: Text = Field(description="The installed app's slug.")
    end_user: Text = Field("", description="Who the account belongs to in your product (a customer id).")
    return_url: Text = Field("", description="Where to send the person afterwards; must be allowed in settings.")


class ReconnectLinkIn(Schema):
    return_url: Text = Field("", description="Where to send the person afterwards; must be allowed in settings.")


class ConnectLinkOut(Schema):
    url: str
    expires_at: datetime


class ConnectionOut(Schema):
    id: int
    app: str
    identity: str = Field(description="The connected account, as the app's test or the provider named it.")
    end_user: str
    status: Literal[CONNECTION_STATUSES]
    expires_at: datetime | None = Field(description="When the current access token expires (OAuth2).")
    last_error: str
    created_at: datetime


class ConnectionFilter(Schema):
    app: Text = ""
    end_user: Text = ""
    status: Literal[("", *CONNECTION_STATUSES)] = ""


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    response = api.create_response(request, {"detail": "A valid bearer token from /o/token/ is required."}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="flowgate"'
    return response


@api.exception_handler(RequestInvalid)
def _request_invalid(request, exc):
    reasons = [
        f"{'.'.join(str(part) for part in error.get('loc', ())[1:]) or 'body'}: {error.get('msg', 'invalid')}"
        for error in exc.errors
    ]
    return api.create_response(request, {"detail": "; ".join(reasons) or "Bad request."}, status=400)


@api.exception_handler(DjangoValidationError)
def _service_refused(request, exc):
    return api.create_response(request, {"detail": " ".join(exc.messages)}, status=400)


@api.exception_handler(PermissionDenied)
def _not_permitted(request, exc):
    return api.create_response(request, {"detail": str(exc) or "Not permitted."}, status=403)


@api.post(
    "/connect-links",
    response={201: ConnectLinkOut, 400: Problem, 401: Problem, 403: Problem, 404: Problem},
    auth=ClientToken("connections:write"),
    summary="Make a connect link for one app",
)
def connect_link_new(request, payload: ConnectLinkIn):
    app = App.objects.filter(slug=payload.app).first()
    if app is None:
        return Status(404, {"detail": f"There is no installed app {payload.app!r}."})
    issued = connect_link_create(
        app=app, end_user=payload.end_user, return_url=payload.return_url, acting_user=_acting_user(request)
    )
    return Status(201, {"url": issued.url, "expires_at": issued.expires_at})


@api.post(
    "/connections/{connection_id}/connect-link",
    response={201: ConnectLinkOut, 400: Problem, 401: Problem, 403: Problem, 404: Problem},
    auth=ClientToken("connections:write"),
    summary="Make a link that connects an existing connection again (it keeps its id)",
)
def reconnect_link_new(request, connection_id: int, payload: ReconnectLinkIn | None = None):
    connection = Connection.objects.select_related("app").filter(pk=connection_id).first()
    if connection is None:
        return Status(404, {"detail": f"There is no connection {connection_id}."})
    issued = connect_link_create(
        app=connection.app,
        connection=connection,
        return_url=payload.return_url if payload else "",
        acting_user=_acting_user(request),
    )
    return Status(201, {"url": issued.url, "expires_at": issued.expires_at})


@api.get(
    "/connections",
    response={200: list[ConnectionOut], 400: Problem, 401: Problem, 403: Problem},
    auth=ClientToken("connections:read"),
    summary="List connections, by app, end-user reference and status",
)
def connections_list(request, filters: Query[ConnectionFilter]):
    return [
        {
            "id": connection.pk,
            "app": connection.app.slug,
            "identity": connection_identity(connection),
            "end_user": connection.end_user,
            "status": connection.status,
            "expires_at": connection.token_expires_at,
            "last_error": connection_last_error(connection),
            "created_at": connection.created_at,
        }
        for connection in connections_with_status(
            user=_acting_user(request), app=filters.app, end_user=filters.end_user, status=filters.status
        )
    ]
