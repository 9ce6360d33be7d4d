"""Partial fine-tuning: the backbone's last block(s) trained with the head, on cached activations.

The frozen backbone's embeddings are a ceiling (issue 25: after about 200 labels the head stops
improving whatever it is shown). Fine-tuning the whole network on a CPU costs a backbone pass per
view per epoch; the last blocks cost a fraction of one, and their input does not change while they
train. So the embedding pass also writes, per image and view, the activation entering
``blocks[TAP_BLOCK]`` (the input of the last two blocks, 192 x 7 x 7: EmbeddingCache, its own cache
file per image), and fine-tuning runs only the tail on it: the last one or two blocks, the head
convolution and its batch norm, pooling, and a linear classifier.

What is trained, and how:

- the tail's weights (blocks, ``_conv_head``, ``_bn1``'s affine parameters) at a small learning
  rate and the classifier at ten times it, AdamW with weight decay, label smoothing; batch norms
  keep their ImageNet statistics (eval mode throughout: a few hundred images would move them more
  than they can be trusted), and there is no drop-connect;
- the classifier starts as the frozen head's linear layer (train.train_head on the frozen
  embeddings), so epoch 0 is the frozen model and fine-tuning has to beat it to be kept;
- an epoch shows every training image once, in one of its views drawn at random (six views an
  epoch would cost six times as much for views that differ by a mirror or a crop);
- early stopping on a held-out part of the TRAINING images (``fine_tune_holdout`` of each
  class), not on the validation split: validation is the gate's and the calibration's, and a
  model chosen on it would be scored on the images that chose it. The same held-out part decides
  whether fine-tuning is worth it (:func:`choose_fine_tune`); when it is, the tail is trained
  again on all training images for the number of epochs early stopping found.

After fine-tuning the retrain proceeds as on frozen features, on the tail's embeddings: the blend
(linear head plus prototypes, its share chosen as before), calibration, export. Deterministic for
a seed (one generator for the held-out split, the views and the batch order; torch seeded).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fieldlens_retrain.train import TrainSettings

log = logging.getLogger(__name__)

TAP_BLOCK = 14
"""Activations are cached entering this block: EfficientNet-Lite0 has 16, so the last two (14: 192 ->
192, 5x5 depthwise, residual; 15: 192 -> 320, 3x3) can be fine-tuned from the same cache."""
TAP_SHAPE = (192, 7, 7)
TAP_NAME = "tap"
"""The tapped graph's second output (the first is the pooled features, as the features graph's)."""
MAX_BLOCKS = 16 - TAP_BLOCK


def tail_module(network: Any, blocks: int) -> Any:
    """A copy of ``network``'s tail from the cached activation to the pooled embedding, the last
    ``blocks`` blocks trainable and the ones between the tap and them frozen."""
    import torch

    if not 1 <= blocks <= MAX_BLOCKS:
        raise ValueError(f"fine-tuning covers 1 to {MAX_BLOCKS} blocks, not {blocks}")

    class Tail(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(copy.deepcopy(list(network._blocks[TAP_BLOCK:])))
            self.conv_head = copy.deepcopy(network._conv_head)
            self.bn = copy.deepcopy(network._bn1)
            self.act = copy.deepcopy(network._swish)
            for block in self.blocks[: MAX_BLOCKS - blocks]:
                block.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            pooled: torch.Tensor = self.act(self.bn(self.conv_head(x))).mean((2, 3))
            return pooled

    return Tail().eval()


def put_tail(network: Any, tail: Any) -> None:
    """Copy a fine-tuned tail's weights back into the whole network (the one that is exported)."""
    for n, block in enumerate(tail.blocks):
        network._blocks[TAP_BLOCK + n].load_state_dict(block.state_dict())
    network._conv_head.load_state_dict(tail.conv_head.state_dict())
    network._bn1.load_state_dict(tail.bn.state_dict())


