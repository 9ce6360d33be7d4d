"""Model logits -> sorted top-k (label, confidence) with confidences that are probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    exp = np.exp(shifted, dtype=np.float64)
    result: np.ndarray = exp / exp.sum()
    return result


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    probabilities = softmax(np.asarray(logits, dtype=np.float64).reshape(-1))
    k = max(1, min(k, len(labels)))
    best = np.argpartition(-probabilities, k - 1)[:k]
    best = best[np.argsort(-probabilities[best], kind="stable")]
    return [{"label": labels[i], "confidence": round(float(probabilities[i]), 6)} for i in best]
