"""Label Studio, for teams that outgrow the labelling page: tasks out, annotations back in.

Out (``fieldlens label export --format label-studio``): one task per field image, its image
URL (``s3://`` for a bucket's pairs, which Label Studio's S3 storage signs; the labelling
page's image URL for a local directory) and the model's suggestions as a pre-annotation
(``predictions`` with the model's version and the top-1 confidence as its score). The image's key
(``Pair.key``: ``<thing>/<image id>`` from a bucket) travels in ``data.fieldlens_id``.

In (``fieldlens label import export.json``): Label Studio's JSON export. Each task's latest
annotation that was not cancelled gives the label; a task nobody annotated gives none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import quoteattr

from fieldlens_fielddata.directory import FieldDataDir, Pair
from fieldlens_fielddata.sidecar import Sidecar

FROM_NAME, TO_NAME = "label", "image"


def labeling_config(labels: list[str]) -> str:
    """The project's labelling interface: the image and one choice per label (single choice)."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" showInLine="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def tasks(directories: list[FieldDataDir], image_url: Callable[[Pair, Sidecar], str]) -> list[dict[str, Any]]:
    """Label Studio tasks for every readable pair (already labelled ones carry their label as data)."""
    found = []
    for directory in directories:
        for pair, sidecar in directory.read_all():
            if not isinstance(sidecar, Sidecar):
                continue
            task: dict[str, Any] = {
                "data": {
                    "image": image_url(pair, sidecar),
                    "fieldlens_id": pair.key,
                    "thing": pair.thing or sidecar.thing,
                    "captured": sidecar.timestamp,
                }
            }
            if sidecar.prediction:
                model = sidecar.model
                task["predictions"] = [
                    {
                        "model_version": f"{model.name} {model.version}" if model else "unknown",
                        "score": sidecar.confidence,
                        "result": [
                            {
                                "from_name": FROM_NAME,
                                "to_name": TO_NAME,
                                "type": "choices",
                                "value": {"choices": [sidecar.prediction]},
                            }
                        ],
                    }
                ]
            found.append(task)
    return found


def read_export(document: list[Any]) -> dict[str, str]:
    """image key -> label from Label Studio's JSON export; ValueError naming the task that is malformed."""
    labels = {}
    for task in document:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ValueError("a task without data")
        image_id = task["data"].get("fieldlens_id")
        if not isinstance(image_id, str):
            raise ValueError(f"task {task.get('id')} has no data.fieldlens_id (was it exported by fieldlens?)")
        annotations = [a for a in task.get("annotations", []) if isinstance(a, dict) and not a.get("was_cancelled")]
        annotations.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        for annotation in reversed(annotations):
            choices = [
                r["value"]["choices"]
                for r in annotation.get("result", [])
                if r.get("type") == "choices" and r.get("from_name") == FROM_NAME
            ]
            if choices and choices[0]:
                labels[image_id] = str(choices[0][0])
                break
    return labels
