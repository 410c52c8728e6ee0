"""The outbound guard: every connection Flowgate opens to another host goes through here.

HTTP steps, OAuth2 token, revocation, discovery and userinfo calls, JWKS downloads and
database connections all reach other machines on behalf of users who write URLs and host
names. Without a guard, any of them could read the cloud metadata service or an internal
admin page (server-side request forgery).

The rule: a connection may only go to a globally routable address, unless the operator
opened the address's network with ``FLOWGATE_ALLOW_NETWORKS``. Flows cannot change it.

How it holds:
- the decision is made on the *resolved* address, and the socket is connected to that
  same address (``_GuardedConnectionMixin._new_conn``), so a DNS answer that changes
  between check and connect (rebinding) cannot slip through; TLS still verifies the
  host name;
- IPv4 in any spelling (hex, octal, a single integer) reaches us already resolved, and
  IPv4 embedded in IPv6 (mapped, compatible, 6to4, Teredo, NAT64) is checked as IPv4;
- redirects are followed by ``request()`` one hop at a time, each hop is a new
  connection through the same guard, and credentials stay behind when a hop leaves the
  original origin;
- only http and https, no proxies from the environment, response size and time capped.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
ALLOWED_SCHEMES = ("http", "https")
# Headers that may follow a redirect to another origin; everything else, authentication
# included, stays with the origin the request was written for.
CROSS_ORIGIN_SAFE_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "user-agent", "content-type"})


class OutboundError(Exception):
    """A request the guard refused or could not finish. ``str()`` never holds a secret."""


class OutboundBlocked(OutboundError):
    """The destination is not a public address and its network is not opened."""


class OutboundUnreachable(OutboundError):
    """The host name does not resolve."""


class OutboundTooLarge(OutboundError):
    """The response body passed the size limit."""


class OutboundTimeout(OutboundError):
    """The whole exchange took longer than its time limit."""


@functools.lru_cache(maxsize=16)
def _parse_networks_cached(items: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network in CIDR form") from None
    return tuple(networks)


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    return _parse_networks_cached(tuple(items))


def allowed_networks() -> tuple[IPNetwork, ...]:
    return parse_networks(settings.FLOWGATE_ALLOW_NETWORKS)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]  # the client address; the server one is public by definition
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64 well-known prefix
        return ipaddress.IPv4Address(packed[12:])
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"it embeds {embedded}, {reason}" if reason else None
    for attribute, reason in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (cloud metadata services live here)"),
        ("is_private", "a private-network address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_unspecified", "the unspecified address"),
    ):
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        return "not a globally routable address"
    return None


def _is_opened(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in networks
    )


def check_address(address: IPAddress, *, host: str) -> None:
    """Raise OutboundBlocked unless ``address`` is public or its network is opened."""
    if _is_opened(address, allowed_networks()):
        return
    reason = refusal_reason(address)
    if reason is not None:
        shown = host if host == str(address) else f"{host} ({address})"
        raise OutboundBlocked(
            f"Outbound connection to {shown} refused: {reason}. "
            f"To allow it, add its network to the FLOWGATE_ALLOW_NETWORKS setting."
        )


def resolve(host: str, port: int) -> list[tuple[int, IPAddress]]:
    """Resolve ``host`` and return the allowed (family, address) pairs, in resolver order.

    Raises OutboundBlocked when every address is refused, naming the first one.
    """
    host = host.strip("[]").replace("%25", "%")  # an IPv6 zone id arrives percent-encoded
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundUnreachable(f"Cannot resolve host {host!r}: {exc.strerror}") from None
    allowed: list[tuple[int, IPAddress]] = []
    first_refusal: OutboundBlocked | None = None
    for family, _type, _proto, _name, sockaddr in answers:
        address = ipaddress.ip_address(sockaddr[0])
        try:
            check_address(address, host=host)
        except OutboundBlocked as exc:
            first_refusal = first_refusal or exc
            continue
        if (family, address) not in allowed:
            allowed.append((family, address))
    if not allowed:
        raise first_refusal or OutboundUnreachable(f"Cannot resolve host {host!r}")
    return allowed


def create_connection(host: str, port: int, timeout: float | None) -> socket.socket:
    """Open a TCP connection to ``host`` through the guard (for database drivers)."""
    last_error: OSError | None = None
    for family, address in resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((str(address), port))
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    raise last_error or OSError(f"cannot connect to {host}:{port}")


class _GuardedConnectionMixin:
    """Connects to the address the guard approved, not to whatever DNS says next."""

    def _new_conn(self) -> socket.socket:
        timeout = socket.getdefaulttimeout() if self.timeout is _DEFAULT_TIMEOUT else self.timeout
        try:
            sock = create_connection(self._dns_host, self.port, timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        for option in self.socket_options or ():
            sock.setsockopt(*option)
        return sock


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through the guard, with capped bodies."""

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, total_timeout: float | None = None):
        self.max_response_bytes = max_response_bytes
        self.total_timeout = total_timeout
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, *args, **kwargs):  # pragma: no cover - sessions never set proxies
        raise OutboundError("Outbound requests do not go through proxies.")

    def send(self, request, stream=False, timeout=None, **kwargs):
        scheme = urlsplit(request.url).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise OutboundBlocked(f"Only http and https URLs can be requested, not {scheme or 'a relative URL'!r}.")
        started = time.monotonic()
        response = super().send(request, stream=True, timeout=timeout, **kwargs)
        if not stream:
            response._content = self._read_capped(response, started)
            response._content_consumed = True
            response.close()
        return response

    def _read_capped(self, response: requests.Response, started: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            response.close()
            raise OutboundTooLarge(f"Response is larger than the {self.max_response_bytes}-byte limit.")
        chunks, size = [], 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > self.max_response_bytes:
                response.close()
                raise OutboundTooLarge(f"Response is larger than the {self.max_response_bytes}-byte limit.")
            if self.total_timeout is not None and time.monotonic() - started > self.total_timeout:
                response.close()
                raise OutboundTimeout(f"Response took longer than {self.total_timeout:g} s.")
            chunks.append(chunk)
        return b"".join(chunks)


def configure_session(
    session: requests.Session,
    *,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    total_timeout: float | None = None,
) -> requests.Session:
    """Route a session (also an OAuth2Session) through the guard.

    The session itself must not follow redirects: ``request()`` does, hop by hop.
    """
    session.trust_env = False  # no proxies or .netrc credentials from the environment
    adapter = GuardedAdapter(max_response_bytes=max_response_bytes, total_timeout=total_timeout)
    for prefix in list(session.adapters):
        del session.adapters[prefix]
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def session(**limits) -> requests.Session:
    return configure_session(requests.Session(), **limits)


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default_port


@dataclass(frozen=True)
class Limits:
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS


def request(
    method: str,
    url: str,
    *,
    auth: requests.auth.AuthBase | None = None,
    headers: Mapping[str, str] | None = None,
    params: Any = None,
    data: Any = None,
    json: Any = None,
    limits: Limits = Limits(),
    http: requests.Session | None = None,
) -> requests.Response:
    """Send one request through the guard, following redirects hop by hop.

    Each hop is checked like the first (``max_redirects=0``: a redirect is returned as is). Authentication and all but a few harmless headers
    are dropped once a hop leaves the origin of ``url``; 301/302/303 turn into a GET
    without a body, as browsers do, while 307/308 keep method and body (same origin only).
    """
    started = time.monotonic()
    http = http or session(max_response_bytes=limits.max_response_bytes, total_timeout=limits.timeout)
    first_origin = origin(url)
    headers = dict(headers or {})
    history: list[requests.Response] = []
    while True:
        remaining = limits.timeout - (time.monotonic() - started)
        if remaining <= 0:
            raise OutboundTimeout(f"Request took longer than {limits.timeout:g} s.")
        response = http.request(
            method,
            url,
            auth=auth,
            headers=headers,
            params=params,
            data=data,
            json=json,
            timeout=remaining,
            allow_redirects=False,
        )
        if not response.is_redirect or limits.max_redirects == 0:
            response.history = [*history, *response.history]
            return response
        if len(history) >= limits.max_redirects:
            raise OutboundError(f"More than {limits.max_redirects} redirects.")
        history.append(response)
        url = urljoin(url, response.headers["Location"])
        params = None  # the Location already carries the query it wants
        if response.status_code in (301, 302, 303) and method.upper() != "HEAD":
            method, data, json = "GET", None, None
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if origin(url) != first_origin:
            auth = None
            headers = {k: v for k, v in headers.items() if k.lower() in CROSS_ORIGIN_SAFE_HEADERS}
            if data is not None or json is not None:
                raise OutboundError("A redirect to another origin cannot carry the request body.")
