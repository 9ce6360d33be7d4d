"""Shared fixtures: a real mosquitto broker, model packages (tiny and the real default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import Mosquitto
from tests.helpers.tiny_model import make_tiny_package


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture
def tiny_package(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    make_tiny_package(directory)
    return directory


@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real EfficientNet-Lite0 package, exported once per test session (about 30 s: its card
    measures int8 on 684 views)."""
    from fieldlens_retrain.default_model import build_default_model

    directory = tmp_path_factory.mktemp("default-model") / "model"
    build_default_model(directory)
    return directory


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to 107 bytes; tmp_path can be longer)."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="fl-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tiny_server(tiny_package: Path, socket_dir: Path) -> Iterator[Path]:
    """A real inference socket server serving the tiny model as 'tiny'; yields its socket path."""
    from fieldlens_inference.model_manager import ModelManager
    from fieldlens_inference.server import InferenceSocketServer
    from fieldlens_inference.service import InferenceService

    manager = ModelManager(tiny_package)
    manager.load_initial()
    path = socket_dir / "inference.sock"
    server = InferenceSocketServer(path, InferenceService(manager, {"tiny"}), max_body=1 << 20)
    server.start()
    yield path
    server.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process AWS, with the fake credentials moto documents; no real credentials are read."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture(autouse=True)
def _page_embeddings_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The labelling page embeds its images with the real backbone, on a thread, for its default
    order (fieldlens_labelling.embedded); every page a test starts would export the backbone and
    embed its images. Off here: a test that wants them puts in its own embed function."""
    try:
        from fieldlens_labelling import serve
    except ImportError:  # the label extra is not installed
        return

    def off(cache_dir: Path) -> None:
        raise ImportError("the page's embeddings are off in tests (tests/conftest.py)")

    monkeypatch.setattr(serve, "backbone_embed", off)
