"""The outbound guard refuses non-public destinations in every spelling, on every hop."""

import ipaddress
import socket

import pytest
import requests

from project import outbound
from tests.servers import RecordingServer, Reply, TricklingServer


@pytest.fixture
def closed(settings):
    """The guard as deployed by default: no network opened."""
    settings.FLOWGATE_ALLOW_NETWORKS = []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://0x7f000001/",  # hex
        "http://2130706433/",  # dword
        "http://0177.0.0.1/",  # octal
        "http://127.1/",  # short form
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:7f00:1]/",
        "http://[2002:7f00:1::]/",  # 6to4 embedding 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 embedding 169.254.169.254
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.100.100.200/",  # shared address space (Alibaba metadata)
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fe80::1%25lo]/",
    ],
)
def test_non_public_destinations_are_refused(closed, url):
    with pytest.raises(outbound.OutboundBlocked, match="FLOWGATE_ALLOW_NETWORKS"):
        outbound.request("GET", url, limits=outbound.Limits(timeout=5))


def test_the_refusal_says_what_and_why(closed):
    with pytest.raises(outbound.OutboundBlocked) as error:
        outbound.request("GET", "http://localhost:9/")
    message = str(error.value)
    assert "localhost" in message and "loopback" in message and "FLOWGATE_ALLOW_NETWORKS" in message


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::"])
def test_public_addresses_pass(closed, address):
    assert outbound.refusal_reason(ipaddress.ip_address(address)) is None


def test_an_opened_network_is_reachable(settings, local_server):
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    assert outbound.request("GET", local_server.url).status_code == 200


def test_only_http_and_https(settings):
    settings.FLOWGATE_ALLOW_NETWORKS = ["0.0.0.0/0"]
    for url in ("file:///etc/passwd", "ftp://example.com/", "gopher://127.0.0.1:25/"):
        with pytest.raises((outbound.OutboundBlocked, requests.exceptions.InvalidSchema)):
            outbound.request("GET", url)


def test_every_redirect_hop_is_checked(settings, local_server):
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    local_server.handler = lambda request: Reply(status=302, headers={"Location": "http://127.0.0.2:9/internal"})
    with pytest.raises(outbound.OutboundBlocked, match="127.0.0.2"):
        outbound.request("GET", local_server.url)


def test_credentials_stay_behind_when_a_redirect_leaves_the_origin(local_server):
    other = RecordingServer()
    try:
        local_server.handler = lambda request: Reply(status=307, headers={"Location": f"{other.url}/landing"})
        auth = outbound.requests.auth.HTTPBasicAuth("user", "password-1234")
        response = outbound.request(
            "GET", local_server.url, auth=auth, headers={"X-API-KEY": "key-5678", "Accept": "application/json"}
        )
        assert response.status_code == 200
        assert "Authorization" in local_server.last.headers
        arrived = other.last.headers
        assert "Authorization" not in arrived and "X-API-KEY" not in arrived
        assert arrived["Accept"] == "application/json"
    finally:
        other.stop()


def test_same_origin_redirects_keep_credentials(local_server):
    def handle(request):
        if request.path == "/start":
            return Reply(status=302, headers={"Location": "/next"})
        return Reply(body={"ok": True})

    local_server.handler = handle
    outbound.request("GET", f"{local_server.url}/start", headers={"X-API-KEY": "key-5678"})
    assert local_server.last.path == "/next" and local_server.last.headers["X-API-KEY"] == "key-5678"


def test_303_turns_a_post_into_a_get_without_body(local_server):
    def handle(request):
        if request.path == "/submit":
            return Reply(status=303, headers={"Location": "/result"})
        return Reply(body={"method": request.method, "body": request.body.decode()})

    local_server.handler = handle
    response = outbound.request("POST", f"{local_server.url}/submit", json={"a": 1})
    assert response.json() == {"method": "GET", "body": ""}


