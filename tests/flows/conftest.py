"""Fixtures of the flow tests: a local HTTP endpoint that receives Apprise ``json://`` posts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class AlertEndpoint:
    """A running local HTTP server; ``posts`` holds each received JSON body."""

    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests first
    requests: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The Apprise URL of this endpoint."""
        return f"json://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        """Shut the server down (later posts get connection refused)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """One temporary Prefect API (and database) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def alert_endpoint() -> Iterator[AlertEndpoint]:
    """A local HTTP server on 127.0.0.1 in a thread, recording Apprise JSON posts."""
    endpoint = AlertEndpoint(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with lock:
                endpoint.requests += 1
                failing = endpoint.requests <= endpoint.fail_first
                if not failing:
                    endpoint.posts.append(json.loads(raw or b"{}"))
            self.send_response(500 if failing else 200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.port = server.server_address[1]
    endpoint.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