def embed_tail(tail: Any, activations: np.ndarray, batch: int = 64) -> np.ndarray:
    """(n, 1280) float32 embeddings of (n, 192, 7, 7) activations through ``tail``."""
    import torch

    device = next(tail.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(activations), batch):
            x = torch.from_numpy(np.ascontiguousarray(activations[start : start + batch], np.float32)).to(device)
            out.append(tail(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


@dataclass
class Trained:
    tail: Any
    epochs: int
    """Epochs of the kept state (0: the frozen network was not improved on)."""
    history: list[float] = field(default_factory=list)
    """Held-out accuracy of the fine-tuning classifier after each epoch (epoch 0 first), when held out
    (early stopping follows it, ties broken by the cross-entropy)."""


def train_tail(
    network: Any,
    blocks: int,
    activations: np.ndarray,
    targets: np.ndarray,
    classes: int,
    settings: TrainSettings,
    held: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
    frozen: np.ndarray | None = None,
) -> Trained:
    """Fine-tune the last ``blocks`` blocks and a linear classifier on (images, views, 192, 7, 7)
    activations; with ``held`` ((m, 192, 7, 7) plain-view activations, their classes) stop early
    on their accuracy (ties broken by their cross-entropy: on its own it stopped too soon, rising
    while the accuracy still rose, as a fine-tuned classifier grows more confident) and keep the best
    epoch's weights, else train ``epochs`` epochs. ``frozen``: the frozen network's embeddings of
    the same views (the cache's), which the classifier starts from; computed through the tail when
    not given."""
    import torch

    from fieldlens_retrain.train import pick_device, train_head

    device = pick_device()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    tail = tail_module(network, blocks).to(device)
    if frozen is None:
        frozen = embed_tail(tail, activations.reshape(-1, *TAP_SHAPE))
    frozen = frozen.reshape(-1, frozen.shape[-1])
    weight, bias = train_head(frozen, np.repeat(targets, activations.shape[1]), classes, settings)
    linear = torch.nn.Linear(frozen.shape[1], classes).to(device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    trainable = [p for p in tail.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": settings.fine_tune_lr},
            {"params": linear.parameters(), "lr": settings.fine_tune_lr * 10},
        ],
        weight_decay=settings.fine_tune_weight_decay,
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    y = torch.from_numpy(targets).long()
    limit = settings.fine_tune_epochs if epochs is None else epochs

    def held_out() -> tuple[float, float]:  # (cross-entropy, accuracy) of the classifier on ``held``
        assert held is not None
        features = torch.from_numpy(embed_tail(tail, held[0])).to(device)
        truth = torch.from_numpy(held[1]).long().to(device)
        with torch.no_grad():
            logits = linear(features)
            return float(torch.nn.functional.cross_entropy(logits, truth)), float(
                (logits.argmax(1) == truth).float().mean()
            )

    history = [held_out()] if held is not None else []
    best = ((-history[0][1], history[0][0]) if history else (0.0, 0.0), 0, copy.deepcopy(tail.state_dict()))
    for epoch in range(1, limit + 1):
        views = rng.integers(0, activations.shape[1], len(targets))
        order = rng.permutation(len(targets))
        for start in range(0, len(order), settings.fine_tune_batch):
            chosen = order[start : start + settings.fine_tune_batch]
            x = torch.from_numpy(activations[chosen, views[chosen]].astype(np.float32)).to(device)
            optimizer.zero_grad()
            loss = loss_fn(linear(tail(x)), y[chosen].to(device))
            loss.backward()
            optimizer.step()
        if held is None:
            continue
        history.append(held_out())
        if (-history[-1][1], history[-1][0]) < best[0]:  # more right, or as many and less surprised
            best = ((-history[-1][1], history[-1][0]), epoch, copy.deepcopy(tail.state_dict()))
        elif epoch - best[1] >= settings.fine_tune_patience:
            break
    if held is None:
        return Trained(tail, limit)
    tail.load_state_dict(best[2])
    accuracies = [round(accuracy, 3) for _, accuracy in history]
    log.info("fine-tuned %d block(s): held-out accuracy by epoch %s; kept epoch %d", blocks, accuracies, best[1])
    return Trained(tail, best[1], accuracies)


def held_out_split(targets: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask of training images held out for early stopping and the choice: ``share`` of
    each class (rounded down), drawn from ``seed``, none from a class with fewer than 3 images."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(targets), bool)
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        if len(members) >= 3:
            held[members[: int(len(members) * share)]] = True
    return held


Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]
"""(train features (images, views, dim), their classes, held-out (m, dim), their classes) -> the
accuracy of the head the retrain would train on those features (train.head_accuracy)."""


@dataclass
class Choice:
    """What the training images said about fine-tuning, as the card records it (``metrics.fine_tune``)."""

    chosen: bool
    blocks: int
    epochs: int
    scores: dict[str, float]
    """Held-out accuracy of the retrain's head on frozen embeddings ("frozen") and after fine-tuning
    each number of blocks tried ("1", "2")."""
    held_out_images: int
    reason: str
    seconds: float = 0.0
    inherited: bool = False
    """Taken from the current model's card (train.inherited_choice) rather than tried again."""
    training_images: int = 0
    """The training images the candidate was trained on: a later retrain reuses the choice while it
    has not many more."""

    def card(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "blocks": self.blocks if self.chosen else 0,
            "epochs": self.epochs if self.chosen else 0,
            "scores": self.scores,
            "held_out_images": self.held_out_images,
            "chosen_on": "a held-out part of the training images (validation is the gate's)",
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "inherited": self.inherited,
            "training_images": self.training_images,
        }


def choose_fine_tune(
    network: Any,
    activations: np.ndarray,
    frozen: np.ndarray,
    targets: np.ndarray,
    classes: int,
    settings: TrainSettings,
    score: Scorer,
) -> Choice:
    """Whether to fine-tune, and how many blocks: each candidate in ``settings.fine_tune_blocks`` is
    trained on the training images but a held-out part (early stopping on that part), then the
    retrain's head is trained on its embeddings and scored on the held-out part, as it is on the
    frozen embeddings (``frozen``: (images, views, 1280)). Fine-tuning is chosen when its best score
    beats the frozen one by ``fine_tune_min_gain`` (a tie keeps the frozen network: cheaper to
    train, and its int8 graph is the shared one)."""
    started = time.perf_counter()
    held = held_out_split(targets, settings.fine_tune_holdout, settings.seed)
    kept = ~held
    if held.sum() < max(2, classes):
        log.info("fine-tune choice: frozen (too few training images to hold some out)")
        return Choice(False, 0, 0, {}, int(held.sum()), "too few training images to hold some out")
    plain = activations[held][:, 0]
    scores = {"frozen": round(score(frozen[kept], targets[kept], frozen[held][:, 0], targets[held]), 4)}
    epochs: dict[int, int] = {}
    for blocks in settings.fine_tune_blocks:
        trained = train_tail(
            network,
            blocks,
            activations[kept],
            targets[kept],
            classes,
            settings,
            (plain, targets[held]),
            None,
            frozen[kept],
        )
        epochs[blocks] = trained.epochs
        if trained.epochs == 0:
            scores[str(blocks)] = scores["frozen"]  # the kept state is the frozen network
            continue
        tuned = embed_tail(trained.tail, activations[kept].reshape(-1, *TAP_SHAPE))
        tuned = tuned.reshape(int(kept.sum()), activations.shape[1], -1)
        scores[str(blocks)] = round(score(tuned, targets[kept], embed_tail(trained.tail, plain), targets[held]), 4)
    best = max(settings.fine_tune_blocks, key=lambda b: (scores[str(b)], -b)) if settings.fine_tune_blocks else 0
    gain = scores.get(str(best), scores["frozen"]) - scores["frozen"]
    if settings.fine_tune == "always":  # told to: the best block count, at least one epoch
        chosen, kept_epochs = bool(best), max(1, epochs.get(best, 0))
    else:
        chosen, kept_epochs = (
            bool(best) and gain >= settings.fine_tune_min_gain and epochs[best] > 0,
            epochs.get(best, 0),
        )
    reason = (
        f"fine-tuning {best} block(s) scored {gain:+.1%} over the frozen network on {int(held.sum())} held-out "
        f"training images ({'chosen' if chosen else 'not chosen'}: fine_tune {settings.fine_tune}, "
        f"at least {settings.fine_tune_min_gain:+.1%} to gain)"
        if best
        else "no block count to try"
    )
    log.info("fine-tune choice: %s (%s)", "fine-tune" if chosen else "frozen", reason)
    return Choice(chosen, best, kept_epochs, scores, int(held.sum()), reason, time.perf_counter() - started)


def int8_features(network: Any, out: Path, calibration: Sequence[np.ndarray]) -> None:
    """The int8 graph of a fine-tuned network up to pooling (its backbone no longer the shared
    one): exported and quantized whole, calibrated as the shared int8 backbone is (the same photo
    views, so that a fine-tuned candidate's int8 graph is calibrated like a frozen one's)."""
    from fieldlens_retrain.embeddings import export_features
    from fieldlens_retrain.packaging import quantize_int8

    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "features.onnx"
        fp32.write_bytes(export_features(network=network))  # the shared backbone's graph, of this network
        quantize_int8(fp32, out, calibration)
