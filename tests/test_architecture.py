"""The library's layout: import layers and function lengths, read from the source with ``ast``.

The layers, bottom up (a module may import from its own layer and those below):

0. checks, params, files, data, cli, report, plots: argument checks, Pyro's param store,
   file writing, MNIST, command lines, results
1. models: model/guide pairs and their shared pieces
2. infer: losses; ``importance.py`` computes the per-point importance weights
3. train, checkpoint, distributed, evaluate, ais: the training loop and the estimators
4. diagnostics, compare, testing, imputation: what combines training and evaluation
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_lvm"

LAYERS = [
    {"checks", "params", "files", "data", "cli", "report", "plots"},
    {"models"},
    {"infer"},
    {"train", "checkpoint", "distributed", "evaluate", "ais"},
    {"diagnostics", "compare", "testing", "imputation"},
]
#: What models/ must never import, whatever the layers say (the issue's list).
FORBIDDEN_IN_MODELS = {"train", "checkpoint", "evaluate", "infer", "diagnostics", "compare",
                       "testing", "torch.distributed"}
MAX_LINES = 80
MAX_LINES_FIT = 60


def _unit(path: Path) -> str:
    """The layer unit of a module: its package below pyro_lvm (models, infer) or its name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"pyro_lvm/{unit} is in no layer: add it to LAYERS in this test")


def _imports(path: Path):
    """``(line, imported unit or external module)`` of every import in ``path``."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
                if module == "pyro_lvm" or module.startswith("pyro_lvm."):
                    rest = module.split(".")[1:]
                    yield node.lineno, ("pyro_lvm." + rest[0]) if rest else "pyro_lvm"
                    if not rest:  # from pyro_lvm import evaluate
                        for alias in node.names:
                            yield node.lineno, "pyro_lvm." + alias.name
                else:
                    yield node.lineno, module
                    for alias in node.names:
                        yield node.lineno, f"{module}.{alias.name}"
            else:
                package = here[:len(here) - node.level] if path.name != "__init__.py" else \
                    here[:len(here) - node.level + 1]
                target = [*package, *(node.module.split(".") if node.module else [])]
                if target:
                    yield node.lineno, "pyro_lvm." + target[0]
                else:  # from .. import x: a module of pyro_lvm, or a name of its __init__
                    for alias in node.names:
                        is_module = (PACKAGE / alias.name).is_dir() or \
                            (PACKAGE / f"{alias.name}.py").is_file()
                        yield node.lineno, "pyro_lvm." + alias.name if is_module else "pyro_lvm"


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    unit = _unit(path)
    own = _layer(unit)
    higher = [f"line {line}: {name}" for line, name in _imports(path)
              if name.startswith("pyro_lvm.") and _layer(name.split(".")[1]) > own]  # pyro_lvm itself: 0
    assert not higher, f"pyro_lvm/{path.relative_to(PACKAGE)} (layer {own}) imports from above: {higher}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_no_training_evaluation_or_distributed_code(path):
    bad = [f"line {line}: {name}" for line, name in _imports(path)
           if name.removeprefix("pyro_lvm.") in FORBIDDEN_IN_MODELS
           or name.startswith("torch.distributed")]
    assert not bad, f"pyro_lvm/models/{path.name} imports {bad}"


def _functions():
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", \
                    node.end_lineno - node.lineno + 1


def test_no_function_in_the_library_is_over_80_lines():
    long = {name: n for name, n in _functions() if n > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines (docstring included): {long}"


def test_fit_fits_on_one_screen():
    lengths = {name.split(" ")[-1]: n for name, n in _functions() if name.startswith("train.py")}
    assert lengths["fit"] <= MAX_LINES_FIT, f"train.fit has {lengths['fit']} lines"


def test_the_layer_test_sees_every_kind_of_import():
    """A check of the checker: the imports it reports for a known module."""
    names = {name for _, name in _imports(PACKAGE / "train.py")}
    assert {"pyro_lvm.checks", "pyro_lvm.infer", "torch"} <= names
