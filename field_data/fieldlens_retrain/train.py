"""Transfer learning: a new classification head on EfficientNet-Lite0's cached embeddings.

The backbone stays frozen (frozen features make a retrain a matter of seconds), except its last
blocks where a held-out part of the training images says fine-tuning them helps (``fine_tune``,
fieldlens_retrain.finetune: trained on activations the embedding pass caches, so the backbone
still runs once per image; the head is then trained on the fine-tuned embeddings).

The head blends two classifiers on the embeddings, mixing their probabilities (evenly, or,
below ``cross_validate_below`` training images per class, in the share that scores best by
cross-validation on the training images):

- a linear layer trained full-batch on every augmented view of every training image, with
  weight decay and label smoothing, deterministically from a seed;
- class prototypes: the mean direction of each class's (L2-normalised) embeddings, scored by
  cosine similarity times ``prototype_scale``. Nothing to fit, so nothing to overfit: with 10
  or 30 labelled images a class the blend scores 7 to 31 points above the linear head alone
  (README, "A better model from fewer labels"; tests/measurements/few_labels.py).

The head is calibrated on the validation split (temperature scaling, baked into the graph; the
card's ``metrics.operating_point`` has the temperature, the ECE before and after, and the event
threshold and confidence band devices default to: fieldlens_retrain.calibration).

The head is then put on the real network and exported to ONNX: fp32 as the backbone's fp32 graph
(the one the embeddings came from) with the head stitched on (packaging.stitch_head), checked
against PyTorch before anything is written; int8 as the backbone's int8 graph, quantized once per
backbone (EmbeddingCache.int8_backbone), with the head stitched on in float the same way.
A fine-tuned backbone is no longer that one, so its fp32 graph is exported whole and its own int8
graph is quantized for the candidate (tuned_int8, calibrated on the same photo views), the head
stitched on it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from fieldlens_core.errors import TrainingError
from fieldlens_core.model import LoadedModel, image_tensor
from fieldlens_core.model_package import OPERATING_POINT, ModelCard, ModelPackage, OperatingPoint
from fieldlens_retrain.backbone import ARCHITECTURE, FEATURE_DIM, INPUT_SPEC, load_backbone
from fieldlens_retrain.calibration import operating_point, tempered
from fieldlens_retrain.dataset import Manifest, ManifestEntry
from fieldlens_retrain.embeddings import VIEWS, EmbeddingCache, stack
from fieldlens_retrain.evaluate import INT8_CHECKED, HeadAnswers, decoded_as_embedded, head_answers, most_decided
from fieldlens_retrain.finetune import (
    MAX_BLOCKS,
    TAP_SHAPE,
    Choice,
    choose_fine_tune,
    embed_tail,
    int8_features,
    put_tail,
    train_tail,
)
from fieldlens_retrain.learning_curve import LearningCurve, curve_subsets, learning_curve
from fieldlens_retrain.packaging import EXPORT_CHECKED, served_png, stitch_head, write_package

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 100
    learning_rate: float = 0.03
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    seed: int = 0
    head: Literal["blend", "linear"] = "blend"
    prototype_scale: float = 30.0
    linear_shares: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """The linear head's shares of the blend that cross-validation chooses from (choose_linear_share)."""
    cross_validate_below: int = 50
    """Training images per class (on average) below which the share is chosen by cross-validation;
    from there on the blend is even (the better of the two halves by then, and the folds' three
    extra trainings would cost seconds on every retrain)."""
    fine_tune: Literal["auto", "never", "always"] = "auto"
    """Partial fine-tuning of the backbone's last blocks (fieldlens_retrain.finetune): "auto" chooses it
    from the training images (choose_fine_tune), "always" takes the best block count without the
    frozen network's score to beat, "never" trains on frozen embeddings only (no activations read)."""
    fine_tune_blocks: tuple[int, ...] = (2,)
    """Block counts tried (1 or 2: the cache holds the input of the last two). Two, measured: 1 to 3
    points above one on Fashion-MNIST field photos at 30 and 60 a class, for about twice the time
    (field_data/README.md, "Past the frozen features")."""
    fine_tune_epochs: int = 20
    """At most; early stopping on the held-out training images decides (fine_tune_patience)."""
    fine_tune_patience: int = 4
    fine_tune_lr: float = 3e-4
    """The tail's learning rate (the classifier's is ten times it): small, the weights are ImageNet's."""
    fine_tune_weight_decay: float = 0.05
    fine_tune_batch: int = 32
    fine_tune_holdout: float = 0.2
    """Share of each class's training images held out to stop early and to choose on."""
    fine_tune_min_gain: float = 0.01
    """Held-out accuracy fine-tuning must gain over the frozen network to be chosen ("auto")."""
    fine_tune_rechoose_growth: float = 0.25
    """"auto" reuses the current model's choice (fine-tune or not, its blocks and epochs) while the
    classes are the same and the training images have grown by at most this share since it was
    made: the trial costs about a minute for 1,000 images on two cores, and 50 new images do not
    change what it finds (inherited_choice)."""


