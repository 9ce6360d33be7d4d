"""The labelling page's HTTP API from Python (urllib): what the loop demo and scripted labellers use.

The same requests a browser makes, with the token as a bearer header; a refused write raises
PageError with the page's own message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from fieldlens_core.errors import FieldlensError


class PageError(FieldlensError, RuntimeError):
    """The page refused a request (the message is its own)."""


class PageClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout_s = timeout_s

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers, **({"Content-Type": "application/json"} if data is not None else {}))
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise PageError(f"{path}: {exc.code} {message}") from None

    def state(self) -> dict[str, Any]:
        return self._call("/api/state")

    def items(self, order: str = "useful", show: str = "todo", limit: int = 1000) -> Iterator[dict[str, Any]]:
        """Every item in the page's order, a page of ``limit`` at a time."""
        offset = 0
        while True:
            page = self._call(f"/api/items?order={order}&show={show}&offset={offset}&limit={limit}")
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def label(self, items: list[dict[str, Any]], label: str | None, excluded: bool = False) -> list[dict[str, Any]]:
        """Label ``items`` (as the page listed them: id and revision); returns them as they are now."""
        body = {"items": [{"id": i["id"], "revision": i["revision"]} for i in items], "label": label}
        updated: list[dict[str, Any]] = self._call("/api/labels", {**body, "excluded": excluded})["updated"]
        return updated

    def models(self) -> dict[str, Any]:
        """The current model, every gate report, and the retrain's progress."""
        return self._call("/api/models")

    def retrain(self) -> dict[str, Any]:
        """Start dataset build -> retrain -> gate from the labels given so far."""
        return self._call("/api/retrain", {})

    def install(self, version: str) -> dict[str, Any]:
        return self._call("/api/install", {"version": version})
