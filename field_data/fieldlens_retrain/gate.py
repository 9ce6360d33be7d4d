"""The publish gate: a verdict on a candidate from evidence, and the sentence that explains it.

Nothing is judged without enough validation images (:class:`GateRules`); the candidate and the
current model are always scored on the same images (:mod:`fieldlens_retrain.evaluate`); a
candidate must beat the current model's accuracy by a margin and lose no class by more than
the class margin. The verdict names which classes improved and which regressed, in a sentence
a person reads ("Improved: recall of dress 14% → 50%").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CHANGE_EPSILON = 0.005
"""Recall changes smaller than this (half a point) are "unchanged"."""


@dataclass(frozen=True, kw_only=True)
class GateRules:
    """What the gate asks of a candidate before it is published (README, "The gate")."""

    margin: float = 0.02
    """Accuracy the candidate must gain over the current model, on the same images."""
    class_margin: float = 0.10
    """Recall a class may lose before it blocks the gate, if the loss is also more than chance
    (``class_p_value``): a class of eight validation images moves by 0.125 with one image."""
    class_p_value: float = 0.05
    """How unlikely a class's loss must be under "both models are as good on it" to block: a sign
    test on the images of the class that exactly one of the two models gets right."""
    min_val_per_class: int = 3
    """Validation images each class of the candidate needs before anything is judged."""
    min_val_images: int = 10
    """Validation images in all."""
    force: bool = False
    """Publish whatever the verdict; the card then says so (unvalidated, or forced)."""


DEFAULT_RULES = GateRules()


@dataclass(frozen=True)
class ClassChange:
    label: str
    support: int
    candidate: float
    current: float | None
    """None: there is no current model to compare with."""

    @property
    def delta(self) -> float:
        return 0.0 if self.current is None else self.candidate - self.current


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    verdict: str = "published"
    """published | not published | not enough to judge"""
    validated: bool = True
    """False when the candidate was published without the evidence the gate asks for (forced)."""
    forced: bool = False
    changes: tuple[ClassChange, ...] = ()
    regressed: tuple[str, ...] = ()
    """Classes whose recall fell by more than the class margin, and by more than chance."""
    short_of: tuple[tuple[str, int], ...] = ()
    """(class, validation images it lacks), for "not enough to judge"."""

    def sentence(self) -> str:
        return describe_changes(self.changes)


def class_changes(candidate: dict[str, Any], current: dict[str, Any] | None) -> tuple[ClassChange, ...]:
    """Each validated class's recall, the candidate's and the current model's, on the same images."""
    changes = []
    for label, figures in candidate["per_class"].items():
        if figures["support"]:
            before = current["per_class"].get(label, {}).get("recall", 0.0) if current else None
            changes.append(ClassChange(label, figures["support"], figures["recall"], before))
    return tuple(changes)


def describe_changes(changes: Sequence[ClassChange], shown: int = 5) -> str:
    """Which classes improved and which regressed, with their figures, as a person says it:
    "Improved: dress recall 14% → 50%. Regressed: coat 80% → 60%. 3 classes unchanged."
    At most ``shown`` of each, largest change first, so the sentence stays readable at 1,000 classes."""

    def listed(items: list[ClassChange]) -> str:
        text = ", ".join(f"{c.label} {c.current:.0%} → {c.candidate:.0%} ({c.support} images)" for c in items[:shown])
        return text + (f" and {len(items) - shown} more" if len(items) > shown else "")

    if not changes:
        return "No class has validation images."
    if all(c.current is None for c in changes):
        ordered = sorted(changes, key=lambda c: c.candidate)
        text = ", ".join(f"{c.label} {c.candidate:.0%}" for c in ordered[:shown])
        more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
        return f"Recall by class, weakest first: {text}{more}."
    improved = sorted((c for c in changes if c.delta > CHANGE_EPSILON), key=lambda c: -c.delta)
    regressed = sorted((c for c in changes if c.delta < -CHANGE_EPSILON), key=lambda c: c.delta)
    same = len(changes) - len(improved) - len(regressed)
    parts = []
    if improved:
        parts.append(f"Improved: recall of {listed(improved)}.")
    if regressed:
        parts.append(f"Regressed: recall of {listed(regressed)}.")
    if same:
        parts.append(f"{same} class{'es' if same != 1 else ''} unchanged.")
    return " ".join(parts)


