"""The page's HTTP surface: who may use it, and what a request may be.

Credentials, each good for this run of the page only (all but the first are HMACs of it, so a
restart, which draws a new one, revokes every one of them):

- **The sign-in token** that `fieldlens label serve` prints in its URL. It can do everything: as
  ``Authorization: Bearer <token>`` for scripts (PageClient), or once in ``/?token=`` to sign a
  browser in. It never leaves the printed URL and the scripts that are given it.
- **The browser's session**, in two halves that are good only together. Signing in sets a cookie
  (HttpOnly, SameSite=Strict, Path=/) named for this page alone (``fieldlens_<port>_<instance>``,
  so two pages on two ports keep their own), and hands the page's script a session key in the
  sign-in answer itself, which the script keeps in the origin's ``localStorage`` and sends as
  ``X-Fieldlens-Session`` (or ``?session=`` on the pictures it shows). Browsers send every cookie
  of 127.0.0.1 to every port there, so another local server does receive the cookie; but storage
  is kept apart by port, so that server never has the key, and the cookie alone opens only the
  page's own code (``/`` and ``/static/``), never its data. A script that steals the key from the
  page cannot read the cookie.
- **The image token** (:attr:`Credentials.image_token`), for Label Studio's tasks: it can only
  GET field images and their thumbnails (``?token=``), nothing else (no labels, no state, no
  retrain); `label serve` prints it in the ``--image-url`` for `label export`.

Besides a credential:

- **The Host header** must name the page: the address it listens on, or a name ``--allow-host``
  allowed (a DNS-rebinding page in the browser would send its own name). Listening on every
  address (LAN mode) needs at least one ``--allow-host``.
- **No cross-site writes.** A state-changing request must be JSON (a cross-site form cannot
  send that without a CORS preflight, which is never answered), and when the browser says
  where it comes from (``Origin``), it must be this page.
- **Small bodies.** Writes over MAX_BODY bytes are refused before they are read.

Every refusal is a 4xx with a JSON ``error`` that says why; the server keeps running.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from fieldlens_core.errors import InvalidInputError

MAX_BODY = 64 * 1024
SAFE_METHODS = ("GET", "HEAD")
IMAGE_PATHS = ("/api/images/", "/api/thumbnails/")
SESSION_HEADER = "x-fieldlens-session"
SESSION_QUERY = "session"
SESSION_META = "fieldlens-session"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
EVERY_ADDRESS = ("0.0.0.0", "::", "")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def _same(given: str | None, expected: str) -> bool:
    return bool(given) and secrets.compare_digest(str(given).encode(), expected.encode())


@dataclass(frozen=True)
class Credentials:
    """Everything the page hands out, derived from the sign-in token (see the module docstring)."""

    token: str
    port: int

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self.token.encode(), f"fieldlens-page/{purpose}".encode(), hashlib.sha256).digest()

    def _secret(self, purpose: str) -> str:
        return base64.urlsafe_b64encode(self._derive(purpose)).decode().rstrip("=")

    @cached_property
    def cookie_name(self) -> str:
        """Unique to this page: its port, and an instance id that says nothing about the token."""
        return f"fieldlens_{self.port}_{self._derive('instance').hex()[:12]}"

    @cached_property
    def cookie(self) -> str:
        return self._secret("cookie")

    @cached_property
    def session_key(self) -> str:
        return self._secret("session")

    @cached_property
    def image_token(self) -> str:
        return self._secret("images")


def host_name(given: str) -> str:
    """A name or address as a Host header carries it (lower case, IPv6 in brackets), or InvalidInputError."""
    name = given.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if len(name) <= 253 and HOST_NAME.fullmatch(name):
            return name
        raise InvalidInputError(
            f"--allow-host {given!r} is not a host name or an address",
            "Give the name or address alone, without a scheme, a port or a wildcard: --allow-host labelbox.local",
        ) from None
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def page_hosts(host: str, allow_hosts: Sequence[str] = ()) -> list[str]:
    """The names the page answers to, the one its printed URLs use first.

    On the loopback: the loopback's names. On one address: that address. On every address
    (``0.0.0.0``, ``::``: LAN mode): the loopback's names and the ``--allow-host`` names, which
    must be given (the page cannot know which of the machine's names other machines use, and
    guessing would let a rebinding name in). ``--allow-host`` adds names in every case."""
    allowed = [host_name(name) for name in allow_hosts]
    if host in EVERY_ADDRESS:
        if not allowed:
            raise InvalidInputError(
                f"--host {host or '(empty)'} listens on every address and needs --allow-host: the page answers only "
                "to the names it is given",
                "LAN mode: add --allow-host NAME for each name or address other machines open the page by "
                f"(for instance --allow-host {socket.gethostname().lower()}), or keep --host 127.0.0.1",
            )
        names = [*allowed, *LOOPBACK_NAMES]
    elif host in LOOPBACK_HOSTS:
        names = [host_name(host), *LOOPBACK_NAMES, *allowed]
    else:
        names = [host_name(host), *allowed]
    return list(dict.fromkeys(names))


class Access(Enum):
    NONE = "none"
    PAGE = "page"  # the session's cookie alone: the page's code, no data
    IMAGES = "images"  # the image token: field images and thumbnails
    FULL = "full"  # the sign-in token, or the whole session


class Guard:
    """Starlette middleware (``app.middleware("http")(guard)``) applying the rules above.

    ``page`` is the page's HTML: signing in answers it with the session key in it."""

    def __init__(self, token: str, host: str, port: int, allow_hosts: Sequence[str] = (), *, page: Path) -> None:
        self.credentials = Credentials(token, port)
        names = page_hosts(host, allow_hosts)
        self.hosts = {f"{name}:{port}" for name in names} | (set(names) if port == 80 else set())
        self.origins = {f"http://{name}" for name in self.hosts}
        self.page = page

    def access(self, request: Request) -> Access:
        credentials, safe, path = self.credentials, request.method in SAFE_METHODS, request.url.path
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):  # a script's, and nothing else counts then
            return Access.FULL if _same(header.removeprefix("Bearer "), credentials.token) else Access.NONE
        cookie = _same(request.cookies.get(credentials.cookie_name), credentials.cookie)
        key = request.headers.get(SESSION_HEADER) or (request.query_params.get(SESSION_QUERY) if safe else None)
        if cookie and _same(key, credentials.session_key):
            return Access.FULL
        if safe and path.startswith(IMAGE_PATHS) and _same(request.query_params.get("token"), credentials.image_token):
            return Access.IMAGES
        if cookie and safe and (path == "/" or path.startswith("/static/")):
            return Access.PAGE
        return Access.NONE

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "").lower() not in self.hosts:
            return refuse(400, "unexpected Host header: open the address `fieldlens label serve` printed")
        query_token = request.query_params.get("token")
        if request.url.path == "/" and query_token is not None:
            if not _same(query_token, self.credentials.token):
                return refuse(401, "wrong token: open the URL `fieldlens label serve` printed")
            return self._sign_in()
        if self.access(request) is Access.NONE:
            return refuse(401, "not signed in: open the URL `fieldlens label serve` printed (it carries the token)")
        if request.method not in SAFE_METHODS:
            problem = self._write_problem(request)
            if problem is not None:
                return problem
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def _sign_in(self) -> Response:
        """The page itself, with the session key for its script (which then drops ``?token=`` from
        the address bar), and the session's cookie: the key reaches only this origin's storage."""
        meta = f'<meta name="{SESSION_META}" content="{html.escape(self.credentials.session_key)}">'
        body = self.page.read_text(encoding="utf-8").replace("<head>", f"<head>\n  {meta}", 1)
        signed_in = HTMLResponse(body, headers=HEADERS)
        credentials = self.credentials
        signed_in.set_cookie(credentials.cookie_name, credentials.cookie, httponly=True, samesite="strict", path="/")
        return signed_in

    def _write_problem(self, request: Request) -> Response | None:
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return refuse(403, f"cross-site request from {origin} refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, "send JSON (Content-Type: application/json)")
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return refuse(411, "a Content-Length is required")
        if int(length) > MAX_BODY:
            return refuse(413, f"a request body of at most {MAX_BODY} bytes")
        return None
