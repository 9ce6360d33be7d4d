"""The documentation names what the code accepts, and its links lead somewhere.

The configuration reference, the error codes and the exit-code table live in
components/README.md, beside the code they document; the front README links to each folder's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from fieldlens_classifier.config import ClassifierConfig, ContinuousConfig
from fieldlens_core.config import CameraConfig, InferenceClientConfig
from fieldlens_core.errors import EXIT_MEANINGS, ErrorCode, ExitCode
from fieldlens_inference.config import InferenceServiceConfig
from fieldlens_uploader.config import UploaderConfig

ROOT = Path(__file__).parents[1]
COMPONENTS = (ROOT / "components" / "README.md").read_text()
"""Where the configuration keys, the error codes and the exit codes are documented."""

READMES = [
    ROOT / "README.md",
    ROOT / "components" / "README.md",
    ROOT / "components" / "fieldlens_bench" / "README.md",
    ROOT / "field_data" / "README.md",
    ROOT / "recipes" / "README.md",
    ROOT / "infra" / "README.md",
    ROOT / "tests" / "README.md",
]


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        (ClassifierConfig, ""),
        (CameraConfig, "camera."),
        (ContinuousConfig, "continuous."),
        (InferenceClientConfig, "inference."),
        (InferenceServiceConfig, ""),
        (UploaderConfig, ""),
    ],
)
def test_every_configuration_key_is_documented(model: type[BaseModel], prefix: str) -> None:
    missing = [name for name in model.model_fields if f"| `{prefix}{to_camel(name)}` |" not in COMPONENTS]
    assert missing == []


def test_every_error_code_is_documented() -> None:
    assert [code.value for code in ErrorCode if f"| `{code.value}` |" not in COMPONENTS] == []


def test_the_exit_code_table_is_the_codes() -> None:
    assert [code.value for code in ExitCode if f"| {code.value} | {EXIT_MEANINGS[code]} |" not in COMPONENTS] == []


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (outside code blocks): lower case, spaces to
    hyphens, punctuation but ``-`` and ``_`` dropped."""
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            found.add(re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(readme: Path) -> None:
    """A section moved between folders keeps its links: each resolves from the file it is in."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (readme.parent / path).resolve() if path else readme
        if not linked.exists() or (anchor and linked.is_file() and anchor not in anchors(linked.read_text())):
            broken.append(target)
    assert broken == []


def test_the_front_readme_stays_a_front_door() -> None:
    """What a newcomer needs first; the rest lives in the folder READMEs it links to."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for words in ("make demo", "make test", "/request/classify", "/response/prediction", "Hello from AWS IoT console"):
        assert words in text
    for readme in READMES[1:]:
        assert str(readme.relative_to(ROOT)) in text
