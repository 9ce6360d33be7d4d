from __future__ import annotations

from pathlib import Path

from fieldlens_retrain.decisions import DECISIONS_FILE, append_decision, read_decisions


def test_verdicts_are_appended_and_read_newest_first(tmp_path: Path) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        append_decision(tmp_path / "models", {"candidate": version, "verdict": "published"})
    assert [d["candidate"] for d in read_decisions(tmp_path / "models")] == ["1.2.0", "1.1.0", "1.0.0"]
    assert [d["candidate"] for d in read_decisions(tmp_path / "models", limit=1)] == ["1.2.0"]


def test_a_torn_line_hides_no_other_verdict(tmp_path: Path) -> None:
    append_decision(tmp_path, {"candidate": "1.0.0"})
    with (tmp_path / DECISIONS_FILE).open("a") as log:
        log.write('{"candidate": "1.1')  # a crash mid-write
    append_decision(tmp_path, {"candidate": "1.2.0"})
    assert [d["candidate"] for d in read_decisions(tmp_path)] == ["1.2.0", "1.0.0"]
    assert read_decisions(tmp_path / "none") == []
