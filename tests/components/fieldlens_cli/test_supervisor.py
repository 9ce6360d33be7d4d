"""The supervisor: what each component is configured with under `serve`, how it is started, how it fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from fieldlens_cli.brokers import free_port
from fieldlens_cli.supervisor import (
    CLASSIFIER,
    COMPONENTS,
    INFERENCE,
    UPLOADER,
    ChildFailedError,
    ServeOptions,
    UploadOptions,
    broker_flags,
    component_models,
    configure,
    flag_layers,
    spawn,
    wait_ready,
)
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import ConfigurationError, ExitCode
from tests.helpers.waiting import wait_until

RECIPES = Path(__file__).parents[3] / "recipes"
BROKER = BrokerConfig(url="mqtt://127.0.0.1:1")


def options(cpus: tuple[int, ...] | None) -> ServeOptions:
    return ServeOptions(
        broker="mqtt://127.0.0.1:1",
        name="n",
        camera="test-pattern",
        field_data=Path("f"),
        model_dir=Path("m"),
        socket_path=Path("s"),
        service_name="s",
        cpus=cpus,
        upload=UploadOptions(local_bucket_dir=Path("b"), prefix="p"),
    )


def recipe_sections() -> dict[str, Any]:
    """Each component's DefaultConfiguration, as its recipe has it (accessControl included)."""
    sections = {}
    for name in COMPONENTS:
        recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        sections[name] = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    return sections


def test_a_pinned_service_runs_as_many_onnx_threads_as_it_has_cpus() -> None:
    assert options((0,)).configs().inference.intra_op_threads == 1
    assert options(None).configs().inference.intra_op_threads == 0


def test_serve_options_become_each_components_configuration() -> None:
    configs = options(None).configs()
    assert configs.classifier.inference.socket_path == configs.inference.socket_path == Path("s")
    assert configs.classifier.inference.service_name == configs.inference.service_name == "s"
    assert configs.uploader is not None and configs.uploader.field_data_dir == configs.classifier.field_data_dir
    assert configs.classifier.s3_prefix == "p" and configs.uploader.local_bucket_dir == Path("b")
    assert configs.classifier.camera.source == "test-pattern" and configs.classifier.name == "n"


def test_each_recipes_default_configuration_is_a_valid_section() -> None:
    """The file has exactly the recipes' keys: a DefaultConfiguration copied as it is validates."""
    configs = configure(recipe_sections(), {}, BROKER, default_model_dir=Path("m"))
    assert configs.classifier.camera.source == "picamera2"  # the recipe's, not the model's default
    assert configs.uploader is not None and configs.uploader.bucket == "BUCKET_NAME"
    assert configs.inference.max_batch == 2


def test_flags_override_the_file_and_shared_settings_follow_either_side(tmp_path: Path) -> None:
    sections = {
        INFERENCE: {"modelDir": "/models", "socketPath": "/run/fl/inference.sock", "maxBatch": 4},
        CLASSIFIER: {"name": "hens", "camera": {"source": "folder", "folder": "/photos", "width": 640}},
        UPLOADER: {"fieldDataDir": "/var/field"},
    }
    flags = flag_layers(camera=f"folder:{tmp_path}", thing_name="coop-7", log_level="DEBUG")
    configs = configure(sections, flags, BROKER)
    assert configs.classifier.camera.folder == tmp_path and configs.classifier.camera.width == 640
    assert configs.classifier.inference.socket_path == Path("/run/fl/inference.sock")  # copied from the service
    assert configs.classifier.field_data_dir == Path("/var/field")  # copied from the uploader
    assert configs.inference.max_batch == 4 and configs.classifier.name == "hens"
    assert configs.uploader is not None and configs.uploader.thing_name == configs.classifier.thing_name == "coop-7"
    assert {c.log_level for c in (configs.inference, configs.classifier, configs.uploader)} == {"DEBUG"}
    flagged = configure(sections, flag_layers(socket_path=Path("/tmp/s.sock")), BROKER)
    assert flagged.inference.socket_path == flagged.classifier.inference.socket_path == Path("/tmp/s.sock")


