"""A recording HTTP server on 127.0.0.1:0 for tests of HTTP exporters (Stripe, Amberflo).

Every request is recorded (method, path, headers, body); answers come from a script of
``(status, body)`` pairs consumed in order, then the default answer. Use as a context manager::

    with Recorder(default=(200, {"ok": True})) as rec:
        rec.script([(500, {"error": {}})])      # the first request fails
        ...  call rec.url ...
        assert rec.requests[0].json() == {...}
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body (Stripe's) as a flat dict."""
        return dict(urllib.parse.parse_qsl(self.body.decode(), keep_blank_values=True))


class Recorder:
    def __init__(self, default: tuple[int, Any] = (200, {}),
                 responder: Callable[[Request], tuple[int, Any]] | None = None):
        self.default = default
        self.responder = responder
        self.requests: list[Request] = []
        self._script: list[tuple[int, Any]] = []
        self._lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(n))
                with rec._lock:
                    rec.requests.append(req)
                    status, body = rec._script.pop(0) if rec._script else (
                        rec.responder(req) if rec.responder else rec.default)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, answers: list[tuple[int, Any]]) -> None:
        with self._lock:
            self._script.extend(answers)

    def __enter__(self) -> "Recorder":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