def paired_outcomes(
    truth: Sequence[str], candidate: Sequence[str], current: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Per class, (images only the current model gets right, images only the candidate gets right):
    the discordant pairs a per-class regression is judged on."""
    outcomes: dict[str, list[int]] = {}
    for actual, new, old in zip(truth, candidate, current, strict=True):
        lost, gained = outcomes.setdefault(actual, [0, 0])
        outcomes[actual] = [lost + (old == actual != new), gained + (new == actual != old)]
    return {label: (lost, gained) for label, (lost, gained) in outcomes.items()}


def sign_test(lost: int, gained: int) -> float:
    """One-sided p-value of losing ``lost`` of ``lost + gained`` discordant images by chance (p = 1/2)."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


def gate(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    rules: GateRules,
    val_percent: int = 20,
    paired: dict[str, tuple[int, int]] | None = None,
) -> GateDecision:
    """The verdict on a candidate, from its scores and the current model's on the same images.

    Nothing is judged without evidence: below ``rules.min_val_per_class`` validation images of a
    class, or ``rules.min_val_images`` in all, the verdict is "not enough to judge", naming how
    many more labels of which classes would do (a ``val_percent`` share of new labels goes to
    validation). Then the candidate must gain ``rules.margin`` accuracy and lose no more than
    ``rules.class_margin`` recall on any class, where ``paired`` (:func:`paired_outcomes`) shows the
    loss is more than chance. ``rules.force`` publishes anyway, and says so."""
    changes = class_changes(candidate, current)
    short = tuple(
        (label, rules.min_val_per_class - figures["support"])
        for label, figures in candidate["per_class"].items()
        if figures["support"] < rules.min_val_per_class
    )
    missing_total = rules.min_val_images - candidate["images"]
    if short or missing_total > 0:
        need = f"{rules.min_val_per_class} validation images a class and {rules.min_val_images} in all"
        have = f"validation holds {candidate['images']} images"
        more = more_labels(short, missing_total, val_percent)
        if rules.force:
            reason = f"published by --force, unvalidated: {have}; the gate needs {need}"
            return GateDecision(True, reason, "published", False, True, changes, (), short)
        reason = f"not enough to judge, so not published: {have} (the gate needs {need}); {more}"
        return GateDecision(False, reason, "not enough to judge", False, False, changes, (), short)
    on = f"on the same {candidate['images']} validation images"
    if current is None:
        reason = f"published: no current model to compare with; candidate accuracy {candidate['accuracy']:.1%} {on}"
        return GateDecision(True, reason, changes=changes)

    def beyond_chance(label: str) -> bool:
        return paired is None or sign_test(*paired.get(label, (0, 0))) < rules.class_p_value

    regressed = tuple(c.label for c in changes if c.delta < -rules.class_margin and beyond_chance(c.label))
    verdict = (
        f"candidate {candidate['accuracy']:.1%} vs current {current['accuracy']:.1%} {on} (margin {rules.margin:.1%})"
    )
    if regressed:
        verdict += f"; recall fell by more than {rules.class_margin:.0%}, beyond chance, for {', '.join(regressed[:5])}"
    if candidate["accuracy"] >= current["accuracy"] + rules.margin and not regressed:
        return GateDecision(True, f"published: {verdict}", changes=changes)
    if rules.force:
        reason = f"published by --force although the gate would not: {verdict}"
        return GateDecision(True, reason, "published", True, True, changes, regressed)
    return GateDecision(False, f"not published: {verdict}", "not published", True, False, changes, regressed)


def more_labels(short: Sequence[tuple[str, int]], missing_total: int, val_percent: int) -> str:
    """How many more labels would give the gate its evidence, as a sentence."""
    share = max(1, val_percent) / 100

    def labels_for(images: int) -> int:
        return math.ceil(images / share)

    if short:
        listed = ", ".join(f"{labels_for(n)} more of {label}" for label, n in short[:5])
        extra = f" and {len(short) - 5} more classes" if len(short) > 5 else ""
        return f"label about {listed}{extra} ({val_percent}% of new labels go to validation)"
    return f"label about {labels_for(missing_total)} more images ({val_percent}% of new labels go to validation)"
