"""The one owner of a prediction's uncertainty scores."""

from __future__ import annotations

import pytest

from fieldlens_core.uncertainty import Uncertainty
from tests.helpers.predictions import ranked


def test_uncertainty_scores_run_from_sure_to_unsure() -> None:
    sure = Uncertainty(ranked(("hen", 0.98), ("egg", 0.01), ("fox", 0.01))).scores()
    unsure = Uncertainty(ranked(("hen", 0.34), ("egg", 0.33), ("fox", 0.33))).scores()
    for name in ("least_confidence", "margin", "entropy", "uncertain"):
        assert 0.0 <= sure[name] < unsure[name] <= 1.0


def test_the_mass_outside_the_top_k_counts_as_one_more_class() -> None:
    spread = Uncertainty(ranked(("cat", 0.4), ("tabby", 0.1)))  # half the mass on classes not returned
    assert spread.gap == pytest.approx(0.3) and spread.margin == pytest.approx(0.7)
    assert spread.entropy > Uncertainty(ranked(("cat", 0.8), ("tabby", 0.2))).entropy


def test_no_prediction_is_as_unsure_as_can_be() -> None:
    nothing = Uncertainty([])
    assert nothing.least_confidence == 1.0 and nothing.entropy == 0.0 and nothing.gap == 0.0