def test_an_unknown_key_names_the_file_the_component_the_key_and_the_allowed_keys() -> None:
    sections = recipe_sections()
    sections[CLASSIFIER]["camera"]["widht"] = 640
    sections[UPLOADER]["buckett"] = "x"
    with pytest.raises(ConfigurationError) as raised:
        configure(sections, {}, BROKER, source="serve.yaml", default_model_dir=Path("m"))
    message = raised.value.message
    assert message.startswith("invalid configuration serve.yaml, fieldlens.Classifier: camera: unknown key 'widht'")
    assert "allowed: source, folder, folderFps" in message
    assert raised.value.exit_code == ExitCode.INVALID_INPUT


def test_an_unknown_section_or_two_different_shared_values_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown section 'fieldlens\.Clasifier'; allowed: fieldlens"):
        configure({"fieldlens.Clasifier": {}}, {}, BROKER, source="serve.json")
    sections = {INFERENCE: {"modelDir": "m", "serviceName": "a"}, CLASSIFIER: {"inference": {"serviceName": "b"}}}
    with pytest.raises(ConfigurationError, match="serviceName .a. and fieldlens.Classifier inference.serviceName .b."):
        configure(sections, {}, BROKER)


def test_without_the_uploader_its_section_is_not_run() -> None:
    configs = configure(
        {UPLOADER: {"fieldDataDir": "/elsewhere"}}, {}, BROKER, upload=False, default_model_dir=Path("m")
    )
    assert configs.uploader is None and configs.classifier.field_data_dir != Path("/elsewhere")


def test_what_a_child_is_handed_validates_to_the_same_configuration(tmp_path: Path) -> None:
    """The JSON file a child reads through its own --config is what serve validated, exactly."""
    from fieldlens_core.bootstrap import resolve_config

    configs = configure(recipe_sections(), {}, BROKER, default_model_dir=Path("m"))
    models = component_models()
    for name, config in (
        (INFERENCE, configs.inference),
        (CLASSIFIER, configs.classifier),
        (UPLOADER, configs.uploader),
    ):
        assert config is not None
        path = tmp_path / f"{name}.json"
        path.write_text(config.model_dump_json())
        assert json.loads(path.read_text())  # plain JSON
        assert resolve_config(models[name], {}, str(path)) == config


def test_a_shared_client_id_is_made_two(tmp_path: Path) -> None:
    broker = BrokerConfig(url="mqtts://h:8883", client_id="coop-7", ca_file=tmp_path / "ca.pem")
    assert broker_flags(broker) == [
        "--broker",
        "mqtts://h:8883",
        "--ca",
        str(tmp_path / "ca.pem"),
        "--client-id",
        "coop-7",
    ]
    assert broker_flags(broker, "#uploader")[-1] == "coop-7#uploader"


def test_a_child_that_cannot_start_fails_with_its_own_reason_and_exit_code(capfd: pytest.CaptureFixture[str]) -> None:
    """Not "exited with code 3": the child's own line, once, and its code."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    child = spawn("uploader", "fieldlens_uploader.main", ["--broker", url, "--field-data", "unused"])
    with pytest.raises(ChildFailedError) as raised:
        wait_ready(child)
    assert raised.value.exit_code == ExitCode.CANNOT_CONNECT
    assert raised.value.message.startswith(f"uploader could not start: cannot reach MQTT broker at {url}")
    assert "cannot start (exit 3)" not in capfd.readouterr().err  # the reason is told once, by serve


def test_a_pinned_child_runs_on_those_cpus_only() -> None:
    cpu = min(os.sched_getaffinity(0))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: pinning to it changes nothing to observe")
    child = spawn("pinned", "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"], cpus=(cpu,))
    try:

        def running() -> str:  # read afresh each time (psutil caches a process's exe)
            return os.path.basename(os.readlink(f"/proc/{child.process.pid}/exe"))

        wait_until(lambda: "python" in running(), 10, "taskset to exec python under the same pid")
        process = psutil.Process(child.process.pid)
        assert os.sched_getaffinity(child.process.pid) == {cpu}
        assert all(os.sched_getaffinity(thread.id) == {cpu} for thread in process.threads())
    finally:
        child.process.kill()
        child.process.wait()
