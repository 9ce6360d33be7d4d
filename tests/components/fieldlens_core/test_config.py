from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_core.config import BrokerConfig, CameraConfig, load_config_file, validate_config
from fieldlens_core.errors import ConfigurationError, ExitCode, InvalidInputError


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(ConfigurationError, match="sorce"):
        validate_config(CameraConfig, {"sorce": "folder"})


def test_camel_case_and_snake_case_keys_are_both_accepted() -> None:
    assert validate_config(CameraConfig, {"jpegQuality": 50}).jpeg_quality == 50
    assert validate_config(CameraConfig, {"jpeg_quality": 60}).jpeg_quality == 60


def test_folder_source_needs_a_folder() -> None:
    with pytest.raises(ConfigurationError, match="needs `folder`"):
        validate_config(CameraConfig, {"source": "folder"})


def test_every_field_is_documented() -> None:
    for model in (BrokerConfig, CameraConfig):
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert undocumented == [], f"{model.__name__} fields without a description: {undocumented}"


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://127.0.0.1:1884", "127.0.0.1", 1884, False),
        ("mqtts://abc.iot.eu-west-1.amazonaws.com", "abc.iot.eu-west-1.amazonaws.com", 8883, True),
    ],
)
def test_broker_urls(url: str, host: str, port: int, tls: bool) -> None:
    config = BrokerConfig(url=url)
    assert (config.host, config.port, config.tls) == (host, port, tls)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"cert_file": "c.pem", "url": "mqtts://h"}, "cert_file and key_file go together"),
        ({"ca_file": "ca.pem"}, "only used over TLS: write the URL as mqtts://"),
    ],
)
def test_bad_broker_configuration_is_refused(raw: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        validate_config(BrokerConfig, raw)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:1883", "has no scheme"),
        ("localhost:1883", "has no scheme"),
        ("mqtt://127.0.0.1:99999", "port '99999' is not a port"),
        ("mqtt://127.0.0.1:port", "port 'port' is not a port"),
        ("http://127.0.0.1:1883", "unknown scheme 'http'"),
        ("mqtt://", "names no host"),
        ("mqtt://127.0.0.1:1883/topic", "has a path"),
    ],
)
def test_a_broker_url_mistake_names_the_mistake_and_shows_the_form(url: str, says: str) -> None:
    """The same message wherever the URL comes from: BrokerConfig is where every URL is read."""
    with pytest.raises(InvalidInputError) as raised:
        validate_config(BrokerConfig, {"url": url})
    assert says in raised.value.message and raised.value.exit_code == ExitCode.INVALID_INPUT
    assert raised.value.hint is not None and "mqtt://HOST:PORT" in raised.value.hint


def test_unknown_keys_are_named_with_the_keys_allowed_in_their_place() -> None:
    from fieldlens_classifier.config import ClassifierConfig

    raw = {"camera": {"widht": 640}, "sampling": {"strategies": [{"type": "margin", "maxMargn": 0.1}]}, "nme": "x"}
    with pytest.raises(ConfigurationError) as raised:
        validate_config(ClassifierConfig, raw, "configuration serve.yaml, fieldlens.Classifier")
    message = raised.value.message
    assert message.startswith("invalid configuration serve.yaml, fieldlens.Classifier: ")
    assert "camera: unknown key 'widht'; allowed: source, folder, folderFps, folderRepeat, width, height," in message
    assert "sampling.strategies.0.margin: unknown key 'maxMargn'; allowed: type, " in message
    assert "unknown key 'nme'; allowed: logLevel, busScope, name, " in message


def test_config_files_must_be_json_objects(tmp_path: Path) -> None:
    good, bad, broken = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "broken.json"
    good.write_text('{"a": 1}')
    bad.write_text("[1]")
    broken.write_text("{")
    assert load_config_file(good) == {"a": 1}
    for path in (bad, broken, tmp_path / "missing.json"):
        with pytest.raises(ConfigurationError, match=str(path)):
            load_config_file(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_config_files_may_be_yaml(tmp_path: Path, suffix: str) -> None:
    good, bad, broken = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}", tmp_path / f"broken{suffix}"
    good.write_text("camera:\n  source: folder\n  folder: /photos\ndefaultTopK: 3\n")
    bad.write_text("- 1\n")
    broken.write_text("camera: [\n")
    assert load_config_file(good) == {"camera": {"source": "folder", "folder": "/photos"}, "defaultTopK": 3}
    for path in (bad, broken):
        with pytest.raises(ConfigurationError, match=str(path)) as raised:
            load_config_file(path)
        assert "YAML" in raised.value.one_line()


def test_merge_normalises_camel_case_and_merges_nested_sections() -> None:
    from fieldlens_core.config import merge_config, snake_case

    assert [snake_case(k) for k in ("defaultTopK", "s3Prefix", "timeoutS", "already_snake")] == [
        "default_top_k",
        "s3_prefix",
        "timeout_s",
        "already_snake",
    ]
    from fieldlens_classifier.config import ClassifierConfig

    merged = merge_config(
        ClassifierConfig,
        {"camera": {"width": 640, "source": "picamera2"}, "defaultTopK": 3},
        {"camera": {"source": "folder"}},
    )
    assert merged == {"camera": {"width": 640, "source": "folder"}, "default_top_k": 3}


def test_label_names_in_the_configuration_keep_their_case() -> None:
    """A quota for "Egyptian cat" must apply to the label the model emits, not to "egyptian cat"."""
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_core.config import merge_config, validate_config

    raw = {"sampling": {"classQuota": {"perDay": 5, "classes": {"Egyptian cat": 2, "tabbyCat": 1}}}}
    merged = merge_config(ClassifierConfig, raw, {"defaultTopK": 3})
    config = validate_config(ClassifierConfig, merged)
    assert config.sampling.class_quota.classes == {"Egyptian cat": 2, "tabbyCat": 1}
    assert config.sampling.class_quota.per_day == 5 and config.default_top_k == 3


def test_a_key_outside_the_schema_is_reported_as_written() -> None:
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_core.config import merge_config, validate_config

    with pytest.raises(ConfigurationError, match="defaultTopKay"):
        validate_config(ClassifierConfig, merge_config(ClassifierConfig, {"defaultTopKay": 3}))
