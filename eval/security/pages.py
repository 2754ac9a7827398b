"""The task's web pages behind a real HTTP server on 127.0.0.1: the sandbox's only web.

A page is found by host and path (scheme, query and trailing slash ignored); any host
the task has no page for is unreachable.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

from relaygraph.eval.security.confinement import SandboxError

PAGE_POLL_S = 0.01
"""How often the page server looks for a shutdown request; closing a sandbox waits for
it. socketserver's default, 0.5 s, made each sandbox with pages take half a second to
close; a wake-up every 10 ms costs next to nothing."""


class PageServer:
    """The task's web pages behind a real HTTP server on 127.0.0.1 (only if it has pages).

    Example:
        >>> server = PageServer({"https://docs.acme.test/setup": "Run make."})
        >>> server.fetch("https://docs.acme.test/setup?ref=mail")
        'Run make.'
        >>> server.close()
    """

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = {_page_key(url): text for url, text in pages.items()}
        self.hosts = {key.split("/", 1)[0] for key in self.pages}
        self._server: ThreadingHTTPServer | None = None
        if not pages:
            return
        served = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = served.get(_page_key("http:/" + self.path))
                body = (text if text is not None else "404 Not Found").encode()
                self.send_response(200 if text is not None else 404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the sandbox records every request itself."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": PAGE_POLL_S}, daemon=True
        ).start()

    def fetch(self, url: str) -> str:
        """The page at ``url``, over HTTP from the local server (a 404 as text).

        Raises:
            ValueError: Not an http(s) URL.
            SandboxError: A host the task has no page for.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.hostname not in self.hosts or self._server is None:
            raise SandboxError(f"{parts.hostname} is not reachable (the sandbox has no network)")
        port = self._server.server_address[1]
        local = f"http://127.0.0.1:{port}/{parts.hostname}{parts.path or '/'}"
        # Plain http to loopback: no TLS, so no certificates to load (the default client
        # loads them, 30-50 ms a fetch), and no proxy from the environment in the way.
        response = httpx.get(local, timeout=5.0, verify=False, trust_env=False)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text}"
        return response.text

    def close(self) -> None:
        """Stop the server (if one was started)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _page_key(url: str) -> str:
    """``host/path`` without scheme, query or trailing slash."""
    parts = urlsplit(url.strip())
    return f"{(parts.hostname or '').lower()}{parts.path.rstrip('/') or ''}"
