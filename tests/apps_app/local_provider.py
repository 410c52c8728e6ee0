"""A small OAuth2 provider and API on a ``RecordingServer``, for apps whose provider is not
django-oauth-toolkit: each test decides how the token endpoint's answer looks.

``authorize`` consents at once (the person is already logged in there) and sends the
browser back with a code, the state, and whatever ``callback_extra`` adds; ``grant``
checks a code (with its PKCE verifier) or a refresh token and issues tokens, rotating the
refresh token; ``account_of`` is who a Bearer token belongs to, if it is still valid.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.servers import ReceivedRequest, Reply


@dataclass
class Grant:
    access_token: str
    refresh_token: str
    account: str


@dataclass
class LocalProvider:
    client_id: str
    client_secret: str
    account: str = "ann@orbit.example"
    callback_extra: dict[str, str] = field(default_factory=dict)
    rotate_refresh_tokens: bool = True

    def __post_init__(self):
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self._codes: dict[str, tuple[str, str, str]] = {}  # code -> (challenge, redirect_uri, account)
        self.access_tokens: dict[str, str] = {}  # valid access token -> account
        self.refresh_tokens: dict[str, str] = {}
        self.issued: list[Grant] = []
        self.codes: list[str] = []  # every code handed out

    def authorize(self, request: ReceivedRequest) -> Reply:
        query = dict(parse_qsl(urlsplit(request.path).query))
        if query.get("client_id") != self.client_id:
            return Reply(400, "unknown client")
        code = f"code-{next(self._serial)}-5f2b8c"
        with self._lock:
            self.codes.append(code)
            self._codes[code] = (query.get("code_challenge", ""), query["redirect_uri"], self.account)
        back = {"code": code, "state": query["state"], **self.callback_extra}
        return Reply(302, headers={"Location": f"{query['redirect_uri']}?{urlencode(back)}"})

    def grant(self, fields: dict[str, str]) -> Grant | str:
        """New tokens for a token request's fields, or the RFC 6749 error code."""
        if (fields.get("client_id"), fields.get("client_secret")) != (self.client_id, self.client_secret):
            return "invalid_client"
        with self._lock:
            if fields.get("grant_type") == "authorization_code":
                challenge, redirect_uri, account = self._codes.pop(fields.get("code", ""), ("", "", ""))
                verifier = fields.get("code_verifier", "")
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if not account or redirect_uri != fields.get("redirect_uri") or challenge != expected:
                    return "invalid_grant"
            elif fields.get("grant_type") == "refresh_token":
                account = self.refresh_tokens.get(fields.get("refresh_token", ""))
                if account is None:
                    return "invalid_grant"
                if self.rotate_refresh_tokens:
                    del self.refresh_tokens[fields["refresh_token"]]
            else:
                return "unsupported_grant_type"
            serial = next(self._serial)
            grant = Grant(f"orbit-access-{serial}-9d41e7", f"orbit-refresh-{serial}-0a6c3f", account)
            if not self.rotate_refresh_tokens and fields.get("grant_type") == "refresh_token":
                grant.refresh_token = fields["refresh_token"]
            self.access_tokens[grant.access_token] = account
            self.refresh_tokens[grant.refresh_token] = account
            self.issued.append(grant)
            return grant

    def account_of(self, request: ReceivedRequest) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.access_tokens.get(token) if scheme == "Bearer" else None

    def expire_all(self) -> None:
        """The provider forgets every access token (they expired there)."""
        with self._lock:
            self.access_tokens.clear()


def form(request: ReceivedRequest) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode()))


def back_at_flowgate(browser, secret, location: str):
    """Follow the provider's redirect to the app's shared callback, for ``secret``.

    The app's callback ends on the app's admin page, which this branch does not have yet;
    the vault's callback of the connection's secret completes the authorization with the
    same service (``oauth2_authorization_complete``) and the app's redirect URI.
    """
    parts = urlsplit(location)
    assert parts.path == f"/apps/{secret.app_slug}/oauth2/callback/", location
    return browser.get(f"/oauth/{secret.name}/callback/?{parts.query}")
