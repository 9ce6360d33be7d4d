from __future__ import annotations

import pytest

from fieldlens_core.bus import topic_matches
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
    got: list[tuple[str, bytes]] = []
    bus.subscribe("/a/+", lambda t, p: got.append((t, p)))
    bus.publish("/a/x", b"1")
    bus.publish("/b/x", b"2")
    assert got == [("/a/x", b"1")]
    assert bus.published == [("/a/x", b"1"), ("/b/x", b"2")]
    bus.stop()
    with pytest.raises(RuntimeError):
        bus.publish("/a/x", b"3")
