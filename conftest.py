"""The README's and docs/' code blocks run as a newcomer runs them (pytest-codeblocks, `--codeblocks` in
pyproject): in order, each Markdown file in a scratch folder of its own that stands for the clone, with
`../shared` beside it (a link to the real one when there is one), so that what the examples write
(`scene.png`, `runs/`, `falip-demo.png`) never lands in the repository. Skips are written in the
Markdown, in the plugin's own `<!--pytest.mark.skip(reason=...)-->` form, so the reason is visible."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FALIP_SHARED", ROOT.parent / "shared"))
_folders: dict[Path, Path] = {}
_scratch: list[str] = []


def _is_code_block(item: pytest.Item) -> bool:
    return type(item).__module__.startswith("pytest_codeblocks")


def _clone_for(markdown: Path) -> Path:
    """The scratch folder that stands for the clone while `markdown`'s blocks run."""
    if markdown not in _folders:
        if not _scratch:
            _scratch.append(tempfile.mkdtemp(prefix="falip-docs-"))
        base = Path(_scratch[0]) / markdown.relative_to(ROOT).as_posix().replace("/", "_")
        (base / "falip").mkdir(parents=True)
        if SHARED.is_dir():
            (base / "shared").symlink_to(SHARED, target_is_directory=True)
        _folders[markdown] = base / "falip"
    return _folders[markdown]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not _is_code_block(item):
        return (yield)
    before = Path.cwd()
    os.chdir(_clone_for(item.path))
    try:
        return (yield)
    finally:
        os.chdir(before)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
