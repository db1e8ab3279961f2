"""Pages generated from the package itself, so that none can drift from the code.

* ``api/<module>.rst``: one page per module found under ``pyro_lvm/`` (a new module gets
  its page without anyone writing one), documenting every name of its ``__all__`` (or,
  without ``__all__``, every public name it defines).  A name a module re-exports from
  another module of the package is documented where it is defined and listed with a link
  on the re-exporting page, so Sphinx sees each object once.
* ``examples_list.rst``: the examples and what their docstrings say they show, how long
  they run on a 2-core CPU and what they write.

Both are written into the source folder when a build starts (``builder-inited``); they are
ignored by git.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pyro_lvm"
#: The paragraph openings every example's docstring has (tests/test_docs.py checks them).
EXAMPLE_FACTS = {"shows": "Shows", "writes": "Writes", "run time": "Run time on a 2-core CPU"}


def module_names() -> list[str]:
    """Every module under ``pyro_lvm/``, packages included, sorted."""
    names = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def _module_path(name: str) -> Path:
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _top_level(name: str) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """The names a module defines, and those it imports: ``{alias: (module, name)}``."""
    tree = ast.parse(_module_path(name).read_text())
    package = name if _module_path(name).name == "__init__.py" else name.rpartition(".")[0]
    defined, imported = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:
                imported[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name] = (alias.name, "")
    return defined, imported


def public_names(name: str) -> list[str]:
    """``__all__``, or the public names the module defines when it has none."""
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    defined, _ = _top_level(name)
    return sorted(n for n in defined if not n.startswith("_"))


def canonical(module: str, name: str) -> tuple[str, str] | None:
    """Where ``module.name`` is defined inside the package, following re-exports; None for
    a name imported from outside the package."""
    defined, imported = _top_level(module)
    if name in defined:
        return module, name
    source, original = imported.get(name, ("", ""))
    if source.startswith(PACKAGE + ".") or source == PACKAGE:
        if not original:  # a submodule imported as a name
            return None
        return canonical(source, original)
    return None


#: Bases whose members a class page leaves out: torch's, Pyro's and Python's.  Members
#: inherited from the package's own classes (``VAE.save`` from ``Saveable``, ``GMMFit.bic``
#: from the private ``_MixtureScores``) are shown on the class.
FOREIGN_BASES = "Module, ELBO, TraceGraph_ELBO, Messenger, TorchDistribution, tuple, object"


def _entry(module: str, name: str) -> list[str]:
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj):
        return [f".. autoclass:: {name}", "   :members:", "   :undoc-members:",
                f"   :inherited-members: {FOREIGN_BASES}", "   :show-inheritance:", ""]
    if callable(obj):
        return [f".. autofunction:: {name}", ""]
    # a value whose repr holds a memory address (a dict of functions) would change per build
    return [f".. autodata:: {name}"] + (["   :no-value:"] if " at 0x" in repr(obj) else []) + [""]


def api_page(module: str) -> str:
    """The page of one module: its docstring, then each public name it defines, then the
    names it re-exports, linked to where they are documented."""
    names = public_names(module)
    own = [n for n in names if canonical(module, n) == (module, n)]
    lines = [module, "=" * len(module), "", f".. automodule:: {module}", "   :no-members:", ""]
    for n in own:
        lines += _entry(module, n)
    others = [n for n in names if n not in own]
    if others:
        lines += ["Imported here", "-------------", ""]
        for n in others:
            where = canonical(module, n)
            if where is None:  # a name of another library, e.g. matplotlib.pyplot
                lines += [f".. py:data:: {n}", "", f"   ``{_top_level(module)[1][n][0]}``.", ""]
            else:
                lines.append(f"* ``{n}``: :py:obj:`{where[0]}.{where[1]}`")
        lines.append("")
    return "\n".join(lines)


def resolve_reexport(app, env, node, contnode):
    """``missing-reference``: a reference to a name where it is re-exported
    (``pyro_lvm.infer.IWAE``, ``pyro_lvm.models.VAE``, or ``fit`` inside an example that
    imports it) resolves to the page where the name is defined."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    parts = target.split(".")
    scopes = [target] + ([f"{node['py:module']}.{target}"] if node.get("py:module") else [])
    for full in scopes:
        parts = full.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module, name, rest = ".".join(parts[:cut]), parts[cut], parts[cut + 1:]
            if not (module.startswith(PACKAGE) or module.startswith("examples")):
                continue
            try:
                where = canonical(module, name)
            except (OSError, SyntaxError):
                continue
            if where and where != (module, name):
                new = ".".join([*where, *rest])
                return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder,
                                                      node["reftype"], new, node, contnode)
    return None


