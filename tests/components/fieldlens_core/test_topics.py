from __future__ import annotations

import pytest

from fieldlens_core import topics


def test_default_topics_are_the_seed_blogs() -> None:
    assert topics.request_topic(topics.DEFAULT_NAME) == "/request/classify/beverage_container"
    assert topics.response_topic(topics.DEFAULT_NAME) == "/response/prediction/beverage_container"


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "x" * 65, "with space"])
def test_a_name_must_be_one_safe_topic_level(name: str) -> None:
    with pytest.raises(ValueError):
        topics.request_topic(name)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/a/+",
        "/a/#",
        "a\x00b",
        "/" + "x" * 300,
        "/response/x\x01y",  # the review's critical finding: mosquitto drops the connection
        "/response/x\x7fy",
        "/response/x\x85y",
        "/response/x\ny",
        "/response/\ufdd0",
        "/response/\uffff",
        "/response/\U0010ffff",
        "/response/\ud800",
        "/a/b/c/d/e/f/g/h",  # 8 slashes: AWS IoT Core allows 7
        "/response/../request/classify",
        "/response/./x",
        "/response//x",
        "/response/x/",
    ],
)
def test_publish_topics_follow_mqtt_and_iot_core_rules(topic: str) -> None:
    with pytest.raises(ValueError):
        topics.validate_publish_topic(topic)


@pytest.mark.parametrize("topic", ["/response/console/42", "/a/b/c/d/e/f/g", "/response/caf\u00e9", "status/coop-7"])
def test_ordinary_topics_pass(topic: str) -> None:
    assert topics.validate_publish_topic(topic) == topic