DEFAULT_SETTINGS = TrainSettings()


@dataclass
class TrainResult:
    package_dir: Path
    card: ModelCard
    timings_s: dict[str, float]
    embedded: int
    reused: int
    curve: LearningCurve | None = None


CandidateMeasure = Callable[[Callable[[str], LoadedModel], dict[str, HeadAnswers] | None], dict[str, Any]]
"""The packager's hook (packaging.Measure) given, too, the candidate's answers by variant from its
head on cached features: fp32 on every validation image (their embeddings), int8 on the first
evaluate.INT8_CHECKED (the int8 backbone's features); None for a fine-tuned candidate: its graphs answer."""


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train_head(features: np.ndarray, targets: np.ndarray, classes: int, settings: TrainSettings) -> tuple[Any, Any]:
    """(weight, bias) of a linear head trained full-batch with AdamW; deterministic for a seed."""
    return train_heads(features, targets, [np.arange(len(targets))], classes, settings)[0]


def train_heads(
    features: np.ndarray, targets: np.ndarray, subsets: list[np.ndarray], classes: int, settings: TrainSettings
) -> list[tuple[Any, Any]]:
    """(weight, bias) of a linear head on each subset of the rows (index arrays), all trained at once:
    one pass over the embeddings an epoch serves every head.

    Each head is the one it would be trained alone: its own standardisation (its rows' mean and std,
    folded into its weights), its own initialisation from the seed, and its own loss (the mean over
    its rows). Summed, the losses give each head the gradient of its own, and AdamW updates each
    weight elementwise, so every head takes the steps it would take alone. The learning curve's
    heads trained one after another after the candidate's read the embeddings once a head an epoch:
    1.3 s of an incremental retrain on two cores, where together they take about half of that."""
    import torch

    device = pick_device()
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(targets).long().to(device)
    rows = [torch.from_numpy(np.asarray(chosen)).long().to(device) for chosen in subsets]
    means = torch.stack([x[r].mean(0) for r in rows])[:, None, :]  # (heads, 1, dim)
    stds = torch.stack([x[r].std(0) for r in rows])[:, None, :] + 1e-6
    initial = []
    for _ in rows:  # each head starts where train_head's one did: from the seed
        torch.manual_seed(settings.seed)
        initial.append(torch.nn.Linear(features.shape[1], classes))
    weight = torch.nn.Parameter(torch.stack([h.weight.detach() for h in initial]).to(device))  # standardised units
    bias = torch.nn.Parameter(torch.stack([h.bias.detach() for h in initial]).to(device))
    optimizer = torch.optim.AdamW([weight, bias], lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing, reduction="none")
    share = torch.zeros(len(x), len(rows), device=device)  # each row's weight in each head's mean loss
    for k, r in enumerate(rows):
        share[r, k] = 1.0 / len(r)
    truths = y.repeat_interleave(len(rows))

    def folded() -> tuple[Any, Any]:  # the standardisation inside the weights: the network needs none
        scaled = weight / stds
        return scaled, bias - (scaled * means).sum(2)

    epochs = tqdm(range(settings.epochs), desc="training head", unit="epoch", disable=None, leave=False)
    loss = None
    for _ in epochs:
        optimizer.zero_grad()
        scaled, offsets = folded()
        logits = (x @ scaled.reshape(-1, x.shape[1]).T + offsets.reshape(-1)).reshape(-1, classes)
        loss = (loss_fn(logits, truths).reshape(len(x), len(rows)) * share).sum()  # one loss call for all
        loss.backward()
        optimizer.step()
    if loss is not None:
        log.info("%d head(s) trained: %d epochs, final loss %.4f", len(rows), settings.epochs, loss.item())
    with torch.no_grad():
        scaled, offsets = folded()
        return [(scaled[k].cpu(), offsets[k].cpu()) for k in range(len(rows))]


