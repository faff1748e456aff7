"""The library's layers: pillar packages import no application code, and no file imports another's private name."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxbayes"
PILLARS = ("sde", "ot", "kernels", "vi")
APPLICATION = ("jaxbayes.jobs", "jaxbayes.demos", "jaxbayes.cli", "jaxbayes.datasets", "jaxbayes._progress",
               "matplotlib", "tqdm")


def imports(path: Path):
    """(module, names) for every import statement of a file, resolved to absolute module names."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, [alias.name for alias in node.names]


def forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """Every import in ``jaxbayes/<package>`` of a module in ``forbidden`` (or of a name inside one)."""
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for module, names in imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            if any(t == f or t.startswith(f + ".") for t in targets for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE)} imports {module}")
    return bad


@pytest.mark.parametrize("pillar", PILLARS)
def test_pillars_import_no_application_code(pillar):
    bad = forbidden_imports(pillar, APPLICATION)
    assert not bad, bad


def test_no_file_imports_another_files_private_name():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, names in imports(path):
            if not module.startswith("jaxbayes"):
                continue
            bad += [f"{path.relative_to(PACKAGE)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not bad, bad


FOUNDATION = ("parallel", "pairwise")


@pytest.mark.parametrize("package", FOUNDATION)
def test_foundation_imports_no_pillar_or_application_code(package):
    bad = forbidden_imports(package, APPLICATION + tuple(f"jaxbayes.{p}" for p in PILLARS))
    assert not bad, bad


def pillar_graph() -> dict[str, set[str]]:
    """Which pillars each pillar imports (``from jaxbayes import ot`` or ``from jaxbayes.ot import ...``)."""
    graph = {p: set() for p in PILLARS}
    for pillar in PILLARS:
        for path in sorted((PACKAGE / pillar).rglob("*.py")):
            for module, names in imports(path):
                targets = [module] + [f"{module}.{n}" for n in names]
                graph[pillar] |= {p for p in PILLARS if p != pillar
                                  for t in targets if t == f"jaxbayes.{p}" or t.startswith(f"jaxbayes.{p}.")}
    return graph


def test_pillars_use_each_other_without_cycles():
    graph = pillar_graph()

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,))) for n in graph[start])

    cycles = [p for p in PILLARS if reaches(p, p)]
    assert not cycles, graph
    # the one use today: sde's two-sample metrics take Sinkhorn and sliced W2 from ot
    assert graph == {"sde": {"ot"}, "ot": set(), "kernels": set(), "vi": set()}, graph
