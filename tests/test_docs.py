"""The project's docs stay true to the code: the configuration reference is the one the config
models generate, every relative link in the README and docs/ resolves (file and heading),
and nothing in the tree cites design notes that live outside the repository."""

import os
import re
from pathlib import Path

import pytest

from experiments.config import config_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Design notes kept beside the repository, not in it: the names, built so this file does not cite them.
OUTSIDE_NOTES = re.compile(r"\b(?:" + "|".join(("DESIGN", "ENV", "RLLIB", "STYLE", "TRACKING", "MEM1")) + r")\.md\b")
SOURCE_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".in", ".cfg"}


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower-case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_configuration_reference_is_generated_from_the_config_models():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == config_markdown(), (
        "docs/configuration.md differs from the config's field descriptions; regenerate it with "
        "`python -m experiments.config --markdown > docs/configuration.md`"
    )


def test_the_reference_documents_every_key():
    page = config_markdown()
    assert "| `memory` | [memory](#memory) |" in page
    for key in ("budget", "share_prompt", "max_invalid_streak", "register_best", "loguniform"):
        assert f"| `{key}` |" in page, key
    assert "| `temperature` | float (>= 0.0) | `0.0` |" in page  # type, bound and default of one field


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve_to_a_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_docs_cover_the_pages_the_readme_lists():
    readme = ROOT / "README.md"
    listed = {Path(t).name for t in LINK.findall(readme.read_text()) if t.startswith("docs/")}
    assert listed == {p.name for p in DOCS}, "the README's Docs list and docs/ disagree"


def test_no_file_cites_notes_outside_the_repository():
    found = []
    for folder, dirs, files in os.walk(ROOT):
        # not the venv, git, caches or run outputs
        dirs[:] = [d for d in dirs if not (d.startswith(".") or d in ("runs", "__pycache__") or d.endswith(".egg-info"))]
        for name in files:
            path = Path(folder) / name
            if path.suffix in SOURCE_SUFFIXES or name == "Makefile":
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if OUTSIDE_NOTES.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{n}")
    assert not found, "cite docs/ instead: " + ", ".join(found)
