"""django-oauth-toolkit as a real OAuth2 provider for the client-side tests.

The live server serves it at ``/o/``. ``TokenEndpointLog`` records what reaches the token
and revocation endpoints, so a test can count refreshes "as the provider saw them";
``Browser`` is a person at the provider: it logs in and consents (or refuses).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import requests
from django.http import QueryDict
from oauth2_provider.models import get_application_model

from flows_app.oauth2_server import CallerValidator


class ProviderValidator(CallerValidator):
    """The product's validator; userinfo and ID tokens name the user by e-mail, as real providers do."""

    oidc_claim_scope = None

    def get_additional_claims(self, request):
        return {"email": request.user.email, "preferred_username": request.user.username}


@dataclass
class LoggedRequest:
    path: str
    grant_type: str
    token_type_hint: str
    basic_auth: bool
    fields: list[str]


class _Log:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def grants(self, grant_type: str) -> list[LoggedRequest]:
        return [entry for entry in self.requests if entry.path == "/o/token/" and entry.grant_type == grant_type]

    def revocations(self) -> list[LoggedRequest]:
        return [entry for entry in self.requests if entry.path == "/o/revoke_token/"]


PROVIDER_LOG = _Log()


class TokenEndpointLog:
    """Middleware: remember every POST to the provider's token and revocation endpoints."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path in ("/o/token/", "/o/revoke_token/"):
            form = QueryDict(request.body)
            PROVIDER_LOG.add(
                LoggedRequest(
                    path=request.path,
                    grant_type=form.get("grant_type", ""),
                    token_type_hint=form.get("token_type_hint", ""),
                    basic_auth=request.META.get("HTTP_AUTHORIZATION", "").startswith("Basic "),
                    fields=sorted(form),
                )
            )
        return self.get_response(request)


def provider_application(
    *, name: str, redirect_uri: str, client_type: str = "confidential", grant_type: str = "authorization-code"
):
    """Register a client at the provider; returns (client_id, client_secret in plaintext)."""
    Application = get_application_model()
    client_secret = f"provider-client-secret-{name}-0123456789"
    application = Application.objects.create(
        name=name,
        client_id=f"client-{name}",
        client_secret=client_secret if client_type == "confidential" else "",
        client_type=client_type,
        authorization_grant_type=grant_type,
        redirect_uris=redirect_uri,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=False,
    )
    return application.client_id, client_secret if client_type == "confidential" else ""


class _Form(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.action = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action")
        if tag == "input" and attrs.get("name") and attrs.get("type") != "submit":
            self.fields[attrs["name"]] = attrs.get("value") or ""


class Browser:
    """A person with a browser session: logs in, starts a connection, consents."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.trust_env = False

    def login(self, username: str, password: str) -> None:
        page = self.http.get(f"{self.base_url}/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.http.post(
            f"{self.base_url}/admin/login/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
            allow_redirects=False,
        )
        assert response.status_code == 302, "login failed"

    def get(self, url: str) -> requests.Response:
        return self.http.get(url if url.startswith("http") else f"{self.base_url}{url}", allow_redirects=False)

    def start(self, secret_name: str) -> str:
        """Click "Request access token": returns the provider URL we are sent to."""
        response = self.get(f"/oauth/{secret_name}/authorize/")
        assert response.status_code == 302, response.text[:500]
        return response.headers["Location"]

    def answer(self, authorize_url: str, *, allow: bool = True) -> str:
        """At the provider's consent page, allow or refuse; returns where it sends us back."""
        page = self.get(authorize_url)
        assert page.status_code == 200, page.text[:500]
        form = _Form()
        form.feed(page.text)
        data = dict(form.fields)
        if allow:
            data["allow"] = "Authorize"
        response = self.http.post(authorize_url, data=data, allow_redirects=False)
        assert response.status_code == 302, response.text[:500]
        return response.headers["Location"]

    def connect(self, secret_name: str) -> requests.Response:
        """The whole dance; returns our callback's answer."""
        return self.get(self.answer(self.start(secret_name)))


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
