"""The layout holds: layers import downward only (apps -> audits -> pipeline -> render -> io -> core), no
module grows past 500 lines, and every module the docs name exists (#25)."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gradcam"
ROOT = PACKAGE.parents[1]
# the package's rooms, lowest first; a module may import its own room and the ones below it
LEVELS = {"core": 0, "io": 1, "render": 2, "pipeline": 3, "audits": 4, "apps": 5, "integrations": 5}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _level(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "gradcam":
        return None
    if len(parts) == 1 or parts[1] == "__main__":
        return 99  # the package's front door re-exports from every room
    return LEVELS.get(parts[1], LEVELS["core"])


def _imports(path: Path) -> list[str]:
    """Every gradcam module ``path`` imports, at the top or inside a function."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.split(".")[0] == "gradcam"]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_layers_import_downward_only():
    upward = []
    for path in _modules():
        module = _module_name(path)
        for target in _imports(path):
            if _level(target) != 99 and (_level(target) or 0) > (_level(module) or 0):
                upward.append(f"{module} -> {target}")
    assert not upward, "upward imports: " + "; ".join(upward)


def test_the_result_does_not_import_the_methods():
    """result.py is what every method returns: importing the methods from it made a cycle through them."""
    assert not [t for t in _imports(PACKAGE / "result.py") if t.startswith("gradcam.methods")]


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule itself: a made-up io module importing the pipeline is caught."""
    assert _level("gradcam.pipeline.local") > _level("gradcam.io.images")
    assert _level("gradcam.apps.cli.explain") > _level("gradcam.audits.engine") > _level("gradcam.pipeline.kinds")
    assert _level("gradcam.render.viz") > _level("gradcam.io.images") > _level("gradcam.explain")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines; split it by job"


def _named_modules(text: str) -> set[str]:
    """Paths of our modules named in a document: ``pipeline/local.py``, ``apps/cli/explain.py``, ..."""
    return set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text))


@pytest.mark.parametrize("document", ["README.md", "docs/notes.md", "docs/methods.md"])
def test_every_module_the_docs_name_exists(document):
    text = (ROOT / document).read_text()
    names = _named_modules(text)
    everywhere = {
        path.name for folder in ("src", "tests", "bench", "scripts") for path in (ROOT / folder).rglob("*.py")
    }
    missing = []
    for name in names:
        if "/" not in name:  # a bare file name: somewhere in the repository
            if name not in everywhere:
                missing.append(name)
            continue
        candidates = (
            [ROOT / name] if name.startswith(("tests/", "bench/", "scripts/")) else [PACKAGE / name, ROOT / name]
        )
        if not any(candidate.exists() for candidate in candidates):
            missing.append(name)
    assert not missing, f"{document} names modules that do not exist: {sorted(missing)}"
