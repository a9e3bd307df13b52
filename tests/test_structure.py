"""The house rules, checked on the source: the modules of ``gan`` and ``classify`` form layers
in data-flow order (every import, also one inside a function or an
``importlib.import_module("...")`` with a literal name, goes to a module listed earlier, so
there is no import circle), ``gan`` never imports ``classify``, no module is over 700 lines
and no function over 100 lines.

A new module must be given its place in :data:`LAYERS`: where it goes says what it may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._settings import REPO

#: Every module, lowest first. A module may import only modules listed before it.
LAYERS = {
    "gan": [
        "gan.util", "gan.config", "gan.images", "gan.face_paint", "gan.synthetic", "gan.labels", "gan.duplicates", "gan.prepare", "gan.dataset",
        "gan.ops._build", "gan.ops.bias_act", "gan.ops.upfirdn2d", "gan.ops.grid_sample", "gan.ops", "gan.ops.doctor",
        "gan.augment", "gan.layers", "gan.networks", "gan.convert", "gan.published", "gan.monitor", "gan.distributed", "gan.loss",
        "gan.checkpoint", "gan.extractors", "gan.generate", "gan.metrics", "gan.run_config", "gan.transfer", "gan.train", "gan.cli", "gan",
    ],
    "classify": [
        "classify.dataset", "classify.models", "classify.recipe", "classify.loaders", "classify.checkpoint",
        "classify.plots", "classify.evaluate", "classify.train", "classify.baselines", "classify.classifier", "classify.cas",
        "classify.shift", "classify.leak", "classify.pseudo_labels", "classify.report", "classify.score",
        "classify.directions", "classify.edit",
        "classify.cli", "classify",
    ],
}
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``module`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, path.name == "__init__.py")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


MODULES = _modules()


def test_every_module_has_a_layer():
    listed = {m for layer in LAYERS.values() for m in layer}
    missing = sorted(set(MODULES) - listed)
    assert not missing, f"give these modules a place in LAYERS (tests/test_structure.py): {missing}"
    gone = sorted(listed - set(MODULES))
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


@pytest.mark.parametrize("pkg", sorted(LAYERS))
def test_imports_only_go_down_the_layers(pkg):
    order = {m: i for i, m in enumerate(LAYERS["gan"] + LAYERS["classify"])}
    known = set(MODULES)
    upward = []
    for module in LAYERS[pkg]:
        if module not in MODULES:
            continue
        for target in _imports(module, MODULES[module], known):
            if target.split(".")[0] == "classify" and pkg == "gan":
                upward.append(f"{module} -> {target} (gan never imports classify)")
            elif target in order and order[target] >= order[module]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up the layers (a circle, or a helper living too high):\n" + "\n".join(upward)


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    # The checker itself: a lazy import and an import_module call both count.
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from gan import train\n    import importlib\n    importlib.import_module('gan.cli')\n")
    assert _imports("gan.util", src, {"gan.train", "gan.cli", "gan.util"}) == {"gan.train", "gan.cli"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {lines} lines (at most {MAX_MODULE_LINES})"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({n} lines, line {node.lineno})")
    assert not long, f"{path.relative_to(REPO)}: functions over {MAX_FUNCTION_LINES} lines: {long}"

