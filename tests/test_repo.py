"""The README's Quickstart is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_installs_demos_and_tests_and_ci_runs_its_test_line():
    demo, serve, test_line = quickstart_lines()
    for line in (demo, serve):
        assert line.startswith("pip install") and "torch==2.13.0" in line
    assert demo.endswith("falip demo") and serve.endswith("falip serve")
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [test_line] == ["bash scripts/test"]
    script = (ROOT / "scripts" / "test").read_text()
    assert (
        "apt-get install" in script
        and "chromium-driver" in script
        and 'pip install "torch==2.13.0" -e ".[test]"' in script
    )
