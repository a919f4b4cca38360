"""The house: a folder per layer, a small package root, no import cycle between files."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "falip"


def _module(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def import_graph() -> dict[str, set[str]]:
    """Each module's falip imports, those inside functions included, resolved to modules (not packages'
    attributes): written from the source with `ast`, independently of import-linter."""
    modules = {_module(p)[0]: p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = _module(path)[1]
        base = name.split(".") if package else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = base[: len(base) - node.level + 1] if node.level else []
                target = (
                    ".".join(parts + ([node.module] if node.module else [])) if node.level else node.module
                )
                if not target or not target.startswith("falip"):
                    continue
                for alias in node.names:
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("falip"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_the_package_root_keeps_only_its_public_face():
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert len(modules) <= 6, modules
    assert {"__init__.py", "__main__.py", "errors.py"} <= set(modules)
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert layers == {
        "inputs",
        "backbones",
        "engine",
        "tasks",
        "datasets",
        "evaluation",
        "viz",
        "paper",
        "toy",
        "cli",
        "web",
    }


def test_no_import_cycle_between_files():
    edges = import_graph()  # a package's __init__ counts as a file like any other
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_layers_contract_names_every_subpackage():
    import tomllib

    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    named = {part.strip() for layer in contract["layers"] for part in layer.replace(":", "|").split("|")}
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= named, packages - named


def test_the_papers_alpha_and_sigma_are_written_once():
    """No parameter, field or option named alpha or sigma has a literal default outside `FalipSettings`."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "settings.py" and path.parent.name == "inputs":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            pairs = []
            if isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                pairs += zip(positional[len(positional) - len(node.defaults) :], node.defaults)
                pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
                pairs = [(a.arg, d) for a, d in pairs]
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                pairs = [(node.target.id, node.value)]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                pairs = [
                    (str(node.args[0].value).lstrip("-"), k.value)
                    for k in node.keywords
                    if k.arg == "default"
                ]
            elif isinstance(node, ast.Dict):
                pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
            for name, value in pairs:
                if (
                    name in ("alpha", "sigma")
                    and isinstance(value, ast.Constant)
                    and value.value in (0.2, 100, 100.0)
                ):
                    found.append(f"{path.relative_to(SRC)}:{value.lineno} {name}={value.value}")
    assert not found, found