def prototypes(features: np.ndarray, targets: np.ndarray, classes: int) -> np.ndarray:
    """(classes, dim): each class's mean L2-normalised embedding, normalised (zeros for a class
    without training images: it scores 0 everywhere instead of NaN)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    centres = np.zeros((classes, features.shape[1]), np.float32)
    for label in range(classes):
        members = unit[targets == label]
        if len(members):
            centre = members.mean(0)
            centres[label] = centre / max(float(np.linalg.norm(centre)), 1e-12)
    return centres


def choose_linear_share(
    features: np.ndarray, targets: np.ndarray, classes: int, settings: TrainSettings, folds: int = 3
) -> tuple[float, dict[str, float]]:
    """The linear head's share of the blend that scores best by cross-validation on the training
    images, and each candidate share's accuracy.

    ``features`` is (images, views, dim): folds split images, never the views of one image, so a
    held-out image is never seen in another view. Each fold trains the linear head on the others,
    takes their prototypes, and scores the held-out images' plain view under every share; the
    best total wins, ties going to the share nearest an even blend. Where labels are few the
    linear half can still be guessing (10 face crops a class: prototypes alone 100%, the even
    blend 87.5%), and where they are many it is the better half.
    """
    import torch

    shares = settings.linear_shares
    rank = np.zeros(len(targets), dtype=int)  # each image's place within its class: stratified folds
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        rank[members] = np.arange(len(members))
    fold_of = rank % folds
    correct = np.zeros(len(shares))
    for fold in range(folds):
        train, held = fold_of != fold, fold_of == fold
        if not held.any() or len(np.unique(targets[train])) < 2:
            continue
        flat = features[train].reshape(-1, features.shape[-1])
        repeated = np.repeat(targets[train], features.shape[1])
        weight, bias = train_head(flat, repeated, classes, settings)
        centres = prototypes(flat, repeated, classes)
        queries = torch.from_numpy(np.ascontiguousarray(features[held][:, 0]))
        with torch.no_grad():
            for n, share in enumerate(shares):
                guesses = head_module(weight, bias, centres, settings.prototype_scale, share)(queries).argmax(1)
                correct[n] += float((guesses.numpy() == targets[held]).sum())
    best = max(range(len(shares)), key=lambda n: (correct[n], -abs(shares[n] - 0.5)))
    return shares[best], {
        f"{share:g}": round(float(c) / len(targets), 4) for share, c in zip(shares, correct, strict=True)
    }


def linear_share_for(
    features: np.ndarray, targets: np.ndarray, classes: int, settings: TrainSettings
) -> tuple[float, dict[str, float] | None]:
    """The blend's linear share: by cross-validation below ``cross_validate_below`` training images
    per class, an even blend from there on; with the folds' accuracies when they ran."""
    if len(targets) >= settings.cross_validate_below * max(1, len(np.unique(targets))):
        return 0.5, None
    return choose_linear_share(features, targets, classes, settings)


