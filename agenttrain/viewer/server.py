"""The viewer's HTTP server: the standard library's ThreadingHTTPServer, GET only, one route per page.

Safe by default: it listens on loopback, answers only requests addressed to that host (a web page cannot
reach it through DNS rebinding), sends a Content-Security-Policy that allows no script at all (the pages
need none, so model output that slipped through escaping still could not run), and never writes a file.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from agenttrain.errors import UserError
from agenttrain.untrusted import scrub
from agenttrain.viewer.highlight import stylesheet
from agenttrain.viewer.html import Markup, el, layout
from agenttrain.viewer.pages.candidates import candidates_page
from agenttrain.viewer.pages.diff import diff_page
from agenttrain.viewer.pages.epoch import epoch_page
from agenttrain.viewer.pages.evaluation import evaluation_page
from agenttrain.viewer.pages.rollout import compare_page, epoch_rollout_page, eval_rollout_page
from agenttrain.viewer.pages.run import run_page
from agenttrain.viewer.pages.runs_list import runs_page
from agenttrain.viewer.pages.search import search_page
from agenttrain.viewer.site import NotFound, Site

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # a run still training changes between two visits
}
HTML = "text/html; charset=utf-8"
Page = Callable[..., Markup]  # (site, *path parts, query=..., page=...) -> HTML
ROUTES: list[tuple[re.Pattern[str], Page, tuple[str, ...]]] = [
    # (path pattern, page, the keyword arguments the page takes besides the site and the path parts)
    (re.compile(r"/"), runs_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/?"), run_page, ()),
    (re.compile(r"/runs/([^/]+)/epochs/([0-9]+)/?"), epoch_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/epochs/([0-9]+)/tasks/([^/]+)"), epoch_rollout_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/evals/([^/]+)"), evaluation_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/evals/([^/]+)/tasks/([^/]+)"), eval_rollout_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/diff"), diff_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/compare/([^/]+)"), compare_page, ("query", "page")),
    (re.compile(r"/runs/([^/]+)/candidates"), candidates_page, ()),
    (re.compile(r"/runs/([^/]+)/search"), search_page, ("query", "page")),
]


def static_file(name: str) -> tuple[bytes, str] | None:
    if name == "highlight.css":
        return stylesheet().encode(), "text/css; charset=utf-8"
    if name != "style.css":
        return None
    return (resources.files("agenttrain.viewer") / "static" / name).read_bytes(), "text/css; charset=utf-8"


def error_page(title: str, message: str) -> Markup:
    return layout(title, [("/", "runs"), (None, title)], el("p", message, class_="error"))


class BadRequest(Exception):
    """A query no page can answer (a page number that is not one); shown as a 400 page with the message."""


def page_number(query: dict[str, str]) -> int:
    value = query.get("page") or "1"
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise BadRequest(f"page {value!r}: give a page number, such as page=2")
    return max(int(value), 1)


def utf8(html: str) -> bytes:
    """A page as UTF-8; a lone surrogate from a run folder someone else wrote is shown as U+FFFD."""
    return scrub(html).encode()


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Site, host: str, port: int) -> None:
        self.site = site
        self.allowed_hosts = None if host not in LOOPBACK else {*LOOPBACK, host}
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerHandler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # one line per request: only with debug logging on
        log.debug(*args)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"this viewer answers only on its own address\n", "text/plain", with_body)
            return
        status, body, content_type = self._route()
        self._send(status, body, content_type, with_body)

    def _host_allowed(self) -> bool:
        allowed = self.server.allowed_hosts
        if allowed is None:
            return True  # listening beyond loopback was asked for explicitly
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return host in allowed

    def _route(self) -> tuple[HTTPStatus, bytes, str]:
        """The answer to the request: a page, or an error page for whatever the request or the folder holds."""
        try:
            return self._page()
        except (BadRequest, ValueError) as exc:  # ValueError: a path urlsplit cannot read
            return HTTPStatus.BAD_REQUEST, utf8(error_page("Bad request", str(exc))), HTML
        except NotFound as exc:
            return HTTPStatus.NOT_FOUND, utf8(error_page("Not found", str(exc))), HTML
        except UserError as exc:  # a damaged file in a run: say which, keep serving the rest
            return HTTPStatus.UNPROCESSABLE_ENTITY, utf8(error_page("Cannot read this run", str(exc))), HTML
        except Exception as exc:  # a file this code did not expect: one failed page, never a dead server
            log.exception("viewer: %s failed", self.path)
            message = f"{type(exc).__name__}: {exc} (details in the terminal that runs agenttrain view)"
            return HTTPStatus.INTERNAL_SERVER_ERROR, utf8(error_page("This page failed", message)), HTML

    def _page(self) -> tuple[HTTPStatus, bytes, str]:
        url = urlsplit(self.path)
        if url.path.startswith("/static/"):
            found = static_file(url.path.removeprefix("/static/"))
            if found is None:
                return HTTPStatus.NOT_FOUND, b"no such file\n", "text/plain"
            return HTTPStatus.OK, *found
        query = dict(parse_qsl(url.query))
        for pattern, page, wants in ROUTES:
            match = pattern.fullmatch(url.path)
            if match is None:
                continue
            extras = {"query": query, "page": page_number(query) if "page" in wants else 1}
            html = page(self.server.site, *(unquote(g) for g in match.groups()), **{k: extras[k] for k in wants})
            return HTTPStatus.OK, utf8(html), HTML
        raise NotFound(f"no page at {url.path}")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, with_body: bool) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser moved on before the page arrived


def start(path: Path, host: str = "127.0.0.1", port: int = 8765) -> ViewerServer:
    """A server over the run or runs folder at `path`, bound but not yet serving."""
    site = Site.for_path(path)
    try:
        return ViewerServer(site, host, port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port, or 0 for any "
                        "free one") from None


def serve(server: ViewerServer, open_browser: bool) -> None:
    """Serve until interrupted; open the start page in the browser first if asked."""
    start_url = server.url + server.site.start_path()
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(start_url,), daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