def test_redirect_loops_end(local_server):
    local_server.handler = lambda request: Reply(status=302, headers={"Location": "/again"})
    with pytest.raises(outbound.OutboundError, match="More than 5 redirects"):
        outbound.request("GET", local_server.url)


def test_the_connection_goes_to_the_address_that_was_checked(settings, local_server, monkeypatch):
    """DNS rebinding: a second lookup would answer with a private address; there is none."""
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    real_getaddrinfo = socket.getaddrinfo
    answers = ["127.0.0.1", "10.0.0.1"]

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            address = answers.pop(0)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    response = outbound.request("GET", f"http://rebind.test:{local_server.port}/")
    assert response.status_code == 200
    assert local_server.last.headers["Host"] == f"rebind.test:{local_server.port}"
    assert answers == ["10.0.0.1"]  # resolved once


def test_response_size_is_capped(local_server):
    local_server.handler = lambda request: Reply(body=b"x" * 5000)
    with pytest.raises(outbound.OutboundTooLarge):
        outbound.request("GET", local_server.url, limits=outbound.Limits(max_response_bytes=1000))


def test_a_slow_server_hits_the_time_limit(local_server):
    import time

    def slow(request):
        time.sleep(2)
        return Reply(body="late")

    local_server.handler = slow
    with pytest.raises(outbound.OutboundTimeout, match="0.5 s deadline"):
        outbound.request("GET", local_server.url, limits=outbound.Limits(timeout=0.5))


def test_a_body_trickled_byte_by_byte_is_cut_at_the_total_deadline():
    server = TricklingServer(declared=100_000, interval=0.2, limit=100)
    with pytest.raises(outbound.OutboundTimeout, match="within its 1 s deadline"):
        outbound.request("GET", server.url, limits=outbound.Limits(timeout=1))
    assert server.finished.wait(60)
    assert server.sent < 100  # the client hung up; the server did not run out of bytes


def test_a_session_configured_by_the_guard_has_the_same_deadline():
    """What the OAuth2 client does with its OAuth2Session: the deadline is the session's."""
    server = TricklingServer()
    http = outbound.configure_session(requests.Session(), total_timeout=1)
    with pytest.raises(outbound.OutboundTimeout, match="within its 1 s deadline"):
        http.get(server.url, timeout=30)  # a per-read timeout the trickle never reaches
    assert server.finished.wait(60)
    assert server.sent < 100


def test_gzip_body_is_capped_after_decompression(local_server):
    import gzip

    bomb = gzip.compress(b"0" * (20 * 1024 * 1024))  # about 20 KB on the wire
    local_server.handler = lambda request: Reply(body=bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(outbound.OutboundTooLarge, match="100000-byte limit"):
        outbound.request("GET", local_server.url, limits=outbound.Limits(max_response_bytes=100_000))


def test_database_connections_are_guarded(closed):
    with pytest.raises(outbound.OutboundBlocked):
        outbound.create_connection("127.0.0.1", 5432, timeout=2)


def test_proxies_from_the_environment_are_ignored(local_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.255.255.1:3128")
    assert outbound.request("GET", local_server.url, limits=outbound.Limits(timeout=5)).status_code == 200


def test_guarded_sessions_one_after_another_share_a_kept_alive_connection(settings, local_server):
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    for _ in range(2):  # as two HTTP steps do: a session each, closed after use
        with outbound.session() as http:
            assert outbound.request("GET", local_server.url, http=http).status_code == 200
    first, second = local_server.requests
    assert first.client_port == second.client_port


def test_a_kept_alive_connection_is_not_used_once_its_network_is_closed(settings, local_server):
    settings.FLOWGATE_ALLOW_NETWORKS = ["127.0.0.1/32"]
    assert outbound.request("GET", local_server.url).status_code == 200
    settings.FLOWGATE_ALLOW_NETWORKS = []
    with pytest.raises(outbound.OutboundBlocked, match="loopback"):
        outbound.request("GET", local_server.url)
    assert len(local_server.requests) == 1