def head_module(weight: Any, bias: Any, centres: np.ndarray | None, scale: float, linear_share: float = 0.5) -> Any:
    """The classifier layer the network ends with: the linear head, or (``centres`` given) the
    blend, whose output is the log of its probabilities, ``linear_share`` of the linear head's
    and the rest the prototypes' (the package's softmax then gives that mixture)."""
    import torch

    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    if centres is None:
        return linear

    class Blend(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear
            self.register_buffer("centres", torch.from_numpy(centres))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cosine = torch.nn.functional.normalize(x, dim=1) @ self.get_buffer("centres").T
            linear_p, prototype_p = torch.softmax(self.linear(x), dim=1), torch.softmax(scale * cosine, dim=1)
            mixed = linear_share * linear_p + (1 - linear_share) * prototype_p
            return torch.log(mixed.clamp_min(1e-12))

    return Blend().eval()


def next_version(parent: ModelCard | None, labels: list[str], parent_labels: list[str] | None) -> str:
    """1.0.0 for a first model; a new label set bumps the major version, a retrain the minor."""
    if parent is None:
        return "1.0.0"
    major, minor, _ = (int(part) for part in parent.version.split("."))
    return f"{major + 1}.0.0" if labels != parent_labels else f"{major}.{minor + 1}.0"


def retrain(
    manifest: Manifest,
    work_dir: Path,
    cache: EmbeddingCache,
    parent: ModelPackage | None,
    name: str,
    settings: TrainSettings = DEFAULT_SETTINGS,
    on_stage: Callable[[str], None] | None = None,
    version: str | None = None,
    measure: CandidateMeasure | None = None,
) -> TrainResult:
    """Train and package a candidate into a fresh directory under ``work_dir``; nothing is published.

    ``version``: the candidate's (default: the next after ``parent``'s). ``measure``: the packager's
    hook for metrics of the staged graph that its card records (the local gate's evaluation)."""

    timings: dict[str, float] = {}
    started = time.perf_counter()
    computed_before, reused_before = cache.computed, cache.reused
    train = manifest.select("train")
    if not train:
        raise TrainingError("the dataset has no training images")
    if len(manifest.labels) < 2:
        raise TrainingError(
            f"a classifier needs two classes with training images or more; this one has {manifest.labels[0]} only",
            "Label images of another class too (on the page, `b` marks an empty scene: blank is a class)",
        )
    index = {label: i for i, label in enumerate(manifest.labels)}
    stage = on_stage or (lambda name: None)
    stage("embedding")
    skipped = skipped_fine_tune(settings, train)
    inherited = inherited_choice(parent, manifest.labels, len(train), settings) if skipped is None else None
    # activations are read only to try fine-tuning or to repeat it, not to inherit "frozen"
    activations = skipped is None and (inherited is None or inherited.chosen)
    embeddings = cache.embed([(e.sha256, Path(e.path)) for e in manifest.entries], activations=activations)
    timings["embed"] = time.perf_counter() - started

    started = time.perf_counter()
    stage("training")
    features = stack(embeddings, [e.sha256 for e in train], views=True)
    per_image = np.array([index[e.label] for e in train])
    targets = np.repeat(per_image, len(VIEWS))
    validation = manifest.holdout()  # the gate's images: the curve and the verdict speak of the same ones
    validation_features = (
        stack(embeddings, [e.sha256 for e in validation], views=False) if validation else np.zeros((0, FEATURE_DIM))
    )
    network = None
    choice: Choice | None = None
    if skipped is None:
        network = load_backbone(num_classes=len(manifest.labels))  # the one exported, fine-tuned or not
        features, validation_features, choice = fine_tuned_features(
            network,
            cache,
            train,
            validation,
            features,
            validation_features,
            per_image,
            manifest.labels,
            settings,
            inherited,
        )
    timings["fine_tune"] = time.perf_counter() - started

    started = time.perf_counter()
    # the learning curve's heads (on shares of the images; the last share is all of them, the
    # candidate's own) train together with the candidate's: train_heads
    subsets = [chosen for _, chosen in curve_subsets(per_image, settings.seed) if len(chosen) < len(train)]
    views = [view_rows(chosen) for chosen in [*subsets, np.arange(len(train))]]
    *subset_heads, (weight, bias) = train_heads(features, targets, views, len(manifest.labels), settings)
    centres, share, folds = None, 1.0, None
    by_image = features.reshape(len(train), len(VIEWS), -1)
    if settings.head == "blend":
        centres = prototypes(features, targets, len(manifest.labels))
        share, folds = linear_share_for(by_image, per_image, len(manifest.labels), settings)
    head = head_module(weight, bias, centres, settings.prototype_scale, share)
    timings["train"] = time.perf_counter() - started

    started = time.perf_counter()
    validation_targets = np.array([index[e.label] for e in validation], dtype=int)
    classes = len(manifest.labels)

    trained = [  # each curve point's head on its rows, its weights trained above (the last rows: the candidate's)
        head_predictor(w, b, features[rows], targets[rows], classes, settings, share)
        for rows, (w, b) in zip(views, subset_heads, strict=False)
    ]
    curve = learning_curve(
        by_image, per_image, validation_features, validation_targets, None, settings.seed, [*trained, predictor(head)]
    )
    timings["curve"] = time.perf_counter() - started

    started = time.perf_counter()
    calibrated = calibrate(head, validation_features, validation_targets)
    metrics: dict[str, Any] = {"learning_curve": curve.to_json()} if curve is not None else {}
    if calibrated is not None:
        temperature, point = calibrated
        head = tempered(head, temperature)
        metrics[OPERATING_POINT] = point.model_dump()
        log.info("calibrated: %s", point.calibration)
    timings["calibrate"] = time.perf_counter() - started

    started = time.perf_counter()
    stage("exporting")
    tuned = choice is not None and choice.chosen
    # the export check's images: the train images first by sha256 (few change between retrains, so
    # a frozen candidate finds their torch features cached)
    checked = [(e.sha256, Path(e.path)) for e in sorted(train, key=lambda e: e.sha256)[:EXPORT_CHECKED]]
    torch_check: tuple[list[np.ndarray], np.ndarray] | None
    if tuned:  # write_package runs the fine-tuned network in torch on the calibration inputs
        assert network is not None  # fine-tuning chose it
        network._fc = head
        inputs, torch_check = [image_tensor(Image.open(path), INPUT_SPEC) for _, path in checked], None
    else:  # the network is the backbone with this head: torch's logits are the head on its features
        inputs, pooled = cache.torch_features(checked)
        torch_check = inputs, head_outputs(head, pooled)
    answers: dict[str, HeadAnswers] | None = None
    reference_images = None  # write_package's default: calibration views, each run through each graph
    if not tuned and measure is not None:  # each graph is a cached backbone with this head: it answers most images
        served = [decoded_as_embedded(Path(e.path), INPUT_SPEC) for e in validation]
        int8_features = cache.int8_features([(e.sha256, Path(e.path)) for e in validation[:INT8_CHECKED]])
        answers = {
            "fp32": head_answers(head_outputs(head, validation_features), manifest.labels, served),
            "int8": head_answers(head_outputs(head, int8_features), manifest.labels, [True] * len(int8_features)),
        }
        decided = most_decided(list(answers.values()))
        if decided is not None:
            reference_images = [served_png(Path(validation[decided].path).read_bytes(), INPUT_SPEC)]
    if choice is not None:
        metrics["fine_tune"] = choice.card()
    elif skipped is not None:
        metrics["fine_tune"] = {"chosen": False, "blocks": 0, "epochs": 0, "reason": skipped}
    work_dir.mkdir(parents=True, exist_ok=True)
    package_dir = Path(tempfile.mkdtemp(prefix="candidate-", dir=work_dir))
    parent_card = parent.card if parent else None
    card = write_package(
        package_dir,
        network,
        manifest.labels,
        INPUT_SPEC,
        inputs,
        {
            "name": name,
            "version": version or next_version(parent_card, manifest.labels, parent.labels if parent else None),
            "parent_version": parent_card.version if parent_card else None,
            "architecture": ARCHITECTURE,
            "dataset_manifest_sha256": manifest.sha256,
            "metrics": metrics,
            "training": {
                **asdict(settings),
                "method": method(settings, choice),
                "linear_share": share,
                "linear_share_cross_validation": folds,  # accuracy of each share over the folds, when they ran
                "feature_dim": FEATURE_DIM,
                "views_per_image": list(VIEWS),
                "train_images": len(train),
                "device": pick_device(),
            },
        },
        (lambda loaded: measure(loaded, answers)) if measure is not None else None,
        (lambda out: tuned_int8(network, out))
        if tuned
        else (lambda out: stitch_head(cache.int8_backbone(), head, FEATURE_DIM, out)),
        None if tuned else (lambda out: stitch_head(cache.fp32_backbone(), head, FEATURE_DIM, out)),
        reference_images,
        torch_check,
    )
    timings["export"] = time.perf_counter() - started
    return TrainResult(
        package_dir, card, timings, cache.computed - computed_before, cache.reused - reused_before, curve
    )


def fine_tuned_features(
    network: Any,
    cache: EmbeddingCache,
    train: list[ManifestEntry],
    validation: list[ManifestEntry],
    features: np.ndarray,
    validation_features: np.ndarray,
    per_image: np.ndarray,
    labels: list[str],
    settings: TrainSettings,
    inherited: Choice | None = None,
) -> tuple[np.ndarray, np.ndarray, Choice]:
    """Choose whether to fine-tune the last block(s) (fieldlens_retrain.finetune.choose_fine_tune),
    or take the ``inherited`` choice; when chosen, fine-tune them on all training images
    (``network`` gets the tuned weights) and return the tuned embeddings of the training views and
    validation images in place of the frozen ones, with the choice. Unchosen: the frozen
    embeddings, the network untouched, no activation read."""
    if inherited is not None and not inherited.chosen:
        return features, validation_features, inherited
    activations = cache.activations([e.sha256 for e in train])
    by_image = features.reshape(len(train), len(VIEWS), -1)
    tail, choice = tune_tail(network, activations, by_image, per_image, len(labels), settings, inherited)
    if tail is None:
        return features, validation_features, choice
    put_tail(network, tail)
    tuned = embed_tail(tail, activations.reshape(-1, *TAP_SHAPE))
    held = cache.activations([e.sha256 for e in validation])
    validation_tuned = embed_tail(tail, held[:, 0]) if len(held) else np.zeros((0, FEATURE_DIM), np.float32)
    return tuned, validation_tuned, choice


def tune_tail(
    network: Any,
    activations: np.ndarray,
    frozen: np.ndarray,
    per_image: np.ndarray,
    classes: int,
    settings: TrainSettings,
    inherited: Choice | None = None,
) -> tuple[Any | None, Choice]:
    """The choice (``inherited``, or choose_fine_tune, scored by the head the retrain trains:
    head_accuracy) and, when fine-tuning is chosen, the tail fine-tuned on all training images for
    the epochs early stopping kept; None when not. ``activations``: (images, views, 192, 7, 7);
    ``frozen``: (images, views, 1280)."""

    def score(f: np.ndarray, t: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
        return head_accuracy(f, t, queries, truth, classes, settings)

    choice = inherited or choose_fine_tune(network, activations, frozen, per_image, classes, settings, score)
    choice.training_images = len(per_image)
    if not choice.chosen:
        return None, choice
    started = time.perf_counter()
    trained = train_tail(network, choice.blocks, activations, per_image, classes, settings, None, choice.epochs, frozen)
    choice.seconds += time.perf_counter() - started
    return trained.tail, choice


def skipped_fine_tune(settings: TrainSettings, train: list[ManifestEntry]) -> str | None:
    """Why fine-tuning is not even tried (the card's reason), or None to try it.

    "auto" judges fine-tuning on held-out training images, which cannot see a change of conditions:
    a base model fine-tuned on studio photos alone scored well on held-out studio photos and fell
    from 49% to 20% on field photos (the bench's demo scenario, `fieldlens bench --only retrain`),
    where the frozen backbone generalises. So "auto" tries it only once field images (the device's
    own conditions) are among the training images."""
    if settings.fine_tune == "never":
        return "settings: fine_tune never"
    if settings.fine_tune == "auto" and not any(entry.source == "field" for entry in train):
        return (
            "auto: no field images among the training images; fine-tuning on base photos alone is judged "
            "on photos like them and was measured to lose on field photos"
        )
    return None


def inherited_choice(
    parent: ModelPackage | None, labels: list[str], training_images: int, settings: TrainSettings
) -> Choice | None:
    """The current model's fine-tuning choice, when "auto" may reuse it: same classes, and at most
    ``fine_tune_rechoose_growth`` more training images than the choice was made on. None: choose
    again (another setting, no current model, new classes, a card from before the choice counted
    its training images, or enough new images to say something new)."""
    if settings.fine_tune != "auto" or parent is None or parent.labels != labels:
        return None
    previous: dict[str, Any] = parent.card.metrics.get("fine_tune") or {}
    made_on = previous.get("training_images")
    if not isinstance(made_on, int) or not 0 < training_images <= made_on * (1 + settings.fine_tune_rechoose_growth):
        return None
    chosen, blocks, epochs = (
        bool(previous.get("chosen")),
        int(previous.get("blocks", 0)),
        int(previous.get("epochs", 0)),
    )
    if chosen and not (1 <= blocks <= MAX_BLOCKS and epochs > 0):
        return None  # not a choice this retrain can repeat
    what = f"fine-tuning {blocks} block(s) for {epochs} epochs" if chosen else "the frozen network"
    reason = (
        f"{what}, as chosen for {parent.card.version} on {made_on} training images (this dataset: "
        f"{training_images}, within {settings.fine_tune_rechoose_growth:.0%}); its reason: {previous.get('reason')}"
    )
    log.info("fine-tune choice inherited: %s", reason)
    scores = {str(k): float(v) for k, v in (previous.get("scores") or {}).items()}
    return Choice(chosen, blocks, epochs, scores, int(previous.get("held_out_images", 0)), reason, inherited=True)


def head_accuracy(
    features: np.ndarray,
    targets: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    classes: int,
    settings: TrainSettings,
) -> float:
    """Top-1 accuracy on ``queries`` of the head a retrain trains on (images, views, dim) ``features``
    (its blend share chosen as the retrain chooses it)."""
    share = linear_share_for(features, targets, classes, settings)[0] if settings.head == "blend" else 1.0
    return float((head_trainer(features, targets, classes, settings, share)(queries) == truth).mean())


def tuned_int8(network: Any, out: Path) -> None:
    """A fine-tuned candidate's int8 graph: its own backbone quantized (the shared int8 backbone is
    the frozen network's), calibrated as that one is, with the head stitched on in float as usual."""
    from fieldlens_retrain.default_model import calibration_tensors

    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "features.int8.onnx"
        int8_features(network, body, calibration_tensors())
        stitch_head(body, network._fc, FEATURE_DIM, out)


def method(settings: TrainSettings, choice: Choice | None) -> str:
    """The card's one-line account of how the candidate was trained."""
    head = "linear head and class prototypes, blended" if settings.head == "blend" else "linear head"
    if choice is not None and choice.chosen:
        return f"{head}, on embeddings of a backbone whose last {choice.blocks} block(s) were fine-tuned"
    return f"{head}, on frozen backbone embeddings"


def calibrate(head: Any, features: np.ndarray, targets: np.ndarray) -> tuple[float, OperatingPoint] | None:
    """The temperature and operating point of ``head`` from the validation split's plain-view
    embeddings (fieldlens_retrain.calibration); None where there are too few images."""
    return operating_point(head_outputs(head, features), targets, CALIBRATED_ON.format(images=len(targets)))


def head_outputs(head: Any, features: np.ndarray) -> np.ndarray:
    """``head``'s outputs (the graph's logits) for (n, dim) embeddings."""
    import torch

    with torch.no_grad():
        return np.asarray(head(torch.from_numpy(np.ascontiguousarray(features, np.float32))).numpy())


CALIBRATED_ON = (
    "the validation split's {images} images (manifest holdout: the gate scores the same images; a "
    "temperature changes no top-1, so the gate's accuracy is the same with it or without)"
)


def head_trainer(
    features: np.ndarray, targets: np.ndarray, classes: int, settings: TrainSettings, share: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Train a head as :func:`retrain` does on (images, views, dim) features, with a fixed linear share;
    returns its top-1 class index for (n, dim) queries (head_accuracy's measure)."""
    flat = features.reshape(-1, features.shape[-1])
    repeated = np.repeat(targets, features.shape[1])
    return head_predictor(*train_head(flat, repeated, classes, settings), flat, repeated, classes, settings, share)


def head_predictor(
    weight: Any,
    bias: Any,
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    settings: TrainSettings,
    share: float,
) -> Callable[[np.ndarray], np.ndarray]:
    """The top-1 of the head :func:`retrain` makes from a linear layer trained on (n, dim) ``features``:
    blended with their class prototypes (``settings.head`` "blend") in the linear ``share``."""
    centres = prototypes(features, targets, classes) if settings.head == "blend" else None
    return predictor(head_module(weight, bias, centres, settings.prototype_scale, share))


def view_rows(images: np.ndarray) -> np.ndarray:
    """The rows of every view of ``images`` (image indices) in (images * views, dim) features."""
    return (np.asarray(images)[:, None] * len(VIEWS) + np.arange(len(VIEWS))).ravel()


def predictor(head: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``head``'s top-1 class index for (n, dim) queries."""

    def predict(queries: np.ndarray) -> np.ndarray:
        return np.asarray(head_outputs(head, queries).argmax(1))

    return predict
