"""Accuracy from few labels: the retrain's heads (linear, prototypes, blend) on 10, 30, 60 per class.

    .venv/bin/python tests/measurements/few_labels.py [--cache DIR] [--views image,mirror,...]

Two labelled sets from Debian's dataset-fashion-mnist, embedded once by the retrain's own
EmbeddingCache (six views per image, as a retrain does):
- field: the loop demo's set-up. A model is trained on the 300 studio photos plus k labelled
  field photos per class (from a pool of 60 per class) and scored on 300 other field photos;
- studio: k studio photos per class alone, scored on 300 other studio photos;
- faces: a second labelled set that a package ships, scikit-image's ``lfw_subset`` (100 25x25
  face crops from Labeled Faces in the Wild and 100 crops of other things): k per class from a
  pool of 60 per class, scored on the other 40 per class.
Each head is the one the retrain exports (fieldlens_retrain.train.head_module), applied to the
embeddings; three draws of the labelled images, min/median/max. ``--views`` trains on some of the
retrain's views only (what fewer views, and so a faster embedding, would cost).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fieldlens_retrain.embeddings import VIEWS, EmbeddingCache
from fieldlens_retrain.train import DEFAULT_SETTINGS, head_module, linear_share_for, prototypes, train_head
from fieldlens_samples import fashion
from fieldlens_samples.scenario import Split, write_scenario

PER_CLASS = (10, 30, 60)
SEEDS = (0, 1, 2)


def embed(cache: EmbeddingCache, paths: list[Path], shas: list[str] | None = None) -> np.ndarray:
    """(n, views, 1280) embeddings of ``paths``; their sha256s appended to ``shas`` (the keys of
    their cached activations, which fine_tune.py trains on: cached in the same pass)."""
    items = [(hashlib.sha256(p.read_bytes()).hexdigest(), p) for p in paths]
    found = cache.embed(items, progress=False, activations=True)
    if shas is not None:
        shas.extend(sha for sha, _ in items)
    return np.stack([found[sha] for sha, _ in items]).astype(np.float32)


def scores(
    features: np.ndarray, targets: np.ndarray, test: np.ndarray, truth: np.ndarray, classes: int = 10
) -> dict[str, float]:
    flat, repeated = features.reshape(-1, features.shape[-1]), np.repeat(targets, features.shape[1])
    weight, bias = train_head(flat, repeated, classes, DEFAULT_SETTINGS)
    centres = prototypes(flat, repeated, classes)
    share, _ = linear_share_for(features, targets, classes, DEFAULT_SETTINGS)  # as a retrain chooses it
    queries = torch.from_numpy(test[:, 0])
    result = {}
    scale = DEFAULT_SETTINGS.prototype_scale
    with torch.no_grad():
        for name, module in (
            ("linear", head_module(weight, bias, None, scale)),
            ("blend", head_module(weight, bias, centres, scale)),
            ("chosen", head_module(weight, bias, centres, scale, share)),
        ):
            result[name] = float((module(queries).argmax(1).numpy() == truth).mean())
    unit = test[:, 0] / np.linalg.norm(test[:, 0], axis=1, keepdims=True)
    result["prototypes"] = float(((unit @ centres.T).argmax(1) == truth).mean())
    return result


def faces(cache: EmbeddingCache, folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-image's lfw_subset (the first 100 faces, the rest not): 60 a class to label, 40 to score on."""
    from PIL import Image
    from skimage.data import lfw_subset

    folder.mkdir(parents=True)
    paths = []
    for n, image in enumerate(lfw_subset()):  # type: ignore[no-untyped-call]
        path = folder / f"{n:03d}.png"
        Image.fromarray((image * 255).round().astype(np.uint8)).convert("RGB").save(path)
        paths.append(path)
    features = embed(cache, paths)
    labels = np.array([1] * 100 + [0] * 100)
    order = np.random.default_rng(4).permutation(200)
    pool = np.concatenate([[i for i in order if labels[i] == c][:60] for c in (0, 1)])
    held = np.setdiff1d(np.arange(200), pool)
    return {"faces-pool": (features[pool], labels[pool]), "faces-held": (features[held], labels[held])}


Embedded = tuple[np.ndarray, np.ndarray]
"""Embeddings (n, views, 1280) and their class indices."""


