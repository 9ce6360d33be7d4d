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


@pytest.mark.parametrize("topic", ["", "/a/+", "/a/#", "a\x00b", "/" + "x" * 300])
def test_publish_topics_have_no_wildcards_and_fit_iot_core(topic: str) -> None:
    with pytest.raises(ValueError):
        topics.validate_publish_topic(topic)
