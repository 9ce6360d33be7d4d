"""The page's HTTP surface: who may use it, and what a request may be.

- **A token, always.** `fieldlens label serve` prints a URL that carries it; opening that URL
  trades it for a cookie (HttpOnly, SameSite=Strict) and drops it from the address bar.
  Scripts send ``Authorization: Bearer <token>``. Image URLs alone may carry ``?token=``
  (read-only), so that Label Studio can show the page's images. Other local users, or a page in another tab,
  have neither. On an address other than the loopback this is what keeps the page private;
  on the loopback it still keeps other users of the machine out.
- **The Host header** must name the address the page listens on (a DNS-rebinding page in the
  browser would send its own name).
- **No cross-site writes.** A state-changing request must be JSON (a cross-site form cannot
  send that without a CORS preflight, which is never answered), and when the browser says
  where it comes from (``Origin``), it must be this page.
- **Small bodies.** Writes over MAX_BODY bytes are refused before they are read.

Every refusal is a 4xx with a JSON ``error`` that says why; the server keeps running.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

COOKIE = "fieldlens_token"
MAX_BODY = 64 * 1024
SAFE_METHODS = ("GET", "HEAD")
IMAGE_PATHS = ("/api/images/", "/api/thumbnails/")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


class Guard:
    """Starlette middleware (``app.middleware("http")(guard)``) applying the rules above."""

    def __init__(self, token: str, host: str, port: int) -> None:
        self.token = token
        names = LOOPBACK_NAMES if host in ("127.0.0.1", "localhost", "::1") else (host,)
        self.hosts = {f"{name}:{port}" for name in names}
        self.origins = {f"http://{name}" for name in self.hosts}

    def authenticated(self, request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            given = header.removeprefix("Bearer ")
        elif request.method in SAFE_METHODS and request.url.path.startswith(IMAGE_PATHS):
            given = request.query_params.get("token", given)  # image URLs handed to Label Studio
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "") not in self.hosts:
            return refuse(400, "unexpected Host header: open the address `fieldlens label serve` printed")
        query_token = request.query_params.get("token")
        if request.url.path == "/" and query_token is not None:
            if not secrets.compare_digest(query_token.encode(), self.token.encode()):
                return refuse(401, "wrong token: open the URL `fieldlens label serve` printed")
            signed_in = RedirectResponse("/", status_code=303, headers=HEADERS)
            signed_in.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return signed_in
        if not self.authenticated(request):
            return refuse(401, "not signed in: open the URL `fieldlens label serve` printed (it carries the token)")
        if request.method not in SAFE_METHODS:
            problem = self._write_problem(request)
            if problem is not None:
                return problem
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def _write_problem(self, request: Request) -> Response | None:
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins:
            return refuse(403, f"cross-site request from {origin} refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, "send JSON (Content-Type: application/json)")
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return refuse(411, "a Content-Length is required")
        if int(length) > MAX_BODY:
            return refuse(413, f"a request body of at most {MAX_BODY} bytes")
        return None