@dataclass(frozen=True)
class LabelledSets:
    """The measurement's images, embedded: the scenario's studio base, its field pool and held-out
    field photos, and ``sets`` (studio-pool, studio-held; faces-pool, faces-held when asked)."""

    base: np.ndarray
    base_y: np.ndarray
    field: np.ndarray
    field_y: np.ndarray
    test: np.ndarray
    test_y: np.ndarray
    sets: dict[str, Embedded]
    shas: dict[str, list[str]]
    """The images' sha256s (base, field, test; studio-pool, studio-held), in the arrays' order."""


def labelled_sets(cache: EmbeddingCache, with_faces: bool = False) -> LabelledSets:
    """The loop demo's Fashion-MNIST set-up (30 studio photos a class, a pool of 60 field photos a
    class, 30 held out) and two studio sets, written to a scratch folder and embedded (seed 3)."""
    rng = np.random.default_rng(3)
    train = Split.load("train")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        scenario = write_scenario(work, rng, base=30, camera=60, holdout=30, train=train)  # the camera's: the pool
        pool_truth, held_truth = scenario.camera_truth, scenario.holdout_truth
        base_paths = sorted(scenario.base.glob("*/*.jpg"))
        studio_pool = fashion.pick(train.labels, 60, rng, exclude=set(scenario.base_indices))
        studio_held = fashion.pick(train.labels, 30, rng, exclude=set(scenario.base_indices) | set(studio_pool))
        fashion.write_studio(work / "studio-pool", train.images, train.labels, studio_pool)
        fashion.write_studio(work / "studio-held", train.images, train.labels, studio_held)
        sets = {}
        shas: dict[str, list[str]] = {name: [] for name in ("base", "field", "test", "studio-pool", "studio-held")}
        for name in ("studio-pool", "studio-held"):
            paths = sorted((work / name).glob("*/*.jpg"))
            sets[name] = (
                embed(cache, paths, shas[name]),
                np.array([fashion.LABELS.index(p.parent.name) for p in paths]),
            )
        if with_faces:
            sets |= faces(cache, work / "faces")
        return LabelledSets(
            base=embed(cache, base_paths, shas["base"]),
            base_y=np.array([fashion.LABELS.index(p.parent.name) for p in base_paths]),
            field=embed(cache, [scenario.camera / n for n in sorted(pool_truth)], shas["field"]),
            field_y=np.array([fashion.LABELS.index(pool_truth[n]) for n in sorted(pool_truth)]),
            test=embed(cache, [scenario.holdout / n for n in sorted(held_truth)], shas["test"]),
            test_y=np.array([fashion.LABELS.index(held_truth[n]) for n in sorted(held_truth)]),
            sets=sets,
            shas=shas,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("fieldlens-data/few-labels-cache"))
    parser.add_argument("--views", default=",".join(VIEWS), help=f"a subset of {', '.join(VIEWS)}")
    args = parser.parse_args()
    kept = [VIEWS.index(view) for view in args.views.split(",")]
    logging.basicConfig(level=logging.WARNING)
    data = labelled_sets(EmbeddingCache(args.cache), with_faces=True)
    base, base_y, field, field_y, test, test_y, sets = (
        data.base,
        data.base_y,
        data.field,
        data.field_y,
        data.test,
        data.test_y,
        data.sets,
    )
    print("| labelled set | per class | linear | prototypes | even blend | the retrain's blend |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k in PER_CLASS:
        for set_name in ("field", "studio", "faces"):
            runs = []
            for seed in SEEDS:
                pick = np.random.default_rng(seed)
                if set_name == "field":
                    chosen = np.concatenate([pick.choice(np.flatnonzero(field_y == c), k, False) for c in range(10)])
                    features = np.concatenate([field[chosen], base])[:, kept]
                    targets = np.concatenate([field_y[chosen], base_y])
                    runs.append(scores(features, targets, test, test_y))
                elif set_name == "faces":
                    pool_x, pool_y = sets["faces-pool"]
                    chosen = np.concatenate([pick.choice(np.flatnonzero(pool_y == c), k, False) for c in range(2)])
                    runs.append(scores(pool_x[chosen][:, kept], pool_y[chosen], *sets["faces-held"], classes=2))
                else:
                    pool_x, pool_y = sets["studio-pool"]
                    chosen = np.concatenate([pick.choice(np.flatnonzero(pool_y == c), k, False) for c in range(10)])
                    runs.append(scores(pool_x[chosen][:, kept], pool_y[chosen], *sets["studio-held"]))
            cells = []
            for head in ("linear", "prototypes", "blend", "chosen"):
                values = sorted(r[head] for r in runs)
                cells.append(f"{statistics.median(values):.1%} ({values[0]:.1%}-{values[-1]:.1%})")
            print(f"| {set_name} | {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
