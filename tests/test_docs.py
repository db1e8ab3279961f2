"""The documentation (``README.md`` and ``docs/``): Sphinx builds it without a warning, its
inventory holds every public name of the package, every Python block of the README and the
guides runs and prints what its page shows, and no page speaks of this checkout's
surroundings or of the circumstances of a measurement beyond device, torch version and date."""

import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest
import torch
from sphinx.util.inventory import InventoryFile

from docs_blocks import DOCS, README, ROOT, doc_pages, markdown_blocks, printed_matches, \
    rest_blocks, run_python

sys.path.insert(0, str(DOCS / "_ext"))
import lvm_pages  # noqa: E402  (the page generator: which modules and examples exist)

PAGES = [README] + doc_pages()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``make docs``'s build (HTML, warnings as errors) into a temporary folder."""
    out = tmp_path_factory.mktemp("docs")
    run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going",
                          "-q", "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYRO_LVM_DOCS_ONLINE": ""})
    return run, out / "html"


def test_the_documentation_builds_without_a_warning(built):
    run, html = built
    assert run.returncode == 0, run.stderr[-5000:]
    assert (html / "api" / "pyro_lvm.train.html").exists() and (html / "guides").is_dir()


def _public_names(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and getattr(obj, "__module__", None) == module_name
                 and (inspect.isfunction(obj) or inspect.isclass(obj))]
    return module, names


def test_every_public_name_is_in_the_inventory(built):
    run, html = built
    assert run.returncode == 0, run.stderr[-2000:]
    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, name: name)
    documented = {name for kind, items in inventory.items() if kind.startswith("py:")
                  for name in items}
    missing = []
    for module_name in lvm_pages.module_names():
        module, names = _public_names(module_name)
        assert module_name in documented, module_name
        for name in names:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", None)  # a re-export is documented where defined
            where = {f"{module_name}.{name}"}
            if home and home.startswith("pyro_lvm") and hasattr(obj, "__qualname__"):
                where.add(f"{home}.{obj.__qualname__}")
            if not where & documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, missing


def test_the_examples_say_what_they_show_cost_and_write():
    for script, doc in lvm_pages.example_docstrings().items():
        facts = lvm_pages.example_facts(doc)
        assert all(facts[k] for k in ("summary", *lvm_pages.EXAMPLE_FACTS)), (script, facts)


@pytest.fixture
def in_fresh_folder(tmp_path, monkeypatch):
    """A folder holding what the guides read: ``results/svi_vae/model.pt``, the demo's VAE
    (untrained here: the blocks that read it print nothing they compare), and one CPU thread:
    the pages show what the blocks print on one thread (with two, float sums round otherwise
    and training ends elsewhere: the quick start prints -39.21 / -39.05 instead of -38.98 /
    -38.90)."""
    from pyro_lvm.models import VAE
    torch.manual_seed(0)
    (tmp_path / "results" / "svi_vae").mkdir(parents=True)
    VAE().save(tmp_path / "results" / "svi_vae" / "model.pt")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def _blocks(page):
    return markdown_blocks(page) if page.suffix == ".md" else rest_blocks(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_runs_and_prints_what_the_page_shows(page, in_fresh_folder):
    namespace = {"__name__": "docs_block"}
    for i, block in enumerate(b for b in _blocks(page) if b.language == "python"):
        printed = run_python(block.code, namespace, f"{page.name}, block {i}")
        for name, test in [(n, f) for n, f in namespace.items() if n.startswith("test_")]:
            test()  # a pytest file shown on the page (testing guide): its tests pass
            del namespace[name]
        if block.output is not None:
            assert printed_matches(block.output, printed), (page.name, i, block.output, printed)


def test_the_pytest_file_of_the_testing_guide_is_short():
    code, = [b.code for b in rest_blocks(DOCS / "guides" / "testing.rst") if b.language == "python"]
    assert len(code.strip().splitlines()) < 20 and "def test_" in code


def test_the_factor_model_text_says_what_its_figures_say():
    page = DOCS / "guides" / "own_pair.rst"
    shown = [b.output for b in rest_blocks(page) if b.output and "IWAE estimate" in b.output][0]
    estimate, exact, true = map(float, re.findall(r"-?\d+\.\d\d", shown))
    text = " ".join(page.read_text().split())
    gap = float(re.search(r"the (\d+\.\d\d) nats between the fitted and the true", text).group(1))
    assert gap == round(true - exact, 2)
    assert "equal to the exact value to the printed digits" in text and estimate == exact


#: What a page must not say: paths outside the repository, and the circumstances of a
#: measurement beyond device, torch version and date.
FORBIDDEN = [r"\.\./shared", r"load average", r"nice -n", r"engineers", r"kept it busy",
             r"shared with other", r"machine (was )?shared", r"under load",
             r"within the [^.]* asked for", r"\bissue #?\d+"]


def _texts():
    paths = [README, *DOCS.rglob("*.rst"), *DOCS.rglob("*.py"), *(ROOT / "pyro_lvm").rglob("*.py")]
    return [p for p in paths if "_build" not in p.parts and "api" not in p.relative_to(ROOT).parts
            and p != DOCS / "examples_list.rst"]


def test_no_page_speaks_of_its_surroundings_or_of_the_load():
    found = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in _texts()
             for pattern in FORBIDDEN for m in re.finditer(pattern, p.read_text(), re.I)]
    assert not found, found
    assert len(README.read_text().splitlines()) <= 120
