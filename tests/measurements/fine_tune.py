"""Frozen blend against partial fine-tuning, at 10, 30, 60 labelled field photos a class.

    .venv/bin/python -m tests.measurements.fine_tune [--cache DIR] [--per-class 10,30,60]
        [--seeds 0,1,2] [--blocks 1] [--sets field,studio]

The few_labels.py set-up (labelled_sets: Fashion-MNIST studio base + k field photos a class from a
pool of 60, scored on 300 other field photos; studio photos alone), embedded once by the retrain's
EmbeddingCache, which caches each view's activation before the last blocks in the same pass. For
each draw of the labelled images it does what a retrain does (fieldlens_retrain.train.tune_tail):
holds out a fifth of each class's training images, fine-tunes on the rest with early stopping,
scores the retrain's head on frozen and on fine-tuned embeddings on that fifth, and, where
fine-tuning wins by ``fine_tune_min_gain``, fine-tunes again on all training images. Columns: the
frozen blend (today's retrain), the fine-tuned blend (always, with the epochs early stopping
chose), the retrain's choice, and how often it chose fine-tuning; median (min-max) of the draws,
and the seconds the fine-tuning took (choice + refit, median).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from fieldlens_retrain.backbone import load_backbone
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.finetune import TAP_SHAPE, embed_tail, train_tail
from fieldlens_retrain.train import DEFAULT_SETTINGS, head_accuracy, tune_tail
from tests.measurements.few_labels import labelled_sets


def cell(values: list[float]) -> str:
    ordered = sorted(values)
    middle = statistics.median(ordered)
    return f"{middle:.1%}" if ordered[0] == ordered[-1] else f"{middle:.1%} ({ordered[0]:.1%}-{ordered[-1]:.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("fieldlens-data/few-labels-cache"))
    parser.add_argument("--per-class", default="10,30,60")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--blocks", default="1", help="block counts the choice tries, e.g. 1 or 1,2")
    parser.add_argument("--sets", default="field")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = dataclasses.replace(DEFAULT_SETTINGS, fine_tune_blocks=tuple(int(b) for b in args.blocks.split(",")))
    cache = EmbeddingCache(args.cache)
    data = labelled_sets(cache)
    network = load_backbone()
    print(
        f"fine_tune_blocks={settings.fine_tune_blocks}: "
        "| labelled set | per class | frozen blend | fine-tuned blend | the retrain's choice | chosen | seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k in (int(n) for n in args.per_class.split(",")):
        for set_name in args.sets.split(","):
            frozen, tuned, retrain, chosen, seconds = [], [], [], 0, []
            for seed in (int(s) for s in args.seeds.split(",")):
                pick = np.random.default_rng(seed)
                if set_name == "field":
                    picked = np.concatenate(
                        [pick.choice(np.flatnonzero(data.field_y == c), k, False) for c in range(10)]
                    )
                    features = np.concatenate([data.field[picked], data.base])
                    targets = np.concatenate([data.field_y[picked], data.base_y])
                    shas = [data.shas["field"][i] for i in picked] + data.shas["base"]
                    test, test_y, test_shas = data.test, data.test_y, data.shas["test"]
                else:
                    pool_x, pool_y = data.sets["studio-pool"]
                    picked = np.concatenate([pick.choice(np.flatnonzero(pool_y == c), k, False) for c in range(10)])
                    features, targets = pool_x[picked], pool_y[picked]
                    shas = [data.shas["studio-pool"][i] for i in picked]
                    (test, test_y), test_shas = data.sets["studio-held"], data.shas["studio-held"]
                activations = cache.activations(shas)
                queries = cache.activations(test_shas)[:, 0]
                frozen.append(head_accuracy(features, targets, test[:, 0], test_y, 10, settings))
                started = time.perf_counter()
                tail, choice = tune_tail(network, activations, features, targets, 10, settings)
                seconds.append(time.perf_counter() - started)
                if tail is None:  # what fine-tuning would have given: the same training, told to
                    tail = train_tail(
                        network,
                        choice.blocks or 1,
                        activations,
                        targets,
                        10,
                        settings,
                        None,
                        max(1, choice.epochs),
                        features,
                    ).tail
                tuned_features = embed_tail(tail, activations.reshape(-1, *TAP_SHAPE)).reshape(features.shape)
                tuned.append(head_accuracy(tuned_features, targets, embed_tail(tail, queries), test_y, 10, settings))
                retrain.append(tuned[-1] if choice.chosen else frozen[-1])
                chosen += choice.chosen
                logging.getLogger("fine_tune").warning("%s %d seed %d: %s", set_name, k, seed, choice.card())
            print(
                f"| {set_name} | {k} | {cell(frozen)} | {cell(tuned)} | {cell(retrain)} | {chosen} of {len(frozen)} "
                f"| {statistics.median(seconds):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
