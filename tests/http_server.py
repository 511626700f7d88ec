"""A 127.0.0.1 HTTP server for the tests (downloads: good, bad, slow, oversized, redirected, failing).

Usage (tests/ is on sys.path: pytest's default prepend import mode)::

    from http_server import LocalHTTPServer

    with LocalHTTPServer({"/good.bin": GOOD, "/slow": lambda r: r.drip(every=0.1)}) as srv:
        fetch(srv.url + "/good.bin")
        srv.routes["/later"] = lambda r: r.fail(503)    # routes may change while it runs
        assert srv.hits["/good.bin"] == 1

A route is ``bytes`` (served as a 200 with its exact Content-Length) or a callable taking the request
handler, which answers with one of :class:`RouteHandler`'s behaviours. An unknown path is a 404. Every
GET is counted in ``srv.hits`` (by path, query dropped); ``flood`` counts what it sent in ``srv.sent``.
A client that hangs up mid-answer is expected (most behaviours provoke that), never an error. Each
server has its own routes and counters, so tests never share state; it only listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = bytes | Callable[["RouteHandler"], None]


class RouteHandler(BaseHTTPRequestHandler):
    """Answers a GET from its server's ``routes``; the behaviours below are what a route may call."""

    server: LocalHTTPServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.hits[path] = self.server.hits.get(path, 0) + 1
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        with contextlib.suppress(OSError):   # the client hung up: that is the point of most routes
            if isinstance(route, bytes):
                self.body(route)
            else:
                route(self)
        self.close_connection = True

    # -------------------------------------------------------------------------------- behaviours

    def body(self, data: bytes, ctype: str = "application/octet-stream", *, length: int | None = None) -> None:
        """200 with ``data``; ``length`` announces another Content-Length (a short or long body)."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def drip(self, length: int, every: float = 0.2) -> None:
        """Announce ``length`` bytes, then send one every ``every`` seconds."""
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for _ in range(length):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(every)

    def drip_headers(self) -> None:
        """Headers that never end, one byte every 0.2 s."""
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Slow: " + b"y" * 10**5:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def flood(self, announce: bool, total: int = 200 << 20) -> None:
        """``total`` bytes as fast as the client reads (announced or not); counted in ``server.sent``."""
        self.send_response(200)
        if announce:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        block = b"z" * (1 << 16)
        for _ in range(total // len(block)):
            self.wfile.write(block)
            with self.server.lock:
                self.server.sent[self.path] = self.server.sent.get(self.path, 0) + len(block)

    def redirect(self, where: str, code: int = 302) -> None:
        self.send_response(code)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def fail(self, code: int = 503) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LocalHTTPServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 and a free port, serving ``routes``; a context manager."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), RouteHandler)
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
