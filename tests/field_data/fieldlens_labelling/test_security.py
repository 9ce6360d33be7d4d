"""What each of the page's credentials can and cannot do, and which Host names it answers to.

The Guard in front of a stand-in for the page's routes (Starlette's test client): the browser's
side of the same rules is in test_page.py, through a real Chromium.
"""

from __future__ import annotations

import re

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from fieldlens_core.errors import InvalidInputError
from fieldlens_labelling.app import STATIC
from fieldlens_labelling.security import Credentials, Guard, host_name, page_hosts

TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


def make_page(token: str = TOKEN, host: str = "127.0.0.1", port: int = 8080, allow: tuple[str, ...] = ()) -> TestClient:
    async def answer(request: Request) -> Response:
        return PlainTextResponse(f"{request.method} {request.url.path}")

    paths = ["/", "/static/app.js", "/api/state", "/api/images/{id}", "/api/thumbnails/{id}", "/api/reports/{v}/{p}"]
    routes = [Route(path, answer) for path in paths] + [Route("/api/labels", answer, methods=["POST"])]
    guard = Guard(token, host, port, allow, page=STATIC / "index.html")
    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
    name = page_hosts(host, allow)[0]
    return TestClient(app, base_url=f"http://{name}:{port}")


def sign_in(page: TestClient, token: str = TOKEN) -> str:
    """The session key the sign-in answer hands the page's script."""
    answer = page.get(f"/?token={token}")
    assert answer.status_code == 200
    found = re.search(r'<meta name="fieldlens-session" content="([^"]+)">', answer.text)
    assert found is not None and "<title>fieldlens" in answer.text
    return found.group(1)


def test_signing_in_sets_a_cookie_for_this_page_alone_that_is_not_the_token() -> None:
    page = make_page()
    assert page.get("/").status_code == 401
    assert page.get("/?token=guess").status_code == 401
    answer = page.get(f"/?token={TOKEN}")
    cookie = answer.headers["set-cookie"]
    name, value = cookie.split(";")[0].split("=", 1)
    assert re.fullmatch(r"fieldlens_8080_[0-9a-f]{12}", name)
    assert TOKEN not in cookie and value == Credentials(TOKEN, 8080).cookie
    assert {"httponly", "samesite=strict", "path=/"} <= {part.strip().lower() for part in cookie.split(";")}
    other = make_page(token="another-pages-token", port=8081)
    assert other.get("/?token=another-pages-token").headers["set-cookie"].split("=")[0] != name


def test_the_cookie_alone_opens_the_pages_code_and_none_of_its_data() -> None:
    """What a different server on this host receives (browsers send it every port's cookies)."""
    page = make_page()
    sign_in(page)  # the test client keeps the cookie
    assert page.get("/").status_code == 200 and page.get("/static/app.js").status_code == 200
    for path in ("/api/state", "/api/images/a", "/api/thumbnails/a", "/api/reports/1.0.0/confusion.png"):
        assert page.get(path).status_code == 401, path
    assert page.post("/api/labels", content="{}", headers=JSON).status_code == 401


def test_cookie_and_key_together_are_the_session_and_neither_works_alone() -> None:
    page = make_page()
    key = sign_in(page)
    assert page.get("/api/state", headers={"X-Fieldlens-Session": key}).status_code == 200
    assert page.post("/api/labels", content="{}", headers={**JSON, "X-Fieldlens-Session": key}).status_code == 200
    assert page.get(f"/api/images/a?session={key}").status_code == 200  # an <img> cannot send a header
    assert page.get(f"/api/reports/1.0.0/confusion.png?session={key}").status_code == 200
    assert page.post(f"/api/labels?session={key}", content="{}", headers=JSON).status_code == 401  # a write: the header
    assert page.get("/api/state", headers={"X-Fieldlens-Session": "guess"}).status_code == 401
    page.cookies.clear()  # the key alone: what a script that reads the page's storage could take
    assert page.get("/api/state", headers={"X-Fieldlens-Session": key}).status_code == 401
    assert page.get(f"/api/images/a?session={key}").status_code == 401


