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
- kept-alive connections are shared by a process's guarded sessions, and one taken from
  the pool is checked again against the rules before it carries a request;
- only http and https, no proxies from the environment;
- every exchange has one total deadline (connect, TLS handshake, headers and every body
  chunk, across redirect hops in ``request()``) and a size cap counted after
  decompression (``GuardedAdapter.send``); a session configured here gets both.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import threading
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


# The deadline of the exchange this thread is sending, for the pool and connection classes
# below it (urllib3 gives them no way to receive it).
_exchange = threading.local()


def _current_deadline() -> _Deadline | None:
    return getattr(_exchange, "deadline", None)


def _deadline_error(seconds: float) -> OutboundTimeout:
    return OutboundTimeout(f"The request did not finish within its {seconds:g} s deadline (connect, headers and body).")


class _Deadline:
    """One total time limit on an exchange: connect, TLS handshake, headers, every body chunk.

    Socket timeouts apply to each read alone, so a server that sends a byte now and then
    holds a request open as long as it likes. At the deadline a timer shuts the exchange's
    sockets down, which ends a blocked read at once, whatever the server does next.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._expires_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._fired = self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._expires_at

    def error(self) -> OutboundTimeout:
        return _deadline_error(self.seconds)

    def bound(self, timeout: float | None) -> float:
        """``timeout`` for one socket operation, cut to what is left of the deadline."""
        remaining = self._expires_at - time.monotonic()
        if remaining <= 0:
            raise self.error()
        return remaining if timeout is None else min(timeout, remaining)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline.

        A duplicate descriptor is kept: shutdown acts on the socket, not the descriptor, and
        TLS wrapping detaches the original socket object.
        """
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            if self._done:
                duplicate.close()
                return
            self._watched.append(duplicate)
            if self._fired:
                self._shut(duplicate)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the other side

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._fired = True
            for sock in self._watched:
                self._shut(sock)

    def __enter__(self) -> _Deadline:
        self._outer, _exchange.deadline = _current_deadline(), self
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        _exchange.deadline = self._outer
        self._timer.cancel()
        with self._lock:
            self._done = True
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class _GuardedConnectionMixin:
    """Connects to the address the guard approved, not to whatever DNS says next."""

    def _new_conn(self) -> socket.socket:
        timeout = socket.getdefaulttimeout() if self.timeout is _DEFAULT_TIMEOUT else self.timeout
        deadline = _current_deadline()
        if deadline is not None:
            timeout = deadline.bound(timeout)
        try:
            sock = create_connection(self._dns_host, self.port, timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        if deadline is not None:
            deadline.watch(sock)  # before TLS: a handshake trickled byte by byte ends at the deadline too
        for option in self.socket_options or ():
            sock.setsockopt(*option)
        return sock


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _DeadlinePoolMixin:
    """A kept-alive connection taken from the pool is checked again (the rules may have
    changed since it connected) and watched by the exchange's deadline; a new one is
    checked and watched as it connects (``_GuardedConnectionMixin._new_conn``)."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        if conn.sock is not None and not _still_allowed(conn.sock):
            conn.close()  # the request connects anew, through the guard
        deadline = _current_deadline()
        if deadline is not None and conn.sock is not None:
            deadline.watch(conn.sock)
        return conn


def _still_allowed(sock: socket.socket) -> bool:
    try:
        address = ipaddress.ip_address(sock.getpeername()[0])
        check_address(address, host=str(address))
    except (OSError, OutboundBlocked):
        return False
    return True


class _GuardedHTTPConnectionPool(_DeadlinePoolMixin, HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_shared_pools: dict[int, Any] = {}
_shared_lock = threading.Lock()


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through the guard, with a total deadline and
    a size cap on every exchange."""

    def __init__(
        self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, total_timeout: float = DEFAULT_TIMEOUT_SECONDS
    ):
        self.max_response_bytes = max_response_bytes
        self.total_timeout = total_timeout
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        # Every guarded session of a process shares one pool (urllib3's is thread-safe), so
        # kept-alive connections outlive a session: an HTTP step does not connect anew each
        # run. Keyed by process: a forked worker must not share its parent's sockets.
        with _shared_lock:
            manager = _shared_pools.get(os.getpid())
            if manager is None:
                super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
                self.poolmanager.pool_classes_by_scheme = {
                    "http": _GuardedHTTPConnectionPool,
                    "https": _GuardedHTTPSConnectionPool,
                }
                manager = _shared_pools[os.getpid()] = self.poolmanager
        self.poolmanager = manager

    def close(self):
        """Closing a session leaves the shared pool's connections for the next one."""

    def proxy_manager_for(self, *args, **kwargs):  # pragma: no cover - sessions never set proxies
        raise OutboundError("Outbound requests do not go through proxies.")

    def send(self, request, stream=False, timeout=None, **kwargs):
        """Send and read the whole body, within the deadline and the size cap.

        The body is read here even when ``stream`` is asked for: a body read later would
        escape both limits. The deadline is the adapter's ``total_timeout``, or ``timeout``
        when that is a shorter number (``request()`` passes what is left of its own).
        """
        scheme = urlsplit(request.url).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise OutboundBlocked(f"Only http and https URLs can be requested, not {scheme or 'a relative URL'!r}.")
        seconds = self.total_timeout
        if isinstance(timeout, (int, float)):
            seconds = min(seconds, timeout)
        with _Deadline(seconds) as deadline:
            try:
                response = super().send(request, stream=True, timeout=timeout, **kwargs)
                content = self._read_capped(response)
            except OutboundError:
                raise
            except Exception:
                # A read the deadline cut short fails in whatever way the cut surfaces
                # (a per-read timeout, a closed connection, a TLS error): one reason for all.
                if deadline.expired:
                    raise deadline.error() from None
                raise
            if deadline.expired:  # a body without a length ends at the shutdown as at its end
                raise deadline.error()
        response._content = content
        response._content_consumed = True
        response.close()
        return response

    def _read_capped(self, response: requests.Response) -> bytes:
        """The body, decompressed, refused past ``max_response_bytes``.

        ``iter_content`` decodes gzip and deflate, and urllib3 inflates at most a chunk's
        worth at a time, so a compressed bomb is stopped at the cap, not after inflating.
        """
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
            chunks.append(chunk)
        return b"".join(chunks)


def configure_session(
    session: requests.Session,
    *,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    total_timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> requests.Session:
    """Route a session (also an OAuth2Session) through the guard: each request it sends
    has ``total_timeout`` seconds in all and at most ``max_response_bytes`` of body.

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
            raise _deadline_error(limits.timeout)
        try:
            response = http.request(
                method,
                url,
                auth=auth,
                headers=headers,
                params=params,
                data=data,
                json=json,
                timeout=remaining,  # the hop's deadline: what is left of the whole request's
                allow_redirects=False,
            )
        except OutboundTimeout:
            raise _deadline_error(limits.timeout) from None  # the limit the caller set, not the hop's rest
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
