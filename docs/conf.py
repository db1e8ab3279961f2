"""Sphinx configuration of the pyro-lvm documentation (``make docs``).

Intersphinx (links into the documentation of Python, Pyro, PyTorch, NumPy and arviz) needs
each project's ``objects.inv``.  The build must work offline and without a warning, and no
package on PyPI ships those inventories, so they are used only where they can be had:

* ``PYRO_LVM_DOCS_ONLINE=1 make docs`` fetches them from the projects' sites;
* an inventory saved as ``docs/_inventories/<project>.inv`` (e.g. with
  ``curl -o docs/_inventories/pyro.inv https://docs.pyro.ai/en/stable/objects.inv``) is read
  from disk, offline;
* otherwise the project is left out, and names of it (``torch.Tensor``, ``pyro.plate``)
  are shown as code without a link.

Broken references to the package's own names always fail the build (``nitpicky``);
references to the other projects' names are exempt, since offline they cannot resolve.

MathJax is served from the built site itself (the ``sphinx-mathjax-offline`` package
ships it), so the mathematics renders without a network; without that package Sphinx
loads MathJax from its CDN.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]  # this checkout's pyro_lvm, the page generator

import pyro_lvm  # noqa: E402

project = "pyro-lvm"
author = "the pyro-lvm developers"
copyright = "the pyro-lvm developers"
release = version = pyro_lvm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "lvm_pages",
]
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")

exclude_patterns = ["_build", "_inventories"]
html_theme = "furo"
html_title = f"pyro-lvm {release}"
pygments_style = "sphinx"
default_role = "code"  # `x` in a docstring is code, as ``x``

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show ``seed=0``, ``loss="elbo"`` as written
autoclass_content = "both"  # the class docstring and __init__'s

INVENTORIES = {
    "python": "https://docs.python.org/3",
    "pyro": "https://docs.pyro.ai/en/stable",
    "torch": "https://docs.pytorch.org/docs/stable",
    "numpy": "https://numpy.org/doc/stable",
    "arviz": "https://python.arviz.org/en/stable",
}
online = os.environ.get("PYRO_LVM_DOCS_ONLINE") == "1"
intersphinx_mapping = {}
for name, url in INVENTORIES.items():
    local = DOCS / "_inventories" / f"{name}.inv"
    if online or local.exists():
        intersphinx_mapping[name] = (url, str(local) if local.exists() else None)
intersphinx_timeout = 10

nitpicky = True
EXTERNAL = r"(torch|pyro|numpy|np|arviz|az|xarray|matplotlib|plt|scipy|sklearn|torchvision|tqdm)"
nitpick_ignore_regex = [
    (r"py:.*", EXTERNAL + r"(\..*)?"),
    # builtins and the standard library, linked only with Python's inventory
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|type|object|None|Ellipsis)"),
    (r"py:.*", r"(os|pathlib|typing|collections|contextlib|numbers|argparse|json|io)(\..*)?"),
    (r"py:class", r".*\._\w+"),  # private base classes, not documented
    (r"py:.*", r"(Path|Callable|Iterable|Iterator|Sequence|Mapping|Any|NamedTuple|Tensor)"),
]
