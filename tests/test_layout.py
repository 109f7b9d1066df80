"""DESIGN.md's import rules: arrows point one way (runtime never imports kit or export; kit never imports export)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "runtime": ("edgead.kit", "edgead.export", "torch"),  # torch only lazily, inside the backend that needs it
    "kit": ("edgead.export",),
    "edgead": ("edgead.kit", "edgead.export", "edgead.runtime", "torch", "cv2"),  # at module level
}


def module_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in tree.body:  # module level only: imports inside functions are the lazy ones the rules allow
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder):
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for name in module_level_imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand (package-dir mapping): a new subpackage must be listed or wheels lack it."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"edgead": "edgead", "kit": "edgead.kit", "export": "edgead.export", "runtime": "edgead.runtime"}
    found = {
        ".".join([roots[folder], *init.parent.relative_to(REPO / folder).parts])
        for folder in roots
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
