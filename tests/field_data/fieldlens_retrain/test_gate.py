from __future__ import annotations

from typing import Any

import pytest

from fieldlens_retrain.evaluate import score
from fieldlens_retrain.gate import GateRules, describe_changes, gate, paired_outcomes, sign_test

RULES = GateRules(margin=0.02, class_margin=0.1, min_val_per_class=3, min_val_images=6)


def scored(right: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Scores where each class has (correct, total) validation images; wrong ones are guessed as OTHER."""
    truth, guess = [], []
    for label, (correct, total) in right.items():
        truth += [label] * total
        guess += [label] * correct + ["elsewhere"] * (total - correct)
    return score(truth, guess, sorted(right))


def test_nothing_is_judged_on_no_images_and_the_verdict_says_what_to_label() -> None:
    empty = score([], [], ["mug", "kitty"])
    decision = gate(empty, None, RULES)
    assert not decision.publish and decision.verdict == "not enough to judge" and not decision.validated
    assert "15 more of mug" in decision.reason and "15 more of kitty" in decision.reason  # 3 val at 20%
    assert decision.reason.startswith("not enough to judge, so not published: ")  # a person reads it so


def test_one_class_short_blocks_even_a_perfect_candidate() -> None:
    decision = gate(scored({"mug": (5, 5), "kitty": (1, 1)}), None, RULES)
    assert decision.verdict == "not enough to judge" and dict(decision.short_of) == {"kitty": 2}
    assert "10 more of kitty" in decision.reason and "mug" not in decision.reason.split("label about")[1]


def test_forcing_past_missing_evidence_publishes_it_as_unvalidated() -> None:
    forced = gate(score([], [], ["mug"]), None, GateRules(force=True))
    assert forced.publish and forced.forced and not forced.validated and "unvalidated" in forced.reason


@pytest.mark.parametrize(
    ("candidate", "current", "publish"),
    [
        ({"a": (9, 10), "b": (9, 10)}, {"a": (8, 10), "b": (8, 10)}, True),
        ({"a": (9, 10), "b": (8, 10)}, {"a": (8, 10), "b": (9, 10)}, False),  # no gain
        ({"a": (10, 10), "b": (7, 10)}, {"a": (5, 10), "b": (9, 10)}, False),  # b loses 20 points of recall
    ],
)
def test_accuracy_and_per_class_rules(
    candidate: dict[str, tuple[int, int]], current: dict[str, tuple[int, int]], publish: bool
) -> None:
    decision = gate(scored(candidate), scored(current), RULES)
    assert decision.publish is publish and decision.validated
    assert decision.verdict == ("published" if publish else "not published")


def test_a_class_regression_is_named_and_forcing_says_so() -> None:
    candidate, current = scored({"a": (10, 10), "b": (7, 10)}), scored({"a": (5, 10), "b": (9, 10)})
    blocked = gate(candidate, current, RULES)
    assert blocked.regressed == ("b",) and "recall fell by more than 10%, beyond chance, for b" in blocked.reason
    forced = gate(candidate, current, GateRules(min_val_per_class=3, min_val_images=6, force=True))
    assert forced.publish and forced.forced and forced.validated and "--force" in forced.reason


def test_the_sentence_names_what_improved_and_what_regressed() -> None:
    decision = gate(
        scored({"dress": (5, 10), "coat": (6, 10), "shirt": (4, 10)}),
        scored({"dress": (1, 10), "coat": (8, 10), "shirt": (4, 10)}),
        RULES,
    )
    sentence = decision.sentence()
    assert "Improved: recall of dress 10% → 50%" in sentence
    assert "Regressed: recall of coat 80% → 60%" in sentence and "1 class unchanged" in sentence


def test_a_sentence_at_a_thousand_classes_stays_short() -> None:
    right = {f"c{n:04}": (n % 4, 4) for n in range(1000)}
    before = {f"c{n:04}": ((n + 1) % 4, 4) for n in range(1000)}
    sentence = describe_changes(gate(scored(right), scored(before), RULES).changes)
    assert len(sentence) < 600 and "more" in sentence


def test_without_a_current_model_the_weakest_classes_come_first() -> None:
    decision = gate(scored({"a": (9, 10), "b": (3, 10)}), None, RULES)
    assert decision.publish and decision.sentence().startswith("Recall by class, weakest first: b 30%, a 90%")


def test_a_class_loss_within_chance_does_not_block_but_one_beyond_it_does() -> None:
    """Eight coat images, one lost: 75% -> 62% is a 12-point fall but one image of chance (p = 0.5)."""
    truth = ["coat"] * 8 + ["dress"] * 14
    current = ["coat"] * 6 + ["x"] * 2 + ["dress"] * 2 + ["x"] * 12
    candidate = ["coat"] * 5 + ["x"] * 3 + ["dress"] * 7 + ["x"] * 7
    labels = ["coat", "dress"]
    paired = paired_outcomes(truth, candidate, current)
    assert paired == {"coat": (1, 0), "dress": (0, 5)} and sign_test(1, 0) == 0.5
    decision = gate(score(truth, candidate, labels), score(truth, current, labels), RULES, paired=paired)
    assert decision.publish and decision.regressed == ()
    worse = ["x"] * 8 + ["dress"] * 7 + ["x"] * 7  # every coat lost: p = 1/64
    blocked = gate(
        score(truth, worse, labels), score(truth, current, labels), RULES, paired=paired_outcomes(truth, worse, current)
    )
    assert not blocked.publish and blocked.regressed == ("coat",) and "beyond chance" in blocked.reason
