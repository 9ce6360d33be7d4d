"""A candidate's operating point: temperature scaling on validation, then the thresholds devices run at.

The head's probabilities are its own: the blend of a linear head trained with label smoothing and
prototypes at a fixed cosine scale says 0.6 where it is right nine times in ten, or 0.95 where it is
right seven times in ten, depending on the data. Continuous mode starts an event at a confidence, and
the sampling policy keeps frames outside a confidence band, so the numbers must mean what they say.

1. **Temperature**: one scalar T, fitted on the validation split's outputs by minimising the negative
   log-likelihood of softmax(output / T) (Guo et al. 2017, "On calibration of modern neural
   networks"). It changes no top-1, so accuracy and the gate are untouched. The exported graph ends
   with the division (:func:`tempered`), so every device gets calibrated probabilities with no code
   change, and the export check and reference answer cover it.
2. **ECE**: expected calibration error of the top-1 (15 equal-width bins), before and after, on
   the images T was fitted on, and cross-fitted (T fitted on one half, measured on the other) so
   that the card also says what an image the fit never saw gets.
3. **Event threshold and band**, from the calibrated validation confidences: the event threshold is
   the lowest confidence from which the top-1 is right at least ``EVENT_PRECISION`` of the time;
   the band's low is that threshold (below it the model is unsure: hard cases worth a label) and its
   high the lowest confidence from which it is right ``EASY_PRECISION`` of the time (easy positives).

Below ``MIN_IMAGES`` validation images none of this is estimated (one image moves ECE by several
points): the card then has no operating point and devices run at the configured constants.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fieldlens_core.model_package import Calibration, ConfidenceBand, OperatingPoint

ECE_BINS = 15
MIN_IMAGES = 20
"""Validation images below which no temperature, ECE or threshold is estimated."""
EVENT_PRECISION = 0.95
EASY_PRECISION = 0.99
THRESHOLDS = tuple(round(0.4 + 0.05 * n, 2) for n in range(12))
"""Candidate event thresholds, 0.40 to 0.95: below 0.4 a window's leader can be one of two near-equal classes."""
TEMPERATURES = (0.05, 20.0)
"""The range T is searched in (log-uniformly): far wider than any head here needs."""


def softmax(outputs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(outputs, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-1 ECE: over equal-width confidence bins, the image-weighted mean |accuracy - confidence|."""
    if len(truth) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi] bins
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.sum() * abs(float(correct[members].mean()) - float(confidence[members].mean()))
    return error / len(truth)


def ece_floor(probabilities: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would show on these images: each top-1 right with its
    own confidence's probability, the median over ``draws`` draws. On a few hundred images this is
    several points by chance alone, so an ECE near it is as calibrated as the images can tell."""
    rng = np.random.default_rng(seed)
    confidence = probabilities.max(axis=1)
    top = probabilities.argmax(axis=1)
    errors = []
    for _ in range(draws):
        truth = np.where(rng.random(len(confidence)) < confidence, top, -1)
        errors.append(expected_calibration_error(probabilities, truth))
    return float(np.median(errors)) if errors else 0.0


def negative_log_likelihood(outputs: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    probabilities = softmax(outputs, temperature)[np.arange(len(truth)), truth]
    return float(-np.log(np.maximum(probabilities, 1e-300)).mean())


def fit_temperature(outputs: np.ndarray, truth: np.ndarray) -> float:
    """The T that minimises the NLL of softmax(outputs / T): a golden-section search on log T
    (the NLL is smooth and, in practice, unimodal in it); deterministic, no optimiser state."""
    low, high = math.log(TEMPERATURES[0]), math.log(TEMPERATURES[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(outputs, truth, math.exp(x)) for x in (a, b))
    for _ in range(60):  # the bracket shrinks to 1e-12 of its width
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(outputs, truth, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(outputs, truth, math.exp(b))
    return round(math.exp((low + high) / 2), 4)


def cross_fitted_ece(outputs: np.ndarray, truth: np.ndarray) -> float | None:
    """ECE of each half's images under the temperature fitted on the other half, pooled."""
    halves = [np.arange(len(truth)) % 2 == n for n in (0, 1)]
    if min(int(h.sum()) for h in halves) < MIN_IMAGES // 2:
        return None
    pooled = np.zeros((len(truth), outputs.shape[1]))
    for fit, held in (halves, halves[::-1]):
        pooled[held] = softmax(outputs[held], fit_temperature(outputs[fit], truth[fit]))
    return round(expected_calibration_error(pooled, truth), 4)


def lowest_threshold(confidence: np.ndarray, correct: np.ndarray, precision: float) -> float | None:
    """The lowest candidate threshold from which the top-1 is right at least ``precision`` of the time."""
    for threshold in THRESHOLDS:
        above = confidence >= threshold
        if above.any() and float(correct[above].mean()) >= precision:
            return threshold
    return None


def operating_point(outputs: np.ndarray, truth: np.ndarray, images_from: str) -> tuple[float, OperatingPoint] | None:
    """(T, the operating point) from validation ``outputs`` (what the head's graph outputs, before
    softmax) and their true class indices; None below MIN_IMAGES images."""
    if len(truth) < MIN_IMAGES:
        return None
    temperature = fit_temperature(outputs, truth)
    before, after = softmax(outputs), softmax(outputs, temperature)
    confidence, correct = after.max(axis=1), after.argmax(axis=1) == truth
    event = lowest_threshold(confidence, correct, EVENT_PRECISION)
    easy = lowest_threshold(confidence, correct, EASY_PRECISION)
    event_threshold = event if event is not None else THRESHOLDS[-1]
    high = max(easy if easy is not None else THRESHOLDS[-1], event_threshold)
    calibration = Calibration(
        temperature=temperature,
        images=len(truth),
        images_from=images_from,
        ece_bins=ECE_BINS,
        ece_before=round(expected_calibration_error(before, truth), 4),
        ece_after=round(expected_calibration_error(after, truth), 4),
        ece_after_cross_fitted=cross_fitted_ece(outputs, truth),
        ece_floor=round(ece_floor(after), 4),
    )

    def reached(threshold: float | None) -> str:
        return f"{threshold:g}" if threshold is not None else f"none (so {THRESHOLDS[-1]:g})"

    return temperature, OperatingPoint(
        event_threshold=event_threshold,
        confidence_band=ConfidenceBand(low=event_threshold, high=high),
        calibration=calibration,
        derived=(
            f"calibrated validation confidences: the lowest of {THRESHOLDS[0]:g}-{THRESHOLDS[-1]:g} (steps of "
            f"0.05) from which the top-1 is right {EVENT_PRECISION:.0%} of the time: {reached(event)} "
            f"(event threshold, band low); {EASY_PRECISION:.0%}: {reached(easy)} (band high)"
        ),
    )


def tempered(head: Any, temperature: float) -> Any:
    """``head`` with its output divided by ``temperature``: the classifier layer the package exports."""
    import torch

    class Tempered(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head
            self.register_buffer("temperature", torch.tensor(float(temperature)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.head(x) / self.get_buffer("temperature")
            return result

    return Tempered().eval()