def test_the_image_token_reads_images_and_thumbnails_and_nothing_else() -> None:
    page = make_page()
    image_token = Credentials(TOKEN, 8080).image_token
    assert image_token != TOKEN
    assert page.get(f"/api/images/a?token={image_token}").status_code == 200
    assert page.head(f"/api/thumbnails/a?token={image_token}").status_code == 200
    for path in ("/api/state", "/static/app.js", "/api/reports/1.0.0/confusion.png"):
        assert page.get(f"{path}?token={image_token}").status_code == 401, path
    assert page.post(f"/api/labels?token={image_token}", content="{}", headers=JSON).status_code == 401
    assert page.get("/api/images/a", headers={"Authorization": f"Bearer {image_token}"}).status_code == 401
    assert page.get(f"/?token={image_token}").status_code == 401  # it signs no browser in
    assert "set-cookie" not in page.get(f"/api/images/a?token={image_token}").headers


def test_the_sign_in_token_is_never_taken_from_an_image_url() -> None:
    """Label Studio's tasks used to carry it: an export must not be a way to write labels."""
    page = make_page()
    assert page.get(f"/api/images/a?token={TOKEN}").status_code == 401
    assert page.get("/api/images/a", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_restart_revokes_every_credential_of_the_run_before() -> None:
    before = make_page(token="first-run")
    key = sign_in(before, "first-run")
    image_token = Credentials("first-run", 8080).image_token
    after = make_page(token="second-run")
    after.cookies = before.cookies
    assert after.get("/api/state", headers={"X-Fieldlens-Session": key}).status_code == 401
    assert after.get(f"/api/images/a?token={image_token}").status_code == 401
    assert after.get("/").status_code == 401


def test_listening_on_every_address_needs_the_names_other_machines_use() -> None:
    with pytest.raises(InvalidInputError, match="--allow-host") as refused:
        page_hosts("0.0.0.0")
    assert "--allow-host" in str(refused.value.hint)
    with pytest.raises(InvalidInputError, match="--allow-host"):
        page_hosts("::")
    assert page_hosts("0.0.0.0", ["Labelbox.LAN", "192.168.1.20"])[:2] == ["labelbox.lan", "192.168.1.20"]
    assert page_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert page_hosts("192.168.1.20", ["labelbox.lan"]) == ["192.168.1.20", "labelbox.lan"]


def test_lan_mode_answers_the_allowed_names_and_refuses_any_other() -> None:
    page = make_page(host="0.0.0.0", allow=("labelbox.lan", "192.168.1.20"))
    key = sign_in(page)
    for host in ("labelbox.lan:8080", "LabelBox.lan:8080", "192.168.1.20:8080", "127.0.0.1:8080"):
        assert page.get("/api/state", headers={"Host": host, "X-Fieldlens-Session": key}).status_code == 200, host
    for host in ("0.0.0.0:8080", "evil.example:8080", "labelbox.lan:8081", "labelbox.lan"):
        assert page.get("/api/state", headers={"Host": host, "X-Fieldlens-Session": key}).status_code == 400, host
    headers = {**JSON, "X-Fieldlens-Session": key}
    assert page.post("/api/labels", content="{}", headers={**headers, "Origin": "http://labelbox.lan:8080"}).is_success
    refused = page.post("/api/labels", content="{}", headers={**headers, "Origin": "http://evil.example:8080"})
    assert refused.status_code == 403


@pytest.mark.parametrize("given", ["http://labelbox", "labelbox:8080", "*", "*.lan", "a b", "", "-x.lan", "x" * 64])
def test_an_allowed_host_is_a_name_or_an_address_alone(given: str) -> None:
    with pytest.raises(InvalidInputError, match="not a host name or an address"):
        host_name(given)


def test_an_allowed_address_is_written_as_a_host_header_writes_it() -> None:
    assert host_name("FE80::1") == "[fe80::1]" and host_name("[::1]") == "[::1]" and host_name("10.0.0.7") == "10.0.0.7"
