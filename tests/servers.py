"""Real local HTTP servers for tests: they record what arrives and answer as told."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the caller's end of the connection: two requests on one connection share it


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)


class RecordingServer:
    """A threaded HTTP server on 127.0.0.1. ``handler(request) -> Reply`` decides answers;
    by default it echoes the request as JSON. Every request is kept in ``requests``."""

    def __init__(self, handler: Callable[[ReceivedRequest], Reply] | None = None):
        self.requests: list[ReceivedRequest] = []
        self.handler = handler or self.echo
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # headers and body leave in one segment (no Nagle / delayed-ACK stall)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                received = ReceivedRequest(
                    self.command, self.path, dict(self.headers), self.rfile.read(length), self.client_address[1]
                )
                server.requests.append(received)
                reply = server.handler(received)
                body = reply.body
                headers = dict(reply.headers)
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(body, str):
                    body = body.encode()
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hung up early (size and time limit tests) is expected

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def echo(request: ReceivedRequest) -> Reply:
        return Reply(
            body={
                "method": request.method,
                "path": request.path,
                "headers": request.headers,
                "body": request.body.decode(errors="replace"),
            }
        )

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def last(self) -> ReceivedRequest:
        return self.requests[-1]


class TricklingServer:
    """A raw HTTP server that declares a body of ``declared`` bytes and sends one byte per
    ``interval`` seconds, for one connection; it stops when the client hangs up or after
    ``limit`` bytes (so a client without a deadline still ends, with a short body).
    ``sent`` counts the body bytes that left; ``finished`` is set when it stops."""

    def __init__(self, *, declared: int = 100_000, interval: float = 0.2, limit: int = 100, headers: str = ""):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/slow"
        self.sent = 0
        self.finished = threading.Event()
        self._declared, self._interval, self._limit, self._headers = declared, interval, limit, headers
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                connection.recv(65536)  # the request; its content does not matter
                connection.sendall(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {self._declared}\r\n{self._headers}\r\n".encode()
                )
                while self.sent < self._limit:
                    readable, _, _ = select.select([connection], [], [], self._interval)
                    if readable and not connection.recv(1):
                        return  # the client closed the connection
                    connection.sendall(b"x")
                    self.sent += 1
        except OSError:
            pass  # the client reset the connection
        finally:
            self._listener.close()
            self.finished.set()
