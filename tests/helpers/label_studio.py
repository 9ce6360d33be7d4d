"""The real Label Studio (PyPI, in .venv-label-studio: `make label-studio`) on 127.0.0.1, SQLite, a fresh data dir.

Started with a known user and a legacy API token, the version check off (it would reach PyPI):
the test talks to it through its REST API only.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fieldlens_cli.brokers import free_port

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".venv-label-studio" / "bin" / "label-studio"
TOKEN = "f1e1d1e2a5b00000000000000000000000000001"


class LabelStudio:
    def __init__(self, workdir: Path) -> None:
        if not BINARY.exists():
            message = "Label Studio is not installed: run `make label-studio` (make test does)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }
        env.pop("HOST", None)
        self._log = (workdir / "label-studio.log").open("w")
        arguments = ["start", "--no-browser", "--host", "127.0.0.1", "--internal-host", "127.0.0.1"]
        arguments += ["--port", str(self.port), "--username", "tester@fieldlens.local", "--password", "fieldlens-pass"]
        arguments += ["--user-token", TOKEN]
        self._process = subprocess.Popen([str(BINARY), *arguments], env=env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 300  # first start migrates a fresh SQLite database
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Label Studio did not start: see {workdir / 'label-studio.log'}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