def api_index(modules: list[str]) -> str:
    lines = ["API reference", "=============", "",
             "One page per module of ``pyro_lvm``, generated from its docstrings.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    lines += [f"   {m}" for m in modules]
    return "\n".join(lines) + "\n"


def example_docstrings() -> dict[str, str]:
    """``{"examples/name.py": docstring}`` of every example script."""
    return {f"examples/{p.name}": ast.get_docstring(ast.parse(p.read_text())) or ""
            for p in sorted((ROOT / "examples").glob("*.py"))}


def example_facts(doc: str) -> dict[str, str]:
    """The summary line and the paragraphs opening with :data:`EXAMPLE_FACTS`."""
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
    facts = {"summary": paragraphs[0] if paragraphs else ""}
    for key, opening in EXAMPLE_FACTS.items():
        found = [p for p in paragraphs if p.startswith(opening)]
        facts[key] = found[0] if found else ""
    return facts


def examples_page() -> str:
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 18 40 22 20", "",
             "   * - script", "     - what it shows", "     - run time", "     - what it writes"]
    sections = []
    for script, doc in example_docstrings().items():
        facts = example_facts(doc)
        module = "examples." + Path(script).stem
        cells = [facts[k].replace(":func:`main`", f":func:`main <{module}.main>`")
                 for k in ("summary", "run time", "writes")]
        lines += [f"   * - :py:mod:`{script} <{module}>`"] + [f"     - {c}" for c in cells]
        sections += [script, "-" * len(script), "", f".. automodule:: {module}",
                     "   :members: main", ""]
    return "\n".join(lines + [""] + sections) + "\n"


# ``:param a, b: text`` (the library's docstrings name parameters that share a description
# together) is not a Sphinx field: split it into one field per name.
_SHARED_PARAM = re.compile(r"^(\s*):param ((?:\w+, )+\w+):(.*)$")


def split_shared_params(app, what, name, obj, options, lines) -> None:
    type_doc = type(obj).__doc__  # a descriptor, not a string, for some types' instances
    if what in ("data", "attribute") and " ".join(" ".join(lines).split()) == " ".join(
            (type_doc if isinstance(type_doc, str) else "").split()):
        lines[:] = []  # a constant without a doc comment: not the docstring of its type
        return
    out = []
    for i, line in enumerate(lines):
        match = _SHARED_PARAM.match(line)
        if not match:
            out.append(line)
            continue
        indent, names, first = match.groups()
        rest = []
        for follow in lines[i + 1:]:
            if not follow.startswith(indent + " ") or not follow.strip():
                break
            rest.append(follow)
        for n in names.split(", "):
            out += [f"{indent}:param {n}:{first}"] + (rest if n != names.split(", ")[-1] else [])
    lines[:] = out


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged pages are not rebuilt
        path.write_text(text)


def generate(app) -> None:
    src = Path(app.srcdir)
    api = src / "api"
    api.mkdir(exist_ok=True)
    modules = module_names()
    for stale in set(api.glob("*.rst")) - {api / f"{m}.rst" for m in modules} - {api / "index.rst"}:
        stale.unlink()
    for module in modules:
        _write(api / f"{module}.rst", api_page(module))
    _write(api / "index.rst", api_index(modules))
    _write(src / "examples_list.rst", examples_page())


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", split_shared_params)
    app.connect("missing-reference", resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
