from __future__ import annotations

import pytest

from fieldlens_core.bus import Message, topic_matches
from fieldlens_core.bus.memory import InMemoryBus


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("/a/b", "/a/b", True),
        ("/a/+", "/a/b", True),
        ("/a/+", "/a/b/c", False),
        ("/a/#", "/a/b/c", True),
        ("#", "/x", True),
        ("/a/b", "/a/c", False),
        ("/a/b/c", "/a/b", False),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_delivers_to_matching_subscribers_and_records_everything() -> None:
    bus = InMemoryBus()
    got: list[Message] = []
    bus.subscribe("/a/+", got.append)
    bus.publish("/a/x", b"1", correlation_data=b"c")
    bus.publish("/b/x", b"2")
    assert got == [Message("/a/x", b"1", correlation_data=b"c")]
    assert [(m.topic, m.payload) for m in bus.published] == [("/a/x", b"1"), ("/b/x", b"2")]
    bus.deliver(Message("/a/y", b"old", retained=True, response_topic="/r"))
    assert got[-1].retained and got[-1].response_topic == "/r"
    bus.stop()
    with pytest.raises(RuntimeError):
        bus.publish("/a/x", b"3")
